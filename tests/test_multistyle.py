"""One network, many styles (conditional instance norm, Dumoulin et al. 2017): the network, its model
file, training several styles and adding one, stylising with style=/sheet=, and the exports."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file

from fastns.errors import ConfigError
from fastns.modelfile import load_model, read_info, save_model
from fastns.style import resolve_styles
from fastns.stylize import Stylizer, run_webcam
from fastns.train import build, train
from fastns.transformer import CondInstanceNorm2d, TransformerNet

from .conftest import ROOT, compose, make_photo
from .conftest import run_script as run_any_script
from .test_stylize import fake_cv2, make_video, probe
from .test_train import NO_NOISE, events, photos, tiny  # noqa: F401 (photos: a fixture)

DATA = Path(__file__).parent / "data"
STYLIZE = ROOT / "scripts" / "stylize.py"
EXPORT = ROOT / "scripts" / "export.py"


def multi_net(num_styles: int = 3, seed: int = 0, **kwargs) -> TransformerNet:
    """A small random network of several styles, each style's γ, β different."""
    torch.manual_seed(seed)
    net = TransformerNet(width=0.25, num_residual=1, num_styles=num_styles, **kwargs)
    for m in net.modules():
        if isinstance(m, CondInstanceNorm2d):
            torch.nn.init.normal_(m.weight, 1.0, 0.3)
            torch.nn.init.normal_(m.bias, 0.0, 0.3)
    return net.eval()


def single_of(net: TransformerNet, weights: torch.Tensor) -> TransformerNet:
    """The single-style network whose γ, β are ``weights`` @ the multi-style network's."""
    config = {k: v for k, v in net.config.items() if k != "num_styles"}
    single = TransformerNet(**config).eval()
    state = {k: (weights @ v if v.dim() == 2 else v) for k, v in net.state_dict().items()}
    single.load_state_dict(state)
    return single


def style_images(tmp_path: Path) -> list[Path]:
    """Two different 'paintings'."""
    paths = []
    yy, xx = np.mgrid[0:40, 0:40]
    for name, f, scale in (("stripes", np.sin, 2.0), ("waves", np.cos, 5.0)):
        img = np.stack([(f(xx / scale) + 1) / 2, (f((xx + yy) / 3.0) + 1) / 2, (f(yy / scale) + 1) / 4], -1)
        if name == "waves":
            img = img[..., ::-1]
        path = tmp_path / f"{name}.png"
        Image.fromarray((img * 255).astype(np.uint8), "RGB").save(path)
        paths.append(path)
    return paths


# -- the network --------------------------------------------------------------------------------


@pytest.mark.parametrize("border", [0, 32])
def test_a_one_hot_style_is_the_single_style_network_with_its_gamma_beta(border):
    net = multi_net(3)
    x = torch.rand(2, 3, 37, 29)
    for k in range(3):
        one_hot = torch.eye(3)[k]
        single = single_of(net, one_hot)
        with torch.no_grad():
            assert (net(x, border, style=one_hot) - single(x, border)).abs().max() <= 1e-6
            # Per-image weights (B, N): each image its own style.
            both = net(x, border, style=torch.stack([one_hot, torch.eye(3)[(k + 1) % 3]]))
            assert (both[0] - single(x[:1], border)[0]).abs().max() <= 1e-6
    with torch.no_grad():  # no weights: the first style
        assert torch.equal(net(x), net(x, style=torch.eye(3)[0]))


def test_a_50_50_blend_is_the_network_with_averaged_gamma_beta():
    net = multi_net(3)
    half = torch.tensor([0.5, 0.0, 0.5])
    x = torch.rand(1, 3, 33, 40)
    with torch.no_grad():
        blend = net(x, style=half)
        assert (blend - single_of(net, half)(x)).abs().max() <= 1e-6
        assert (blend - net(x, style=torch.eye(3)[0])).abs().max() > 1e-3  # not just one of them


