"""Gatys runs for the evaluation: one timed L-BFGS optimisation and what is read off it.

:func:`run_gatys` optimises one photo with the model's loss and keeps, per iteration, the loss
terms, the elapsed time and the requested snapshots; :func:`equivalent_iterations` is the
Figure 5 reading of Johnson et al. (2016): the first iteration whose loss matches the network's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from ..losses import PerceptualLoss
from ..optimize import optimize_image

#: Where a Gatys optimisation can start: Gatys' white noise, or the photo itself.
GATYS_INITS = ("noise", "content")
#: How the report names them.
START_NAMES = {"noise": "white noise", "content": "the photo"}


def equivalent_iterations(trajectory: Sequence[float], target: float) -> int | None:
    """The first iteration at which an optimisation's loss is at or below ``target`` (Figure 5).

    Args:
        trajectory: ``trajectory[i]`` is the loss after ``i`` iterations (``[0]``: the start).
        target: the loss to match, e.g. the network's.

    Returns:
        The smallest ``i`` with ``trajectory[i] <= target``; ``None`` if the trajectory never gets
        there ("> budget"). NaN losses never count as reached. The *first* crossing is the one
        Johnson et al. read off their curves; L-BFGS with a line search decreases the loss at every
        iteration, so it is also the last one in practice.
    """
    if target is None or math.isnan(target):
        return None
    for i, value in enumerate(trajectory):
        if value is not None and value <= target:  # NaN compares False
            return i
    return None


@dataclass
class GatysRun:
    """One L-BFGS Gatys optimisation with what the evaluation keeps of it.

    ``losses[i]`` are the loss terms after ``i`` iterations (``i = 0 .. iterations``),
    ``elapsed[i]`` the seconds from the start to the end of iteration ``i`` (``elapsed[0] = 0``),
    ``snapshots[i]`` the image after ``i`` iterations for the requested ``i`` (on the CPU, in [0, 1]).
    """

    init: str
    losses: list[dict[str, float]]
    elapsed: list[float]
    snapshots: dict[int, torch.Tensor] = field(default_factory=dict)
    evaluations: int = 0
    image: torch.Tensor | None = None  # the final image (CPU, [0, 1])

    @property
    def iterations(self) -> int:
        """Iterations actually run (fewer than asked only if the loss stopped being finite)."""
        return len(self.losses) - 1

    @property
    def trajectory(self) -> list[float]:
        return [t["total"] for t in self.losses]

    @property
    def seconds_per_iteration(self) -> float | None:
        n = len(self.elapsed) - 1
        return self.elapsed[-1] / n if n > 0 else None

    def seconds_for(self, iterations: int) -> tuple[float | None, bool]:
        """Time for ``iterations`` iterations and whether it was measured (else per-iteration x N)."""
        if iterations < len(self.elapsed):
            return self.elapsed[iterations], True
        per = self.seconds_per_iteration
        return (None if per is None else per * iterations), False


def run_gatys(
    loss_fn: PerceptualLoss,
    init: torch.Tensor,
    iterations: int,
    *,
    name: str = "noise",
    snapshot_at: Sequence[int] = (),
    on_iteration: Callable[[], None] | None = None,
) -> GatysRun:
    """Gatys optimisation (L-BFGS, strong-Wolfe line search) of ``init``, timed per iteration.

    Args:
        loss_fn: the loss, with style and content targets set.
        init: the starting image ``(1, 3, H, W)``.
        iterations: the budget.
        name: what ``init`` is (``noise`` or ``content``), for the record.
        snapshot_at: iterations whose image to keep (the contact sheet); 0 is the start.
        on_iteration: called after every iteration (progress bars).
    """
    wanted = set(snapshot_at)
    snapshots = {0: init.detach().clamp(0, 1).cpu().clone()} if 0 in wanted else {}
    elapsed = [0.0]

    def callback(i: int, image: torch.Tensor, terms: dict[str, float]) -> None:
        elapsed.append(time.perf_counter() - start)
        if i in wanted:
            snapshots[i] = image.detach().clamp(0, 1).cpu().clone()
        if on_iteration is not None:
            on_iteration()

    start = time.perf_counter()
    result = optimize_image(
        loss_fn, init, iterations=iterations, optimizer="lbfgs", callback=callback, progress=False
    )
    final = result.image.cpu().clone()
    # An early stop (non-finite loss) leaves fewer iterations than asked: the last image stands in.
    for i in wanted - set(snapshots):
        snapshots[i] = final
    return GatysRun(
        init=name,
        losses=result.losses,
        elapsed=elapsed,
        snapshots=snapshots,
        evaluations=result.evaluations,
        image=final,
    )
