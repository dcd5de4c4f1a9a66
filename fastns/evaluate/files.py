"""The report folder: the names of the files an evaluation writes into it, and its JSON."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: The files a report folder receives.
METRICS_FILE, REPORT_FILE, SHEET_FILE, CURVES_FILE = (
    "metrics.json",
    "report.md",
    "contact_sheet.png",
    "loss_curves.png",
)
REPORT_FILES = (METRICS_FILE, REPORT_FILE, SHEET_FILE, CURVES_FILE)


def json_safe(obj: Any) -> Any:
    """Plain JSON: non-finite floats become null (``json`` would write NaN, which is not JSON)."""
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj
