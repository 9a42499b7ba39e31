"""What monitors keep of the content they read.

Two separate concerns:

* **Capture settings** (``[capture]`` prompts / responses / file_contents /
  shell_output = "full" | "hash" | "none") decide how much of the user's
  content goes into a payload: everything, ``"sha256:<hex>"`` of it, or
  nothing (the field is removed).
* **Credentials are never emitted, whatever the settings**: Cursor's
  ``cursorAuth/*`` keys are never read; JSON fields named like secrets
  (``accessToken``, ``apiKey``, ``password``, ``...EncryptionKey``) lose their
  string values; strings that look like tokens (JWTs, ``sk-…``, ``ghp_…``,
  ``xox…-``, ``AKIA…``, ``Bearer …``) are replaced wherever they appear.

Payloads handed to these functions are fresh copies (just decoded from
JSON), so they are changed in place.
"""

from __future__ import annotations

import functools
import hashlib
import re
from typing import Any

from tray_app import jsonutil

from tray_app.config import CaptureSettings

PROMPTS = "prompts"
RESPONSES = "responses"
FILE_CONTENTS = "file_contents"
SHELL_OUTPUT = "shell_output"
CATEGORIES = (PROMPTS, RESPONSES, FILE_CONTENTS, SHELL_OUTPUT)

REDACTED = "[redacted]"
REDACTED_TOKEN = "[redacted:token]"

# Secret-looking field names, compared with case and separators removed.
_SECRET_SUFFIXES = ("token", "secret", "password", "passwd", "apikey", "privatekey", "encryptionkey",
                    "accesskey", "secretkey", "sessionkey", "credential", "credentials", "cookie",
                    "authorization", "bearer", "clientsecret")
_SECRET_PARTS = ("password", "secret", "apikey", "accesstoken", "refreshtoken", "authtoken", "idtoken")

TOKEN_RE = re.compile(
    r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"      # JWT
    r"|\bsk-(?:ant-|proj-)?[A-Za-z0-9_-]{20,}"                          # Anthropic / OpenAI keys
    r"|\bgh[pousr]_[A-Za-z0-9]{30,}|\bgithub_pat_[A-Za-z0-9_]{30,}"     # GitHub
    r"|\bxox[abposr]-[A-Za-z0-9-]{10,}"                                 # Slack
    r"|\bAKIA[0-9A-Z]{16}\b"                                            # AWS access key id
    r"|\bAIza[0-9A-Za-z_-]{35}"                                         # Google API key
    r"|(?i:bearer)\s+[A-Za-z0-9._~+/-]{20,}=*"                          # Authorization: Bearer …
)


def _norm(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


@functools.lru_cache(maxsize=4096)
def is_secret_field(name: str) -> bool:
    n = _norm(name)
    return n.endswith(_SECRET_SUFFIXES) or any(p in n for p in _SECRET_PARTS)


def is_credential_key(key: str) -> bool:
    """A key of Cursor's databases that must never be read or emitted."""
    low = key.lower()
    return (low.startswith(("cursorauth/", "cursorauth.", "secret://", "secret:"))
            or "token" in low or "secret" in low or "password" in low or "apikey" in low
            or "api_key" in low or "credential" in low or "privatekey" in low or "auth/" in low)


def _may_hold_token(text: str) -> bool:
    """Substrings every TOKEN_RE match contains: ``in`` is far cheaper than the
    regex, and most text contains none of them."""
    # unrolled on purpose: a generator over _TOKEN_MARKERS costs more than the searches
    return len(text) >= 20 and (
        "eyJ" in text or "sk-" in text or "xox" in text or "AKIA" in text or "AIza" in text
        or "earer" in text or "EARER" in text or "ghp_" in text or "gho_" in text or "ghs_" in text
        or "ghu_" in text or "ghr_" in text or "github_pat_" in text)


def looks_like_token(text: str) -> bool:
    return _may_hold_token(text) and TOKEN_RE.search(text) is not None


def redact(value: Any) -> Any:
    """Credentials out of a decoded JSON value (returns the cleaned value)."""
    if isinstance(value, str):
        return TOKEN_RE.sub(REDACTED_TOKEN, value) if _may_hold_token(value) else value
    if isinstance(value, dict):
        for k in list(value):
            v = value[k]
            if isinstance(v, str) and v and is_secret_field(str(k)):
                value[k] = REDACTED
            elif isinstance(v, (str, dict, list)):
                value[k] = redact(v)
        return value
    if isinstance(value, list):
        for i, v in enumerate(value):
            if isinstance(v, (str, dict, list)):
                value[i] = redact(v)
        return value
    return value


def digest(value: Any) -> str:
    raw = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else jsonutil.dumps(value)
    return "sha256:" + hashlib.sha256(raw).hexdigest()


class Capture:
    """Applies the ``[capture]`` settings to payload fields."""

    def __init__(self, settings: CaptureSettings) -> None:
        self.modes = {c: getattr(settings, c) for c in CATEGORIES}

    @property
    def reduced(self) -> dict[str, str]:
        """The categories not kept in full (recorded in event metadata)."""
        return {c: m for c, m in self.modes.items() if m != "full"}

    def field(self, obj: Any, key: str | int, category: str) -> None:
        """Apply ``category``'s mode to ``obj[key]`` in place (missing keys: no-op)."""
        if isinstance(obj, dict):
            if key not in obj or obj[key] is None:
                return
        elif isinstance(obj, list):
            if not isinstance(key, int) or key >= len(obj):
                return
        else:
            return
        mode = self.modes[category]
        if mode == "full":
            return
        value = obj[key]  # type: ignore[index]
        if isinstance(value, str) and not value:
            return
        if mode == "hash":
            obj[key] = digest(value)  # type: ignore[index]
        elif isinstance(obj, dict):
            del obj[key]
        else:
            obj[key] = None  # type: ignore[index]

    def fields(self, obj: Any, keys: tuple[str, ...], category: str) -> None:
        for k in keys:
            self.field(obj, k, category)
