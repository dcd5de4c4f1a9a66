"""report.md: the evaluation's numbers as Markdown for people, and its summary sentences.

:func:`render_report` writes the whole document from ``metrics.json``'s content (summary, tables
after Johnson et al.'s Figure 5 and Table 1, per-image rows, how to read them, the settings);
:func:`summary_lines` are the headline findings, also logged at the end of a run.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from ..metrics import GRID_PERIOD, HIST_BINS, SPIKE_TOP
from .files import CURVES_FILE, METRICS_FILE, REPORT_FILE, SHEET_FILE
from .gatys import START_NAMES


def format_iterations(value: float | None, budget: int) -> str:
    """An equivalent-iteration count for people: ``73``, or ``> 300`` when the budget ran out."""
    return f"> {budget}" if value is None else f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def _g(value: float | None, digits: int = 4) -> str:
    """A number in ``digits`` significant digits, or a dash when it was not measured."""
    return "–" if value is None else f"{value:.{digits}g}"


def _seconds(value: float | None) -> str:
    """A duration in 3 significant digits: in ms under a second, in whole seconds from 100 s."""
    if value is None:
        return "–"
    if value < 1:
        return f"{value * 1000:.3g} ms"
    return f"{value:.3g} s" if value < 100 else f"{value:.0f} s"


def _speedup(value: float | None) -> str:
    """A speed-up ratio: whole numbers with thousands separators from 10x, 2 digits below."""
    return "–" if value is None else f"{value:,.0f}x" if value >= 10 else f"{value:.2g}x"


def _iter_summary(s: Mapping, budget: int) -> tuple[str, str]:
    """(mean, median) cells of an equivalent-iteration summary."""
    mean = (
        format_iterations(s["mean"], budget)
        if s["mean"] is not None
        else ("–" if s.get("mean_lower_bound") is None else f"≥ {s['mean_lower_bound']:.0f}")
    )
    return mean, format_iterations(s["median"], budget)


def summary_lines(metrics: Mapping) -> list[str]:
    """The headline findings, one sentence each (report.md's summary and the log)."""
    agg, ev = metrics["aggregate"], metrics["evaluation"]
    budget, n = ev["gatys_iterations"], agg["images"]
    lines = []
    for k in ev["gatys_init"]:
        s = agg["equivalent_iterations"][k]
        mean, median = _iter_summary(s, budget)
        start = START_NAMES[k]
        lines.append(
            f"Gatys L-BFGS from {start} reaches the network's loss after a median of {median} iterations "
            f"(mean {mean}; {s['reached']} of {n} images within {budget})."
        )
    sp = agg["speed"]
    times = ", ".join(
        f"{_seconds(v['seconds']['median'])} for {k}" + ("" if v["measured"] else " (est.)")
        for k, v in sp["gatys"].items()
    )
    ups = " / ".join(_speedup(v["speedup"]["median"]) for v in sp["gatys"].values())
    lines.append(
        f"The network takes {_seconds(sp['network_seconds']['median'])} per image at {ev['image_size']} px; "
        f"Gatys takes {times} iterations: {ups} faster (medians)."
    )
    ssim = agg["ssim"]
    parts = [f"network {_g(ssim['network']['median'], 3)}"] + [
        f"Gatys from {START_NAMES[k]} {_g(ssim[f'gatys_{k}']['median'], 3)}" for k in ev["gatys_init"]
    ]
    lines.append("SSIM of the luminance to the photo (1 = same structure): " + ", ".join(parts) + ".")
    cd = agg["color_distance"]
    parts = [f"photo {_g(cd['content']['median'], 3)}", f"network {_g(cd['network']['median'], 3)}"] + [
        f"Gatys from {START_NAMES[k]} {_g(cd[f'gatys_{k}']['median'], 3)}" for k in ev["gatys_init"]
    ]
    lines.append("Colour-histogram distance to the style (0 = same colours): " + ", ".join(parts) + ".")
    grid = agg.get("grid")
    if grid:  # reports written before the grid measure have none
        parts = [
            f"photo {_g(grid['content']['median'], 2)}",
            f"network {_g(grid['network']['median'], 2)}",
        ] + [f"Gatys from {START_NAMES[k]} {_g(grid[f'gatys_{k}']['median'], 2)}" for k in ev["gatys_init"]]
        lines.append(
            f"Fixed {GRID_PERIOD}x{GRID_PERIOD} px pattern (cross-hatch; in 1/255, photos below ~1): "
            + ", ".join(parts)
            + "."
        )
    drops = agg.get("droplet_share", {}).get("network", {}).get("median")
    if drops is not None:  # droplet_size=null, or a report from before the measure
        lines.append(
            f"Droplets at {ev.get('droplet_size')} px (share of a channel's variance in its top "
            f"{SPIKE_TOP:.1%} of pixels at the network's last norm; ~0.1 clean, 0.2 and up blotches): "
            f"network {_g(drops, 2)}."
        )
    return lines


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str | None = None) -> list[str]:
    """A Markdown table; ``align`` has an ``l`` or ``r`` per column (default: first left, rest right)."""
    align = align or "l" + "r" * (len(header) - 1)
    sep = ["---:" if a == "r" else "---" for a in align]
    return ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"] + [
        "| " + " | ".join(r) + " |" for r in rows
    ]


