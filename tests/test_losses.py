"""Gram matrix, loss terms and PerceptualLoss behaviour."""

from __future__ import annotations

import pytest
import torch

from fastns.losses import (
    PerceptualLoss,
    _LowPrecisionSquaredDistance,
    _SelfProduct,
    content_loss,
    droplet_loss,
    gram_matrix,
    grid_loss,
    style_loss,
    tv_loss,
)
from fastns.metrics import grid_pattern, spike_share
from fastns.vgg import VGGFeatures


def test_gram_matrix_by_hand():
    # Two channels on a 1x2 image: F = [[1, 2], [3, 4]]; G = F F^T / (C*H*W) = F F^T / 4.
    f = torch.tensor([[[[1.0, 2.0]], [[3.0, 4.0]]]])
    expected = torch.tensor([[[5.0, 11.0], [11.0, 25.0]]]) / 4
    assert torch.allclose(gram_matrix(f), expected)


def test_gram_matrix_is_batched_symmetric_and_size_normalised():
    f = torch.rand(3, 4, 5, 6)
    g = gram_matrix(f)
    assert g.shape == (3, 4, 4)
    assert torch.allclose(g, g.transpose(1, 2))
    assert torch.allclose(g[1], f[1].reshape(4, -1) @ f[1].reshape(4, -1).T / (4 * 5 * 6))
    # Tiling the same texture twice leaves the normalised Gram matrix unchanged.
    assert torch.allclose(gram_matrix(torch.cat([f, f], dim=-1)), g, atol=1e-6)


def test_gram_matrix_stays_float32_under_autocast():
    f = torch.rand(1, 8, 4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        g = gram_matrix(f.bfloat16())
    assert g.dtype == torch.float32


def test_low_precision_grams_round_only_the_result():
    # Training's Grams: the bf16 product accumulates in float32, so only the (C, C) result is
    # rounded; a product accumulated in bf16 over 1024 positions would be far off.
    torch.manual_seed(0)
    f = torch.rand(2, 16, 32, 32).bfloat16()
    exact = gram_matrix(f.float())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast = gram_matrix(f, low_precision=True)
        assert gram_matrix(f).dtype == torch.float32
    assert fast.dtype == torch.float32
    assert ((fast - exact).abs() / exact.abs()).max() < 2**-8


@pytest.mark.parametrize("channels_last", [False, True])
def test_gram_matrix_gradient_is_exact_and_keeps_the_features_layout(channels_last):
    # The Gram's hand-written backward ((dG + dGᵀ) F in one product) against numerical
    # differentiation, for NCHW features and for the VGG's channels-last ones.
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    f64 = torch.rand(2, 3, 4, 5, dtype=torch.float64).to(memory_format=fmt).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda f: _SelfProduct.apply(f.reshape(2, 3, 20)), (f64,))
    # Through gram_matrix (float32): autograd's own differentiation of F Fᵀ, in the same layout.
    f = torch.rand(2, 3, 4, 5).to(memory_format=fmt).requires_grad_(True)
    target = torch.rand(2, 3, 3)
    (grad,) = torch.autograd.grad(style_loss(gram_matrix(f), target), f)
    flat = f.reshape(2, 3, 20)
    plain = torch.bmm(flat, flat.transpose(1, 2)) / 60
    (expected,) = torch.autograd.grad(style_loss(plain, target), f)
    assert torch.allclose(grad, expected, rtol=1e-5, atol=1e-8)
    assert grad.is_contiguous(memory_format=fmt)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_the_content_term_in_bf16_matches_float32_and_keeps_the_features_layout(layout):
    # Training takes the content term of bf16 features (autocast) in low precision: its value
    # must match the float32 mean squared error of the same numbers, and its gradient come back
    # in the features' own dtype and layout (no copies downstream).
    torch.manual_seed(0)
    f = torch.randn(4, 16, 12, 10).bfloat16().contiguous(memory_format=layout).requires_grad_(True)
    target = torch.randn(1, 16, 12, 10).bfloat16()
    loss = content_loss(f, target, low_precision=True)
    loss.backward()
    exact_f = f.detach().float().requires_grad_(True)
    exact = torch.nn.functional.mse_loss(exact_f, target.float().expand_as(exact_f))
    exact.backward()
    assert loss.dtype == torch.float32
    assert abs(loss.item() - exact.item()) < 2**-8 * exact.item()
    assert f.grad.dtype == torch.bfloat16 and f.grad.is_contiguous(memory_format=layout)
    # Two bf16 roundings (the difference, then its product with 2/N), each relative to the
    # element's own gradient, not to the features: small differences stay accurate.
    assert torch.allclose(f.grad.float(), exact_f.grad, rtol=2**-6, atol=0)
    # By default (Gatys optimisation, evaluation) the bf16 features' difference is exact.
    assert torch.equal(content_loss(f, target), exact)
    a = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    b = torch.randn(1, 3, 4, 5, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a: _LowPrecisionSquaredDistance.apply(a, b), (a,))


