"""Evaluation: a trained network against the Gatys optimisation it approximates.

Johnson, Alahi & Fei-Fei (2016) train a feed-forward network to minimise, in one forward pass,
the same perceptual loss that Gatys et al. minimise per image with L-BFGS. Their Figure 5 asks
how many L-BFGS iterations the optimisation needs to reach the network's loss (50-100 in the
paper), and their Table 1 how much faster the network is. This package answers both questions on
the user's own photos, with the model's own loss, and adds two measurements that need no VGG:

- **Perceptual loss** of the network's output, every term the model was trained on
  (``content/relu2_2``, ``style/relu3_3``, ``tv``, ``content``, ``style``, ``total``), computed by
  the one :class:`~fastns.losses.PerceptualLoss` built from the settings in the model file.
- **Equivalent Gatys iterations** (Figure 5): L-BFGS Gatys optimisation of the same photo with the
  same loss, from white noise and from the photo itself, for ``gatys_iterations``; the first
  iteration whose loss is at or below the network's (:func:`equivalent_iterations`), or none
  (``> budget``) if the budget ends first.
- **Speed** (Table 1): the network's forward time (warm-up, then the median of several passes)
  against the Gatys time for 100 / 300 / 500 iterations, measured in this run (per-iteration time
  x N where N is beyond the budget), and the speed-up ratios.
- **Content and colour**: SSIM between the luminance of the output and of the photo
  (:func:`fastns.metrics.ssim_luminance`), and the chi-squared distance between the joint RGB colour
  histograms of the output and of the style image (:func:`fastns.metrics.histogram_distance`;
  0 = identical colours).
  Both are also given for the Gatys results, and the colour distance for the photo itself, so
  each number has a reference.
- **Grid pattern**: the strength of a fixed 4x4-pixel pattern (:func:`fastns.metrics.grid_pattern`),
  the cross-hatch a network with two x2 stages can learn (docs/training.md), for the photo, the
  network and the Gatys results. Photos score below ~1 (in 1/255).
- **Droplets**: at ``droplet_size`` px (512; they do not show at 128), the share of each channel's
  variance held by its top 0.5 % of pixels at the input of the network's last normalisation layer
  (:func:`droplet_share`, :func:`fastns.metrics.spike_share`): high where an instance norm has
  been gamed with one strong local spike, which shows as a blotch (on the recipe's networks: flat
  patches over the photo's smooth bright areas). Only the part of the map that becomes the output
  counts (a spike in the cropped border shows nowhere).

Choices, and where they depart from the paper:

- Photos are resized so that their **longest side** is ``image_size`` and keep their aspect
  ratio: no centre crop, as the stylizer treats them. Johnson et al. used 256x256 / 512x512 /
  1024x1024 squares.
- The network's output is what a user gets from ``scripts/stylize.py``: the
  :class:`~fastns.stylize.Stylizer` with its reflection ``border`` (``border=0``: the bare network
  as trained) in ``precision`` (fp32 by default, as Johnson et al. timed it).
- The style targets use the style image at the size it had in training (``ModelInfo.style.size``,
  px), whatever ``image_size`` is: the network's strokes have a fixed size in pixels, so that is
  the style it learned. The Gatys runs use the very same targets.
- A network of several styles is measured per style (:func:`~.inputs.select_styles`): its output
  for that style against that style's targets, a report each, and an index (:func:`~.report.render_index`).
- Gatys' pixels are optimised unconstrained (as in :func:`fastns.optimize.optimize_image` and
  neural-style); its losses are those of the unclamped image, while the network's output is in
  [0, 1] by construction.

Everything runs seeded (white noise, random VGG weights), so a rerun gives the same numbers
except for the timings. :func:`run` is the config-driven task behind ``scripts/evaluate.py``; it
writes ``metrics.json``, ``report.md``, ``contact_sheet.png`` and ``loss_curves.png``, each
atomically.

The modules, each depending only on those listed before it:

- :mod:`.files`: the names of the report folder's files.
- :mod:`.gatys`: one timed Gatys run, and the equivalent-iteration reading of it.
- :mod:`.inputs`: the model file, its loss, the style and the photos, checked.
- :mod:`.measure`: everything measured on one photo, and the summaries over photos.
- :mod:`.report`: ``report.md``.
- :mod:`.figures`: ``contact_sheet.png`` and ``loss_curves.png``.
- :mod:`.task`: :func:`run`, the task that ties them together.

The measurements that need no VGG (SSIM, colour histograms, grid pattern) are in
:mod:`fastns.metrics`.
"""

from ..metrics import color_histogram, histogram_distance, ssim_luminance  # re-exported: they lived here
from .figures import write_contact_sheet, write_loss_curves
from .files import CURVES_FILE, METRICS_FILE, REPORT_FILE, REPORT_FILES, SHEET_FILE
from .gatys import GATYS_INITS, START_NAMES, GatysRun, equivalent_iterations, run_gatys
from .inputs import (
    build_model_loss,
    find_photos,
    load_model_for_evaluation,
    load_style,
    loss_settings,
    select_styles,
)
from .measure import aggregate, droplet_share, evaluate_image, summarize, summarize_iterations, time_call
from .report import format_iterations, render_index, render_report, summary_lines
from .task import run

__all__ = [
    "CURVES_FILE",
    "GATYS_INITS",
    "METRICS_FILE",
    "REPORT_FILE",
    "REPORT_FILES",
    "SHEET_FILE",
    "START_NAMES",
    "GatysRun",
    "aggregate",
    "build_model_loss",
    "droplet_share",
    "color_histogram",
    "equivalent_iterations",
    "evaluate_image",
    "find_photos",
    "format_iterations",
    "histogram_distance",
    "load_model_for_evaluation",
    "load_style",
    "select_styles",
    "loss_settings",
    "render_index",
    "render_report",
    "run",
    "run_gatys",
    "ssim_luminance",
    "summarize",
    "summarize_iterations",
    "summary_lines",
    "time_call",
    "write_contact_sheet",
    "write_loss_curves",
]