def render_index(index: Mapping, per_style: Mapping[str, Mapping]) -> str:
    """report.md of a network of several styles: a table of the styles, then a section per style
    with its summary and contact sheet; each style's full report is in its own folder."""
    first = next(iter(per_style.values()))
    ev = first["evaluation"]
    budget, inits = ev["gatys_iterations"], ev["gatys_init"]
    out = [f"# Evaluation of `{index['model']['path']}` ({len(per_style)} styles)", ""]
    out += ["Made with:", "", "```bash", index.get("command") or "fastns.evaluate.run(cfg)", "```", ""]
    out += [
        f"{first['aggregate']['images']} image(s) at {ev['image_size']} px, Gatys L-BFGS for {budget} "
        f"iterations per style; each style is measured against its own style targets, with the loss the "
        "network was trained on. One report per style in its folder.",
        "",
    ]
    header = [
        "style",
        *(f"≈ Gatys it. from {START_NAMES[k]}" for k in inits),
        "loss",
        "content",
        "style loss",
    ]
    header += ["SSIM", "colour dist.", f"{GRID_PERIOD}x{GRID_PERIOD} pattern", "report"]
    rows = []
    for name, m in per_style.items():
        agg = m["aggregate"]
        loss = agg["network_loss"]
        rows.append(
            [
                f"{name}",
                *(format_iterations(agg["equivalent_iterations"][k]["median"], budget) for k in inits),
                _g(loss["total"]["median"]),
                _g(loss["content"]["median"]),
                _g(loss["style"]["median"]),
                _g(agg["ssim"]["network"]["median"], 3),
                _g(agg["color_distance"]["network"]["median"], 3),
                _g(agg["grid"]["network"]["mean"], 2),
                f"[{name}/{REPORT_FILE}]({name}/{REPORT_FILE})",
            ]
        )
    out += ["## Styles", ""] + _table(header, rows) + [""]
    out += ["Medians over the images (the pattern: mean). docs/evaluation.md explains every number.", ""]
    for name, m in per_style.items():
        out += [f"## {name}", ""]
        out += [f"- {line}" for line in summary_lines(m)] + [""]
        out += [f"![{name}]({name}/{SHEET_FILE})", ""]
    return "\n".join(out)


