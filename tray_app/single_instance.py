"""One instance per user: an exclusive, non-blocking file lock."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

from filelock import FileLock, Timeout

from tray_app.errors import AlreadyRunning
from tray_app.paths import make_private_dir


class SingleInstance:
    def __init__(self, lock_file: Path) -> None:
        make_private_dir(lock_file.parent)
        self.lock_file = lock_file
        self._lock = FileLock(str(lock_file), mode=0o600)

    def __enter__(self) -> "SingleInstance":
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            raise AlreadyRunning("Telemetry Tray is already running for this user "
                                 f"(lock held: {self.lock_file})") from None
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._lock.release()
