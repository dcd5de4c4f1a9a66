#!/usr/bin/env python
"""Quality of the recommended recipe: one network per style, measured with the evaluation's own code.

For every style image, the project's one recommended CPU recipe is trained by running

    python scripts/train.py experiment=cpu style.image=<painting> loss.vgg.weights=<VGG> \\
        data.root=<photos> data.val_root=<val photos> hydra.run.dir=<work>/<style>

(wall-clock training time measured around the process), and the network is then evaluated on
the validation photos by ``scripts/evaluate.py`` (docs/evaluation.md), whose ``metrics.json`` gives
every number of the table: the equivalent Gatys iterations from white noise and from the photo
(Johnson et al. 2016, Figure 5), the loss terms, SSIM to the photo, the colour-histogram distance
to the painting and the 4x4 px pattern (the cross-hatch), as medians (the pattern: mean) over the
photos. Writes a Markdown page (``docs/quality.md``) naming the command, machine and versions, and
a contact sheet (a row per style: the painting, then the first validation photos stylised).

    python benchmarks/bench_quality.py                                   # train 5 styles: ~2 hours on 2 cores
    python benchmarks/bench_quality.py --models runs/quality             # evaluate networks trained before
    python benchmarks/bench_quality.py --extra loss=johnson_norm --output runs/ablation/quality.md
    python benchmarks/bench_quality.py --tiny --output /tmp/q/quality.md  # seconds, offline: the CI check

Inputs come from ``$FASTNS_SHARED`` (default ``../shared``): the paintings in ``data/styles``, the
photos in ``data/photos/train`` and ``data/photos/val``, the offline VGG16 in ``weights/``.
``--tiny`` makes its own synthetic paintings and photos instead and shrinks training and
evaluation to seconds (random VGG, 32 px); everything else runs the same code. On the 2-core
development VM a style should take about 20 minutes (going by benchmarks/README.md: ~16 for the
2000 steps in bf16, ~5 for 8 photos x 2 starts x 200 Gatys iterations at 128 px). A style whose
training or evaluation fails is named on one line; the others are still written, and the exit
status is 1.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fastns.errors import FastnsError  # noqa: E402
from fastns.evaluate.figures import tile_sheet  # noqa: E402
from fastns.evaluate.report import format_iterations  # noqa: E402
from fastns.image import find_images, load_image, open_image, pil_to_tensor  # noqa: E402
from fastns.modelfile import read_info  # noqa: E402
from fastns.stylize import Stylizer  # noqa: E402
from fastns.utils import atomic_write, cpu_name  # noqa: E402

SHARED = Path(os.environ.get("FASTNS_SHARED", ROOT.parent / "shared"))

#: The recommended recipe: every other setting is the defaults'. Nothing else is added in real mode,
#: so that the table describes exactly what the docs tell users to run.
RECIPE = ["experiment=cpu"]
#: --tiny: the pipeline check's sizes (fastns/configs/debug/tiny.yaml: 32 px, width 0.25, one residual
#: block, no loader workers), three steps.
TINY_TRAIN = ["debug=tiny", "trainer.max_steps=3"]
#: The validation photos shown per style in the contact sheet.
SHEET_PHOTOS = 4
#: JPEG quality of the contact sheet: small enough to commit, strokes still visible.
JPEG_QUALITY = 85


class StepFailed(Exception):
    """Training or evaluating one style failed; the message is the one line that says why."""


@dataclass
class Inputs:
    """What the benchmark runs on; paths as passed to the scripts (relative to the repository root)."""

    styles: list[Path]
    vgg: str
    photos: Path
    val_photos: Path


@dataclass
class Result:
    """One style's numbers: ``metrics`` is its evaluation's metrics.json."""

    style: Path
    model: Path
    metrics: dict[str, Any]
    train_seconds: float | None
    #: With --models: the training command's overrides, where its run folder kept them (Hydra's).
    trained_with: list[str] | None = None


def shown(path: Path | str) -> str:
    """``path`` as a user types it from the repository root (the scripts run there).

    Relative to the root when it lies beside or inside it (``../shared/...``), absolute otherwise
    (a temporary folder), so the commands in the page are the ones that ran and can be pasted.
    """
    path = Path(path)
    rel = os.path.relpath(path.resolve(), ROOT)
    return rel if not rel.startswith(os.pardir + os.sep + os.pardir) else str(path.resolve())


def command_line(command: list[str]) -> str:
    """``python <command>`` for a shell; ``<placeholders>`` stay unquoted, to be read, not pasted."""
    return " ".join(["python", *(a if "<" in a else shlex.quote(a) for a in command)])


def train_command(style: str, run_dir: str, inputs: Inputs, overrides: list[str]) -> list[str]:
    """The recipe for one painting, then ``overrides`` (--tiny's, then --extra's: the last wins)."""
    return [
        "scripts/train.py",
        *RECIPE,
        f"style.image={style}",
        f"loss.vgg.weights={inputs.vgg}",
        f"data.root={shown(inputs.photos)}",
        f"data.val_root={shown(inputs.val_photos)}",
        f"hydra.run.dir={run_dir}",
        *overrides,
    ]


def evaluate_command(
    model: str, style: str, report: str, inputs: Inputs, args: argparse.Namespace
) -> list[str]:
    """scripts/evaluate.py on the validation photos, with the same VGG and painting as training."""
    return [
        "scripts/evaluate.py",
        f"model={model}",
        f"images={shown(inputs.val_photos)}",
        f"output={report}",
        f"image_size={args.image_size}",
        f"max_images={args.max_images}",
        f"gatys_iterations={args.gatys_iterations}",
        "gatys_init=[noise,content]",
        f"loss.vgg.weights={inputs.vgg}",
        f"style.image={style}",
        "progress=false",
    ]


def run_logged(command: list[str], log: Path, env: dict[str, str]) -> tuple[int, float]:
    """Run ``python <command>`` in the repository root, output to ``log``; (exit status, wall seconds)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with log.open("w", encoding="utf-8") as f:
        f.write(f"$ {command_line(command)}\n")
        f.flush()
        rc = subprocess.run(
            [sys.executable, *command], cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT
        ).returncode
    return rc, time.perf_counter() - start


