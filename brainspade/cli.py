"""Turn bad input into one clear line and a non-zero exit, instead of a traceback from deep inside."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from .errors import InputError


def run_guarded(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call fn; on InputError print `error: <message>` to stderr and exit with status 2.

    SystemExit passes through `python -m monai.bundle run` without a traceback.
    """
    try:
        return fn(*args, **kwargs)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
