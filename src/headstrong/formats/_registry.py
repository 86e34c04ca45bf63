"""Registry of number formats: fixed names and parametric families, filled by decorators.

``register_format("bf16")`` files a builder under a name; ``register_family("fxp", ...)``
files a builder for every name its pattern matches (``fxp16_8``). ``get`` looks names up,
``list_formats`` lists the fixed names and each family's default member.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from headstrong._registry import Registry
from headstrong.formats._base import NumberFormat

Builder = Callable[..., NumberFormat]
B = TypeVar("B", bound=Builder)

_FORMATS: Registry[Builder] = Registry("format")
_FAMILIES: Registry["_Family"] = Registry("format family")


@dataclass(frozen=True)
class _Family:
    prefix: str
    pattern: re.Pattern[str]
    template: str
    default: str
    builder: Builder


def register_format(name: str) -> Callable[[B], B]:
    """File ``builder(**params)`` under ``name``."""

    def decorate(builder: B) -> B:
        _FORMATS.add(name, builder)
        return builder

    return decorate


def register_family(prefix: str, pattern: str, template: str, default: str) -> Callable[[B], B]:
    """File ``builder(*ints, **params)`` for names matching ``pattern`` (whose groups are ints).

    ``template`` (e.g. ``fxpW_F``) is how the family is named in messages and ``default`` the
    member that ``list_formats`` shows.
    """

    def decorate(builder: B) -> B:
        _FAMILIES.add(prefix, _Family(prefix, re.compile(pattern), template, default, builder))
        return builder

    return decorate


def list_formats() -> list[str]:
    """Every fixed format name, then each family's default member (e.g. ``fxp16_8``)."""
    return [*_FORMATS, *(family.default for family in _FAMILIES.values())]


def _expected() -> str:
    families = ", ".join(family.template for family in _FAMILIES.values())
    return f"expected one of {', '.join(list_formats())} (or {families})"


def get(name: str | NumberFormat, **params: Any) -> NumberFormat:
    """The format called ``name``; ``params`` (e.g. ``scale=0.05``) go to its builder.

    A format object passes through unchanged (with no params), so APIs can take either.
    """
    if isinstance(name, NumberFormat):
        if params:
            raise ValueError(
                f"parameters {sorted(params)} given with the format object {name.name!r}; "
                "pass a format name with parameters, or use fmt.with_scale(...)"
            )
        return name
    if not isinstance(name, str):
        raise TypeError(
            f"format must be a name (str) or a format object, got {type(name).__name__}"
        )
    key = name.strip().lower()
    params = {k: v for k, v in params.items() if v is not None}
    if key in _FORMATS:
        builder = _FORMATS[key]
        _check_params(key, builder, params)
        return builder(**params)
    for family in _FAMILIES.values():
        if key.startswith(family.prefix):
            match = family.pattern.fullmatch(key)
            if match is None:
                raise ValueError(
                    f"malformed format name {name!r}; expected {family.template} "
                    f"with integers, e.g. {family.default}"
                )
            _check_params(key, family.builder, params)
            return family.builder(*(int(group) for group in match.groups()), **params)
    raise ValueError(f"unknown format {name!r}; {_expected()}")


def _check_params(name: str, builder: Builder, params: dict[str, Any]) -> None:
    allowed = [
        p.name
        for p in inspect.signature(builder).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        takes = f"takes only {', '.join(allowed)}" if allowed else "takes no parameters"
        raise ValueError(f"format {name!r} {takes}; got {', '.join(unknown)}")