def test_a_single_style_network_is_unchanged():
    net = TransformerNet(width=0.25, num_residual=1)
    assert "num_styles" not in net.config and net.num_styles == 1
    assert not any(isinstance(m, CondInstanceNorm2d) for m in net.modules())
    multi = TransformerNet(width=0.25, num_residual=1, num_styles=2)
    assert net.state_dict().keys() == multi.state_dict().keys()  # the same names, (N, C) γ and β
    assert multi.config["num_styles"] == 2
    extra = sum(p.numel() for p in multi.parameters()) - sum(p.numel() for p in net.parameters())
    assert 0 < extra < 0.05 * sum(p.numel() for p in net.parameters())
    with pytest.raises(ConfigError, match="norm=instance"):
        TransformerNet(num_styles=2, norm="batch")


def test_a_model_file_of_todays_single_style_format_loads_bit_identical():
    # Written by the code before networks of several styles (tests/data, made with the previous commit).
    net, info = load_model(DATA / "single_style_v1.safetensors")
    io = load_file(str(DATA / "single_style_v1_io.safetensors"))
    assert info.style["name"] == "old" and info.styles == [] and info.style_names == ["old"]
    assert net.num_styles == 1 and "num_styles" not in net.config
    with torch.no_grad():
        assert torch.equal(net(io["input"]), io["output"])
        assert torch.equal(net(io["input"], 32), io["output_border32"])
    stylizer = Stylizer(net, info=info, device="cpu", precision="fp32")
    assert stylizer.styles == ["old"]
    assert torch.equal(stylizer(io["input"]), stylizer(io["input"], style="old"))  # its own name works too
    with pytest.raises(ConfigError, match="no such style in this network; the network's styles: old"):
        stylizer(io["input"], style="candy")


def test_a_multi_style_model_file_carries_its_styles(tmp_path):
    net = multi_net(2)
    styles = [
        {"name": "stripes", "sources": ["s.png"], "size": 32},
        {"name": "waves", "sources": ["w.png"], "size": 64},
    ]
    path = save_model(tmp_path / "two.safetensors", net, styles=styles, training={"steps": 3})
    loaded, info = load_model(path)
    assert loaded.num_styles == 2 and info.num_styles == 2
    assert (
        info.styles == styles
        and info.style_names == ["stripes", "waves"]
        and info.style["name"] == "stripes, waves"
    )
    assert read_info(path).style_names == ["stripes", "waves"]
    x = torch.rand(1, 3, 24, 24)
    with torch.no_grad():
        assert torch.equal(loaded(x, style=torch.tensor([0.0, 1.0])), net(x, style=torch.tensor([0.0, 1.0])))


@pytest.mark.parametrize("kind", ["fp32", "bf16", "tiled", "plain_layout"])
def test_the_stylizer_folds_the_mixed_gamma_beta(kind, tmp_path):
    net = multi_net(3)
    blend = {"style1": 0.25, "style3": 0.75}
    weights = torch.tensor([0.25, 0.0, 0.75])
    precision = "bf16" if kind == "bf16" else "fp32"
    stylizer = Stylizer(net, device="cpu", precision=precision, channels_last=kind != "plain_layout")
    x = torch.rand(1, 3, 150, 140) if kind == "tiled" else torch.rand(2, 3, 41, 38)
    with torch.no_grad():
        expected = net(F.pad(x, (32,) * 4, mode="reflect"), style=weights)[..., 32:-32, 32:-32]
    got = stylizer(x, style=blend, tile=128 if kind == "tiled" else None)
    tolerance = 2 / 255 if kind == "bf16" else 5e-5
    assert (
        (got - expected).abs().mean() <= tolerance
        if kind == "bf16"
        else (got - expected).abs().max() <= tolerance
    )
    # Weights are normalised: {a: 1, c: 3} is the same blend.
    assert torch.equal(stylizer.style_weights({"style1": 1, "style3": 3}), stylizer.style_weights(blend))


