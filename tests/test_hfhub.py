"""Hub-ready folders (format=hub) and loading them back by name (model=hf:), offline from a local Hub cache."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from fastns.errors import ConfigError
from fastns.hfhub import CARD_FILE, CONFIG_FILE, MODEL_FILE, SAMPLE_FILE, STYLE_FILE, write_folder
from fastns.modelfile import load_model, read_info, save_model
from fastns.stylize import Stylizer
from fastns.transformer import TransformerNet

from .conftest import ROOT, make_photo, run_script
from .test_evaluate import FAST

pytest.importorskip("huggingface_hub")


@pytest.fixture
def model_file(tmp_path, tiny_loss_cfg):
    style = make_photo(tmp_path / "painting.png", size=(40, 30), seed=3)
    torch.manual_seed(1)
    net = TransformerNet(width=0.25, num_residual=1)
    return save_model(
        tmp_path / "model.safetensors",
        net,
        style={"name": "painting", "sources": [str(style)], "size": 32},
        loss=tiny_loss_cfg,
        training={"steps": 7, "image_size": 32, "final_losses": {"total": 1.5}},
    )


def test_export_writes_a_hub_folder_that_describes_and_reproduces_the_network(
    model_file, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "hub" / "painting"
    code, _, err = run_script(
        ROOT / "scripts" / "export.py",
        [f"model={model_file}", "format=hub", f"output={out}"],
        monkeypatch,
        capsys,
    )
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [MODEL_FILE, CONFIG_FILE, CARD_FILE, STYLE_FILE, SAMPLE_FILE]
    )
    info = read_info(model_file)
    config = json.loads((out / CONFIG_FILE).read_text())
    assert config["library_name"] == "fastns"
    assert {k: config[k] for k in ("model", "style", "loss", "training")} == info.as_dict()
    card = (out / CARD_FILE).read_text()
    assert (
        card.startswith("---\nlibrary_name: fastns\n") and "# painting: a fast neural style network" in card
    )
    assert f"]({STYLE_FILE})" in card and f"]({SAMPLE_FILE})" in card and "| steps | 7 |" in card
    x = torch.rand(1, 3, 33, 41)
    with torch.no_grad():
        assert torch.equal(load_model(out / MODEL_FILE)[0](x), load_model(model_file)[0](x))
    with Image.open(out / SAMPLE_FILE) as sample:
        assert sample.width == 2 * sample.height  # the photo beside its stylisation


@pytest.mark.integration
def test_the_card_carries_the_evaluation_numbers_when_a_report_is_given(
    model_file, tmp_path, monkeypatch, capsys
):
    photos = tmp_path / "photos"
    make_photo(photos / "a.png", size=(48, 36), seed=1)
    report = tmp_path / "report"
    code, _, err = run_script(
        ROOT / "scripts" / "evaluate.py",
        [f"model={model_file}", f"images={photos}", f"output={report}", *FAST],
        monkeypatch,
        capsys,
    )
    assert code == 0, err
    card = (write_folder(*load_model(model_file), tmp_path / "h", report=report) / CARD_FILE).read_text()
    evaluation = card[card.index("## Evaluation") :]
    assert "- Gatys L-BFGS from white noise reaches the network's loss after" in evaluation
    assert "Fixed 4x4 px pattern" in evaluation


def test_a_bad_report_or_a_used_folder_is_one_line_and_writes_nothing(model_file, tmp_path):
    net, info = load_model(model_file)
    with pytest.raises(
        ConfigError, match=r"report=.*nowhere: no readable metrics.json of scripts/evaluate.py"
    ):
        write_folder(net, info, tmp_path / "h1", report=tmp_path / "nowhere")
    used = tmp_path / "h2"
    used.mkdir()
    (used / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"output=.*h2 exists and is not an empty folder"):
        write_folder(net, info, used)
    assert [p.name for p in used.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h2", "model.safetensors", "painting.png"]


def _fill_hub_cache(cache, repo: str, folder) -> None:
    """The layout huggingface_hub keeps downloads in: models--<user>--<repo>/snapshots/<commit>/, refs/main."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    base = cache / ("models--" + repo.replace("/", "--"))
    shutil.copytree(folder, base / "snapshots" / commit)
    (base / "refs").mkdir()
    (base / "refs" / "main").write_text(commit)


@pytest.mark.integration
def test_a_hub_folder_loads_back_by_name_offline_from_the_hub_cache(model_file, tmp_path):
    folder = write_folder(*load_model(model_file), tmp_path / "hub")
    cache = tmp_path / "hf_cache"
    _fill_hub_cache(cache, "someone/painting", folder)
    photo = make_photo(tmp_path / "photo.png", size=(45, 37))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "PYTHONPATH": str(ROOT)}

    def stylize(model: str, output):
        args = [f"model={model}", f"input={photo}", f"output={output}", "precision=fp32"]
        return subprocess.run(
            [sys.executable, "-m", "fastns", "stylize", *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
        )

    done = stylize("hf:someone/painting", tmp_path / "out.png")
    assert done.returncode == 0, done.stderr
    expected = Stylizer.load(model_file, precision="fp32")(Image.open(photo))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out.png")), np.asarray(expected))
    missing = stylize("hf:someone/other", tmp_path / "none.png")
    assert missing.returncode == 2 and not (tmp_path / "none.png").exists()
    err = missing.stderr.strip()
    assert err.count("\n") == 0 and err.startswith(
        "error: model=hf:someone/other: cannot get model.safetensors"
    )
    assert "HF_HUB_OFFLINE" in err
