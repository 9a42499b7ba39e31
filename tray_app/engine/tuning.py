"""Process-level tuning the app's faces (tray, headless) apply once at start-up.

The consumer allocates a few small objects per event; with CPython's default
thresholds (700, 10, 10) the cyclic collector runs every few hundred events
and rescans the long-lived start-up objects each time. Freezing what exists
after start-up and collecting the young generation less often cut ingest CPU
by about 6% in bench/ingest_bench.py.

glibc gives every thread that allocates its own malloc arena and keeps freed
memory in it; with the consumer, publisher, compression and monitor threads a
burst left the tray app ~45 MB above its idle size (bench/tray_footprint.py).
Two arenas are plenty for a few busy threads. Nothing here changes behaviour.
"""

from __future__ import annotations

import ctypes
import gc
import sys

GEN0_THRESHOLD = 20_000
M_ARENA_MAX = -8  # mallopt parameter, glibc's malloc.h
ARENAS = 2


def apply() -> None:
    gc.collect()
    gc.freeze()
    _, g1, g2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, g1, g2)
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, ARENAS)
        except (OSError, AttributeError):
            pass  # not glibc (e.g. musl): nothing to tune


def release_memory() -> None:
    """Hand freed heap memory back to the OS (glibc's malloc_trim); the
    maintenance thread calls it once when a burst of ingest has ended."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass
