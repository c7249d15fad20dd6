"""Turn bad input into one clear line and a non-zero exit, instead of a traceback from deep inside."""

from __future__ import annotations

import math
import numbers
import sys
from collections.abc import Callable
from typing import Any

from .errors import InputError, is_input_error


def run_guarded(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call fn; on InputError print `error: <message>` to stderr and exit with status 2.

    SystemExit passes through `python -m monai.bundle run` without a traceback.
    """
    try:
        return fn(*args, **kwargs)
    except Exception as exc:  # InputError of any copy of this library (errors.is_input_error says why)
        if not is_input_error(exc):
            raise
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


TRUE_WORDS = ("true", "yes", "y", "on", "1")
FALSE_WORDS = ("false", "no", "n", "off", "0")


def parse_bool(value: Any, name: str) -> bool:
    """The one reading of a boolean option in every bundle: True/False, 1/0, or a word users type
    (true/false, yes/no, y/n, on/off, any case). Anything else is refused with the accepted forms,
    never guessed: Python Fire hands `--overwrite false` over as the string 'false', which `bool()` reads as True.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
    raise InputError(
        f"{name}={value!r} is not a boolean; accepted: {'/'.join(TRUE_WORDS[:4])} or "
        f"{'/'.join(FALSE_WORDS[:4])} (any case), 1 or 0"
    )


def parse_int(value: Any, name: str, lo: int, hi: int) -> int:
    """The one reading of an integer option: an int, an integral float or a string of digits, within lo..hi."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    ok |= isinstance(value, float) and float(value).is_integer()
    ok |= isinstance(value, str) and value.strip().lstrip("+-").isdigit()
    if not ok:
        raise InputError(f"{name}={value!r} is not an integer; accepted: {lo}..{hi}")
    v = int(float(value))
    if not lo <= v <= hi:
        raise InputError(f"{name}={v} is out of range; accepted: {lo}..{hi}")
    return v


def parse_float(value: Any, name: str, lo: float = -math.inf, hi: float = math.inf) -> float:
    """The one reading of a real-valued option: a number or a numeric string, finite, within lo..hi."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if isinstance(value, str):
        try:
            value, ok = float(value.strip()), True
        except ValueError:
            ok = False
    if not ok or not math.isfinite(float(value)):
        raise InputError(f"{name}={value!r} is not a finite number; accepted: {lo:g}..{hi:g}")
    v = float(value)
    if not lo <= v <= hi:
        raise InputError(f"{name}={v:g} is out of range; accepted: {lo:g}..{hi:g}")
    return v


class GuardedCall:
    """`run_guarded(fn, **kwargs)`, deferred: built by a config as a component and called from `run`
    (`$@evaluator.run()`, the entry MONAI's generative bundles expose). Keyword arguments keep a config readable
    where one `$` expression would list a dozen positional ones."""

    def __init__(self, fn: Callable[..., Any], **kwargs: Any) -> None:
        self.fn, self.kwargs = fn, kwargs

    def run(self) -> Any:
        return run_guarded(self.fn, **self.kwargs)


def flag(value: Any, name: str) -> bool:
    """`parse_bool` for config expressions: a bad value is one `error:` line and exit status 2."""
    return run_guarded(parse_bool, value, name)