def test_unknown_styles_and_bad_weights_are_one_line_errors():
    stylizer = Stylizer(multi_net(2), device="cpu")
    x = torch.rand(1, 3, 20, 20)
    for style, message in [
        ("candy", "style=candy: no such style in this network; the network's styles: style1, style2"),
        ({"style1": 0.5, "nope": 0.5}, "style=nope: no such style"),
        ({"style1": -1, "style2": 2}, "weights must be >= 0"),
        ([1.0, 0.0, 0.0], "3 weights for 2 styles"),
    ]:
        with pytest.raises(ConfigError) as e:
            stylizer(x, style=style)
        assert message in str(e.value) and "\n" not in str(e.value)


# -- training -----------------------------------------------------------------------------------


def test_styles_take_presets_and_image_paths(tmp_path):
    a, b = style_images(tmp_path)
    configs = resolve_styles(["candy", str(a)], {"image": "x", "size": 48, "scale": None, "name": None})
    assert (
        configs[0]["name"] == "candy"
        and configs[0]["image"].startswith("https://")
        and configs[0]["size"] == 48
    )
    assert configs[1] == {"size": 48, "scale": None, "image": str(a)}
    with pytest.raises(ConfigError, match="'vangogh' is neither a style preset .*candy.* nor an image file"):
        resolve_styles(["vangogh"], {})
    with pytest.raises(ConfigError, match="two styles are named 'stripes'"):
        resolve_styles([str(a), str(a)], {})


@pytest.mark.integration
def test_two_styles_train_together_and_differ(tmp_path, photos):  # noqa: F811
    a, b = style_images(tmp_path)
    run_dir = tmp_path / "run"
    overrides = [o for o in tiny(photos, a, run_dir) if not o.startswith("style.image")]
    summary = train(compose("train", [*overrides, f"styles=[{a},{b}]"]))
    net, info = load_model(summary["model"])
    assert net.num_styles == 2 and info.style_names == ["stripes", "waves"]
    assert [s["sources"] for s in info.styles] == [[str(a)], [str(b)]]
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert (
            net(x, style=torch.tensor([1.0, 0.0])) - net(x, style=torch.tensor([0.0, 1.0]))
        ).abs().max() > 1e-4
    ea = events(run_dir)
    scalars = set(ea.Tags()["scalars"])
    for name in ("stripes", "waves"):
        assert f"val/loss/per_style/{name}/total" in scalars and f"val/loss/per_style/{name}/style" in scalars
    assert {"val/loss/total", "train/loss/total"} <= scalars
    assert any(t.startswith("train/loss/per_style/") for t in scalars)
    assert {"preview", "style/stripes", "style/waves"} <= set(ea.Tags()["images"])
    preview = ea.Images("preview")[-1]
    assert preview.height > 1.4 * preview.width  # 3 rows (photos, stripes, waves) of 2 previews


@pytest.mark.parametrize("sampling", ["batch", "image"])
def test_styles_are_drawn_per_batch_or_per_image_and_a_resumed_run_draws_the_same(tmp_path, photos, sampling):  # noqa: F811
    a, b = style_images(tmp_path)
    overrides = [o for o in tiny(photos, a, tmp_path / "run") if not o.startswith("style.image")]
    cfg = compose("train", [*overrides, f"styles=[{a},{b}]", f"style_sampling={sampling}"])
    _, module, _, _ = build(cfg, tmp_path / "run")
    draws = [module.draw_styles(4, step) for step in range(12)]
    assert draws == [module.draw_styles(4, step) for step in range(12)]  # from (seed, rank, step) only
    assert {k for d in draws for k in d} == {0, 1}
    mixed = [d for d in draws if len(set(d)) > 1]
    assert (not mixed) if sampling == "batch" else mixed


