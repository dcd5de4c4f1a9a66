"""The bad-input corpus: every case through a real script, as a user would run it.

Each case names the script, its arguments, the exit status, a phrase the one-line error must
contain, and the paths that must not exist afterwards. Every case runs with
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` (an environment that makes ``torch.load`` unpickle anything
it is not told otherwise): the malicious files would create ``code_ran`` if any load site executed
code from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from fastns.modelfile import save_model
from fastns.transformer import TransformerNet

from .conftest import ROOT, make_photo, run_script

pytestmark = pytest.mark.integration

SCRIPTS = {
    name: ROOT / "scripts" / f"{name}.py" for name in ("train", "optimize", "stylize", "export", "evaluate")
}


class _Payload:
    """Unpickling this runs code: it creates the file ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@dataclass(frozen=True)
class Case:
    script: str
    args: tuple[str, ...]
    phrase: str
    absent: tuple[str, ...] = ()  # paths (relative to the test folder) that must not exist afterwards
    status: int = 2


TINY_TRAIN = ("debug=tiny", "data.root={photos}", "style.image={style}", "hydra.run.dir={tmp}/run")
QUIET = ("progress=false",)
CASES = {
    # Training: the command line, the data, the style, the checkpoint to resume from.
    "train_unknown_key": Case("train", ("stylee=candy",), "stylee: unknown setting", ("run",)),
    "train_unknown_preset": Case("train", ("style=vangogh",), "no such style preset; available: candy"),
    "train_unknown_loss": Case("train", ("loss=nope",), "no such loss preset; available:"),
    "train_not_a_number": Case("train", ("trainer.max_steps=abc",), "trainer.max_steps takes a whole number"),
    "train_not_a_bool": Case("train", ("channels_last=maybe",), "channels_last takes true or false"),
    "train_missing_folder": Case(
        "train", (*TINY_TRAIN, "data.root={tmp}/missing"), "data.root={tmp}/missing: no such folder", ("run",)
    ),
    "train_empty_folder": Case("train", (*TINY_TRAIN, "data.root={empty}"), "no images", ("run",)),
    "train_corrupt_style": Case(
        "train", (*TINY_TRAIN, "style.image={corrupt}"), "cannot read image", ("run",)
    ),
    "train_bad_norm": Case(
        "train", (*TINY_TRAIN, "model.norm=group"), "model.norm='group' must be one of", ("run",)
    ),
    "train_tiny_crops": Case("train", (*TINY_TRAIN, "data.image_size=4"), "at least 8 px", ("run",)),
    "train_unreadable_val_photos": Case(
        "train",
        (*TINY_TRAIN, "data.val_root={bad_val}"),
        "none of the 2 validation photo(s) can be read",
        ("run",),
    ),
    "train_resume_nothing": Case(
        "train", (*TINY_TRAIN, "ckpt_path=last"), "ckpt_path=last: no checkpoint", ("run",)
    ),
    "train_resume_missing": Case(
        "train", (*TINY_TRAIN, "ckpt_path={tmp}/no.ckpt"), "no such checkpoint", ("run",)
    ),
    "train_resume_garbage": Case(
        "train", (*TINY_TRAIN, "ckpt_path={corrupt}"), "not a readable checkpoint", ("run",)
    ),
    "train_resume_malicious": Case(
        "train", (*TINY_TRAIN, "ckpt_path={evil_ckpt}"), "not a readable checkpoint", ("run", "code_ran")
    ),
    "train_resume_foreign": Case(
        "train", (*TINY_TRAIN, "ckpt_path={foreign_ckpt}"), "not a fastns training checkpoint", ("run",)
    ),
    "train_vgg_malicious": Case(
        "train",
        (*TINY_TRAIN, "loss.vgg.weights={evil_pth}"),
        "not a readable PyTorch state dict",
        ("run", "code_ran"),
    ),
    # Gatys optimisation.
    "optimize_missing_content": Case(
        "optimize", ("content={tmp}/nope.jpg", *QUIET), "no such file", ("out.png",)
    ),
    "optimize_not_a_number": Case(
        "optimize", ("content={photo}", "iterations=abc"), "iterations takes a whole number"
    ),
    "optimize_unknown_preset": Case("optimize", ("content={photo}", "style=vangogh"), "no such style preset"),
    "optimize_not_utf8": Case("optimize", ("content={not_utf8}",), "not valid UTF-8"),
    "optimize_over_input": Case(
        "optimize", ("content={photo}", "style.image={style}", "output={photo}"), "refusing to overwrite"
    ),
    "optimize_color_without_content": Case(
        "optimize",
        ("content=null", "style.image={style}", "preserve_color=true", "output={tmp}/out.png"),
        "preserve_color=true needs a content image",
        ("out.png",),
    ),
    "optimize_bad_optimizer": Case(
        "optimize",
        ("content={photo}", "style.image={style}", "optimizer._target_=torch.optim.Nope"),
        "cannot build the optimiser",
    ),
    "optimize_vgg_malicious": Case(
        "optimize",
        (
            "content={photo}",
            "style.image={style}",
            "loss=johnson",
            "loss.vgg.weights={evil_pth}",
            "output={tmp}/out.png",
        ),
        "not a readable PyTorch state dict",
        ("out.png", "code_ran"),
    ),
    "optimize_empty_content": Case(
        "optimize",
        ("content={empty_file}", "style.image={style}", "output={tmp}/out.png"),
        "empty file",
        ("out.png",),
    ),
    "optimize_zero_size": Case(
        "optimize",
        ("content={photo}", "style.image={style}", "image_size=0", "output={tmp}/out.png"),
        "image_size=0 must be a positive",
        ("out.png",),
    ),
    "optimize_output_under_a_file": Case(
        "optimize",
        ("content={photo}", "style.image={style}", "output={photo}/out.png"),
        "is a file, not a folder",
    ),
    "optimize_one_pixel_content": Case(
        "optimize",
        ("content={one_pixel}", "style.image={style}", "output={tmp}/out.png"),
        "{one_pixel}: 1x1 px is too small",
        ("out.png",),
    ),
    "optimize_bad_extension": Case(
        "optimize",
        ("content={photo}", "style.image={style}", "output={tmp}/out.xyz"),
        "unknown image extension",
        ("out.xyz",),
    ),
    "optimize_truncated_style": Case(
        "optimize",
        ("content={photo}", "style.image={truncated}", "output={tmp}/out.png"),
        "{truncated}",
        ("out.png",),
    ),
    # Stylising.
    "stylize_missing_model": Case(
        "stylize", ("model={tmp}/no.safetensors", "input={photo}"), "no such model file"
    ),
    "stylize_photo_as_model": Case(
        "stylize",
        ("model={photo}", "input={photo}", "output={tmp}/o.png"),
        "not a fastns model file",
        ("o.png",),
    ),
    "stylize_checkpoint_as_model": Case(
        "stylize",
        ("model={evil_ckpt}", "input={photo}", "output={tmp}/o.png"),
        "a training checkpoint, not a model",
        ("o.png", "code_ran"),
    ),
    "stylize_pickle_as_model": Case(
        "stylize",
        ("model={evil_pth}", "input={photo}", "output={tmp}/o.png"),
        "not a readable PyTorch checkpoint",
        ("o.png", "code_ran"),
    ),
    "stylize_future_model": Case(
        "stylize",
        ("model={future_model}", "input={photo}", "output={tmp}/o.png"),
        "upgrade fastns",
        ("o.png",),
    ),
    "stylize_not_a_number": Case(
        "stylize", ("model={model}", "input={photo}", "strength=abc"), "strength takes a number"
    ),
    "stylize_strength_range": Case(
        "stylize",
        ("model={model}", "input={photo}", "strength=2", "output={tmp}/o.png"),
        "must be between",
        ("o.png",),
    ),
    "stylize_missing_input": Case("stylize", ("model={model}", "input={tmp}/nope.jpg"), "no such file"),
    "stylize_over_input": Case(
        "stylize", ("model={model}", "input={photo}", "output={photo}"), "refusing to overwrite"
    ),
    "stylize_corrupt_input": Case(
        "stylize", ("model={model}", "input={corrupt}", "output={tmp}/o.png"), "cannot read image", ("o.png",)
    ),
    "stylize_empty_folder": Case(
        "stylize", ("model={model}", "input={empty}", "output={tmp}/out", *QUIET), "no image files", ("out",)
    ),
    "stylize_small_tile": Case(
        "stylize",
        ("model={model}", "input={photo}", "tile=10", "output={tmp}/o.png"),
        "tile=10 must be at least",
        ("o.png",),
    ),
    "stylize_one_pixel": Case(
        "stylize",
        ("model={model}", "input={one_pixel}", "output={tmp}/o.png"),
        "{one_pixel}: 1x1 px is too small",
        ("o.png",),
    ),
    "stylize_folder_to_image_name": Case(
        "stylize",
        ("model={model}", "input={photos}", "output={tmp}/out.png", *QUIET),
        "needs an output folder",
        ("out.png",),
    ),
    "stylize_folder_all_bad": Case(
        "stylize",
        ("model={model}", "input={bad_folder}", "output={tmp}/out", *QUIET),
        "none of 2 file(s) could be",
    ),
    "stylize_temporal_unknown": Case(
        "stylize",
        ("model={model}", "input={fake_video}", "output={tmp}/o.mp4", "temporal=sometimes"),
        "temporal=sometimes: expected none",
        ("o.mp4",),
    ),
    "stylize_flow_blend_range": Case(
        "stylize",
        ("model={model}", "input={fake_video}", "output={tmp}/o.mp4", "temporal=flow", "flow.blend=1"),
        "flow.blend=1 must be in [0, 1)",
        ("o.mp4",),
    ),
    "stylize_temporal_on_image": Case(
        "stylize",
        ("model={model}", "input={photo}", "output={tmp}/o.png", "temporal=flow"),
        "temporal=flow is for video",
        ("o.png",),
    ),
    "stylize_fake_video": Case(
        "stylize",
        ("model={model}", "input={fake_video}", "output={tmp}/o.mp4"),
        "not a readable video",
        ("o.mp4",),
    ),
    "stylize_unknown_key": Case(
        "stylize", ("model={model}", "input={photo}", "strenght=0.5"), "strenght: unknown"
    ),
    # Export.
    "export_malicious_checkpoint": Case(
        "export",
        ("model={evil_ckpt}", "output={tmp}/m.safetensors"),
        "not a readable checkpoint",
        ("m.safetensors", "code_ran"),
    ),
    "export_unknown_format": Case("export", ("model={model}", "format=zip"), "format='zip' is not supported"),
    "export_over_input": Case(
        "export", ("model={ckpt_named_model}", "output={ckpt_named_model}"), "is the input file"
    ),
    "export_not_a_bool": Case("export", ("model={model}", "verify=maybe"), "verify takes true or false"),
    "export_photo_as_model": Case(
        "export",
        ("model={photo}", "format=torchscript", "output={tmp}/m.pt"),
        "not a fastns model file",
        ("m.pt",),
    ),
    # Evaluation.
    "evaluate_model_without_loss": Case(
        "evaluate",
        ("model={model}", "images={photo}", "output={tmp}/report"),
        "no loss settings",
        ("report",),
    ),
    "evaluate_pickle_as_model": Case(
        "evaluate",
        ("model={evil_pth}", "images={photo}", "output={tmp}/report"),
        "not a fastns model file",
        ("report", "code_ran"),
    ),
    "evaluate_vgg_malicious": Case(
        "evaluate",
        ("model={model_with_loss}", "images={photo}", "output={tmp}/report", "loss.vgg.weights={evil_pth}"),
        "not a readable PyTorch state dict",
        ("report", "code_ran"),
    ),
    "evaluate_not_a_number": Case(
        "evaluate", ("model={model}", "images={photo}", "image_size=big"), "image_size takes"
    ),
    "evaluate_missing_images": Case(
        "evaluate",
        ("model={model_with_loss}", "images={tmp}/missing", "output={tmp}/report"),
        "no such",
        ("report",),
    ),
}


