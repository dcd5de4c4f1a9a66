"""The command line: one Hydra entry point per task, and the ``fastns`` command that dispatches to them.

``fastns train|stylize|optimize|evaluate|export|app [key=value ...]`` (installed by ``pip install``) and
``python scripts/<task>.py [key=value ...]`` (the checkout's thin wrappers) run the same function
below, with the same configs (``fastns/configs``, shipped inside the package so that an installed
``fastns`` needs no checkout), the same checks of the command line and the same one-line errors
(:mod:`fastns.cli`). Each task imports its implementation only when it runs, so ``--help`` answers
without loading PyTorch.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from .cli import EXIT_USER_ERROR, checked_command_line, interrupted_status, user_errors
from .version import __version__

#: The Hydra configs, inside the package (a plain folder: Hydra is given its absolute path, as a
#: module path would need ``__init__.py`` files in every config group).
CONFIGS = Path(__file__).resolve().parent / "configs"


def _entry(config_path: str, config_name: str, run: Callable[[DictConfig], Any]) -> Callable[[], Any]:
    """A Hydra main for ``run`` with the config ``config_path/config_name`` (``config_path`` in :data:`CONFIGS`)."""
    config_dir = str(CONFIGS / config_path)

    @checked_command_line(config_dir, config_name)
    @hydra.main(version_base="1.3", config_path=config_dir, config_name=config_name)
    @user_errors
    def main(cfg: DictConfig) -> None:
        run(cfg)

    main.__doc__ = run.__doc__
    return main


def _train(cfg: DictConfig) -> None:
    """Train a feed-forward style network (docs/train.md)."""
    from .train import train as train_task

    summary = train_task(cfg)
    if summary.get("interrupted"):  # stopped by a signal, checkpoint saved: not a finished run
        raise SystemExit(interrupted_status(summary["interrupted"]))


def _stylize(cfg: DictConfig) -> None:
    """Stylise images, folders, videos or the webcam with a trained network (docs/stylize.md)."""
    from .stylize import run

    run(cfg)


def _optimize(cfg: DictConfig) -> None:
    """Gatys style transfer or texture synthesis by optimising the image (docs/optimize.md)."""
    from .optimize import run

    run(cfg)


def _evaluate(cfg: DictConfig) -> None:
    """Evaluate a trained network against Gatys optimisation (docs/evaluation.md)."""
    from .evaluate import run

    run(cfg)


def _export(cfg: DictConfig) -> None:
    """Export a network: model file, TorchScript or ONNX (docs/export.md)."""
    from .export import run

    run(cfg)


def _app(cfg: DictConfig) -> None:
    """Serve the web app: stylise photos in a browser page (docs/web.md)."""
    from .app import run

    run(cfg)


train = _entry(".", "train", _train)
stylize = _entry("tools", "stylize", _stylize)
optimize = _entry(".", "optimize", _optimize)
evaluate = _entry("tools", "evaluate", _evaluate)
export = _entry("tools", "export", _export)
app = _entry("tools", "app", _app)

#: ``fastns <task>``: the task's entry point, in the order ``fastns --help`` lists them.
TASKS: dict[str, Callable[[], Any]] = {
    "train": train,
    "stylize": stylize,
    "optimize": optimize,
    "evaluate": evaluate,
    "export": export,
    "app": app,
}


def usage() -> str:
    lines = [
        "usage: fastns <task> [key=value ...]   (fastns <task> --help: the task's settings)",
        "",
        "tasks:",
    ]
    lines += [f"  {name:<9} {(task.__doc__ or '').strip()}" for name, task in TASKS.items()]
    lines += ["", "e.g. fastns stylize model=candy.safetensors input=photo.jpg output=out.jpg"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """``fastns <task> [overrides]``: run one task as ``python scripts/<task>.py [overrides]`` would."""
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        raise SystemExit(0 if args else EXIT_USER_ERROR)
    if args[0] in ("-V", "--version"):
        print(f"fastns {__version__}")
        return
    name, rest = args[0], args[1:]
    task = TASKS.get(name)
    if task is None:
        print(
            f"error: fastns {name}: no such task; one of {', '.join(TASKS)} (fastns --help)", file=sys.stderr
        )
        raise SystemExit(EXIT_USER_ERROR)
    sys.argv = [f"fastns {name}", *rest]  # Hydra and the command-line check read sys.argv
    task()