def test_a_batch_of_mixed_styles_has_the_mean_of_each_photos_own_style_loss(tmp_path, photos):  # noqa: F811
    a, b = style_images(tmp_path)
    overrides = [o for o in tiny(photos, a, tmp_path / "run") if not o.startswith("style.image")]
    _, module, _, _ = build(
        # Without jitter: a photo's loss window then does not depend on its place in the batch; without
        # the input's training noise, which each call draws afresh.
        compose(
            "train",
            [
                *overrides,
                f"styles=[{a},{b}]",
                "style_sampling=image",
                "loss_jitter=false",
                NO_NOISE,
            ],
        ),
        tmp_path,
    )
    torch.manual_seed(0)
    content = torch.rand(4, 3, 48, 48)
    styles = [0, 1, 1, 0]
    with torch.no_grad():
        stylised, terms = module.stylise_and_loss(content, styles)
        alone = [module.stylise_and_loss(content[i : i + 1], k) for i, k in enumerate(styles)]
    for i, (image, _) in enumerate(alone):  # each photo in its own style
        torch.testing.assert_close(stylised[i : i + 1], image, atol=1e-5, rtol=1e-4)
    # Style and TV are per-photo means. (The normalised content term divides by its targets' mean
    # square over the photos of one style, a batch statistic, so it is not a per-photo mean.)
    for name in ("style", "tv"):
        expected = sum(t[name] for _, t in alone) / len(alone)
        torch.testing.assert_close(terms[name], expected, rtol=1e-4, atol=1e-6)
    parts = terms["content"] + terms["style"] + terms["tv"] + terms.get("grid", 0)
    torch.testing.assert_close(terms["total"], parts)
    with torch.no_grad():  # and the two styles' losses differ, so the test could fail
        assert abs(float(alone[0][1]["style"] - module.stylise_and_loss(content[:1], 1)[1]["style"])) > 1e-3


def test_an_unknown_style_sampling_is_a_config_error(tmp_path, photos):  # noqa: F811
    a, b = style_images(tmp_path)
    overrides = [o for o in tiny(photos, a, tmp_path / "run") if not o.startswith("style.image")]
    with pytest.raises(ConfigError, match="style_sampling='photo' must be batch or image"):
        build(compose("train", [*overrides, f"styles=[{a},{b}]", "style_sampling=photo"]), tmp_path)


@pytest.mark.integration
def test_adding_a_style_trains_only_its_norms_and_keeps_the_others_bit_identical(tmp_path, photos):  # noqa: F811
    a, b = style_images(tmp_path)
    c = make_photo(tmp_path / "third.png", size=(40, 40), seed=9)
    overrides = [o for o in tiny(photos, a, tmp_path / "run") if not o.startswith("style.image")]
    first = train(compose("train", [*overrides, f"styles=[{a},{b}]"]))["model"]
    overrides = [o for o in tiny(photos, a, tmp_path / "run2") if not o.startswith("style.image")]
    summary = train(compose("train", [*overrides, f"styles=[{c}]", f"init_from={first}"]))
    old, _ = load_model(first)
    new, info = load_model(summary["model"])
    assert info.style_names == ["stripes", "waves", "third"] and new.num_styles == 3
    assert any(
        t.startswith("lr-") for t in events(tmp_path / "run2").Tags()["scalars"]
    )  # norms_lr's schedule
    x = torch.rand(2, 3, 36, 28)
    with torch.no_grad():
        for k in range(2):  # the existing styles: bit for bit
            assert torch.equal(new(x, 32, style=torch.eye(3)[k]), old(x, 32, style=torch.eye(2)[k]))
        assert (new(x, style=torch.eye(3)[2]) - new(x, style=torch.eye(3)[0])).abs().max() > 1e-5
    for name, value in old.state_dict().items():  # shared convolutions unchanged, old rows unchanged
        assert torch.equal(
            new.state_dict()[name][: value.shape[0]] if value.dim() == 2 else new.state_dict()[name], value
        )
    norms = [k for k, v in old.state_dict().items() if v.dim() == 2]
    assert any(
        not torch.equal(new.state_dict()[k][2], old.state_dict()[k].mean(0)) for k in norms
    )  # it trained

    # A single-style network grows the same way; all parameters with init_from adding styles is refused.
    single = save_model(
        tmp_path / "single.safetensors", TransformerNet(width=0.25, num_residual=1), style={"name": "one"}
    )
    cfg = compose("train", [*overrides, f"styles=[{c}]", f"init_from={single}"])
    _, module, _, _ = build(cfg, tmp_path / "run3")
    assert module.style_names == ["one", "third"] and module.net.num_styles == 2
    assert {n for n, p in module.net.named_parameters() if p.requires_grad} == set(norms)
    # γ, β alone train at norms_lr (10x the paper's rate), decayed along a cosine over the run.
    trainer, module, _, _ = build(cfg, tmp_path / "run3")
    module.trainer = trainer
    setup = module.configure_optimizers()
    assert setup["optimizer"].param_groups[0]["lr"] == pytest.approx(1e-2)
    scheduler = setup["lr_scheduler"]["scheduler"]
    assert (
        isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR)
        and scheduler.T_max == trainer.max_steps
    )
    cfg = compose("train", [*overrides, f"styles=[{c}]", f"init_from={single}", "norms_lr=null"])
    assert build(cfg, tmp_path / "run3")[1].configure_optimizers().param_groups[0]["lr"] == pytest.approx(
        1e-3
    )
    cfg = compose("train", [*overrides, f"styles=[{c}]", f"init_from={single}", "train_only=all"])
    with pytest.raises(ConfigError, match="train_only=all with init_from adding styles"):
        build(cfg, tmp_path / "run3")