def test_term_functions_are_zero_exactly_when_they_should_be():
    a, b = torch.rand(2, 8, 6, 6), torch.rand(2, 8, 6, 6)
    assert content_loss(a, a) == 0 and content_loss(a, b) > 0
    assert torch.allclose(content_loss(a, b), ((a - b) ** 2).mean())
    assert style_loss(gram_matrix(a), gram_matrix(a)) == 0 and style_loss(gram_matrix(a), gram_matrix(b)) > 0
    # Targets of batch 1 broadcast over the batch (the training case).
    assert style_loss(gram_matrix(a), gram_matrix(a[:1])) > 0
    flat = torch.full((1, 3, 8, 8), 0.3)
    assert tv_loss(flat) == 0
    ramp = torch.arange(4.0).view(1, 1, 1, 4).expand(1, 3, 2, 4)
    assert torch.isclose(tv_loss(ramp), torch.tensor(1.0))  # horizontal differences of 1, none vertical


def make_loss(**kw) -> PerceptualLoss:
    args = dict(
        content_layers={"relu2_2": 1.0},
        style_layers={"relu1_2": 1.0, "relu2_2": 0.5},
        content_weight=2.0,
        style_weight=100.0,
        tv_weight=0.1,
        vgg={"arch": "vgg16", "weights": "random"},
    )
    args.update(kw)
    return PerceptualLoss(**args)


def test_perceptual_loss_returns_named_terms_that_add_up():
    loss = make_loss()
    style, content, image = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 24, 24), torch.rand(1, 3, 24, 24)
    loss.set_style(style)
    loss.set_content(content)
    terms = loss(image)
    assert set(terms) == {
        "content/relu2_2",
        "style/relu1_2",
        "style/relu2_2",
        "tv",
        "content",
        "style",
        "total",
    }
    assert all(t.dim() == 0 and torch.isfinite(t) and t > 0 for t in terms.values())
    assert torch.isclose(terms["content"], terms["content/relu2_2"])
    assert torch.isclose(terms["style"], terms["style/relu1_2"] + terms["style/relu2_2"])
    assert torch.isclose(terms["total"], terms["content"] + terms["style"] + terms["tv"])
    # Each term carries its weights: alpha * w_l * MSE.
    f = loss.encoder(image)["relu2_2"]
    c = loss.encoder(content)["relu2_2"]
    assert torch.isclose(terms["content/relu2_2"], 2.0 * ((f - c) ** 2).mean(), rtol=1e-4)


def test_loss_is_zero_at_the_targets():
    loss = make_loss(tv_weight=0.0)
    img = torch.rand(1, 3, 24, 24)
    loss.set_style(img)
    loss.set_content(img)
    assert loss(img)["total"] < 1e-8
    assert loss(torch.rand(1, 3, 24, 24))["total"] > 0


def test_style_targets_are_computed_once():
    loss = make_loss()
    calls = []
    loss.encoder.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    loss.set_style(torch.rand(1, 3, 32, 32))
    assert len(calls) == 1
    batch, content = torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16)
    for _ in range(3):
        loss(batch, content)  # training: content changes per batch, the style target does not
    assert len(calls) == 1 + 3 * 2  # per call: one pass for the content target, one for the output


def test_training_mode_content_per_batch_and_batch_broadcast():
    loss = make_loss(tv_weight=0.0)
    loss.set_style(torch.rand(1, 3, 32, 32))
    content = torch.rand(3, 3, 16, 16)
    terms = loss(content, content)
    assert terms["content"] == 0 and terms["style"] > 0
    output = content.clone().requires_grad_(True)  # stands for a network's output
    loss(output, content)["total"].backward()
    assert output.grad.abs().sum() > 0


