"""Make glibc's malloc give large freed buffers back to the system.

A run allocates and frees multi-megabyte buffers all the time (encoded images, base64 data URLs, request
bodies). glibc raises its mmap threshold to the size of the largest buffer freed so far (up to 32 MiB), so
after the first few such buffers they come from the heaps, whose freed space fragments and stays
resident: two endpoints, one far behind the other (`bench/scale.py --two-speeds`, both tasks at
`--limit 600`), peaked at 1.32 GB of RSS while the live Python objects stayed well under that. Buffers of
1 MiB and more are now mmapped (returned to the system when freed): 0.76-0.82 GB there, and a full
single-endpoint run peaked at 0.58-0.59 GB instead of 0.72-0.74 GB. A fixed mmap threshold also fixes
the trim threshold at 128 KiB, which made glibc give the top of the heap back and fault it in again all
the time (client CPU +14-23 % per request at the zero-latency ceiling); it is set to 64 MiB, leaving
+5-9 %.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 1 << 20
TRIM_THRESHOLD_BYTES = 64 << 20


def tune_malloc() -> bool:
    """Fix glibc's mmap threshold at 1 MiB and its trim threshold at 64 MiB; True if both were set.

    Does nothing off Linux/glibc, or when the user tunes malloc through its own `MALLOC_*_` variables.
    """
    if not sys.platform.startswith("linux") or any(k.startswith("MALLOC_") for k in os.environ):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
            return False  # not glibc (e.g. musl): its allocator behaves differently
        trim = libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(trim)
    except OSError:
        return False