# -- stylize and export -------------------------------------------------------------------------


@pytest.fixture
def two_style_file(tmp_path) -> Path:
    styles = [{"name": "stripes", "sources": ["s.png"]}, {"name": "waves", "sources": ["w.png"]}]
    return save_model(tmp_path / "two.safetensors", multi_net(2), styles=styles)


def stylize(monkeypatch, capsys, args: list[str]) -> tuple[int, str, str]:
    return run_any_script(STYLIZE, [*args, "progress=false"], monkeypatch, capsys)


@pytest.mark.integration
def test_cli_style_blend_all_and_sheet(monkeypatch, capsys, tmp_path, two_style_file):
    photo = make_photo(tmp_path / "photo.png", size=(48, 36), seed=1)
    model = f"model={two_style_file}"
    stylizer = Stylizer.load(two_style_file, device="cpu")
    content = torch.from_numpy(np.array(Image.open(photo))).permute(2, 0, 1)[None].float() / 255

    def written(path: Path) -> np.ndarray:
        return np.asarray(Image.open(path)).astype(float)

    def expected(style) -> np.ndarray:
        return stylizer(content, style=style)[0].permute(1, 2, 0).numpy() * 255

    code, _, err = stylize(
        monkeypatch, capsys, [model, f"input={photo}", "style=waves", f"output={tmp_path / 'w.png'}"]
    )
    assert code == 0, err
    assert np.abs(written(tmp_path / "w.png") - expected("waves")).max() <= 1
    code, _, err = stylize(
        monkeypatch,
        capsys,
        [model, f"input={photo}", "style={stripes:0.7,waves:0.3}", f"output={tmp_path / 'b.png'}"],
    )
    assert code == 0, err
    assert np.abs(written(tmp_path / "b.png") - expected({"stripes": 0.7, "waves": 0.3})).max() <= 1
    code, _, err = stylize(monkeypatch, capsys, [model, f"input={photo}", "style=all"])
    assert code == 0, err
    assert (tmp_path / "photo_stylised_stripes.png").is_file() and (
        tmp_path / "photo_stylised_waves.png"
    ).is_file()
    code, _, err = stylize(monkeypatch, capsys, [model, f"input={photo}", "sheet=true"])
    assert code == 0, err
    sheet = Image.open(tmp_path / "photo_sheet.png")
    assert sheet.width > 3 * 48 and sheet.height > 2 * 36  # input + 2 styles; a row with the blend

    for args, message in [
        ([f"input={photo}"], "this network holds 2 styles (stripes, waves): pass style=<name>"),
        (
            [f"input={photo}", "style=candy"],
            "style=candy: no such style in this network; the network's styles: stripes, waves",
        ),
        ([f"input={photo}", "style={stripes:1,nope:1}"], "style=nope: no such style"),
    ]:
        code, _, err = stylize(monkeypatch, capsys, [model, *args])
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.integration
def test_cli_video_takes_a_style(monkeypatch, capsys, tmp_path, two_style_file):
    clip = make_video(tmp_path / "clip.mp4", frames=3, audio=None)
    outputs = {}
    for name in ("stripes", "waves"):
        outputs[name] = tmp_path / f"{name}.mp4"
        args = [f"model={two_style_file}", f"input={clip}", f"style={name}", f"output={outputs[name]}"]
        code, _, err = stylize(monkeypatch, capsys, args)
        assert code == 0, err
    a, b = (probe(outputs[n])["frames"][1].astype(float) for n in ("stripes", "waves"))
    assert np.abs(a - b).mean() > 1  # two styles, two videos
    code, _, err = stylize(monkeypatch, capsys, [f"model={two_style_file}", f"input={clip}", "style=all"])
    assert code == 2 and "style=all is for images and folders" in err


@pytest.mark.integration
def test_webcam_keys_switch_styles(monkeypatch, two_style_file):
    stylizer = Stylizer.load(two_style_file, device="cpu")
    cv2 = fake_cv2(frames=1000)
    keys = iter([ord("2"), ord("9"), ord("1"), -1, -1])
    cv2.waitKey = lambda delay: next(keys, -1)
    monkeypatch.setitem(sys.modules, "cv2", cv2)
    assert run_webcam(stylizer, 0, max_size=32, max_frames=4) == 4
    labels = [t for t in cv2.shown if t in ("stripes", "waves")]
    assert labels == ["stripes", "waves", "waves", "stripes"]  # 9: no ninth style, no change
    with pytest.raises(ConfigError, match="no such style"):
        run_webcam(stylizer, 0, style="candy", max_frames=1)


@pytest.mark.integration
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_exports_take_style_weights(monkeypatch, capsys, tmp_path, two_style_file, fmt):
    out = tmp_path / f"two.{'onnx' if fmt == 'onnx' else 'pt'}"
    if fmt == "onnx":
        onnx = pytest.importorskip("onnx")
        ort = pytest.importorskip("onnxruntime")
    code, stdout, err = run_any_script(
        EXPORT, [f"model={two_style_file}", f"format={fmt}", f"output={out}"], monkeypatch, capsys
    )
    assert code == 0, err
    stylizer = Stylizer.load(two_style_file, device="cpu", precision="fp32")
    x = torch.rand(2, 3, 45, 52)
    weights = [torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]), torch.tensor([0.3, 0.7])]
    if fmt == "onnx":
        meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
        session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        assert [i.name for i in onnx.load(str(out)).graph.input] == ["images", "style_weights"]
        # An input with a default (an initializer of its name): onnxruntime lists it apart.
        assert [i.name for i in session.get_overridable_initializers()] == ["style_weights"]

        def run(w):
            feed = {"images": x.numpy()} if w is None else {"images": x.numpy(), "style_weights": w.numpy()}
            return torch.from_numpy(session.run(None, feed)[0])
    else:
        extra = {"fastns.json": ""}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            module = torch.jit.load(str(out), _extra_files=extra)
        meta = json.loads(extra["fastns.json"])

        def run(w):
            with torch.no_grad():
                return module(x) if w is None else module(x, w)

    assert json.loads(meta["style_names"]) == ["stripes", "waves"] and "style_weights" in meta["input"]
    for w in weights:
        assert (run(w) - stylizer(x, style=w)).abs().max() <= 1e-3
    assert (run(None) - stylizer(x, style="stripes")).abs().max() <= 1e-3  # default: the first style