def last_line(log: Path) -> str:
    """The last non-empty line of a log (a script's ``error:`` line, or a traceback's last line)."""
    lines = [
        line.strip()
        for line in log.read_text(encoding="utf-8", errors="replace").splitlines()
        if line.strip()
    ]
    return lines[-1] if lines else "(no output)"


def find_model(models: Path, stem: str) -> Path:
    """``models/<stem>/model.safetensors`` (a run folder of scripts/train.py) or ``models/<stem>.safetensors``."""
    for candidate in (models / stem / "model.safetensors", models / f"{stem}.safetensors"):
        if candidate.is_file():
            return candidate
    raise StepFailed(f"no model file {models / stem / 'model.safetensors'} or {models / stem}.safetensors")


def trained_with(model: Path) -> list[str] | None:
    """The overrides of the scripts/train.py run that wrote ``model``, from its run folder's ``.hydra/``."""
    path = model.parent / ".hydra" / "overrides.yaml"
    try:
        return [str(o) for o in OmegaConf.load(path)] if path.is_file() else None
    except Exception:  # a damaged or foreign file: the page then just does not show the command
        return None


def measure_style(
    style: Path, inputs: Inputs, args: argparse.Namespace, work: Path, env: dict[str, str]
) -> Result:
    """Train (or find) the network for ``style`` and evaluate it; raises :class:`StepFailed`."""
    stem = style.stem
    logs = work / "logs"
    if args.models is not None:
        model = find_model(args.models, stem)
        try:
            training = read_info(model).training
        except FastnsError as e:
            raise StepFailed(str(e)) from None
        train_seconds = training.get("train_seconds")
    else:
        run_dir = work / stem
        model = run_dir / "model.safetensors"
        log = logs / f"{stem}.train.log"
        command = train_command(shown(style), shown(run_dir), inputs, args.train_overrides)
        print(f"{stem}: training ({log})", file=sys.stderr, flush=True)
        started = time.time()
        rc, train_seconds = run_logged(command, log, env)
        if rc != 0:
            raise StepFailed(
                f"training exited with status {rc} after {train_seconds:.0f} s: {last_line(log)} (log: {log})"
            )
        # A model file left by an earlier run in the same folder must not pass for this one's.
        if not model.is_file() or model.stat().st_mtime < started:
            raise StepFailed(f"training wrote no {model} (log: {log})")
        print(f"{stem}: trained in {train_seconds:.0f} s", file=sys.stderr, flush=True)

    report = work / stem / "report"
    log = logs / f"{stem}.evaluate.log"
    print(f"{stem}: evaluating ({log})", file=sys.stderr, flush=True)
    rc, seconds = run_logged(
        evaluate_command(shown(model), shown(style), shown(report), inputs, args), log, env
    )
    if rc != 0:
        raise StepFailed(
            f"evaluation exited with status {rc} after {seconds:.0f} s: {last_line(log)} (log: {log})"
        )
    try:
        metrics = json.loads((report / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise StepFailed(f"cannot read {report / 'metrics.json'}: {e}") from None
    print(f"{stem}: evaluated in {seconds:.0f} s", file=sys.stderr, flush=True)
    return Result(style, model, metrics, train_seconds, trained_with(model) if args.models else None)


# -- the page --------------------------------------------------------------------------------------


def num(value: float | None, digits: int = 4) -> str:
    """A number in ``digits`` significant digits; a dash where it was not measured."""
    return "–" if value is None else f"{value:.{digits}g}"


def seconds(value: float | None) -> str:
    """Training seconds: whole seconds from 100 s (the digits beyond are noise), 3 digits below."""
    return "–" if value is None else f"{value:.0f}" if value >= 100 else f"{value:.3g}"


#: The table's columns after the style's name, each read from metrics.json's "aggregate".
COLUMNS = [
    "≈ Gatys it. from noise",
    "≈ Gatys it. from the photo",
    "content",
    "style",
    "tv",
    "total",
    "SSIM",
    "colour dist.",
    "4x4 pattern",
    "droplets",
    "steps",
    "training (s)",
]


def table_row(r: Result) -> list[str]:
    """One style's cells: medians over the photos, but the 4x4 pattern's mean, so that a cross-hatch
    on a few of the photos still shows."""
    agg, ev = r.metrics["aggregate"], r.metrics["evaluation"]
    budget = ev["gatys_iterations"]
    eq = agg["equivalent_iterations"]
    loss = agg["network_loss"]
    training = r.metrics["model"].get("training") or {}
    return [
        r.style.stem,
        format_iterations(eq["noise"]["median"], budget),
        format_iterations(eq["content"]["median"], budget),
        *(num(loss[t]["median"]) for t in ("content", "style", "tv", "total")),
        num(agg["ssim"]["network"]["median"], 3),
        num(agg["color_distance"]["network"]["median"], 3),
        num(agg["grid"]["network"]["mean"], 3),
        num(agg.get("droplet_share", {}).get("network", {}).get("median"), 2),
        str(training.get("steps", "–")),
        seconds(r.train_seconds),
    ]


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|---|" + "---:|" * (len(header) - 1),
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def render_page(
    results: list[Result],
    failures: list[tuple[str, str]],
    inputs: Inputs,
    args: argparse.Namespace,
    work: Path,
    sheet: Path | None,
    env: dict[str, str],
) -> str:
    """The Markdown page: how it was made, the recipe, the table, the sheet, what failed."""
    command = "python benchmarks/bench_quality.py " + shlex.join(sys.argv[1:])
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes")
    first = results[0].metrics if results else {}
    versions = first.get("versions", {})
    threads = env.get("OMP_NUM_THREADS") or f"unset (PyTorch's default, {torch.get_num_threads()} here)"
    out = [
        "# Quality of the recommended recipe",
        "",
        "Written by `benchmarks/bench_quality.py` (do not edit by hand; rerun it):",
        "",
        "```bash",
        command.rstrip(),
        "```",
        "",
        f"{now}; {cpu_name()}, {os.cpu_count()} logical CPUs; torch {torch.__version__}; "
        f"`OMP_NUM_THREADS` {threads}; the evaluation ran on {versions.get('device', '?')} with "
        f"{versions.get('torch_threads', '?')} thread(s).",
        "",
        "## Recipe",
        "",
    ]
    if args.models is not None:
        out += [
            f"Networks trained before, read from `{shown(args.models)}` (`<style>/model.safetensors`); "
            "training time is the model file's own `train_seconds` (the training loop only).",
            "",
        ]
        known = [r for r in results if r.trained_with is not None]
        if known:
            out += ["Trained with (from each run folder's `.hydra/overrides.yaml`):", ""]
            out += [
                f"- `{r.style.stem}`: `{command_line(['scripts/train.py', *r.trained_with])}`" for r in known
            ]
            out += [""]
    else:
        recipe = train_command("<painting>", shown(work / "<style>"), inputs, args.train_overrides)
        out += [
            "Per painting (training time: wall clock of the whole process, validation included):",
            "",
            "```bash",
            command_line(recipe),
            "```",
            "",
        ]
        if args.extra:
            out += [f"Departing from the recipe (`--extra`): `{' '.join(args.extra)}`.", ""]
    models = args.models if args.models is not None else work
    evaluation = evaluate_command(
        shown(models / "<style>" / "model.safetensors"),
        "<painting>",
        shown(work / "<style>" / "report"),
        inputs,
        args,
    )
    out += [
        "Evaluated with (docs/evaluation.md explains every number):",
        "",
        "```bash",
        command_line(evaluation),
        "```",
        "",
        "## Results",
        "",
    ]
    n_images = first.get("aggregate", {}).get("images", "?")
    out += markdown_table(["style", *COLUMNS], [table_row(r) for r in results]) + [""]
    out += [
        f"Over {n_images} validation photo(s) at {args.image_size} px: medians, except the 4x4 pattern (mean). "
        f"Equivalent Gatys iterations: the first L-BFGS iteration whose loss is at or below the network's, "
        f"`> {args.gatys_iterations}` if not within the budget (Johnson et al. report 50–100). Losses are the "
        "network's own objective with this VGG (compare rows only under the same VGG). SSIM of the luminance "
        "to the photo (1 = same structure); colour-histogram distance to the painting (0 = same colours); "
        "4x4 px pattern in 1/255 (photos score below ~1, a cross-hatch several units); droplets: the "
        "share of a channel's variance in its top 0.5 % of pixels at the network's last norm, at 512 px "
        '(~0.1 clean, 0.2 and up blotches; docs/training.md, "Droplets").',
        "",
    ]
    if results:
        photo_grid = results[0].metrics["aggregate"]["grid"]["content"]["mean"]
        photo_colour = ", ".join(
            f"{r.style.stem} {num(r.metrics['aggregate']['color_distance']['content']['median'], 3)}"
            for r in results
        )
        out += [
            f"The photos themselves, for reference: 4x4 pattern {num(photo_grid, 3)}; "
            f"colour distance to each painting: {photo_colour}.",
            "",
        ]
    if sheet is not None:
        link = Path(os.path.relpath(sheet.resolve(), args.output.resolve().parent)).as_posix()
        out += [
            f"![styles x validation photos]({link})",
            "",
            f"A row per style: the painting (centre square), then the first {SHEET_PHOTOS} validation photos "
            f"stylised at {args.sheet_size} px (longest side) as `scripts/stylize.py` does it "
            "(`Stylizer`, 32 px reflection border, fp32); the top row holds the photos.",
            "",
        ]
    if failures:
        out += ["## Failed", ""] + [f"- `{stem}`: {why}" for stem, why in failures] + [""]
    if args.tiny and args.work is None:
        out += [
            "Each style's full report was written to a temporary folder, removed at the end (`--work` keeps it).",
            "",
        ]
    else:
        out += [
            f"Each style's full report (`report.md`, `metrics.json`, pictures): `{shown(work)}/<style>/report/`.",
            "",
        ]
    return "\n".join(out)


# -- the contact sheet -----------------------------------------------------------------------------


def square(path: Path, side: int) -> torch.Tensor:
    """The painting's centre square at ``side`` px, ``(1, 3, side, side)``: a thumbnail of its palette and strokes."""
    return pil_to_tensor(ImageOps.fit(open_image(path), (side, side), Image.Resampling.LANCZOS))


def write_sheet(path: Path, results: list[Result], photos: list[Path], size: int) -> Path:
    """A row per style (painting, then each photo through that style's network), under a row of the photos."""
    contents = [load_image(p, size=size) for p in photos]  # (1, 3, H, W), longest side ``size``
    columns = [("style", ""), *((f"photo {i + 1}", p.name) for i, p in enumerate(photos))]
    rows: list[list[tuple[torch.Tensor | None, str]]] = [[(None, "the photos"), *((c, "") for c in contents)]]
    for r in results:
        # The inference path users get (scripts/stylize.py and the evaluation): border 32, fp32.
        stylizer = Stylizer.load(r.model, device="cpu", precision="fp32")
        rows.append([(square(r.style, size), r.style.stem), *((stylizer.stylize(c), "") for c in contents)])
    with atomic_write(path) as tmp:
        tile_sheet(columns, rows).save(tmp, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return path


# -- tiny inputs -----------------------------------------------------------------------------------


def smooth_noise(rng: np.random.Generator, w: int, h: int, cells: int) -> np.ndarray:
    """Random colours on a ``cells`` x ``cells`` grid, bicubically enlarged: (h, w, 3) in [0, 1]."""
    low = Image.fromarray((rng.random((cells, cells, 3)) * 255).astype(np.uint8))
    return np.asarray(low.resize((w, h), Image.Resampling.BICUBIC), dtype=np.float64) / 255


def make_tiny_inputs(root: Path) -> Inputs:
    """Two synthetic 'paintings' (warm stripes, cool blobs) and 4 + 4 smooth 'photos' in ``root``."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:48, 0:48] / 48
    stripes = np.stack([0.5 + 0.5 * np.sin(12 * (xx + yy)), 0.3 + 0.2 * np.sin(20 * xx), 0.2 * yy], -1)
    blobs = 0.6 * smooth_noise(rng, 48, 48, 6) * np.array([0.3, 0.6, 1.0]) + 0.4 * smooth_noise(
        rng, 48, 48, 3
    )
    styles = []
    for name, img in (("stripes", stripes), ("blobs", blobs)):
        path = root / "styles" / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(path)
        styles.append(path)
    for split in ("train", "val"):
        for i in range(4):
            img = 0.7 * smooth_noise(rng, 48, 40, 4) + 0.3 * np.stack([xx[:40], yy[:40], 1 - xx[:40]], -1)
            path = root / "photos" / split / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(path)
    return Inputs(styles, "random", root / "photos" / "train", root / "photos" / "val")


# -- command line ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--styles",
        nargs="+",
        type=Path,
        help=f"a folder of paintings, or image files (default {SHARED}/data/styles)",
    )
    p.add_argument(
        "--models",
        type=Path,
        help="evaluate networks trained before: DIR/<style>/model.safetensors or DIR/<style>.safetensors",
    )
    p.add_argument(
        "--work",
        type=Path,
        help="run folders, reports and logs (default runs/quality, git-ignored; --tiny: a temporary folder)",
    )
    p.add_argument(
        "--output",
        type=Path,
        help="the Markdown page (default docs/quality.md; --tiny: runs/quality-tiny/quality.md)",
    )
    p.add_argument(
        "--sheet",
        type=Path,
        help="the contact sheet, JPEG (default images/quality_sheet.jpg beside --output)",
    )
    p.add_argument(
        "--vgg",
        help=f"VGG weights for training and evaluation (default {SHARED}/weights/vgg16_hed_features.pth)",
    )
    p.add_argument("--photos", type=Path, help=f"training photos (default {SHARED}/data/photos/train)")
    p.add_argument("--val-photos", type=Path, help=f"validation photos (default {SHARED}/data/photos/val)")
    p.add_argument(
        "--max-images", type=int, help="validation photos evaluated per style (default 8; --tiny 2)"
    )
    p.add_argument("--gatys-iterations", type=int, help="L-BFGS budget per Gatys run (default 200; --tiny 3)")
    p.add_argument(
        "--image-size",
        type=int,
        help="evaluation size, longest side px (default 128, the training crop; --tiny 32)",
    )
    p.add_argument(
        "--sheet-size", type=int, help="contact-sheet tiles, longest side px (default 256; --tiny 32)"
    )
    p.add_argument(
        "--extra",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="training overrides after the recipe's (ablations); recorded in the page",
    )
    p.add_argument(
        "--tiny",
        action="store_true",
        help="synthetic inputs, seconds-long training and evaluation, offline (CI)",
    )
    args = p.parse_args(argv)
    if args.models is not None and args.extra:
        p.error("--extra changes training, but with --models nothing is trained")
    tiny = args.tiny
    for key, real, small in (
        ("max_images", 8, 2),
        ("gatys_iterations", 200, 3),
        ("image_size", 128, 32),
        ("sheet_size", 256, 32),
    ):
        if getattr(args, key) is None:
            setattr(args, key, small if tiny else real)
    if args.output is None:
        args.output = ROOT / ("runs/quality-tiny/quality.md" if tiny else "docs/quality.md")
    if args.sheet is None:
        args.sheet = args.output.parent / "images" / "quality_sheet.jpg"
    args.train_overrides = (TINY_TRAIN if tiny else []) + list(args.extra)
    return args


def resolve_inputs(args: argparse.Namespace) -> Inputs:
    """The real inputs, every one checked before hours of training start."""
    styles: list[Path] = []
    for s in args.styles or [SHARED / "data" / "styles"]:
        styles += find_images(s)[1] if s.is_dir() else [s]
    inputs = Inputs(
        styles=styles,
        vgg=args.vgg
        if args.vgg in ("imagenet", "random")
        else shown(args.vgg or SHARED / "weights" / "vgg16_hed_features.pth"),
        photos=args.photos or SHARED / "data" / "photos" / "train",
        val_photos=args.val_photos or SHARED / "data" / "photos" / "val",
    )
    missing = [str(s) for s in styles if not s.is_file()]
    if inputs.vgg not in ("imagenet", "random") and not (ROOT / inputs.vgg).is_file():
        missing.append(inputs.vgg)
    if args.models is None and not inputs.photos.is_dir():
        missing.append(str(inputs.photos))
    if not inputs.val_photos.is_dir():
        missing.append(str(inputs.val_photos))
    if args.models is not None and not args.models.is_dir():
        missing.append(str(args.models))
    stems = [s.stem for s in styles]
    clash = sorted({t for t in stems if stems.count(t) > 1})
    if clash:  # one run folder, report and table row per name
        sys.exit(f"error: two style images named {clash[0]}: rename one (each style needs its own name)")
    if missing or not styles:
        sys.exit(
            f"error: not found: {', '.join(missing) or 'no style images'} (set FASTNS_SHARED or pass the paths)"
        )
    return inputs


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="bench_quality_") as tmp:
        if args.tiny:
            inputs = make_tiny_inputs(Path(tmp) / "inputs")
            # 32-px work on a shared 2-core machine: thread hand-offs cost more than the maths
            # (docs/evaluation.md, "Timing on a busy machine"), so the check runs single-threaded.
            env["OMP_NUM_THREADS"] = env.get("OMP_NUM_THREADS") or "1"
            torch.set_num_threads(int(env["OMP_NUM_THREADS"]))
        else:
            inputs = resolve_inputs(args)
        work = args.work or (Path(tmp) / "work" if args.tiny else ROOT / "runs" / "quality")

        results: list[Result] = []
        failures: list[tuple[str, str]] = []
        for style in inputs.styles:
            try:
                results.append(measure_style(style, inputs, args, work, env))
            except StepFailed as e:
                print(f"FAILED {style.stem}: {e}", file=sys.stderr, flush=True)
                failures.append((style.stem, str(e)))

        sheet = None
        if results:
            photos = find_images(inputs.val_photos)[1][:SHEET_PHOTOS]
            try:
                sheet = write_sheet(args.sheet, results, photos, args.sheet_size)
            except (FastnsError, OSError) as e:
                print(f"FAILED contact sheet: {e}", file=sys.stderr, flush=True)
                failures.append(("contact sheet", str(e)))
        page = render_page(results, failures, inputs, args, work, sheet, env)
        with atomic_write(args.output) as f:
            f.write_text(page, encoding="utf-8")

    print(page)
    print(f"wrote {args.output}" + (f" and {sheet}" if sheet else ""), file=sys.stderr)
    if failures:
        print(f"error: {len(failures)} failed: {', '.join(s for s, _ in failures)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
