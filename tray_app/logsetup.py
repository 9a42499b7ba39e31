"""Logging: a size-bounded rotating file in the log dir, console in the foreground,
and uncaught exceptions (main thread and others) routed to the log."""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
import threading
from types import TracebackType

from tray_app.config import Config
from tray_app.paths import make_private_dir

FORMAT = "%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s"


class _PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """Rotating handler whose files are created 0600."""

    def _open(self):  # type: ignore[override]
        old = os.umask(0o077)
        try:
            return super()._open()
        finally:
            os.umask(old)


def setup_logging(cfg: Config, console: bool = False, console_level: str | None = None) -> logging.Logger:
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_telemetry_tray", False):
            root.removeHandler(h)
            h.close()
    level = getattr(logging, cfg.logging.level)
    root.setLevel(level)
    make_private_dir(cfg.paths.log_dir)
    fh = _PrivateRotatingFileHandler(cfg.paths.log_file, maxBytes=cfg.logging.max_bytes,
                                     backupCount=cfg.logging.backup_count, encoding="utf-8")
    fh.setFormatter(logging.Formatter(FORMAT))
    fh._telemetry_tray = True  # type: ignore[attr-defined]
    root.addHandler(fh)
    if console:
        ch = logging.StreamHandler(sys.stderr)
        ch.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        ch.setLevel(getattr(logging, console_level or cfg.logging.level))
        ch._telemetry_tray = True  # type: ignore[attr-defined]
        root.addHandler(ch)
    for noisy in ("PIL", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    install_excepthooks()
    return root


def install_excepthooks() -> None:
    log = logging.getLogger("tray_app.uncaught")

    def excepthook(exc_type: type[BaseException], exc: BaseException,
                   tb: TracebackType | None) -> None:
        if issubclass(exc_type, KeyboardInterrupt):
            sys.__excepthook__(exc_type, exc, tb)
            return
        log.critical("uncaught exception", exc_info=(exc_type, exc, tb))

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        name = args.thread.name if args.thread else "?"
        log.critical("uncaught exception in thread %s", name,
                     exc_info=(args.exc_type, args.exc_value, args.exc_traceback))  # type: ignore[arg-type]

    sys.excepthook = excepthook
    threading.excepthook = thread_hook
