"""The report folder: the names of the files an evaluation writes into it."""

from __future__ import annotations

#: The files a report folder receives.
METRICS_FILE, REPORT_FILE, SHEET_FILE, CURVES_FILE = (
    "metrics.json",
    "report.md",
    "contact_sheet.png",
    "loss_curves.png",
)
REPORT_FILES = (METRICS_FILE, REPORT_FILE, SHEET_FILE, CURVES_FILE)
