"""Evaluation against Gatys optimisation: the Figure 5 search, the measures, and scripts/evaluate.py end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from fastns.errors import ConfigError, FastnsError
from fastns.evaluate import (
    REPORT_FILES,
    color_histogram,
    droplet_share,
    equivalent_iterations,
    find_photos,
    histogram_distance,
    load_style,
    loss_settings,
    run,
    select_styles,
    ssim_luminance,
    summarize_iterations,
)
from fastns.metrics import grid_pattern, spike_share
from fastns.modelfile import ModelInfo, save_model
from fastns.transformer import NORM_LAYERS, TransformerNet, last_norm

from .conftest import CONFIGS, ROOT, make_photo
from .conftest import run_script as run_any_script

SCRIPT = ROOT / "scripts" / "evaluate.py"
# Tiny and fast: 32 px photos, a few L-BFGS iterations, one timed forward pass, no progress bar.
FAST = ["image_size=32", "gatys_iterations=3", "sheet_iterations=[1,3]", "timing_runs=1", "progress=false"]
TERMS = {"content/relu2_2", "style/relu1_2", "style/relu2_2", "tv", "content", "style", "total"}


@pytest.fixture(autouse=True)
def _one_thread():
    # 32-px tensors gain nothing from a second thread, and on a busy machine every OpenMP barrier
    # can wait for a core: one thread keeps these tests at a few seconds whatever else is running.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# -- the Figure 5 search on synthetic trajectories -------------------------------------------------


def test_equivalent_iterations_on_a_monotone_decay():
    traj = [100 * 0.9**i for i in range(60)]
    assert equivalent_iterations(traj, traj[37]) == 37  # equal counts as reached
    assert equivalent_iterations(traj, traj[37] * 1.0001) == 37
    assert equivalent_iterations(traj, traj[37] * 0.9999) == 38


@pytest.mark.parametrize(
    "trajectory, target, expected",
    [
        ([10, 8, 6, 4, 2], 100, 0),  # the start is already as good: 0 iterations
        ([10, 8, 6, 4, 2], 1, None),  # never within the budget: "> 4"
        ([10, 4, 7, 3, 5], 5, 1),  # noisy: the first crossing counts, not a later one
        ([10, math.nan, 4], 5, 2),  # a NaN loss never counts as reached
        ([10, 8, 6], math.nan, None),
        ([], 5, None),
    ],
)
def test_equivalent_iterations_edge_cases(trajectory, target, expected):
    assert equivalent_iterations(trajectory, target) == expected


def test_iteration_summary_counts_unreached_images_as_more_than_the_budget():
    s = summarize_iterations([3, None, 5], budget=10)
    assert s["reached"] == 2 and s["images"] == 3
    assert s["median"] == 5  # None ranks above every reached count
    assert s["mean"] is None and s["mean_lower_bound"] == pytest.approx((3 + 11 + 5) / 3)
    assert summarize_iterations([None, None, 3], budget=10)["median"] is None
    assert summarize_iterations([4, 8], budget=10) | {} == {
        "reached": 2,
        "images": 2,
        "budget": 10,
        "median": 6,
        "mean": 6,
        "mean_lower_bound": 6,
    }


# -- content and colour measures -------------------------------------------------------------------


def test_color_histogram_distance_is_zero_for_the_same_colours_and_one_for_disjoint_ones():
    torch.manual_seed(0)
    img = torch.rand(1, 3, 20, 30)
    shuffled = img.flatten(2)[..., torch.randperm(600)].reshape(1, 3, 20, 30)  # same pixels, moved
    h = color_histogram(img)
    assert h.shape == (512,) and float(h.sum()) == pytest.approx(1.0)
    assert histogram_distance(h, color_histogram(shuffled)) == pytest.approx(0.0, abs=1e-12)
    black, white = torch.zeros(1, 3, 8, 8), torch.ones(1, 3, 8, 8)
    assert histogram_distance(color_histogram(black), color_histogram(white)) == pytest.approx(1.0)
    other = torch.rand(1, 3, 20, 30) * 0.5
    d1 = histogram_distance(h, color_histogram(other))
    assert 0 < d1 < 1 and d1 == pytest.approx(histogram_distance(color_histogram(other), h))


@pytest.mark.parametrize("size", [(36, 48), (9, 12)])  # Gaussian window, and the small-image fallback
def test_ssim_of_luminance(size):
    torch.manual_seed(0)
    photo = torch.rand(1, 3, *size)
    assert ssim_luminance(photo, photo) == pytest.approx(1.0)
    gray = photo.mean(1, keepdim=True).expand(1, 3, *size)
    noise = torch.rand(1, 3, *size)
    assert ssim_luminance(noise, photo) < 0.5 < ssim_luminance(gray, photo)


def test_grid_pattern_finds_a_texture_locked_to_the_pixel_grid_and_ignores_content():
    torch.manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 61), torch.linspace(0, 1, 83), indexing="ij")
    photo = torch.stack([xx, yy, (xx * yy) ** 0.5])[None]  # smooth content; 61x83: ragged blocks
    assert float(grid_pattern(photo)) < 0.1  # smooth gradients, even a full-range ramp, are not a pattern
    noise = torch.rand(1, 3, 256, 256)
    assert float(grid_pattern(noise)) < 1.0  # random pixels average out over 4096 blocks
    # A +-a checkerboard of 2x2 cells, the kind of pattern two x2 stages make: RMS a (in 1/255).
    cells = ((torch.arange(60)[:, None] // 2 + torch.arange(80)[None] // 2) % 2).float() * 2 - 1
    a = 6 / 255
    hatched = (photo[..., :60, :80] * 0.8 + 0.1 + a * cells).clamp(0, 1)
    assert float(grid_pattern(hatched)) == pytest.approx(6.0, abs=0.5)
    # Shifting the image moves the pattern's phase, not its strength.
    assert float(grid_pattern(hatched[..., 1:, 3:])) == pytest.approx(float(grid_pattern(hatched)), abs=0.3)
    # One number per image of a batch.
    both = grid_pattern(torch.cat([hatched, photo[..., :60, :80]]))
    assert both.shape == (2,) and both[0] > 5 and both[1] < 0.1
    assert grid_pattern(torch.rand(2, 3, 7, 40)).tolist() == [0.0, 0.0]  # smaller than two blocks


# -- model, loss and style settings ----------------------------------------------------------------


def _info(tiny_loss_cfg, style_sources) -> ModelInfo:
    return ModelInfo(
        model={"width": 0.25},
        style={"name": "s", "sources": style_sources, "size": 24, "blend_weights": None},
        loss=tiny_loss_cfg,
    )


def test_spike_share_finds_one_strong_spot_in_a_channel():
    torch.manual_seed(0)
    noise = torch.randn(1, 2, 128, 128)
    share = spike_share(noise)
    assert share.shape == (1, 2)
    # the top 0.5 % of Gaussian pixels (|z| > 2.8) hold about 5 % of the variance
    assert share.min() > 0.03 and share.max() < 0.08
    spiked = noise.clone()
    spiked[0, 1, 60:66, 60:66] += 200.0  # one blob: a droplet
    share = spike_share(spiked)
    assert share[0, 0] == pytest.approx(float(spike_share(noise)[0, 0])) and share[0, 1] > 0.9
    assert spike_share(torch.ones(1, 1, 8, 8)).item() == 1.0  # a constant channel: no spread at all


@pytest.mark.parametrize("kw", [{}, {"body_norm": "demod"}, {"num_styles": 2}, {"norm": "batch"}])
def test_droplet_share_hooks_the_last_norm_and_leaves_the_network_as_it_was(kw):
    net = TransformerNet(width=0.25, num_residual=1, **kw).eval()
    norm = last_norm(net)
    assert norm is [m for m in net.decoder.modules() if isinstance(m, NORM_LAYERS)][-1]
    image = torch.rand(1, 3, 40, 48)
    style = torch.tensor([0.0, 1.0]) if kw.get("num_styles") else None
    before = net(image, 8, style)
    share = droplet_share(net, image, 8, style)
    assert 0 < share <= 1
    assert not norm._forward_pre_hooks  # the hook is gone
    assert torch.equal(net(image, 8, style), before)


@pytest.mark.parametrize("where", ["border", "inside"])
def test_droplet_share_counts_only_what_becomes_the_output(where):
    # A spike in the reflected border is cropped off with it: the 4-style networks put theirs there.
    net = TransformerNet(width=0.25, num_residual=1).eval()
    image = torch.rand(1, 3, 40, 48)  # border 8: the last norm sees (56, 64), the output is [8:48, 8:56]
    clean = droplet_share(net, image, 8)
    row, col = (2, 3) if where == "border" else (20, 30)

    def spike(_module, args):
        x = args[0].clone()
        x[..., row : row + 3, col : col + 3] += 1e3
        return (x,)

    handle = last_norm(net).register_forward_pre_hook(spike)
    try:
        spiked = droplet_share(net, image, 8)
    finally:
        handle.remove()
    if where == "border":
        assert spiked == pytest.approx(clean, rel=1e-4)
    else:
        assert spiked > 0.9 > clean


def test_loss_settings_keep_the_models_objective_and_take_vgg_overrides(tiny_loss_cfg):
    info = _info(tiny_loss_cfg, [])
    same = loss_settings(info, {"vgg": {"arch": None, "weights": None, "pooling": None}}, "m")
    assert same == tiny_loss_cfg
    changed = loss_settings(info, {"vgg": {"weights": "/x/vgg16.pth", "arch": None}}, "m")
    assert changed["vgg"] == {**tiny_loss_cfg["vgg"], "weights": "/x/vgg16.pth"}
    assert changed["style_layers"] == tiny_loss_cfg["style_layers"]
    assert info.loss == tiny_loss_cfg  # the model's settings are not modified
    with pytest.raises(ConfigError, match="loss.style_weight cannot be changed"):
        loss_settings(info, {"style_weight": 1.0}, "m")


def test_style_comes_from_the_model_or_from_style_image(tmp_path, tiny_loss_cfg, style_file):
    style = load_style({"image": None, "size": None}, _info(tiny_loss_cfg, [str(style_file)]), "m")
    assert style.sources == [str(style_file)] and style.size == 24 and style.name == "s"
    gone = _info(tiny_loss_cfg, [str(tmp_path / "moved.jpg")])
    with pytest.raises(FastnsError, match=r"style image of m cannot be loaded .*pass style.image="):
        load_style({"image": None}, gone, "m")
    other = make_photo(tmp_path / "other.png", size=(30, 20))
    style = load_style({"image": str(other), "size": 16}, gone, "m")
    assert style.sources == [str(other)] and style.size == 16
    with pytest.raises(ConfigError, match="names no style image"):
        load_style({"image": None}, _info(tiny_loss_cfg, []), "m")


def test_photos_from_a_folder_a_file_or_a_glob_without_the_report(tmp_path):
    folder = tmp_path / "photos"
    for name in ("c.png", "a.jpg", "sub/b.png"):
        make_photo(folder / name, size=(20, 16))
    (folder / "notes.txt").write_text("not a photo")
    report = folder / "report"  # an earlier report inside the folder: its pictures are not photos
    make_photo(report / "contact_sheet.png", size=(20, 16))
    make_photo(folder / "loss_curves.png", size=(20, 16))  # a report written into the folder itself

    def names(files):
        return [str(f.relative_to(folder)) for f in files]

    assert names(find_photos(folder, report, None)) == ["a.jpg", "c.png", "loss_curves.png", "sub/b.png"]
    assert names(find_photos(folder, folder, None)) == [
        "a.jpg",
        "c.png",
        "report/contact_sheet.png",
        "sub/b.png",
    ]
    assert names(find_photos(folder, report, 2)) == ["a.jpg", "c.png"]  # the first N, sorted
    assert names(find_photos(f"{folder}/**/*.png", report, None)) == ["c.png", "loss_curves.png", "sub/b.png"]
    assert find_photos(folder / "a.jpg", report, None) == [folder / "a.jpg"]
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        find_photos(folder / "loss_curves.png", folder, None)
    with pytest.raises(ConfigError, match="max_images=0"):
        find_photos(folder, report, 0)
    with pytest.raises(FastnsError, match="no image matches"):
        find_photos(f"{folder}/*.webp", report, None)


# -- end to end ------------------------------------------------------------------------------------


@pytest.fixture
def model_file(tmp_path, style_file, tiny_loss_cfg) -> Path:
    torch.manual_seed(0)
    return save_model(
        tmp_path / "tiny.safetensors",
        TransformerNet(width=0.25, num_residual=1),
        style={"name": "stripes", "sources": [str(style_file)], "size": 32, "blend_weights": None},
        loss=tiny_loss_cfg,
        training={"steps": 1, "image_size": 32},
    )


@pytest.fixture
def photos(tmp_path) -> Path:
    folder = tmp_path / "photos"
    make_photo(folder / "a.png", size=(48, 36), seed=1)
    make_photo(folder / "sub" / "b.jpg", size=(30, 40), seed=2)  # found recursively
    return folder


def run_script(monkeypatch, capsys, args: list[str]) -> tuple[int, str, str]:
    return run_any_script(SCRIPT, args, monkeypatch, capsys)


def compose_evaluate(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIGS / "tools"), version_base="1.3"):
        return compose(config_name="evaluate", overrides=overrides)


def _finite(x) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


@pytest.mark.integration
def test_script_writes_a_complete_report(monkeypatch, capsys, tmp_path, model_file, photos):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "report"
    code, stdout, err = run_script(
        monkeypatch, capsys, [f"model={model_file}", f"images={photos}", f"output={out}", *FAST]
    )
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == sorted(REPORT_FILES)  # and no .part leftovers
    assert not (tmp_path / "outputs").exists() and not (tmp_path / ".hydra").exists()  # no Hydra litter
    assert "wrote" in stdout

    m = json.loads((out / "metrics.json").read_text())
    assert m["command"].startswith("python scripts/evaluate.py") and f"model={model_file}" in m["command"]
    assert m["model"]["loss"]["style_layers"] == m["evaluation"]["loss"]["style_layers"]
    assert [r["image"] for r in m["images"]] == ["a.png", "b.jpg"]
    for r in m["images"]:
        assert max(r["size"]) == 32
        loss = r["network"]["loss"]
        assert set(loss) == TERMS and all(_finite(v) and v >= 0 for v in loss.values())
        assert loss["total"] == pytest.approx(loss["content"] + loss["style"] + loss["tv"], rel=1e-5)
        assert -1 <= r["network"]["ssim"] <= 1 and 0 <= r["network"]["color_distance"] <= 1
        assert 0 < r["network"]["grid"] < 255 and 0 < r["content"]["grid"] < 255  # in 1/255 units
        assert 0 < r["network"]["droplet_share"] <= 1  # measured by default, at droplet_size=512
        assert r["speed"]["network_seconds"] > 0
        for init in ("noise", "content"):
            g = r["gatys"][init]
            traj, eq = g["trajectory"], g["equivalent_iterations"]
            assert len(traj) == 4 and g["budget"] == 3
            # the reported count is the definition applied to the reported trajectory
            if eq is None:
                assert all(t > loss["total"] for t in traj)
            else:
                assert traj[eq] <= loss["total"] and all(t > loss["total"] for t in traj[:eq])
            assert traj[-1] < traj[0]  # the optimisation made progress
            assert g["seconds_per_iteration"] > 0
        speed = r["speed"]["gatys"]
        assert set(speed) == {"100", "300", "500"} and not speed["500"]["measured"]  # > budget: estimated
        assert speed["100"]["seconds"] < speed["300"]["seconds"] < speed["500"]["seconds"]
        assert speed["100"]["speedup"] == pytest.approx(
            speed["100"]["seconds"] / r["speed"]["network_seconds"]
        )
    agg = m["aggregate"]
    assert agg["images"] == 2 and set(agg["network_loss"]) == TERMS
    assert agg["network_loss"]["total"]["mean"] == pytest.approx(
        sum(r["network"]["loss"]["total"] for r in m["images"]) / 2
    )
    assert agg["equivalent_iterations"]["noise"]["budget"] == 3
    assert set(agg["grid"]) == {"content", "network", "gatys_noise", "gatys_content"}

    report = (out / "report.md").read_text()
    assert "a.png" in report and "b.jpg" in report and m["command"] in report
    assert "contact_sheet.png" in report and "loss_curves.png" in report
    assert "4x4 px pattern (1/255): network" in report
    assert m["evaluation"]["droplet_size"] == 512 and "droplet share at 512 px: network" in report
    sheet = Image.open(out / "contact_sheet.png")
    assert sheet.format == "PNG" and sheet.width > 6 * 32 and sheet.height > 2 * 32  # 6 columns, 2 rows
    assert Image.open(out / "loss_curves.png").format == "PNG"


@pytest.mark.integration
def test_rerun_gives_the_same_numbers_and_can_write_into_the_images_folder(tmp_path, model_file, photos):
    # The report goes into the photo folder itself: its pictures must not be evaluated next time.
    cfg = compose_evaluate([f"model={model_file}", f"images={photos}", f"output={photos}", *FAST])
    run(cfg)
    first = json.loads((photos / "metrics.json").read_text())
    run(cfg)
    second = json.loads((photos / "metrics.json").read_text())
    assert len(second["images"]) == 2

    def numbers(m):  # everything but the clock
        def strip(x):
            if isinstance(x, dict):
                return {
                    k: strip(v) for k, v in x.items() if "seconds" not in k and k not in ("speed", "created")
                }
            return [strip(v) for v in x] if isinstance(x, list) else x

        return strip(m)

    assert numbers(first) == numbers(second)
    assert (photos / "a.png").is_file() and (photos / "sub" / "b.jpg").is_file()


@pytest.mark.parametrize(
    "case, expect",
    [
        ("missing_model", "no such model file"),
        ("not_a_model", "not a fastns model file"),
        ("foreign_safetensors", "not a fastns model"),
        ("checkpoint", "scripts/export.py"),
        ("no_loss_in_model", "no loss settings"),
        ("no_model_given", "missing required setting model"),
        ("empty_folder", "no image files"),
        ("missing_images", "no such file or folder"),
        ("corrupt_image", "not an image file"),
        ("output_is_a_file", "is a file"),
        ("style_gone", "pass style.image="),
        ("bad_init", "gatys_init"),
        ("tiny_droplet_size", "droplet_size=4"),
        ("bad_vgg_weights", "loss.vgg.weights="),
    ],
)
@pytest.mark.integration
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    monkeypatch, capsys, tmp_path, model_file, photos, tiny_loss_cfg, case, expect
):
    out = tmp_path / "report"
    model, images = model_file, photos
    extra: list[str] = []
    if case == "missing_model":
        model = tmp_path / "nope.safetensors"
    elif case == "not_a_model":
        model = tmp_path / "text.safetensors"
        model.write_text("hello")
    elif case == "foreign_safetensors":
        from safetensors.torch import save_file

        model = tmp_path / "foreign.safetensors"
        save_file({"w": torch.zeros(2)}, str(model))
    elif case == "checkpoint":
        model = tmp_path / "last.ckpt"
        model.write_bytes(b"x")
    elif case == "no_loss_in_model":
        model = save_model(tmp_path / "bare.safetensors", TransformerNet(width=0.25, num_residual=1))
    elif case == "empty_folder":
        images = tmp_path / "empty"
        images.mkdir()
        (images / "notes.txt").write_text("no photos here")
    elif case == "missing_images":
        images = tmp_path / "nowhere"
    elif case == "corrupt_image":
        (photos / "broken.jpg").write_text("not a jpeg")
    elif case == "output_is_a_file":
        out = tmp_path / "report.txt"
        out.write_text("keep me")
    elif case == "style_gone":
        model = save_model(
            tmp_path / "moved.safetensors",
            TransformerNet(width=0.25, num_residual=1),
            style={"name": "s", "sources": [str(tmp_path / "gone.jpg")], "size": 32},
            loss=tiny_loss_cfg,
        )
    elif case == "bad_init":
        extra = ["gatys_init=[photo]"]
    elif case == "tiny_droplet_size":
        extra = ["droplet_size=4"]
    elif case == "bad_vgg_weights":
        extra = [f"loss.vgg.weights={tmp_path / 'vgg16.pth'}"]
    args = [f"model={model}", f"images={images}", f"output={out}", *FAST, *extra]
    if case == "no_model_given":
        args = args[1:]
    code, _, err = run_script(monkeypatch, capsys, args)
    assert code == 2, err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], err
    if case == "output_is_a_file":
        assert out.read_text() == "keep me"
    else:
        assert not out.exists()
    assert not list(tmp_path.rglob("*.part"))


# -- networks of several styles ----------------------------------------------------------------------


def _multi_info(tiny_loss_cfg, sources) -> ModelInfo:
    return ModelInfo(
        model={"width": 0.25, "num_styles": 2},
        style={"name": "stripes, waves"},
        styles=[
            {"name": n, "sources": [str(s)], "size": 32}
            for n, s in zip(["stripes", "waves"], sources, strict=True)
        ],
        loss=tiny_loss_cfg,
    )


def test_select_styles_every_style_one_style_or_a_one_line_error(tiny_loss_cfg):
    info = _multi_info(tiny_loss_cfg, ["s.png", "w.png"])
    assert [n for n, _ in select_styles({"name": None}, info, "m")] == ["stripes", "waves"]
    assert [n for n, _ in select_styles("all", info, "m")] == ["stripes", "waves"]
    [(name, desc)] = select_styles("waves", info, "m")  # style=waves is style.name=waves
    assert name == "waves" and desc["sources"] == ["w.png"]
    with pytest.raises(
        ConfigError, match="style=candy: no such style in m; the network's styles: stripes, waves"
    ):
        select_styles("candy", info, "m")
    with pytest.raises(ConfigError, match="name that style too"):
        select_styles({"name": None, "image": "other.jpg"}, info, "m")
    single = _info(tiny_loss_cfg, ["s.png"])
    assert select_styles({"name": None}, single, "m") == [(None, single.style)]
    with pytest.raises(ConfigError, match="holds one style"):
        select_styles("waves", single, "m")
    with pytest.raises(ConfigError, match="unknown key style.colour"):
        select_styles({"colour": 1}, single, "m")


@pytest.fixture
def two_style_model(tmp_path, style_file, tiny_loss_cfg) -> Path:
    torch.manual_seed(0)
    net = TransformerNet(width=0.25, num_residual=1, num_styles=2)
    with torch.no_grad():  # two clearly different styles: different γ, β per style
        for m in net.modules():
            if hasattr(m, "weight") and getattr(m, "weight", None) is not None and m.weight.dim() == 2:
                m.weight[1].mul_(-1.5)
                m.bias[1].add_(0.3)
    waves = make_photo(tmp_path / "waves.png", size=(40, 40), seed=7)
    return save_model(
        tmp_path / "two.safetensors",
        net,
        styles=[
            {"name": "stripes", "sources": [str(style_file)], "size": 32},
            {"name": "waves", "sources": [str(waves)], "size": 32},
        ],
        loss=tiny_loss_cfg,
        training={"steps": 1, "image_size": 32},
    )


@pytest.mark.integration
def test_a_network_of_several_styles_gets_a_report_per_style_and_an_index(
    monkeypatch, capsys, tmp_path, two_style_model, photos
):
    out = tmp_path / "report"
    code, _, err = run_script(
        monkeypatch, capsys, [f"model={two_style_model}", f"images={photos}", f"output={out}", *FAST]
    )
    assert code == 0, err
    assert {p.name for p in out.iterdir()} == {"metrics.json", "report.md", "stripes", "waves"}
    per = {}
    for name in ("stripes", "waves"):
        assert sorted(p.name for p in (out / name).iterdir()) == sorted(REPORT_FILES)
        per[name] = json.loads((out / name / "metrics.json").read_text())
        assert per[name]["evaluation"]["style"]["name"] == name
        assert per[name]["evaluation"]["network_style"] == name
    # each style is the network's own output for that style, measured against that style's targets
    a = [r["network"]["loss"]["total"] for r in per["stripes"]["images"]]
    b = [r["network"]["loss"]["total"] for r in per["waves"]["images"]]
    assert a != b
    index = json.loads((out / "metrics.json").read_text())
    assert list(index["styles"]) == ["stripes", "waves"]
    assert index["styles"]["waves"]["aggregate"] == per["waves"]["aggregate"]
    report = (out / "report.md").read_text()
    assert "## stripes" in report and "## waves" in report and "(waves/report.md)" in report

    # style=waves alone: the same numbers as waves' section, in a plain report folder
    one = tmp_path / "one"
    code, _, err = run_script(
        monkeypatch,
        capsys,
        [f"model={two_style_model}", f"images={photos}", f"output={one}", "style=waves", *FAST],
    )
    assert code == 0, err
    assert sorted(p.name for p in one.iterdir()) == sorted(REPORT_FILES)
    alone = json.loads((one / "metrics.json").read_text())
    assert [r["network"]["loss"] for r in alone["images"]] == [
        r["network"]["loss"] for r in per["waves"]["images"]
    ]

    code, _, err = run_script(
        monkeypatch,
        capsys,
        [f"model={two_style_model}", f"images={photos}", f"output={tmp_path / 'x'}", "style=candy", *FAST],
    )
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and "the network's styles: stripes, waves" in lines[0], err
    assert not (tmp_path / "x").exists()


# -- video: the flicker report -----------------------------------------------------------------------


@pytest.mark.integration
def test_video_report_measures_the_input_the_network_flow_and_a_second_model(
    monkeypatch, capsys, tmp_path, model_file, style_file, tiny_loss_cfg
):
    pytest.importorskip("cv2")
    from .test_stylize import make_video
    from .test_temporal import pan, to_bytes

    clip = make_video(tmp_path / "clip.mp4", frames=10, size=(96, 72), images=to_bytes(pan(10)), audio=None)
    torch.manual_seed(1)
    other = save_model(
        tmp_path / "other.safetensors",
        TransformerNet(width=0.25, num_residual=1),
        style={"name": "stripes", "sources": [str(style_file)], "size": 32},
        loss={**tiny_loss_cfg, "temporal_weight": 1.0},
    )
    out = tmp_path / "video_report"
    args = [
        f"model={model_file}",
        f"video={clip}",
        f"compare={other}",
        f"output={out}",
        "frames=8",
        "start=1",
    ]
    code, stdout, err = run_script(monkeypatch, capsys, [*args, "loss_frames=3", "progress=false"])
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["metrics.json", "report.md", "frames.png", "warping_error.png"]
    )
    m = json.loads((out / "metrics.json").read_text())
    assert m["kind"] == "video" and m["video"]["frames"] == 8 and m["video"]["size"] == [96, 72]
    assert m["video"]["loss_frames"] == [1, 5, 8]  # the clip's own frame numbers
    rows = m["methods"]
    assert list(rows) == [
        "input",
        "per frame",
        "temporal=flow",
        "compare: per frame",
        "compare: temporal=flow",
    ]
    for label, r in rows.items():
        assert len(r["warping_errors"]) == 7 and _finite(r["warping_error"])  # one per frame pair
        if label != "input":
            assert r["seconds_per_frame"] > 0 and set(r["loss"]) == {"content", "style", "total"}
    # the floor is below the per-frame stylisation, and the flow blend steadies it
    assert rows["input"]["warping_error"] < rows["per frame"]["warping_error"]
    assert rows["temporal=flow"]["warping_error"] < rows["per frame"]["warping_error"]
    # two different networks, judged by the same loss
    assert rows["per frame"]["loss"] != rows["compare: per frame"]["loss"]
    assert m["compare"]["path"] == str(other) and m["compare"]["loss"]["temporal_weight"] == 1.0
    report = (out / "report.md").read_text()
    assert "| compare: temporal=flow |" in report and "frames.png" in report
    assert Image.open(out / "frames.png").height > 5 * 72  # a row per method and the input

    # bad input: one line, exit 2, nothing written
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all" * 10)
    for extra, expect in [
        ([f"video={tmp_path / 'none.mp4'}"], "no such file"),
        ([f"video={broken}"], "not a readable video"),
        ([f"video={style_file}"], "at least 2 are needed"),  # an image is a one-frame video to FFmpeg
        ([f"video={clip}", "images=x"], "pass one of them"),
        ([f"video={clip}", "frames=1"], "frames=1 must be at least 2"),
        ([f"video={clip}", "start=50"], "at least 2 are needed"),
    ]:
        bad = tmp_path / "bad"
        code, _, err = run_script(monkeypatch, capsys, [f"model={model_file}", f"output={bad}", *extra])
        lines = [ln for ln in err.strip().splitlines() if ln.strip()]
        assert code == 2 and len(lines) == 1 and expect in lines[0], (extra, err)
        assert not bad.exists()


@pytest.mark.integration
def test_video_report_of_a_network_of_several_styles_needs_a_style(
    monkeypatch, capsys, tmp_path, two_style_model
):
    pytest.importorskip("cv2")
    from .test_stylize import make_video

    clip = make_video(tmp_path / "clip.mp4", frames=4, size=(64, 48), audio=None)
    out = tmp_path / "r"
    code, _, err = run_script(
        monkeypatch, capsys, [f"model={two_style_model}", f"video={clip}", f"output={out}"]
    )
    assert code == 2 and "pass style=<name>" in err and "stripes, waves" in err
    code, _, err = run_script(
        monkeypatch, capsys, [f"model={two_style_model}", f"video={clip}", f"output={out}", "style=waves"]
    )
    assert code == 0, err
    assert json.loads((out / "metrics.json").read_text())["model"]["style"]["name"] == "waves"