def test_blend_weights_blend_gram_targets():
    a, b = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 40, 28)
    loss = make_loss()
    ga, gb = loss.style_grams(a), loss.style_grams(b)
    loss.set_style([a, b], blend_weights=[3, 1])  # normalised to 0.75 / 0.25
    for name in ga:
        assert torch.allclose(loss.style_targets[name], 0.75 * ga[name] + 0.25 * gb[name], atol=1e-6)
    loss.set_style([a, b], blend_weights=[1, 0])
    for name in ga:
        assert torch.allclose(loss.style_targets[name], ga[name])
    with pytest.raises(Exception, match="blend_weights"):
        loss.set_style([a, b], blend_weights=[1])


def test_texture_mode_has_no_content_terms():
    loss = make_loss()
    loss.set_style(torch.rand(1, 3, 32, 32))
    terms = loss(torch.rand(1, 3, 16, 16))
    assert not any(k.startswith("content/") for k in terms) and terms["content"] == 0


def test_style_must_be_set_first():
    with pytest.raises(RuntimeError, match="set_style"):
        make_loss()(torch.rand(1, 3, 16, 16))


def test_gradient_flows_to_the_image_only():
    loss = make_loss()
    loss.set_style(torch.rand(1, 3, 32, 32))
    img = torch.rand(1, 3, 16, 16, requires_grad=True)
    loss(img, torch.rand(1, 3, 16, 16))["total"].backward()
    assert img.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss.parameters())


def test_shares_a_given_extractor_and_checks_its_layers():
    vgg = VGGFeatures(["relu1_2", "relu2_2"], arch="vgg16", weights="random")
    loss = PerceptualLoss(["relu2_2"], ["relu1_2"], vgg=vgg)
    assert loss.encoder is vgg
    with pytest.raises(Exception, match="does not provide layers"):
        PerceptualLoss(["relu3_3"], ["relu1_2"], vgg=vgg)


def test_config_round_trip():
    loss = make_loss()
    again = PerceptualLoss(**{**loss.config(), "vgg": {**loss.config()["vgg"]}})
    assert again.config() == loss.config()


def test_normalised_terms_do_not_depend_on_the_vgg_activation_scale():
    """normalize=True makes every term a relative error: scaling all activations changes nothing."""
    style, content, image = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 24, 24), torch.rand(1, 3, 24, 24)
    results = {}
    for normalize in (False, True):
        for k in (1.0, 10.0):
            loss = make_loss(normalize=normalize, tv_weight=0.0)
            with torch.no_grad():  # zero biases (torchvision's init) + ReLU/max-pool: features scale by k
                loss.encoder.features[0].weight.mul_(k)
            loss.set_style(style)
            loss.set_content(content)
            results[normalize, k] = loss(image)
    for name in ("content/relu2_2", "style/relu1_2", "style/relu2_2"):
        assert torch.isclose(results[True, 1.0][name], results[True, 10.0][name], rtol=1e-4), name
        assert not torch.isclose(results[False, 1.0][name], results[False, 10.0][name], rtol=0.5), name
    assert results[True, 1.0]["style/relu1_2"] < 10  # O(1) relative errors


def test_grid_loss_sees_a_fixed_pattern_and_not_image_detail():
    torch.manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.rand(2, 3, 8, 8), size=(64, 64), mode="bicubic")
    detail = smooth + 0.05 * torch.randn(2, 3, 64, 64)  # irregular fine detail: no fixed period
    hatch = torch.zeros(1, 1, 4, 4)
    hatch[..., 0, :] = hatch[..., :, 0] = 0.03  # a 4 x 4 px cross-hatch, as the network makes
    hatched = smooth + hatch.repeat(1, 1, 16, 16)
    assert grid_loss(smooth) < 1e-6
    assert grid_loss(hatched) > 10 * grid_loss(detail)
    # On the same scale as the reported measure: sqrt of the loss x 255 ~ grid_pattern (1/255 units).
    assert (grid_loss(hatched).sqrt() * 255).item() == pytest.approx(
        float(grid_pattern(hatched).mean()), rel=0.3
    )
    x = hatched.clone().requires_grad_()
    grid_loss(x).backward()  # its gradient removes the pattern
    assert grid_loss(hatched - 10 * x.grad) < grid_loss(hatched)


