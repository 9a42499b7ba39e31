"""JSON for the hook's hot path, straight from the C accelerator ``_json``.

``import json`` costs ~7 ms under ``python -I -S`` (it pulls in ``re`` and
``enum``); the C scanner and encoder it wraps cost ~0.2 ms. This module uses
them directly. Standard library only, no other imports: the hook loads it
as a top-level module (see hook.py).

On malformed input the C scanner reports its error through
``json.decoder.JSONDecodeError``; when ``json`` was never imported (the
hook) CPython 3.11 raises SystemError instead. Either becomes JSONError.
"""

import _json

__all__ = ["loads", "dumps", "JSONError"]


class JSONError(ValueError):
    """The text is not one JSON value."""


def _constant(name):
    # NaN, Infinity, -Infinity are not JSON; orjson (the engine) rejects them.
    # Keep them as their names rather than lose the document.
    return name


class _Context:
    """The attributes ``_json.make_scanner`` reads from a JSONDecoder."""

    strict = False  # control characters inside strings are kept, not rejected
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = staticmethod(_constant)
    memo = None


_scan = _json.make_scanner(_Context())  # type: ignore[arg-type]
_WS = " \t\n\r"


def loads(text):
    """Parse one JSON value from ``text`` (str). Raises JSONError."""
    end = len(text)
    start = end - len(text.lstrip(_WS))
    try:
        value, stop = _scan(text, start)
    except StopIteration:
        raise JSONError("expected a JSON value") from None
    except Exception as exc:  # JSONDecodeError, SystemError (see above), RecursionError
        raise JSONError(str(exc) or type(exc).__name__) from None
    if stop != end and text[stop:].strip(_WS):
        raise JSONError(f"extra data at character {stop}")
    return value


def _unsupported(obj):
    raise TypeError(f"cannot encode {type(obj).__name__} as JSON")


# ensure_ascii=False: compact output; callers encode with errors="replace" so a
# lone surrogate from \udXXX escapes in the input can never make invalid UTF-8.
# allow_nan=False: a float that overflowed to inf raises ValueError instead of
# producing text the engine would reject.
_encode = _json.make_encoder(None, _unsupported, _json.encode_basestring, None,
                             ":", ",", False, False, False)


def dumps(obj):
    """Compact JSON text for ``obj`` (dict/list/str/int/float/bool/None)."""
    return "".join(_encode(obj, 0))
