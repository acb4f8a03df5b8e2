"""What the gallery accepts as a name or as metadata: one rule, checked before anything is stored.

The CLI, the library and the service (through its request schemas) all call these functions, so
a value the service refuses with 422 is also refused by ``gallery.subjects.create``, and a value
once stored can always be listed, serialised and exported again.
"""

from __future__ import annotations

import functools
import json
import math
import sys
import unicodedata
from typing import Any

from marginface.errors import GalleryError

__all__ = [
    "MAX_METADATA_BYTES",
    "MAX_METADATA_DEPTH",
    "MAX_METADATA_KEYS",
    "MAX_NAME_LENGTH",
    "clean_name",
    "metadata_json",
    "name_pattern",
]

#: Longest display name, in characters after normalisation.
MAX_NAME_LENGTH = 200
#: Metadata is a small JSON object describing a person (team, badge number, ...), not a store.
MAX_METADATA_BYTES = 16 * 1024
#: Nesting of objects and arrays (the top-level object is depth 1).
MAX_METADATA_DEPTH = 8
#: Object keys counted over the whole value.
MAX_METADATA_KEYS = 256

# Bidirectional embeddings, overrides and isolates reorder the text around them: in a name they
# can make "Bob" display as someone else in a list or a spreadsheet ("Trojan Source").
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# Characters that show nothing on their own: format characters (zero-width space, joiners,
# marks), separators and combining marks.
_INVISIBLE_CATEGORIES = frozenset({"Cf", "Zs", "Zl", "Zp", "Mn", "Me", "Cc"})


def clean_name(value: str, *, what: str = "name", max_length: int = MAX_NAME_LENGTH) -> str:
    """The name as stored: NFC-normalised and stripped of surrounding white space.

    Refused (:class:`GalleryError`, a user error) when empty, longer than ``max_length``,
    holding control characters (NUL, new lines, tabs), unpaired surrogates or bidirectional
    overrides, or made only of invisible characters. ``what`` names the field in the message.
    """
    if not isinstance(value, str):
        raise GalleryError(f"the {what} must be text")
    text = unicodedata.normalize("NFC", value).strip()
    if not text:
        raise GalleryError(f"the {what} is empty")
    if len(text) > max_length:
        raise GalleryError(f"the {what} is longer than {max_length} characters")
    for ch in text:
        cat = unicodedata.category(ch)
        if cat == "Cc":
            raise GalleryError(f"the {what} contains a control character (U+{ord(ch):04X})")
        if cat == "Cs":
            raise GalleryError(f"the {what} contains an unpaired surrogate (U+{ord(ch):04X})")
        if ch in _BIDI_CONTROLS:
            raise GalleryError(
                f"the {what} contains a bidirectional override (U+{ord(ch):04X}), which can "
                "make it display as another text"
            )
    if all(unicodedata.category(ch) in _INVISIBLE_CATEGORIES for ch in text):
        raise GalleryError(f"the {what} has no visible character")
    return text


def _ranges(chars: Any) -> str:
    """A regular-expression character class body for the code points ``chars`` (sorted)."""
    runs: list[tuple[int, int]] = []
    for cp in chars:
        if runs and runs[-1][1] == cp - 1:
            runs[-1] = (runs[-1][0], cp)
        else:
            runs.append((cp, cp))

    def esc(cp: int) -> str:
        return f"\\u{cp:04x}" if cp <= 0xFFFF else f"\\U{cp:08x}"

    return "".join(esc(a) if a == b else f"{esc(a)}-{esc(b)}" for a, b in runs)


@functools.cache
def name_pattern() -> str:
    """:func:`clean_name`'s character rules as one regular expression, for the ``pattern`` of
    a JSON schema (the OpenAPI document states the limit the service enforces): no control
    character or bidirectional override, and at least one character outside the invisible
    categories (surrogates, which are not characters, are left to the rule itself). Built
    from this Python's Unicode tables, as the rule is; astral code points are written
    ``\\UXXXXXXXX``, which Python's ``re`` and the Rust engine of jsonschema-rs read alike.
    The length limit is the field's ``maxLength``; white space around a name is allowed (it
    is stripped)."""
    forbidden: list[int] = []
    invisible: list[int] = []
    for cp in range(sys.maxunicode + 1):
        cat = unicodedata.category(chr(cp))
        if cat == "Cs":  # not characters: JSON text cannot hold them, regex engines refuse them
            continue
        if cat == "Cc" or chr(cp) in _BIDI_CONTROLS:
            forbidden.append(cp)
        elif cat in _INVISIBLE_CATEGORIES:
            invisible.append(cp)
    allowed = f"[^{_ranges(forbidden)}]"
    visible = f"[^{_ranges(sorted(forbidden + invisible))}]"
    return f"^{allowed}*{visible}{allowed}*$"


def _check_value(value: Any, depth: int, counts: list[int], path: str) -> None:
    if depth > MAX_METADATA_DEPTH:
        raise GalleryError(
            f"metadata is nested deeper than {MAX_METADATA_DEPTH} levels (at {path or 'top'})"
        )
    if isinstance(value, dict):
        counts[0] += len(value)
        if counts[0] > MAX_METADATA_KEYS:
            raise GalleryError(f"metadata has more than {MAX_METADATA_KEYS} keys")
        for key, item in value.items():
            if not isinstance(key, str):
                raise GalleryError(f"metadata keys must be text, got {type(key).__name__}")
            _check_value(item, depth + 1, counts, f"{path}.{key}" if path else key)
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_value(item, depth + 1, counts, f"{path}[{i}]")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise GalleryError(
                f"metadata number {value!r} at {path or 'top'} is not a finite JSON number"
            )
    elif value is not None and not isinstance(value, str | int | bool):
        raise GalleryError(
            f"metadata value at {path or 'top'} is a {type(value).__name__}, not a JSON value"
        )


def metadata_json(value: dict[str, Any] | None) -> str:
    """The metadata object as the JSON text to store (``{}`` for None).

    Refused (:class:`GalleryError`) unless it is a JSON object of finite numbers, text, booleans,
    nulls, arrays and objects, at most :data:`MAX_METADATA_DEPTH` deep, with at most
    :data:`MAX_METADATA_KEYS` keys and :data:`MAX_METADATA_BYTES` bytes as UTF-8 JSON.
    """
    value = {} if value is None else value
    if not isinstance(value, dict):
        raise GalleryError("metadata must be a JSON object")
    _check_value(value, 1, [0], "")
    text = json.dumps(value, ensure_ascii=False, sort_keys=True, allow_nan=False)
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise GalleryError("metadata contains an unpaired surrogate, which is not text") from None
    if size > MAX_METADATA_BYTES:
        raise GalleryError(
            f"metadata is {size} bytes as JSON; at most {MAX_METADATA_BYTES} are kept"
        )
    return text
