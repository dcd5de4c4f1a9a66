"""What the scripts share: checking the command line, and turning user errors into one line and an exit status."""

from __future__ import annotations

import functools
import inspect
import logging
import re
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .errors import ConfigError, FastnsError, first_line

#: Exit status for a user error (bad file, bad config value); 130 is the shell's Ctrl-C status.
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def interrupted_status(signal_name: str) -> int:
    """The exit status of a run stopped by ``signal_name``: 128 + its number, as shells report it.

    130 for SIGINT (Ctrl-C), 143 for SIGTERM (schedulers: SLURM requeues on it); a stop agreed
    with another process (DDP) counts as an interrupt.
    """
    try:
        return 128 + signal.Signals[signal_name].value
    except KeyError:
        return EXIT_INTERRUPTED


class _LevelPrefix(logging.Formatter):
    """``warning: <message>``, like the scripts' own ``error: <message>`` lines."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {super().format(record)}"


def _below_warning(record: logging.LogRecord) -> bool:
    return record.levelno < logging.WARNING


def split_log_streams() -> None:
    """Send log warnings and errors to stderr as ``warning: <message>``, progress and results to stdout.

    Hydra's logging configuration writes every level to stdout, where a warning (a skipped file)
    would be lost in a redirected output. Applied to the console handler Hydra installed.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if type(handler) is logging.StreamHandler and handler.stream is sys.stdout:
            handler.addFilter(_below_warning)
            errors = logging.StreamHandler(sys.stderr)
            errors.setLevel(logging.WARNING)
            errors.setFormatter(_LevelPrefix("%(message)s"))
            root.addHandler(errors)


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a task so that user errors print ``error: <one line>`` and exit non-zero.

    Programming errors still raise with a traceback: those are bugs to report, not input to fix.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        split_log_streams()
        try:
            return fn(*args, **kwargs)
        except FastnsError as e:
            print(f"error: {first_line(e)}", file=sys.stderr)
            raise SystemExit(EXIT_USER_ERROR) from None
        except OmegaConfBaseException as e:
            # e.g. a mandatory value (???) left unset: "Missing mandatory value: content"
            key = getattr(e, "full_key", None)
            msg = first_line(e)
            if "Missing mandatory value" in msg and key:
                msg = f"missing required setting {key}: pass {key}=..."
            print(f"error: {msg}", file=sys.stderr)
            raise SystemExit(EXIT_USER_ERROR) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise SystemExit(EXIT_INTERRUPTED) from None

    return wrapper


def checked_command_line(
    config_path: str, config_name: str
) -> Callable[[Callable[[], Any]], Callable[[], Any]]:
    """Check a script's command line against its config before Hydra runs it; a bad one is one line, exit 2.

    Hydra reports its own failures (an unknown key, an unknown preset) over several lines with exit
    status 1, and takes any value for any key. Applied above ``@hydra.main`` with the same
    ``config_path`` and ``config_name``, this composes the config once (cheap: no task runs) and
    stops with ``error: <one line>`` naming the key for:

    - an unknown key (``stylee=candy``) or preset (``style=vangogh``: the available ones are listed);
    - a value of the wrong type for its key (``trainer.max_steps=abc``): a key whose default is an
      integer, a number or a boolean takes only that;
    - an argument that is not valid UTF-8 (a file name in another encoding).

    Hydra's own flags (``--help``, ``-m`` sweeps, ``--cfg`` ...) are left to Hydra.
    """

    def decorate(main: Callable[[], Any]) -> Callable[[], Any]:
        config_dir = (Path(inspect.getfile(inspect.unwrap(main))).parent / config_path).resolve()

        @functools.wraps(main)
        def wrapper() -> Any:
            args = sys.argv[1:]
            if not any(a.startswith("-") for a in args):
                try:
                    check_overrides(config_dir, config_name, args)
                except FastnsError as e:
                    print(f"error: {first_line(e)}", file=sys.stderr)
                    raise SystemExit(EXIT_USER_ERROR) from None
            return main()

        return wrapper

    return decorate


#: Keys that take more than the type of their default, left to the task to check: Lightning's
#: ``devices`` (1, "auto", [0, 1]) and ``val_check_interval`` (steps, or a fraction of an epoch),
#: the webcam's ``camera`` (an index or a URL), ``compile`` (true or a torch.compile mode).
UNION_KEYS = frozenset({"trainer.devices", "trainer.val_check_interval", "camera", "compile"})


def check_overrides(config_dir: Path, config_name: str, overrides: list[str]) -> None:
    """Raise :class:`ConfigError` (one line, naming the key) for overrides the config cannot take."""
    for arg in overrides:
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            shown = arg.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            raise ConfigError(
                f"{shown}: not valid UTF-8 (a file name in another encoding?); rename the file or pass a link to it"
            ) from None
    # Group choices (style=candy, trainer=cpu) change which defaults apply to the values.
    groups = [o for o in overrides if (config_dir / o.split("=", 1)[0].lstrip("+~")).is_dir()]
    defaults = _compose(config_dir, config_name, groups)
    config = defaults if len(groups) == len(overrides) else _compose(config_dir, config_name, overrides)
    for arg in overrides:
        key, _, text = arg.partition("=")
        if arg in groups or key.startswith(("+", "~", "hydra.")) or not text or key in UNION_KEYS:
            continue
        default, value = OmegaConf.select(defaults, key), OmegaConf.select(config, key)
        kind = _expected_kind(default, value)
        if kind is not None:
            raise ConfigError(f"{key}={text}: {key} takes {kind} (default: {default})")


def _expected_kind(default: Any, value: Any) -> str | None:
    """What ``value`` should have been, given the key's ``default``; None when it fits."""
    containers = (dict, list, DictConfig, ListConfig)
    if value is None or default is None or isinstance(default, containers) or isinstance(value, containers):
        return None  # a list where one value is the default (iterations=[100,200]) is the task's to check
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "true or false"
    if isinstance(default, int):
        whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        return None if whole and not isinstance(value, bool) else "a whole number"
    if isinstance(default, float):
        return None if isinstance(value, (int, float)) and not isinstance(value, bool) else "a number"
    return None


def _compose(config_dir: Path, config_name: str, overrides: list[str]) -> DictConfig:
    """The config Hydra would build for ``overrides``, or a one-line :class:`ConfigError`."""
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            return compose(config_name=config_name, overrides=overrides)
    except MissingConfigException as e:
        group = Path(e.missing_cfg_file or "").parent.name or "config"
        given = next((o for o in overrides if o.split("=", 1)[0].lstrip("+~") == group), group)
        options = ", ".join(e.options or [])
        raise ConfigError(f"{given}: no such {group} preset; available: {options}") from None
    except ConfigCompositionException as e:
        text = f"{e} {e.__cause__}"
        match = re.search(r"Could not override '([^']+)'", text)
        if match and "not in struct" in text:
            key = match.group(1)
            raise ConfigError(
                f"{key}: unknown setting (a typo?); `--cfg job` after the command prints every setting"
            ) from None
        raise ConfigError(first_line(e)) from None
    except (OverrideParseException, OmegaConfBaseException) as e:
        raise ConfigError(first_line(e)) from None