@pytest.fixture
def files(tmp_path, style_file) -> dict[str, str]:
    """Every file the cases refer to, made small in the test folder."""
    photos = tmp_path / "photos"
    for i in range(4):
        make_photo(photos / f"{i}.jpg", size=(40 + 4 * i, 36), seed=i)
    (tmp_path / "empty").mkdir()
    photo = make_photo(tmp_path / "photo.png", size=(40, 32), seed=9)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    truncated = tmp_path / "truncated.jpg"
    full = make_photo(tmp_path / "full.jpg", size=(64, 48), seed=3).read_bytes()
    truncated.write_bytes(full[: len(full) // 2])
    empty_file = tmp_path / "empty.jpg"
    empty_file.write_bytes(b"")
    marker = tmp_path / "code_ran"
    evil_ckpt, evil_pth = tmp_path / "evil.ckpt", tmp_path / "evil.pth"
    torch.save({"fastns": {"model": {}}, "state_dict": {}, "payload": _Payload(marker)}, evil_ckpt)
    torch.save({"features.0.weight": _Payload(marker)}, evil_pth)
    foreign_ckpt = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign_ckpt)
    net = TransformerNet(width=0.125, num_residual=1)
    model = save_model(tmp_path / "tiny.safetensors", net, style={"name": "tiny"})
    loss = {
        "content_layers": {"relu2_2": 1.0},
        "style_layers": {"relu1_2": 1.0},
        "vgg": {"arch": "vgg16", "weights": "random"},
    }
    model_with_loss = save_model(
        tmp_path / "with_loss.safetensors", net, style={"name": "s", "sources": [str(style_file)]}, loss=loss
    )
    future = tmp_path / "future.safetensors"
    from safetensors.torch import save_file

    save_file(
        {"w": torch.zeros(1)}, str(future), metadata={"format": "fastns.transformer", "format_version": "99"}
    )
    one_pixel = make_photo(tmp_path / "dot.png", size=(1, 1))
    bad_folder = tmp_path / "bad_folder"
    bad_folder.mkdir()
    (bad_folder / "a.jpg").write_bytes(b"not a jpeg")
    make_photo(bad_folder / "b.png", size=(4, 3))
    bad_val = tmp_path / "bad_val"
    bad_val.mkdir()
    for name in ("a.jpg", "b.png"):
        (bad_val / name).write_bytes(b"not an image")
    fake_video = tmp_path / "clip.mp4"
    fake_video.write_text("not a video")
    ckpt_named_model = tmp_path / "model.ckpt"
    ckpt_named_model.write_bytes(b"")
    return {
        "tmp": str(tmp_path),
        "photos": str(photos),
        "empty": str(tmp_path / "empty"),
        "photo": str(photo),
        "style": str(style_file),
        "corrupt": str(corrupt),
        "truncated": str(truncated),
        "empty_file": str(empty_file),
        "evil_ckpt": str(evil_ckpt),
        "evil_pth": str(evil_pth),
        "foreign_ckpt": str(foreign_ckpt),
        "model": str(model),
        "future_model": str(future),
        "model_with_loss": str(model_with_loss),
        "one_pixel": str(one_pixel),
        "bad_folder": str(bad_folder),
        "bad_val": str(bad_val),
        "fake_video": str(fake_video),
        "ckpt_named_model": str(ckpt_named_model),
        "not_utf8": f"{tmp_path}/caf\udce9.jpg",  # a Latin-1 file name, as Python holds it in argv
    }


def test_the_corpus_is_large():
    assert len(CASES) >= 40


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_one_line_and_leaves_nothing_behind(name, files, tmp_path, monkeypatch, capsys):
    case = CASES[name]
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    monkeypatch.chdir(tmp_path)  # a script that wrongly wrote beside the working folder would show here
    args = [a.format(**files) for a in case.args]
    code, _, err = run_script(SCRIPTS[case.script], args, monkeypatch, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == case.status, err
    # One error line, last; before it only the run's warnings (e.g. the files a folder skipped).
    assert lines and lines[-1].startswith("error: "), err
    assert all(line.startswith("warning: ") for line in lines[:-1]), err
    assert case.phrase.format(**files) in lines[-1], lines[-1]
    for path in case.absent:
        assert not (tmp_path / path).exists(), f"{path} exists"
    assert not (tmp_path / "code_ran").exists()
    assert not list(tmp_path.rglob(".*.part"))  # no half-written file anywhere


def test_offline_downloads_fail_together(files, tmp_path, monkeypatch, capsys):
    """Offline, the VGG weights and the style image are both reported in the one line, not one per attempt."""
    from torchvision.models import VGG16_Weights

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(type(VGG16_Weights.IMAGENET1K_V1), "get_state_dict", offline)
    style_url = "http://127.0.0.1:9/starry_night.jpg"  # the discard port: refused at once
    args = [
        f"content={files['photo']}",
        f"style.image={style_url}",
        "loss=johnson",
        f"output={tmp_path}/o.png",
    ]
    code, _, err = run_script(SCRIPTS["optimize"], args, monkeypatch, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert "starry_night.jpg" in lines[0] and "ImageNet VGG16" in lines[0]
    assert not (tmp_path / "o.png").exists()
