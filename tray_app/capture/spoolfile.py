"""The spool's file format, shared by the hook (writer) and spool.py (reader).

One event per file: ``<spool>/<unix ns, 19 digits>-<event_id>.json`` holding
the stream entry as one flat JSON object of strings, exactly the fields the
hook would have sent with XADD. Names sort by creation time, so a directory
listing gives the drain its order (oldest first) without a stat per file.

A file is written as ``.<name>.<pid>.tmp`` (0600) and renamed into place, so a
reader never sees a partial file. There is no fsync: a spooled event has the
durability of the Redis it stands in for (appendfsync everysec), and a file
torn by a power cut is unparseable, so the drain moves it to ``bad/`` and
counts it, never drops it silently.

Standard library only; the hook imports it only when it has to spool.
"""

import time

try:
    from . import hookconfig
except ImportError:
    import hookconfig  # type: ignore[no-redef]

SUFFIX = ".json"
TMP_PREFIX = "."
TMP_SUFFIX = ".tmp"
BAD_DIR = "bad"
NS_DIGITS = 19


def file_name(event_id, now_ns=None):
    if now_ns is None:
        now_ns = time.time_ns()
    return f"{now_ns:0{NS_DIGITS}d}-{event_id}{SUFFIX}"


def created_ns(name):
    """The creation time encoded in a spool file name, or None."""
    head = name.partition("-")[0]
    return int(head) if len(head) == NS_DIGITS and head.isdigit() else None


def is_event_file(name):
    return name.endswith(SUFFIX) and not name.startswith(TMP_PREFIX)


def write(spool_dir, event_id, data):
    """Atomically write one spool file (0600); return its path. Raises OSError.

    The temp name (``.<name>.<pid>.tmp``) matches TMP_PREFIX/TMP_SUFFIX, so the
    drain can tell a file a hook never finished."""
    path = hookconfig.join(spool_dir, file_name(event_id))
    hookconfig.write_atomic(path, data)
    return path
