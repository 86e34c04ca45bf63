"""Suggestions for a mistyped layer name: every close name, and the wrapper's renamings explained.

headstrong wraps torchvision/timm models: the backbone's layers are named ``backbone.NAME`` and the
classifier (torchvision's ``fc``, timm's ``head`` or ``classifier``) is ``head``. A user who knows
the original model types the original names, so those are recognised and explained.
"""

from __future__ import annotations

import difflib
from typing import Sequence

CLASSIFIER_NAMES = ("fc", "classifier", "last_linear", "linear", "head.fc")
LIST_ALL_BELOW = 30  # at most this many layers are listed in full in a message


def close_names(name: str, available: Sequence[str]) -> list[str]:
    """Every available name close to ``name``: the wrapped spelling, names ending in it, then all names
    about as similar as the most similar one (difflib ratio within 0.05 of the best, at least 0.75)."""
    found: list[str] = []
    if f"backbone.{name}" in available:
        found.append(f"backbone.{name}")
    if name in CLASSIFIER_NAMES and "head" in available:
        found.append("head")
    found += [n for n in available if n.endswith("." + name)]
    bare = name.removeprefix("backbone.")
    scores = {n: difflib.SequenceMatcher(None, bare, n.removeprefix("backbone.")).ratio() for n in available}
    best = max(scores.values(), default=0.0)
    found += sorted((n for n, r in scores.items() if r >= max(0.75, best - 0.05)), key=lambda n: -scores[n])
    return list(dict.fromkeys(found))


def unknown_layers_message(unknown: Sequence[str], available: Sequence[str]) -> str:
    """'unknown layer(s) ...; did you mean ...' with every close name, the renamings explained."""
    parts = []
    for name in unknown:
        close = close_names(name, available)
        parts.append(f"{name!r}: did you mean {', '.join(close)}?" if close else f"{name!r}: no layer has a close name")
    notes = []
    if any(f"backbone.{n}" in available for n in unknown):
        notes.append("the wrapped model's own layers carry a 'backbone.' prefix")
    if any(n in CLASSIFIER_NAMES for n in unknown) and "head" in available:
        notes.append("its classifier (torchvision's fc, timm's head or classifier) is called 'head'")
    nothing_close = not any(close_names(name, available) for name in unknown)
    listing = (f"injectable layers: {', '.join(available)}" if nothing_close and len(available) <= LIST_ALL_BELOW
               else f"`headstrong layers MODEL` lists all {len(available)} injectable layers")
    return (f"unknown layer(s) {'; '.join(parts)}" + (f" ({'; '.join(notes)})" if notes else "")
            + f"; {listing}")
