"""scripts/optimize.py end to end, in-process, the way a user runs it; and its bad-input errors."""

from __future__ import annotations

import pytest
from PIL import Image

from fastns.optimize import run

from .conftest import ROOT, compose, make_photo
from .conftest import run_script as run_any_script

SCRIPT = ROOT / "scripts" / "optimize.py"
# Tiny, fast settings: random VGG16, shallow layers, a few iterations.
FAST = [
    "loss=johnson",
    "loss.vgg.weights=random",
    "~loss.style_layers.relu3_3",
    "~loss.style_layers.relu4_3",
    "iterations=3",
    "progress=false",
]


def run_script(monkeypatch, capsys, args: list[str]) -> tuple[int, str, str]:
    return run_any_script(SCRIPT, args, monkeypatch, capsys)


@pytest.mark.integration
def test_cli_style_transfer_64px(monkeypatch, capsys, tmp_path, photo, style_file):
    out = tmp_path / "result" / "out.jpg"
    code, stdout, err = run_script(
        monkeypatch,
        capsys,
        [
            f"content={photo}",
            f"style.image={style_file}",
            "image_size=64",
            f"output={out}",
            "save_every=2",
            *FAST,
        ],
    )
    assert code == 0, err
    im = Image.open(out)
    assert im.format == "JPEG" and im.size == (64, 48)  # photo is 48x36: longest side -> 64
    assert (tmp_path / "result" / "out_0002.jpg").exists()
    assert "wrote" in stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "photo.png",
        "result",
        "style.png",
    ]  # no Hydra litter


@pytest.mark.integration
def test_cli_texture_synthesis(monkeypatch, capsys, tmp_path, style_file):
    out = tmp_path / "texture.png"
    code, _, err = run_script(
        monkeypatch,
        capsys,
        ["content=null", f"style.image={style_file}", "image_size=40", f"output={out}", *FAST],
    )
    assert code == 0, err
    assert Image.open(out).size == (40, 40)


@pytest.mark.integration
def test_run_multiscale_preserve_color_and_init_path(tmp_path, photo, style_file):
    init = make_photo(tmp_path / "init.png", size=(20, 20), seed=5)
    cfg = compose(
        "optimize",
        [
            f"content={photo}",
            f"style.image={style_file}",
            "image_size=48",
            "scales=[24]",
            "iterations=[2,2]",
            "preserve_color=true",
            f"init={init}",
            f"output={tmp_path / 'o.png'}",
            *FAST[:-2],
            "progress=false",
        ],
    )
    out = run(cfg)
    assert Image.open(out).size == (48, 36)


@pytest.mark.parametrize(
    "case, expect",
    [
        ("missing_content", "no such file"),
        ("corrupt_style", "not an image"),
        ("output_is_input", "refusing to overwrite"),
        ("no_content_given", "missing required setting content"),
        ("bad_optimizer", "optimizer._target_=torch.optim.NoSuchOptimizer"),
        ("bad_device", "no CUDA GPU"),
        ("bad_iterations", "iterations has 3 values"),
        ("bad_extension", "unknown image extension"),
    ],
)
@pytest.mark.integration
def test_cli_bad_input_is_one_line_and_writes_nothing(
    monkeypatch, capsys, tmp_path, photo, style_file, case, expect
):
    out = tmp_path / "out.png"
    args = [f"content={photo}", f"style.image={style_file}", "image_size=32", f"output={out}", *FAST]
    if case == "missing_content":
        args[0] = f"content={tmp_path / 'nope.jpg'}"
    elif case == "corrupt_style":
        bad = tmp_path / "bad.jpg"
        bad.write_text("not a jpeg")
        args[1] = f"style.image={bad}"
    elif case == "output_is_input":
        args[3] = f"output={photo}"
    elif case == "no_content_given":
        args = args[1:]
    elif case == "bad_optimizer":
        args.append("optimizer._target_=torch.optim.NoSuchOptimizer")
    elif case == "bad_device":
        if __import__("torch").cuda.is_available():
            pytest.skip("a GPU is present")
        args.append("device=cuda")
    elif case == "bad_iterations":
        args.append("iterations=[1,2,3]")
    elif case == "bad_extension":
        out = tmp_path / "out.xyz"
        args[3] = f"output={out}"
    before = photo.read_bytes()
    code, _, err = run_script(monkeypatch, capsys, args)
    assert code == 2
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], err
    assert not out.exists()
    assert photo.read_bytes() == before
    assert not list(tmp_path.glob(".*.part"))


@pytest.mark.integration
def test_cli_unknown_config_key_is_rejected(monkeypatch, capsys, tmp_path, photo):
    code, _, err = run_script(
        monkeypatch, capsys, [f"content={photo}", "iteratons=5", f"output={tmp_path / 'o.png'}"]
    )
    assert code != 0
    assert "iteratons" in err
    assert not (tmp_path / "o.png").exists()
