"""JSON for the monitors and the contract: orjson's speed, with the stdlib's
exactness where orjson would change or refuse the data.

orjson reads an integer beyond 64 bits as a float (``1.2345678901234568e+29``)
and refuses to write one, and refuses to write nesting deeper than 254 levels
(its parser allows 1024). Those values are legal JSON that the assistants can
write, so ``loads`` re-reads a document that may hold such an integer with the
stdlib parser (exact ``int``), and ``dumps`` falls back to the stdlib encoder
when orjson refuses. Both raise ``ValueError`` for input they cannot handle at
all (invalid JSON, nesting past the interpreter's recursion limit).
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

#: 19 digits in a row may be an integer beyond 64 bits (int64 max is 19 digits)
_LONG_DIGITS = re.compile(rb"\d{19,}")


def loads(raw: bytes | str) -> Any:
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    value = orjson.loads(data)  # raises orjson.JSONDecodeError (a ValueError)
    if _LONG_DIGITS.search(data) is None:
        return value
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def dumps(value: Any, *, sort_keys: bool = False) -> bytes:
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS if sort_keys else None)
    except TypeError:
        pass  # a big integer or deep nesting: the stdlib writes both
    try:
        return json.dumps(value, ensure_ascii=True, separators=(",", ":"), sort_keys=sort_keys,
                          allow_nan=False).encode()
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    except TypeError as exc:
        raise ValueError(f"not serialisable as JSON: {exc}") from None


__all__ = ["loads", "dumps"]