def test_droplet_loss_charges_a_spiked_channel_and_not_ordinary_features():
    torch.manual_seed(0)
    features = torch.randn(2, 4, 64, 64)  # spread variance: a share of ~0.05, under the free 0.2
    assert droplet_loss([features]) == 0
    spiked = features.clone()
    spiked[:, 1, 10:14, 20:24] += 40.0  # one strong local spot, as a droplet
    x = spiked.clone().requires_grad_()
    before = droplet_loss([x, features])
    assert before > 0.05  # one channel of four over two layers: (share ~0.86 - 0.2) / 8
    before.backward()
    assert x.grad[:, 0].abs().max() == 0  # ordinary channels get no gradient
    after = spiked - 20 * x.grad
    assert spike_share(after)[0, 1] < spike_share(spiked)[0, 1]  # its gradient flattens the spot
    with pytest.raises(ValueError, match="at least one"):
        droplet_loss([])


def test_droplet_loss_sees_a_blob_on_its_sparse_grid_as_on_every_pixel():
    torch.manual_seed(0)
    spiked = torch.randn(1, 2, 64, 64)
    spiked[:, 1, 30:36, 11:17] += 40.0  # a droplet is a blob, wider than the stride
    every_pixel = droplet_loss([spiked], stride=1)
    assert every_pixel > 0.1
    assert droplet_loss([spiked]) == pytest.approx(float(every_pixel), rel=0.1)
    with pytest.raises(ValueError, match="stride"):
        droplet_loss([spiked], stride=0)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("stride", [1, 2, 3])
def test_droplet_loss_gradient_is_autograds_gradient_of_the_spike_share(layout, stride):
    # The term's closed-form backward against autograd through the measurement it charges for.
    torch.manual_seed(0)
    features = torch.randn(2, 5, 29, 34)
    features[:, 1, 8:14, 20:26] += 30.0  # a droplet: charged
    features[0, 3] = 0.5  # a constant channel (exactly: 0.5 is its float mean): share 1, no gradient
    features = features.contiguous(memory_format=layout)

    x = features.clone().requires_grad_()
    droplet_loss([x], free=0.0, stride=stride).backward()
    ref = features.clone().requires_grad_()
    shares = spike_share(ref[..., ::stride, ::stride])
    (shares.clamp_min(0.0).mean()).backward()

    assert x.grad.is_contiguous(memory_format=layout)
    assert x.grad[:, 1].abs().max() > 1e-4  # the spiked channel is pushed
    assert x.grad[0, 3].abs().max() == 0
    torch.testing.assert_close(x.grad, ref.grad, rtol=1e-4, atol=1e-7)
    if stride > 1:  # rows and columns off the sparse grid get nothing
        assert x.grad[..., 1::stride, :].abs().max() == 0


def test_droplet_loss_keeps_a_bf16_activations_dtype_in_its_gradient():
    torch.manual_seed(0)
    features = torch.randn(1, 3, 32, 32)
    features[:, 0, 4:10, 4:10] += 20.0
    x = features.bfloat16().requires_grad_()
    droplet_loss([x]).backward()
    ref = features.bfloat16().requires_grad_()
    (spike_share(ref[..., ::2, ::2]) - 0.1).clamp_min(0.0).mean().backward()
    assert x.grad.dtype == torch.bfloat16
    torch.testing.assert_close(x.grad.float(), ref.grad.float(), rtol=1e-2, atol=1e-6)


def test_grid_weight_adds_a_named_term_to_the_total():
    loss = make_loss(grid_weight=100.0)
    loss.set_style(torch.rand(1, 3, 32, 32))
    content = torch.rand(2, 3, 32, 32)
    terms = loss(content, content)
    assert terms["grid"] > 0
    assert torch.isclose(terms["total"], terms["content"] + terms["style"] + terms["tv"] + terms["grid"])
    plain = make_loss()
    plain.set_style(torch.rand(1, 3, 32, 32))
    assert "grid" not in plain(content, content)  # off by default: the papers' loss is unchanged
    assert PerceptualLoss.from_config(loss.config()).grid_weight == 100.0
