"""The ``fastns`` command: tasks listed, dispatched with the scripts' checks, and working from a wheel."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from fastns.commands import TASKS, main

from .conftest import ROOT, make_photo


def run_main(args: list[str], monkeypatch) -> int:
    monkeypatch.setattr(sys, "argv", ["fastns", *args])
    try:
        main()
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 1
    return 0


def test_help_lists_every_task(monkeypatch, capsys):
    assert run_main(["--help"], monkeypatch) == 0
    out = capsys.readouterr().out
    for name in ("train", "stylize", "optimize", "evaluate", "export"):
        assert f"  {name} " in out
    assert set(TASKS) == {"train", "stylize", "optimize", "evaluate", "export", "app"}


def test_no_task_prints_the_usage_and_fails(monkeypatch, capsys):
    assert run_main([], monkeypatch) == 2
    assert "usage: fastns <task>" in capsys.readouterr().out


def test_an_unknown_task_is_one_line(monkeypatch, capsys):
    assert run_main(["styliz", "model=x"], monkeypatch) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert err.startswith("error: fastns styliz: no such task; one of train, stylize")


def test_a_task_gets_the_scripts_checks_of_the_command_line(monkeypatch, capsys):
    assert run_main(["stylize", "modell=candy.safetensors"], monkeypatch) == 2
    assert capsys.readouterr().err.strip() == (
        "error: modell: unknown setting (a typo?); `--cfg job` after the command prints every setting"
    )
    assert run_main(["train", "trainer.max_steps=abc"], monkeypatch) == 2
    assert "trainer.max_steps takes a whole number" in capsys.readouterr().err


def test_a_task_runs_as_its_script_does(tmp_path, monkeypatch, capsys):
    photo = make_photo(tmp_path / "photo.png")
    missing = tmp_path / "missing.safetensors"
    code = run_main(
        ["stylize", f"model={missing}", f"input={photo}", f"output={tmp_path / 'o.png'}"], monkeypatch
    )
    assert code == 2
    assert str(missing) in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()


@pytest.mark.integration
def test_the_installed_command_works_without_the_checkout(tmp_path):
    """A wheel built from the checkout, installed into a fresh environment: ``fastns`` runs from anywhere."""
    # Built from a copy: setuptools writes build/ and *.egg-info beside the sources.
    src = tmp_path / "src"
    shutil.copytree(ROOT / "fastns", src / "fastns", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", wheels, src],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("fastns-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    py = venv / "bin" / "python"
    site = subprocess.run(
        [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # The dependencies (torch, hydra...) from this environment; fastns itself only from the wheel.
    (Path(site) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "--no-index", "-q", wheel],
        check=True,
        capture_output=True,
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    fastns = venv / "bin" / "fastns"

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([fastns, *args], cwd=tmp_path, env=env, capture_output=True, text=True)

    where = subprocess.run(
        [py, "-c", "import fastns.commands as c; print(c.CONFIGS)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert where.stdout.strip().startswith(str(venv)), where.stdout + where.stderr  # not the checkout's
    listing = run("--help")
    assert listing.returncode == 0 and "stylize" in listing.stdout
    helped = run("stylize", "--help")
    assert helped.returncode == 0, helped.stderr
    assert "stylize is powered by Hydra" in helped.stdout and "preserve_color" in helped.stdout
    job = run("train", "--cfg", "job", "experiment=cpu", "loss_margin=8")
    assert job.returncode == 0, job.stderr
    # The installed experiment config is the checkout's (its steps and width), with the override.
    cpu = OmegaConf.load(ROOT / "fastns" / "configs" / "experiment" / "cpu.yaml")
    assert f"max_steps: {cpu.trainer.max_steps}" in job.stdout and f"width: {cpu.model.width}" in job.stdout
    assert "loss_margin: 8" in job.stdout
    bad = run("optimize", "style=no_such_painting")
    assert bad.returncode == 2
    assert bad.stderr.strip().startswith("error: style=no_such_painting: no such style preset")
