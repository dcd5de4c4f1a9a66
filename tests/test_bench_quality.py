"""benchmarks/bench_quality.py end to end in its --tiny mode: train, evaluate, page and contact sheet."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from fastns.evaluate.figures import MIN_TILE

ROOT = Path(__file__).resolve().parents[1]
STYLES = ("stripes", "blobs")  # the two synthetic paintings --tiny makes
SHEET_COLUMNS = 1 + 4  # the painting, then the first four validation photos


@pytest.mark.integration
def test_tiny_run_writes_a_row_per_style_and_a_sheet(tmp_path):
    output = tmp_path / "quality.md"
    proc = subprocess.run(
        [sys.executable, "benchmarks/bench_quality.py", "--tiny", "--output", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    page = output.read_text()
    assert "python scripts/train.py experiment=cpu style.image=<painting>" in page  # the recipe it ran
    assert "--tiny" in page  # the command that made the page
    for style in STYLES:
        rows = [line for line in page.splitlines() if line.startswith(f"| {style} |")]
        assert len(rows) == 1, page
        cells = [c.strip() for c in rows[0].strip("|").split("|")][1:]
        assert len(cells) == 12
        # Equivalent Gatys iterations: a count (a median may end in .5) or "> budget".
        for cell in cells[:2]:
            assert re.fullmatch(r"(> )?\d+(\.5)?", cell), cells
        for cell in cells[2:]:
            float(cell)  # losses, SSIM, colour distance, pattern, droplets, steps, seconds: all measured

    assert "](images/quality_sheet.jpg)" in page
    sheet = Image.open(tmp_path / "images" / "quality_sheet.jpg")
    assert sheet.format == "JPEG"
    # 32 px tiles are enlarged to MIN_TILE; each row and column adds captions and padding, under one tile.
    assert SHEET_COLUMNS * MIN_TILE < sheet.width < (SHEET_COLUMNS + 1) * MIN_TILE
    rows = 1 + len(STYLES)  # the photos, then one row per style
    assert rows * MIN_TILE < sheet.height < (rows + 1) * MIN_TILE
