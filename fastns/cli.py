"""What the scripts share: turning user errors into one line and an exit status."""

from __future__ import annotations

import functools
import signal
import sys
from collections.abc import Callable
from typing import Any

from omegaconf.errors import OmegaConfBaseException

from .errors import FastnsError, first_line

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


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a task so that user errors print ``error: <one line>`` and exit non-zero.

    Programming errors still raise with a traceback: those are bugs to report, not input to fix.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
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
