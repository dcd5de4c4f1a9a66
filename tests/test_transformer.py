"""The transformer network: shapes, range, gradients, configurations."""

from __future__ import annotations

import pytest
import torch

from fastns.errors import ConfigError
from fastns.losses import PerceptualLoss
from fastns.transformer import NORM_LAYERS, TransformerNet, fold_reflection, kept_region, norm_inputs


@pytest.mark.parametrize("size", [(32, 32), (33, 47), (17, 64), (8, 9)])
def test_output_has_input_shape_and_range(size):
    net = TransformerNet(width=0.25)
    x = torch.rand(2, 3, *size)
    y = net(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all() and y.min() >= 0 and y.max() <= 1


@pytest.mark.parametrize(
    "norm, upsample",
    [
        ("instance", "nearest"),
        ("instance", "bilinear"),
        ("batch", "transpose"),
        ("instance", "transpose"),
        ("demod", "nearest"),
    ],
)
def test_every_parameter_gets_a_gradient_and_vgg_none(norm, upsample):
    body = {"body_norm": "demod"} if norm == "demod" else {"norm": norm}
    net = TransformerNet(width=0.25, num_residual=2, upsample=upsample, **body)
    loss = PerceptualLoss(
        ["relu2_2"],
        ["relu1_2", "relu2_2"],
        style_weight=1e3,
        tv_weight=1e-2,
        vgg={"arch": "vgg16", "weights": "random"},
    )
    loss.set_style(torch.rand(1, 3, 32, 32))
    content = torch.rand(2, 3, 32, 32)
    loss(net(content), content)["total"].backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in loss.parameters())


def test_width_multiplier_and_paper_size():
    full, half = TransformerNet(), TransformerNet(width=0.5)
    n_full = sum(p.numel() for p in full.parameters())
    n_half = sum(p.numel() for p in half.parameters())
    assert 1.5e6 < n_full < 1.8e6  # ~1.68M parameters in the paper's network
    assert 3.5 < n_full / n_half < 4.5  # half width: ~4x fewer parameters
    assert full.encoder[0][1].out_channels == 32 and half.encoder[0][1].out_channels == 16


def test_config_rebuilds_the_network():
    net = TransformerNet(width=0.5, num_residual=3, norm="batch", upsample="transpose")
    again = TransformerNet(**net.config)
    assert again.config == net.config
    again.load_state_dict(net.state_dict())  # same architecture, strictly


def test_instance_norm_output_does_not_depend_on_the_batch():
    net = TransformerNet(width=0.25).eval()
    a, b = torch.rand(1, 3, 24, 24), torch.rand(1, 3, 24, 24)
    with torch.no_grad():
        assert torch.allclose(net(a), net(torch.cat([a, b]))[:1], atol=1e-6)


@pytest.mark.parametrize(
    "kw",
    [
        {"norm": "layer"},
        {"upsample": "bicubic"},
        {"width": 0},
        {"num_residual": -1},
        {"body_norm": "layer"},
        {"body_norm": "demod", "upsample": "transpose"},
        {"input_noise": -0.1},
    ],
)
def test_bad_arguments(kw):
    with pytest.raises(ConfigError):
        TransformerNet(**kw)


def test_a_stem_norm_hides_the_photos_light_and_stem_norm_false_shows_it():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 32, 32) * 0.5 + 0.25
    darker = x * 0.6 + torch.tensor([0.05, 0.0, -0.05]).view(1, 3, 1, 1)  # dimmer, with a colour cast
    paper = TransformerNet(width=0.25, num_residual=1).eval()
    with torch.no_grad():
        # The instance norm after the first convolution removes brightness, contrast and cast exactly.
        assert (paper(x) - paper(darker)).abs().max() < 1e-4
        seeing = TransformerNet(width=0.25, num_residual=1, stem_norm=False).eval()
        assert (seeing(x) - seeing(darker)).abs().mean() > 1e-3
    assert seeing.config["stem_norm"] is False and "stem_norm" not in paper.config
    assert TransformerNet(**seeing.config).config == seeing.config


def test_a_demodulated_body_has_no_image_wide_statistics():
    """body_norm=demod: a spike in one corner of the residual blocks' input leaves the far corner's
    output alone, as it does not with instance norms, whose statistics it would dominate (the
    droplets of docs/training.md)."""
    torch.manual_seed(0)
    feats = torch.rand(1, 32, 24, 24)
    spiked = feats.clone()
    spiked[:, :, :2, :2] += 50.0
    for body_norm, moves in (("instance", True), ("demod", False)):
        net = TransformerNet(width=0.25, num_residual=2, body_norm=body_norm).eval()
        with torch.no_grad():
            a, b = (net.decoder(net.residuals(f)) for f in (feats, spiked))  # (1, 3, 96, 96) scores
        far = (a - b)[..., -16:, -16:].abs().max()
        assert (far > 1e-3) if moves else (far == 0), (body_norm, float(far))
    assert net.config["body_norm"] == "demod" and "body_norm" not in TransformerNet().config
    again = TransformerNet(**net.config)
    again.load_state_dict(net.state_dict())  # the model file's description rebuilds it


