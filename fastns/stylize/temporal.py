"""Flow-guided stylisation (``temporal=flow``): each frame blended with the previous output, moved by the flow.

A network stylises every frame on its own, so small changes between frames (noise, compression,
motion) make its strokes jump: the video flickers. :class:`FlowBlend` keeps what the previous
output frame already painted where the input has only moved::

    out_t = lerp(stylised_t, warp(out_{t-1}, flow_t), blend · reliable_t)

with ``flow_t`` the optical flow of the *input* frames t → t−1 (DIS, :mod:`fastns.flow`) and
``reliable_t`` the pixels where it can be trusted: forward-backward consistent, off motion
boundaries, coming from inside the frame (Ruder et al. 2016), and whose input luminance matches
the previous input's there, on average over a few pixels, within :data:`PHOTOMETRIC_TOLERANCE` (a
flow that passes the geometric checks but maps a pixel onto another surface would drag the old
paint along: a ghost). Elsewhere (occlusions, things entering the frame, fast motion) the frame is
the network's own.

Because ``out_{t-1}`` is itself blended, the result is a running average along motion paths: for
flicker that is independent from frame to frame the warping error falls to ``(1 − b)² / (1 + b)``
of per-frame stylisation (0.1 at ``blend = 0.6``), while new content takes over within a few
frames (its weight after n frames is ``1 − bⁿ``). Real flicker is partly correlated from frame to
frame, so the shared clips measure 0.15–0.3x (docs/stylize.md). The departure from Ruder et al.,
who use the warped previous frame to *initialise* an optimisation, is that a feed-forward network
has nothing to initialise: the blend is applied to its output (a post-process, as Lai et al.'s
blind consistency is, without their network).

**Scene cuts**: where fewer than ``cut`` of the pixels are reliable, the frame is a new shot and
the blend restarts from the network's frame, so no ghost of the previous shot remains. On the
shared clips consecutive frames keep 0.4–0.98 of their pixels reliable, and a jump from one clip
to another under 0.05. The first frame, and a frame whose size differs from the previous one,
restart too.

**Limits**: where the input is flat (an overexposed hand, a white wall) the flow is not
constrained, and DIS can be wrong in the same way both ways over a patch; the checks then pass and
the patch keeps the previous frame's strokes, visible as faint squares on a flat object moving
fast. The flow runs on the CPU: on a GPU it costs more than the network at large ``max_size``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..color import luminance
from ..errors import ConfigError
from ..flow import DenseFlow, warp

#: Input luminance (in [0, 1]) may differ by at most this between frame t and frame t−1 warped to it
#: for a pixel to be blended: 0.1 = 25 levels of 255, above video noise and compression artefacts,
#: below the contrast of a different surface.
PHOTOMETRIC_TOLERANCE = 0.1
#: ... as a mean over this many pixels square, so that fine texture resampled by the warp (foliage)
#: does not speckle the mask, while a different surface (a region) still fails.
PHOTOMETRIC_WINDOW = 5


class FlowBlend:
    """``temporal=flow``: stylised frames in order -> the same frames with less flicker.

    Call it on consecutive frames (batches in order); it keeps the previous input and output.

    Args:
        blend: weight of the warped previous output where the flow is reliable, in [0, 1): 0 is
            per-frame stylisation; higher is steadier, and slower to show new detail.
        preset: DIS flow preset (``medium``, ``fast``, ``ultrafast``; :data:`fastns.flow.PRESETS`).
        max_size: compute the flow on frames downscaled to this longest side (px); ``None``: full size.
        cut: a frame with fewer than this share of reliable pixels restarts the blend (a scene cut).
    """

    def __init__(
        self, blend: float = 0.6, preset: str = "medium", max_size: int | None = 640, cut: float = 0.2
    ) -> None:
        if not 0 <= float(blend) < 1:
            raise ConfigError(
                f"flow.blend={blend} must be in [0, 1): 0 = per frame, 0.5 = half the old frame"
            )
        if not 0 <= float(cut) <= 1:
            raise ConfigError(f"flow.cut={cut} must be a share of the pixels, in [0, 1]")
        self.flows = DenseFlow(preset, max_size)
        self.blend = float(blend)
        self.cut = float(cut)
        self.restarts = 0  # frames output as the network's own: the first, and each scene cut
        self.reset()

    def reset(self) -> None:
        """Forget the previous frame: the next one is the network's own."""
        self._luma = None  # previous input: luminance at the flow's size, uint8 (1, h, w)
        self._y: torch.Tensor | None = None  # previous input luminance, (1, 1, H, W)
        self._out: torch.Tensor | None = None  # previous output, (1, 3, H, W)

    @torch.inference_mode()
    def __call__(self, content: torch.Tensor, stylised: torch.Tensor) -> torch.Tensor:
        """Blend consecutive frames: ``content`` (the inputs) and ``stylised`` (the network's outputs),
        both ``(B, 3, H, W)`` in [0, 1] on one device; returns the output frames, same shape."""
        lumas = self.flows.luma(content)  # (B, h, w) uint8, CPU
        ys = luminance(content.float())
        out = []
        for i in range(stylised.shape[0]):
            frame = stylised[i : i + 1].float()
            if self._out is not None and self._out.shape == frame.shape:
                flow = self.flows.pair(lumas[i : i + 1], self._luma, tuple(frame.shape[-2:]), frame.device)
                change = (ys[i : i + 1] - warp(self._y, flow.flow)).abs()
                change = F.avg_pool2d(
                    change, PHOTOMETRIC_WINDOW, 1, PHOTOMETRIC_WINDOW // 2, count_include_pad=False
                )
                same = change <= PHOTOMETRIC_TOLERANCE
                weight = (flow.reliable & same).float()
                if weight.mean() >= self.cut:
                    frame = torch.lerp(frame, warp(self._out, flow.flow), weight * self.blend)
                else:
                    self.restarts += 1
            else:
                self.restarts += 1
            self._luma, self._y, self._out = lumas[i : i + 1], ys[i : i + 1], frame
            out.append(frame)
        return torch.cat(out)


def make_temporal(mode: str | None, **options: object) -> FlowBlend | None:
    """The ``temporal=`` setting: ``none`` (each frame on its own) -> None, ``flow`` -> a :class:`FlowBlend`."""
    mode = "none" if mode is None else str(mode).lower()
    if mode == "none":
        return None
    if mode == "flow":
        return FlowBlend(**options)  # type: ignore[arg-type]
    raise ConfigError(
        f"temporal={mode}: expected none (each frame on its own) or flow (flow-guided blending)"
    )
