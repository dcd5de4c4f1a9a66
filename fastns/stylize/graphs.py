"""CUDA graphs for the stylizer: the network's forward captured once per input shape, then replayed.

At small sizes a GPU forward of the style network is launch-bound: ~150 kernels, most of them a
few microseconds long, so the host's Python and the launches set the time and the optimised
inference copy (fp16, folded norms, a few more small kernels) lost to the plain fp32 forward on an
H100 (benchmarks/README_stylize.md). A replayed graph launches the whole forward at once.

:class:`GraphedForward` wraps the stylizer's forward. A shape is captured on its second use, so a
folder of photos of all different sizes never pays for a capture it would not reuse, while video,
webcam frames and batches of one size replay from the second call on. At most ``max_graphs``
shapes are kept (least recently used first out), since each graph holds its activations' memory.
If a capture fails, the forward stays eager from then on, with one warning.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable

import torch

log = logging.getLogger(__name__)

Forward = Callable[..., torch.Tensor]


class _Graph:
    """One captured forward: static input (and style weights) in, static output out."""

    def __init__(self, forward: Forward, x: torch.Tensor, style: torch.Tensor | None) -> None:
        self.x = x.clone()
        self.style = None if style is None else style.clone()
        args = (self.x,) if self.style is None else (self.x, self.style)
        # Warm up on a side stream (cuDNN picks its algorithms, lazy state is created) so that
        # the capture records only the kernels; the documented torch.cuda.graphs recipe.
        side = torch.cuda.Stream(device=x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):
            for _ in range(2):
                forward(*args)
        torch.cuda.current_stream(x.device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        # thread_local: the video pipeline's decode and encode threads may touch CUDA meanwhile.
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            self.out = forward(*args)
        self.done = torch.cuda.Event()  # the last caller's copy of the output was taken
        self.done.record()

    def __call__(self, x: torch.Tensor, style: torch.Tensor | None) -> torch.Tensor:
        # A caller on another stream may still be reading the static buffers: wait for it.
        torch.cuda.current_stream(self.x.device).wait_event(self.done)
        self.x.copy_(x)
        if self.style is not None and style is not None:
            self.style.copy_(style)
        self.graph.replay()
        # The next replay overwrites the static output: the caller gets its own copy.
        out = self.out.clone()
        self.done.record()
        return out


class GraphedForward:
    """``forward(x[, style])`` on CUDA through captured graphs, one per input shape and dtype.

    Args:
        forward: the eager forward (the stylizer's :class:`~fastns.transformer.PaddedNet`); it
            must not synchronise with the host, and must not change its input.
        min_uses: calls with a shape before it is captured (earlier calls run eagerly).
        max_graphs: captured shapes kept at once.
    """

    def __init__(self, forward: Forward, *, min_uses: int = 2, max_graphs: int = 4) -> None:
        self.forward = forward
        self.min_uses = max(1, int(min_uses))
        self.max_graphs = max(1, int(max_graphs))
        self.graphs: OrderedDict[tuple, _Graph] = OrderedDict()
        self.uses: dict[tuple, int] = {}
        self.failed = False
        # The static buffers are shared: one caller at a time (the web app serves several threads).
        self.lock = threading.Lock()

    def __call__(self, x: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        if self.failed or x.device.type != "cuda":
            return self.forward(x) if style is None else self.forward(x, style)
        with self.lock:
            return self._call(x, style)

    def _call(self, x: torch.Tensor, style: torch.Tensor | None) -> torch.Tensor:
        args = (x,) if style is None else (x, style)
        key = (tuple(x.shape), x.dtype, x.stride(), None if style is None else tuple(style.shape))
        graph = self.graphs.get(key)
        if graph is None:
            if len(self.uses) > 1024:  # a long folder of photos of all sizes: forget the counts
                self.uses.clear()
            self.uses[key] = self.uses.get(key, 0) + 1
            if self.uses[key] < self.min_uses:
                return self.forward(*args)
            try:
                graph = _Graph(self.forward, x, style)
            except RuntimeError as e:  # an op that cannot be captured: stay eager
                self.failed = True
                self.graphs.clear()
                log.warning(
                    "CUDA graph capture failed (%s); the stylizer runs eagerly", str(e).splitlines()[0]
                )
                return self.forward(*args)
            self.graphs[key] = graph
            if len(self.graphs) > self.max_graphs:
                self.graphs.popitem(last=False)
        else:
            self.graphs.move_to_end(key)
        return graph(x, style)
