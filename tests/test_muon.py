"""Muon for the style network's hidden convolutions, Adam for the rest (fastns.muon), and the CPU
recipe training with it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fastns.muon import Muon, orthogonalize, takes_muon
from fastns.train import build
from fastns.transformer import TransformerNet

from .conftest import compose, make_photo


@pytest.mark.parametrize("shape", [(16, 144), (144, 16), (32, 32)])
def test_orthogonalize_flattens_the_spectrum_and_keeps_the_directions(shape):
    torch.manual_seed(0)
    # A badly conditioned matrix: singular values from 100 down to 0.01.
    u, _ = torch.linalg.qr(torch.randn(shape[0], shape[0]))
    v, _ = torch.linalg.qr(torch.randn(shape[1], shape[1]))
    k = min(shape)
    s = torch.logspace(2, -2, k)
    m = u[:, :k] @ torch.diag(s) @ v[:, :k].T
    o = orthogonalize(m)
    assert o.shape == m.shape
    sv = torch.linalg.svdvals(o)
    # The large directions come out near 1 (the small ones are pushed up as far as 5 steps go).
    assert sv[: k // 2].min() > 0.6 and sv.max() < 1.25
    # Same singular vectors: o ≈ U f(S) Vᵀ, so Uᵀ o V is diagonal.
    core = u[:, :k].T @ o @ v[:, :k]
    assert (core - torch.diag(torch.diagonal(core))).abs().max() < 1e-3


def test_hidden_filters_take_muon_and_the_rest_takes_adam():
    net = TransformerNet(width=0.25, num_residual=1)
    kinds = {name: takes_muon(p) for name, p in net.named_parameters()}
    assert kinds["encoder.0.1.weight"] and kinds["residuals.0.body.0.1.weight"]  # stem and hidden convs
    assert not kinds["decoder.2.1.weight"]  # the output convolution: its rows are the colours
    assert not any(takes_muon(p) for p in net.parameters() if p.ndim < 4)  # biases, γ, β
    assert not any(takes_muon(p) for p in nn.InstanceNorm2d(8, affine=True).parameters())


def test_muon_steps_every_direction_of_a_filter_bank_alike():
    """Adam's first step is lr·sign(g), Muon's the orthogonalised gradient: a gradient dominated by one
    direction moves the filters along all of its directions at the same rate."""
    torch.manual_seed(0)
    w = nn.Parameter(torch.zeros(8, 4, 3, 3))
    u, _ = torch.linalg.qr(torch.randn(8, 8))
    v, _ = torch.linalg.qr(torch.randn(36, 36))
    s = torch.tensor([100.0, 10.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.5])
    g = (u @ torch.diag(s) @ v[:, :8].T).view(8, 4, 3, 3)
    w.grad = g.clone()
    Muon([w], lr=1e-3, momentum=0.0, muon_scale=1.0).step()
    step = w.detach().view(8, -1)
    sv = torch.linalg.svdvals(step)
    assert sv.max() / sv.min() < 2.0  # the gradient's were 200 apart
    # The step goes downhill, at Liu et al.'s size: elements of RMS ~0.2·lr.
    assert (step * g.view(8, -1)).sum() < 0
    rms = step.pow(2).mean().sqrt().item()
    assert 0.1e-3 < rms < 0.3e-3


def test_parameters_outside_the_filters_follow_adam_exactly():
    torch.manual_seed(0)
    params = [
        torch.randn(16),
        torch.randn(3, 8, 9, 9),
        torch.randn(4, 16),
    ]  # bias, output conv, per-style table
    a = [nn.Parameter(p.clone()) for p in params]
    b = [nn.Parameter(p.clone()) for p in params]
    muon, adam = Muon(a, lr=1e-2), torch.optim.Adam(b, lr=1e-2)
    for step in range(3):
        for pa, pb in zip(a, b, strict=True):
            g = torch.randn_like(pa) * (step + 1)
            pa.grad, pb.grad = g.clone(), g.clone()
        muon.step()
        adam.step()
    for pa, pb in zip(a, b, strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-6, atol=1e-7)


def test_a_resumed_muon_continues_as_if_never_stopped():
    torch.manual_seed(0)
    net = TransformerNet(width=0.25, num_residual=1)
    x = torch.rand(2, 3, 24, 24)

    def train(model, opt, steps):
        for _ in range(steps):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()

    straight = TransformerNet(width=0.25, num_residual=1)
    straight.load_state_dict(net.state_dict())
    opt = Muon(straight.parameters(), lr=1e-2)
    train(straight, opt, 4)

    first = TransformerNet(width=0.25, num_residual=1)
    first.load_state_dict(net.state_dict())
    opt = Muon(first.parameters(), lr=1e-2)
    train(first, opt, 2)
    saved = opt.state_dict()
    assert any("momentum_buffer" in s for s in saved["state"].values())
    resumed = TransformerNet(width=0.25, num_residual=1)
    resumed.load_state_dict(first.state_dict())
    opt = Muon(resumed.parameters(), lr=1e-2)
    opt.load_state_dict(saved)
    train(resumed, opt, 2)
    for (name, p), q in zip(straight.named_parameters(), resumed.parameters(), strict=True):
        torch.testing.assert_close(p, q, msg=name)


def test_bad_settings_are_refused_with_the_value():
    with pytest.raises(ValueError, match="momentum=1.5"):
        Muon([nn.Parameter(torch.zeros(4, 4, 3, 3))], momentum=1.5)


def test_the_cpu_recipe_trains_with_muon(tmp_path, style_file):
    photos = tmp_path / "photos"
    for i in range(4):
        make_photo(photos / f"{i}.jpg", size=(40, 40), seed=i)
    cfg = compose(
        "train",
        [
            "experiment=cpu",
            "debug=tiny",
            f"data.root={photos}",
            f"style.image={style_file}",
            "trainer.max_steps=2",
        ],
    )
    assert cfg.optimizer._target_ == "fastns.muon.Muon"
    trainer, module, dm, _ = build(cfg, tmp_path / "run")
    before = {k: v.clone() for k, v in module.net.state_dict().items()}
    trainer.fit(module, datamodule=dm)
    assert isinstance(trainer.optimizers[0], Muon)
    moved = [k for k, v in module.net.state_dict().items() if not torch.equal(v, before[k])]
    assert "residuals.0.body.0.1.weight" in moved and "decoder.2.1.weight" in moved
