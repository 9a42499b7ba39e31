"""Process-level tuning the app's faces (tray, headless) apply once at start-up.

The consumer allocates a few small objects per event; with CPython's default
thresholds (700, 10, 10) the cyclic collector runs every few hundred events
and rescans the long-lived start-up objects each time. Freezing what exists
after start-up and collecting the young generation less often cut ingest CPU
by about 6% in bench/ingest_bench.py. Keeping freed heap memory between
batches (instead of glibc returning it and the next batch faulting it back in)
cut system time per event by about a third.

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
M_ARENA_MAX = -8  # mallopt parameters, glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
ARENAS = 2
#: keep freed heap memory between batches instead of returning it to the OS and
#: faulting it back in for the next batch; release_memory() hands it back once
#: a burst is over
TRIM_THRESHOLD_BYTES = 256 * 1024 * 1024
MMAP_THRESHOLD_BYTES = 4 * 1024 * 1024


def apply() -> None:
    gc.collect()
    gc.freeze()
    _, g1, g2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, g1, g2)
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6")
            libc.mallopt(M_ARENA_MAX, ARENAS)
            libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
            libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
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
