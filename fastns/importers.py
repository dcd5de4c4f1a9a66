"""Networks from other projects' files, as fastns networks: pytorch/examples ``fast_neural_style``.

:func:`load_network` opens any network file a user may pass as ``model=``: a fastns model file
(``.safetensors``), a training checkpoint (``.ckpt``), or a pytorch/examples checkpoint (``.pth``,
``.pt``, ``.model``: its four released styles and everything people trained with that example).

pytorch/examples' network is Johnson et al.'s with instance normalisation and nearest x2 upsampling
followed by a convolution: the same layers as :class:`~fastns.transformer.TransformerNet`. What
differs, and how it is mapped exactly:

- it takes 0-255 images: the first convolution's weights are multiplied by 255;
- its output is in 0-255 units, clamped when saved: the last convolution's weights and bias are
  divided by 255 and the network's ``output`` is ``"clamp"`` (to [0, 1]);
- every convolution has a bias; before an instance norm a per-channel bias is subtracted again
  with the channel mean, so those biases are dropped without changing the output;
- files written by old PyTorch versions carry ``running_mean``/``running_var`` of the instance
  norms, which the network never used: dropped.

Files are read with ``torch.load(weights_only=True)``: tensors and plain data only, never code.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from .errors import ModelFileError, first_line
from .modelfile import ModelInfo, load_checkpoint, load_model
from .transformer import TransformerNet

#: File name endings read as pytorch/examples checkpoints.
EXAMPLES_SUFFIXES = (".pth", ".pt", ".model")
#: pytorch/examples' layer name -> fastns's, per parameter; ``{i}`` a residual block.
_EXAMPLES_LAYERS = {
    "conv1.conv2d": "encoder.0.1",
    "in1": "encoder.0.2",
    "conv2.conv2d": "encoder.1.1",
    "in2": "encoder.1.2",
    "conv3.conv2d": "encoder.2.1",
    "in3": "encoder.2.2",
    "res{i}.conv1.conv2d": "residuals.{j}.body.0.1",
    "res{i}.in1": "residuals.{j}.body.0.2",
    "res{i}.conv2.conv2d": "residuals.{j}.body.1.1",
    "res{i}.in2": "residuals.{j}.body.1.2",
    "deconv1.conv2d": "decoder.0.2",
    "in4": "decoder.0.3",
    "deconv2.conv2d": "decoder.1.2",
    "in5": "decoder.1.3",
    "deconv3.conv2d": "decoder.2.1",
}
#: 0-255 pixels in and out of pytorch/examples' network.
_PIXEL_SCALE = 255.0


def load_network(path: str | os.PathLike) -> tuple[TransformerNet, ModelInfo]:
    """The network in ``path`` (eval mode, CPU) and its description, whatever supported file it is."""
    path = Path(path)
    if path.suffix == ".ckpt":
        return load_checkpoint(path)
    if path.suffix.lower() in EXAMPLES_SUFFIXES:
        return load_pytorch_examples(path)
    return load_model(path)


def load_pytorch_examples(path: str | os.PathLike) -> tuple[TransformerNet, ModelInfo]:
    """A pytorch/examples ``fast_neural_style`` checkpoint as a fastns network (module docstring).

    Raises:
        ModelFileError: missing, unreadable, needing code to unpickle, or another network's weights.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a pickle with code, a zip that is not a checkpoint, a foreign format
        raise ModelFileError(
            f"{path}: not a readable PyTorch checkpoint of tensors ({type(e).__name__}: {first_line(e)})"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or "conv1.conv2d.weight" not in state:
        raise ModelFileError(
            f"{path}: not a pytorch/examples fast_neural_style network (no conv1.conv2d.weight); "
            "fastns reads its own model files (.safetensors), training checkpoints (.ckpt) and those"
        )
    residuals = sorted({int(m.group(1)) for k in state if (m := re.match(r"res(\d+)\.", k))})
    width = state["conv1.conv2d.weight"].shape[0] / 32
    net = TransformerNet(width=width, num_residual=len(residuals), output="clamp")
    own = net.state_dict()
    weights = {}
    for theirs, ours in _EXAMPLES_LAYERS.items():
        blocks = enumerate(residuals) if "{i}" in theirs else [(0, 0)]
        for j, i in blocks:
            for param in ("weight", "bias"):
                key = f"{theirs.format(i=i)}.{param}"
                target = f"{ours.format(j=j)}.{param}"
                if target in own and key in state:
                    weights[target] = state[key].float()
    weights["encoder.0.1.weight"] = weights["encoder.0.1.weight"] * _PIXEL_SCALE
    weights["decoder.2.1.weight"] = weights["decoder.2.1.weight"] / _PIXEL_SCALE
    weights["decoder.2.1.bias"] = weights["decoder.2.1.bias"] / _PIXEL_SCALE
    missing = sorted(own.keys() - weights.keys())
    if missing:
        raise ModelFileError(
            f"{path}: a pytorch/examples network with unexpected layers (no weights for {missing[0]})"
        )
    try:
        net.load_state_dict(weights)
    except RuntimeError as e:
        raise ModelFileError(f"{path}: the weights do not fit ({str(e).splitlines()[-1].strip()})") from None
    info = ModelInfo(
        model=dict(net.config),
        style={"name": path.stem},
        training={"imported_from": "pytorch/examples fast_neural_style", "file": path.name},
    )
    return net.eval(), info
