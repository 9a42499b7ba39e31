"""Small helpers shared by the parts of the diagnostics bundle."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("tray_app.diagnostics.bundle")


def plain(obj: Any) -> Any:
    """Redis replies and dataclasses as JSON-able data (bytes decoded)."""
    if isinstance(obj, bytes):
        return obj.decode("utf-8", "replace")
    if hasattr(obj, "__dataclass_fields__") and not isinstance(obj, type):
        from dataclasses import asdict

        return plain(asdict(obj))
    if isinstance(obj, dict):
        return {plain(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [plain(v) for v in obj]
    return obj


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:400]


def section(fn: Callable[[], Any], what: str) -> Any:
    """Run one part; a part that fails records its one-line error instead."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - one failing part must not stop the bundle
        log.warning("diagnostics: %s failed: %s", what, one_line(exc))
        return {"error": one_line(exc)}


def shape(value: Any, depth: int = 0) -> Any:
    """State reduced to what is safe by its shape: numbers, booleans, paths,
    and short strings without spaces (ids, hashes, timestamps). Any other
    string becomes its length."""
    if depth > 6:
        return "<nested>"
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if isinstance(value, str):
        pathish = ("/" in value or "\\" in value) and "\n" not in value and len(value) <= 400
        if pathish or (len(value) <= 80 and not any(c.isspace() for c in value)):
            return value
        return f"<{len(value)} chars>"
    if isinstance(value, dict):
        return {str(shape(k, depth + 1)): shape(v, depth + 1) for k, v in list(value.items())[:200]}
    if isinstance(value, (list, tuple)):
        return [shape(v, depth + 1) for v in list(value)[:200]]
    return f"<{type(value).__name__}>"


def json_or_text(raw: bytes | str) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, TypeError):
        return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw


def strings_in(value: Any) -> list[str]:
    """Every string inside a JSON-like value."""
    out: list[str] = []
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            out.append(v)
        elif isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, (list, tuple)):
            stack.extend(v)
    return out
