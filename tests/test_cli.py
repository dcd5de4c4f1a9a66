"""What the scripts share: start-up, exit statuses, one-line messages."""

from __future__ import annotations

import subprocess
import sys

import pytest
from torch.utils.data import DataLoader, Dataset

from fastns.cli import interrupted_status
from fastns.errors import ImageError, first_line

from .conftest import ROOT

PROBE = """
import runpy, sys
sys.argv = [{script!r}, "--help"]
try:
    runpy.run_path({script!r}, run_name="__main__")
except SystemExit:
    pass
heavy = [m for m in ("torch", "torchvision", "pytorch_lightning", "av", "matplotlib") if m in sys.modules]
print("heavy:", heavy)
"""


@pytest.mark.integration
@pytest.mark.parametrize("name", ["train", "optimize", "stylize", "export", "evaluate"])
def test_help_answers_without_loading_pytorch(name):
    script = str(ROOT / "scripts" / f"{name}.py")
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(script=script)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert "powered by Hydra" in proc.stdout, proc.stderr[-2000:]
    assert "heavy: []" in proc.stdout


def test_interrupted_runs_exit_with_the_shells_signal_status():
    assert interrupted_status("SIGINT") == 130
    assert interrupted_status("SIGTERM") == 143
    assert interrupted_status("stop on another rank") == 130


class _Unreadable(Dataset):
    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int):
        raise ImageError("/photos/broken.jpg: cannot read image (truncated)")


def test_an_error_in_a_data_loader_worker_is_quoted_by_its_own_message():
    with pytest.raises(ImageError) as e:
        next(iter(DataLoader(_Unreadable(), num_workers=1)))
    assert first_line(e.value) == "/photos/broken.jpg: cannot read image (truncated)"
