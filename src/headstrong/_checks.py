"""One place for the checks every config and command repeats: a whole number in a range, a
finite number in a range, a true/false.

A TOML file or a caller can hand over ``"1e-7"`` where a number belongs, ``1.5`` where a count
belongs or ``True`` where a bit belongs; Python would compare, truncate or count them silently.
Each check refuses with one line naming the setting, what it got and what is allowed.
"""

from __future__ import annotations

import math
import numbers
from typing import Optional


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else f"{value:g}"


def _range_text(low: Optional[float], high: Optional[float], low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{_num(low)}, {_num(high)}{')' if high_open else ']'}"
    if low is not None:
        return f"{'above' if low_open else 'at least'} {_num(low)}"
    if high is not None:
        return f"{'below' if high_open else 'at most'} {_num(high)}"
    return ""


def _in(low: Optional[float], high: Optional[float], low_open: bool = False, high_open: bool = False) -> str:
    text = _range_text(low, high, low_open, high_open)
    return f" ({text})" if text else ""


def check_int(name: str, value: object, low: Optional[int] = None, high: Optional[int] = None,
              *, none_ok: bool = False) -> Optional[int]:
    """``value`` as an int when it is a whole number in [low, high]; else TypeError/ValueError.

    ``True``, ``1.5`` and ``"3"`` are refused: each would otherwise count as some number.
    """
    if value is None and none_ok:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # 3.0 from a JSON or TOML writer: the same count
        else:
            raise TypeError(f"{name} must be a whole number{_in(low, high)}; got {value!r} ({type(value).__name__})")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name} must be {_range_text(low, high, False, False)}; got {value}")
    return value


def check_number(name: str, value: object, low: Optional[float] = None, high: Optional[float] = None,
                 *, low_open: bool = False, high_open: bool = False, none_ok: bool = False) -> Optional[float]:
    """``value`` as a float when it is a finite real number in the range; else TypeError/ValueError.

    Strings (``"1e-7"``) and booleans are refused; NaN and infinities are refused because a
    learning rate or a rate of NaN trains or samples nonsense without failing.
    """
    if value is None and none_ok:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number{_in(low, high, low_open, high_open)}; "
                        f"got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number{_in(low, high, low_open, high_open)}; got {value}")
    below = low is not None and (value <= low if low_open else value < low)
    above = high is not None and (value >= high if high_open else value > high)
    if below or above:
        raise ValueError(f"{name} must be {_range_text(low, high, low_open, high_open)}; got {_num(value)}")
    return value


def check_bool(name: str, value: object) -> bool:
    """``value`` when it is True or False; ``"no"`` or ``0`` are refused (both would read as set)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be true or false; got {value!r} ({type(value).__name__})")
    return value


def check_text(name: str, value: object, *, none_ok: bool = False) -> Optional[str]:
    """``value`` when it is a non-empty string."""
    if value is None and none_ok:
        return None
    if not isinstance(value, str) or not value.strip():
        raise TypeError(f"{name} must be a non-empty string; got {value!r} ({type(value).__name__})")
    return value


def parse_json(text: str, source: str, expected: str, **kwargs: object) -> object:
    """``json.loads(text)`` with its failures as one ValueError naming ``source`` and what it
    should hold: bad syntax, and nesting so deep that the decoder runs out of stack (a file of
    100,000 ``[`` raises RecursionError, which is no bug of ours)."""
    import json

    try:
        return json.loads(text, **kwargs)  # type: ignore[arg-type]
    except json.JSONDecodeError as error:
        raise ValueError(f"{source}: not valid JSON ({error}); expected {expected}") from None
    except RecursionError:
        raise ValueError(f"{source}: JSON nested too deeply to read; expected {expected}") from None
