"""Small file helpers: private, atomic writes."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path


def atomic_write(path: Path, data: bytes | str, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` atomically (temp file + fsync + rename), user-only."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def kept_token(path: Path, nbytes: int) -> str:
    """A random hex token stored in ``path`` (0600): the same one on every call,
    across restarts, until the file goes."""
    try:
        token = path.read_text().strip()
    except OSError:
        token = ""
    if not token:
        import secrets

        token = secrets.token_hex(nbytes)
        atomic_write(path, token + "\n")
    return token


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a running process. Never signals it: on Windows
    ``os.kill(pid, 0)`` would send it Ctrl-C (or terminate it), so the process
    is asked for its exit code instead."""
    if pid <= 0:
        return False
    if sys.platform == "win32":
        return _windows_process_running(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _windows_process_running(pid: int) -> bool:
    import ctypes

    kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return False
    try:
        code = ctypes.c_ulong()
        return bool(kernel32.GetExitCodeProcess(handle, ctypes.byref(code))) and code.value == 259  # STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)


def unlink_quietly(path: Path) -> None:
    """Remove ``path`` if it is there; a failure is logged at debug level only
    (the callers remove their own state files on the way out)."""
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        import logging

        logging.getLogger(__name__).debug("cannot remove %s: %s", path, exc)