def render_report(metrics: Mapping) -> str:
    """report.md: summary, tables (aggregate, speed, per image), pictures, how to read them, settings."""
    agg, ev, model = metrics["aggregate"], metrics["evaluation"], metrics["model"]
    budget, inits = ev["gatys_iterations"], ev["gatys_init"]
    loss, training = ev["loss"], model.get("training") or {}
    norm = "per-layer normalised terms" if loss.get("normalize") else "the papers' normalisation"
    n = agg["images"]
    out = [f"# Evaluation of `{model['path']}` ({ev['style']['name']})", ""]
    command = metrics.get("command")
    out += [
        "Made with:",
        "",
        "```bash",
        command or "fastns.evaluate.run(cfg)  # from Python; config in metrics.json",
        "```",
        "",
    ]
    versions = metrics["versions"]
    out += [
        f"{n} image(s) at {ev['image_size']} px (longest side), Gatys L-BFGS for {budget} iterations from "
        f"{' and from '.join(START_NAMES[k] for k in inits)}; "
        f"{loss['vgg']['arch']} with weights `{loss['vgg']['weights']}`; device {versions['device']} "
        f"({versions['hardware']}, {versions['torch_threads']} CPU thread(s)); fastns {versions['fastns']}, "
        f"torch {versions['torch']}; {metrics['created']}.",
        "",
        "## Summary",
        "",
    ]
    out += [f"- {line}" for line in summary_lines(metrics)] + [""]

    # Aggregate table.
    rows = []
    for term, s in agg["network_loss"].items():
        rows.append([f"network loss `{term}`", _g(s["mean"]), _g(s["median"])])
    for k in inits:
        rows.append(
            [
                f"Gatys from {START_NAMES[k]}: loss after {budget} iterations",
                _g(agg["gatys_final_loss"][k]["mean"]),
                _g(agg["gatys_final_loss"][k]["median"]),
            ]
        )
    for k in inits:
        mean, median = _iter_summary(agg["equivalent_iterations"][k], budget)
        s = agg["equivalent_iterations"][k]
        rows.append(
            [f"equivalent Gatys iterations from {START_NAMES[k]} ({s['reached']}/{n} reached)", mean, median]
        )
    for key, label in [
        ("network", "network"),
        *((f"gatys_{k}", f"Gatys from {START_NAMES[k]}") for k in inits),
    ]:
        rows.append(
            [
                f"SSIM to the photo: {label}",
                _g(agg["ssim"][key]["mean"], 3),
                _g(agg["ssim"][key]["median"], 3),
            ]
        )
    for key, label in [
        ("content", "the photo itself"),
        ("network", "network"),
        *((f"gatys_{k}", f"Gatys from {START_NAMES[k]}") for k in inits),
    ]:
        s = agg["color_distance"][key]
        rows.append([f"colour distance to the style: {label}", _g(s["mean"], 3), _g(s["median"], 3)])
    for key, label in [
        ("content", "the photo itself"),
        ("network", "network"),
        *((f"gatys_{k}", f"Gatys from {START_NAMES[k]}") for k in inits),
    ]:
        s = agg.get("grid", {}).get(key)
        if s:
            rows.append(
                [
                    f"{GRID_PERIOD}x{GRID_PERIOD} px pattern (1/255): {label}",
                    _g(s["mean"], 2),
                    _g(s["median"], 2),
                ]
            )
    s = agg.get("droplet_share", {}).get("network")
    if s and s["median"] is not None:
        rows.append(
            [f"droplet share at {ev.get('droplet_size')} px: network", _g(s["mean"], 2), _g(s["median"], 2)]
        )
    out += [f"## Aggregate ({n} images)", ""] + _table(["metric", "mean", "median"], rows) + [""]

    # Speed, Johnson et al. Table 1.
    sp = agg["speed"]
    rows = [
        [
            "network forward pass",
            _seconds(sp["network_seconds"]["mean"]),
            _seconds(sp["network_seconds"]["median"]),
            "",
            "",
        ]
    ]
    estimated = False
    for k, v in sp["gatys"].items():
        mark = "" if v["measured"] else " (est.)"
        estimated |= not v["measured"]
        rows.append(
            [
                f"Gatys, {k} iterations{mark}",
                _seconds(v["seconds"]["mean"]),
                _seconds(v["seconds"]["median"]),
                _speedup(v["speedup"]["mean"]),
                _speedup(v["speedup"]["median"]),
            ]
        )
    out += [f"## Speed at {ev['image_size']} px (Johnson et al., Table 1)", ""]
    out += _table(["", "time (mean)", "time (median)", "speed-up (mean)", "speed-up (median)"], rows) + [""]
    per_it = sp["gatys_seconds_per_iteration"]
    note = (
        f"Gatys L-BFGS costs {_seconds(per_it['median'])} per iteration (median over images, measured over "
        f"its {budget} iterations; one iteration may evaluate the loss more than once in its line search)."
    )
    if estimated:
        note += f" **(est.)**: beyond `gatys_iterations={budget}` the time is the measured time per iteration × N."
    note += (
        f" The network time is the median of {ev['timing_runs']} forward passes after a warm-up "
        f"({ev['precision']}, border {ev['border']} px, as `scripts/stylize.py`). Both were measured in "
        "this run on the same device; on a machine busy with other work both slow down, not always "
        "equally, so compare speed-ups from quiet runs."
    )
    out += [note, ""]

    # Per image.
    terms = [t for t in ("content", "style", "tv", "grid") if t in agg["network_loss"]]
    header = ["image", "size", "loss", *terms]
    header += [f"≈ Gatys it. from {START_NAMES[k]}" for k in inits]
    header += ["SSIM", "colour dist. photo → network", "network time", "Gatys time / it."]
    rows = []
    for r in metrics["images"]:
        w, h = r["size"]
        rows.append(
            [
                f"`{r['image']}`",
                f"{w}x{h}",
                _g(r["network"]["loss"]["total"]),
                *(_g(r["network"]["loss"][t]) for t in terms),
                *(format_iterations(r["gatys"][k]["equivalent_iterations"], budget) for k in inits),
                _g(r["network"]["ssim"], 3),
                f"{_g(r['content']['color_distance'], 2)} → {_g(r['network']['color_distance'], 2)}",
                _seconds(r["speed"]["network_seconds"]),
                _seconds(r["speed"]["gatys_seconds_per_iteration"]),
            ]
        )
    out += ["## Per image", ""] + _table(header, rows, "ll" + "r" * (len(header) - 2)) + [""]
    style_terms = [t for t in agg["network_loss"] if t.startswith(("style/", "content/"))]
    if style_terms:
        out += ["Loss terms per layer (network):", ""]
        rows = [
            [f"`{r['image']}`", *(_g(r["network"]["loss"][t]) for t in style_terms)]
            for r in metrics["images"]
        ]
        out += _table(["image", *(f"`{t}`" for t in style_terms)], rows) + [""]

    out += [
        "## Pictures",
        "",
        f"![contact sheet]({SHEET_FILE})",
        "",
        f"`{SHEET_FILE}`: one row per image — the photo, the network's output, then Gatys from "
        f"{' and from '.join(START_NAMES[k] for k in inits)} after "
        f"{', '.join(map(str, ev['sheet_iterations']))} iterations. Under each result: its total loss and, "
        "in brackets, that loss relative to the network's (below 1x: Gatys has done better than the "
        "network on the network's own objective).",
        "",
        f"![loss curves]({CURVES_FILE})",
        "",
        f"`{CURVES_FILE}`: top, the Gatys total loss against L-BFGS iterations (log scale) for every "
        "image, with the network's loss as a dashed line of the same colour and a dot where Gatys "
        "reaches it; bottom, the same curves divided by the network's loss, with their geometric "
        "mean in black: where it crosses 1 is the typical equivalent iteration count (Figure 5).",
        "",
        "## How to read this",
        "",
        "- **Loss** is the objective the network was trained on (the model file's loss settings: "
        f"content {', '.join(loss['content_layers'])}, style {', '.join(loss['style_layers'])}, "
        f"α={loss['content_weight']:g}, β={loss['style_weight']:g}, TV {loss['tv_weight']:g}, "
        f"4x4 pattern penalty {loss.get('grid_weight', 0.0):g}, "
        f"{norm}). Lower is better; the numbers compare models evaluated with the same VGG weights only.",
        "- **Equivalent Gatys iterations** (Johnson et al. 2016, Figure 5): the first L-BFGS iteration at "
        "which per-image optimisation of the same loss is at least as good as the network's single "
        f"forward pass. Johnson et al. report 50–100. `> {budget}`: not within the budget "
        "(`gatys_iterations`); the network is then better than that many iterations. From the photo "
        "the optimisation starts with the content term at zero, so it usually needs fewer iterations "
        "than from white noise.",
        "- **Speed** (Table 1): how many times faster one forward pass is than Gatys with "
        f"{'/'.join(agg['speed']['gatys'])} iterations. Johnson et al. measured about 200x, 600x and "
        "1000x for 100, 300 and 500 iterations on a GPU (GTX Titan X) at 256–1024 px.",
        "- **SSIM** (0–1) of the luminance compares the output's structure with the photo's: higher "
        "keeps more of the photo, lower means the style has taken over more. It is not a quality "
        "score; compare it with the Gatys columns.",
        "- **Colour distance** (0–1): symmetric χ² distance between the joint RGB histograms "
        f"({HIST_BINS}³ bins) of an image and of the style image; 0 = identical colour "
        "distributions. The photo's own distance is the starting point; a network that has learnt "
        "the palette brings it down.",
        f"- **{GRID_PERIOD}x{GRID_PERIOD} px pattern** (in 1/255): the luminance minus its "
        f"{GRID_PERIOD}x{GRID_PERIOD} moving average, folded onto a {GRID_PERIOD}x{GRID_PERIOD} grid (the "
        "mean pixel at each position of every block), and the RMS of that pattern. Image content averages out: photos and Gatys results score below ~1. A network "
        "that paints a fixed texture locked to its two x2 stages (a fine cross-hatch) scores several "
        "units; docs/training.md shows what the numbers look like.",
        "- **Droplet share** (0–1; measured at `droplet_size` px through the border, on the part of the map "
        "that becomes the output): at the input of "
        "the network's last normalisation layer, the share of each channel's variance held by its "
        f"top {SPIKE_TOP:.1%} of pixels, median over channels. An instance norm lets a network turn "
        "a channel down everywhere with one strong local spike, which shows as a blotch at a fixed "
        "place (the droplets of Karras et al. 2020); about 0.05 for noise, ~0.1 for a network "
        'without them, 0.2 and up with them (docs/training.md, "Droplets").',
        "",
        "## Settings",
        "",
        # The first 16 hex digits of the sha256 tell files apart; metrics.json has all of it.
        f"- model: `{model['path']}` (sha256 `{model['sha256'][:16]}…`), written by fastns "
        f"{model.get('fastns_version')}; network {json.dumps(model['network'])}",
        f"- training: {training.get('steps', '?')} steps at {training.get('image_size', '?')} px",
        f"- style: {', '.join(f'`{s}`' for s in ev['style']['sources'])} at {ev['style']['size'] or 'native'} px",
        f"- loss: `{json.dumps(loss)}`",
        f"- seed {ev['seed']}: reruns give the same numbers except the timings. All numbers are in `{METRICS_FILE}`.",
        "",
    ]
    return "\n".join(out)
