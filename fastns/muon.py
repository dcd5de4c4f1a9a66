"""The training optimiser Muon: momentum orthogonalised by Newton–Schulz for the style network's
convolution filters, Adam for everything else (Jordan et al. 2024, "Muon: an optimizer for hidden
layers of neural networks"; Liu et al. 2025, "Muon is scalable for LLM training").

Adam scales every weight's step by that weight's own gradient history, so the few directions in
which a filter's gradient is large take nearly all of its update. Muon treats a convolution's filter
bank as the matrix it is (output channels × input channels·kernel) and replaces the momentum of its
gradient by the nearest semi-orthogonal matrix (``U Vᵀ`` of its SVD, computed by five iterations of
a quintic Newton–Schulz polynomial), so every direction of the update moves at the same rate. On
the CPU recipe it reaches Adam's losses in far fewer steps (measured in docs/training.md, "Muon").

Which parameter gets which rule is decided by its shape, so any network (an imported one
fine-tuned with ``init_from``, the multi-style network) works without a list of names:

- a 4-D weight with more than 3 output channels (a hidden convolution, the stem included) takes
  Muon's step;
- everything else takes Adam's: biases, the instance norms' γ and β, per-style tables, the output
  convolution (whose 3 rows are the image's colours, not a hidden basis; Jordan et al. keep the
  last layer on Adam as well).

Muon's step is scaled as Liu et al. do it, ``0.2 · √max(rows, cols)``, so that its elements have
about the root-mean-square size of Adam's, and then by ``muon_scale`` (3: the filters step three
times as far as an Adam-sized step; 1 and 10 trained less well). Both parts take the one learning
rate, so a scheduler moves both.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

#: The quintic's coefficients (Jordan et al.): they push every singular value into ~[0.7, 1.2] in
#: five iterations from a Frobenius-normalised start, which is as orthogonal as the update needs.
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def orthogonalize(matrix: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """The semi-orthogonal matrix nearest ``matrix`` (2-D), approximately, by Newton–Schulz, in float32."""
    a, b, c = NS_COEFFICIENTS
    x = matrix.float()
    wide = x.shape[0] <= x.shape[1]
    if not wide:  # iterate on the smaller Gram matrix
        x = x.T
    x = x / (x.norm() + 1e-7)  # singular values ≤ 1, where the iteration converges
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x if wide else x.T


def takes_muon(param: torch.Tensor) -> bool:
    """Whether ``param`` is a hidden convolution's filter bank (Muon's step) rather than Adam's."""
    return param.ndim == 4 and param.shape[0] > 3


class Muon(torch.optim.Optimizer):
    """Muon for hidden convolution filters, Adam for the other parameters (module docstring).

    Args:
        params: the parameters (or parameter groups) to train.
        lr: the learning rate of both parts (Muon's step is scaled to Adam's size, times ``muon_scale``).
        momentum: Muon's momentum (Nesterov), 0.95 as in Jordan et al.
        betas, eps: Adam's, for the other parameters (PyTorch's defaults, as the paper's Adam).
        ns_steps: Newton–Schulz iterations per step.
        muon_scale: the filters' step against an Adam-sized one (module docstring).
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        momentum: float = 0.95,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        ns_steps: int = 5,
        muon_scale: float = 3.0,
    ) -> None:
        if lr < 0 or muon_scale < 0 or not 0 <= momentum < 1:
            raise ValueError(
                f"Muon: lr and muon_scale must be ≥ 0 and momentum in [0, 1), got lr={lr}, "
                f"muon_scale={muon_scale}, momentum={momentum}"
            )
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "betas": tuple(betas),
            "eps": eps,
            "ns_steps": ns_steps,
            "muon_scale": muon_scale,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if takes_muon(p):
                    self._muon_step(p, group)
                else:
                    self._adam_step(p, group)
        return loss

    def _muon_step(self, p: torch.Tensor, group: dict[str, Any]) -> None:
        state = self.state[p]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros(p.shape, dtype=torch.float32, device=p.device)
        buf, beta = state["momentum_buffer"], group["momentum"]
        grad = p.grad.float()
        buf.mul_(beta).add_(grad)
        update = grad.add(buf, alpha=beta)  # Nesterov
        matrix = update.reshape(p.shape[0], -1)  # output channels × (input channels · kernel)
        rows, cols = matrix.shape
        scale = 0.2 * math.sqrt(max(rows, cols)) * group["muon_scale"]
        p.add_(orthogonalize(matrix, group["ns_steps"]).view(p.shape).to(p.dtype), alpha=-group["lr"] * scale)

    def _adam_step(self, p: torch.Tensor, group: dict[str, Any]) -> None:
        state = self.state[p]
        if "step" not in state:
            state["step"] = torch.zeros((), dtype=torch.float32)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        beta1, beta2 = group["betas"]
        state["step"] += 1
        t = float(state["step"])
        exp_avg, exp_avg_sq, grad = state["exp_avg"], state["exp_avg_sq"], p.grad
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = (exp_avg_sq / (1 - beta2**t)).sqrt_().add_(group["eps"])
        p.addcdiv_(exp_avg, denom, value=-group["lr"] / (1 - beta1**t))