def test_a_demodulated_body_blends_styles_by_their_gamma_and_beta():
    torch.manual_seed(0)
    net = TransformerNet(width=0.25, num_residual=1, num_styles=2, body_norm="demod").eval()
    for p in net.parameters():
        if p.dim() == 2:  # every (N, C) γ, β: the two styles differ
            torch.nn.init.normal_(p, 1.0, 0.5)
    x = torch.rand(1, 3, 24, 24)
    single = TransformerNet(width=0.25, num_residual=1, body_norm="demod").eval()
    shapes = {k: v.shape for k, v in single.state_dict().items()}
    single.load_state_dict(
        {k: (v.mean(0) if v.dim() == 2 else v).reshape(shapes[k]) for k, v in net.state_dict().items()}
    )
    with torch.no_grad():
        assert (net(x, style=torch.tensor([0.5, 0.5])) - single(x)).abs().max() < 1e-5
        assert (
            net(x, style=torch.tensor([1.0, 0.0])) - net(x, style=torch.tensor([0.0, 1.0]))
        ).abs().max() > 1e-3


@pytest.mark.parametrize("kw", [{}, {"body_norm": "demod"}, {"num_styles": 2}])
def test_norm_inputs_sees_every_norm_in_order_and_leaves_no_hook(kw):
    net = TransformerNet(width=0.25, **kw)
    norms = [m for m in net.modules() if isinstance(m, NORM_LAYERS)]
    x = torch.rand(1, 3, 32, 32)
    with norm_inputs(net) as seen:
        out = net(x).sum()
    assert len(seen) == len(norms) and seen[0].shape[-1] == 32 and seen[-1].shape[-1] == 32
    assert all(t.requires_grad for t in seen)  # attached: a term on them trains the network
    out.backward()
    assert not any(m._forward_pre_hooks for m in net.modules())
    with norm_inputs(net) as again:
        pass
    net(x)
    assert again == []  # nothing is collected outside the block


def test_input_noise_paints_a_flat_area_the_same_way_every_time():
    torch.manual_seed(0)
    plain = TransformerNet(width=0.25, num_residual=1).eval()
    noisy = TransformerNet(width=0.25, num_residual=1, input_noise=0.1).eval()
    noisy.load_state_dict(plain.state_dict())  # the same weights: the noise is not in the state dict
    sky = torch.full((1, 3, 300, 280), 0.95)  # flat for more than the receptive field
    with torch.no_grad():
        flat, painted = plain(sky), noisy(sky)
        # Without noise a flat input gives a nearly flat output; with it, texture.
        assert painted[..., 40:-40, 40:-40].std() > 5 * flat[..., 40:-40, 40:-40].std()
        assert torch.equal(painted, noisy(sky))  # a fixed grain: the same image, the same output
        rebuilt = TransformerNet(**noisy.config).eval()
        rebuilt.load_state_dict(noisy.state_dict())
        assert torch.equal(rebuilt(sky), painted)  # the description rebuilds the grain
        grain = noisy.with_grain(sky) - sky
        assert torch.equal(grain[..., :44, :], grain[..., 256:, :])  # tiled by position, 256 px apart
        noisy.train()
        assert not torch.equal(noisy.with_grain(sky), noisy.with_grain(sky))  # training: fresh noise
    noisy.set_input_noise(0.0)
    assert "input_noise" not in noisy.config and torch.equal(noisy.eval()(sky), flat)


def test_padding_keeps_bf16_under_cpu_autocast_and_changes_no_output():
    """CPU autocast runs reflection padding in float32; the network's pads stay in bf16 (a
    bf16-mixed training step would otherwise convert its largest maps twice over) and give the
    convolutions the same input, so the output is the same to the bit."""
    torch.manual_seed(0)
    net = TransformerNet(width=0.25, num_residual=1)
    plain = TransformerNet(width=0.25, num_residual=1)
    plain.load_state_dict(net.state_dict())
    for module in plain.modules():
        if isinstance(module, torch.nn.ReflectionPad2d):
            module.__class__ = torch.nn.ReflectionPad2d  # what autocast does to a stock pad
    dtypes = []
    hooks = [
        m.register_forward_hook(lambda m, i, o: dtypes.append((i[0].dtype, o.dtype)))
        for m in net.modules()
        if isinstance(m, torch.nn.ReflectionPad2d)
    ]
    x = torch.rand(2, 3, 40, 36)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = net(x)
        y_plain = plain(x)
    for h in hooks:
        h.remove()
    assert (torch.bfloat16, torch.bfloat16) in dtypes
    assert all(i == o for i, o in dtypes), dtypes
    assert torch.equal(y, y_plain)
    exact = TransformerNet(width=0.25, num_residual=1)
    exact.load_state_dict(net.state_dict())
    exact(x).mean().backward()
    y.float().mean().backward()
    y_plain.float().mean().backward()

    def grads(model):
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    # Only the pads' backward adds in bf16 now, as the convolutions' own gradients already do: the
    # gradient is as far from the float32 one as before.
    off_now = (grads(net) - grads(exact)).norm()
    off_before = (grads(plain) - grads(exact)).norm()
    assert off_now <= 1.1 * off_before, (off_now, off_before)
    # Outside autocast, nothing changes.
    assert torch.equal(net(x), plain(x))


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("padding", [(1, 1, 1, 1), (4, 4, 4, 4), (2, 0, 3, 1), (0, 3, 0, 2)])
def test_the_reflection_fold_is_the_gradient_of_reflection_padding(padding, layout):
    x = torch.randn(2, 3, 9, 11, dtype=torch.float64).contiguous(memory_format=layout).requires_grad_()
    y = torch.nn.functional.pad(x, padding, "reflect")
    grad = torch.randn_like(y)
    (expected,) = torch.autograd.grad(y, x, grad)
    folded = fold_reflection(grad, padding)
    assert torch.allclose(folded, expected, rtol=0, atol=1e-12)
    assert folded.is_contiguous(memory_format=layout)  # the next layer's gradient keeps its layout


@pytest.mark.parametrize("num_styles", [1, 3])
def test_instance_norms_keep_a_channels_last_map_so_and_compute_the_same(num_styles):
    """Training runs the network channels-last on a CPU: every instance norm must give what the
    NCHW network gives (values and every gradient) without turning the maps back to NCHW, which
    costs each norm a copy out and the next convolution a copy back, both ways."""
    torch.manual_seed(0)
    net = TransformerNet(width=0.25, num_residual=1, num_styles=num_styles)
    with torch.no_grad():  # distinct γ, β per style, so a wrong row would show
        for p in net.parameters():
            if p.dim() <= 2:
                p.add_(0.3 * torch.randn_like(p))
    cl = TransformerNet(width=0.25, num_residual=1, num_styles=num_styles)
    cl.load_state_dict(net.state_dict())
    cl.to(memory_format=torch.channels_last)
    layouts = []
    for m in cl.modules():
        if isinstance(m, NORM_LAYERS):
            m.register_forward_hook(
                lambda m, i, o: layouts.append(o.is_contiguous(memory_format=torch.channels_last))
            )
    x = torch.rand(3, 3, 24, 20)
    style = torch.eye(3)[[2, 0, 1]] if num_styles == 3 else None
    y = net(x, style=style)
    y_cl = cl(x.contiguous(memory_format=torch.channels_last), style=style)
    assert layouts and all(layouts)
    assert torch.allclose(y, y_cl, atol=1e-5)
    y.square().mean().backward()
    y_cl.square().mean().backward()
    for (name, p), q in zip(net.named_parameters(), cl.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-6), name
    # A single image and a map without gradients take the same path and agree as well.
    with torch.no_grad():
        one = style[:1] if style is not None else None
        assert torch.allclose(
            net(x[:1], style=one),
            cl(x[:1].contiguous(memory_format=torch.channels_last), style=one),
            atol=1e-5,
        )


def test_the_scripted_network_is_the_plain_one():
    """TorchScript compiles only the NCHW path of the norms (the channels-last one is Python)."""
    torch.manual_seed(0)
    net = TransformerNet(width=0.25, num_residual=1).eval()
    scripted = torch.jit.script(net)
    x = torch.rand(2, 3, 20, 28)
    assert torch.allclose(scripted(x), net(x), atol=1e-6)


def test_kept_region_follows_the_maps_stride():
    net = TransformerNet(width=0.25, num_residual=1)
    full = torch.arange(56 * 64.0).reshape(1, 1, 56, 64)  # 40 x 48 with border 8: (56, 64) padded
    assert torch.equal(kept_region(full, (40, 48), 8, net), full[..., 8:48, 8:56])
    quarter = full[..., ::4, ::4]  # an encoder-stride map (the body_norm=demod network's last norm)
    assert torch.equal(kept_region(quarter, (40, 48), 8, net), quarter[..., 2:12, 2:14])
