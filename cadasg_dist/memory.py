"""Process memory settings shared by training and sampling (no torch, no engine imports)."""

from __future__ import annotations

import ctypes
import sys

# glibc's malloc options (mallopt): keep freed memory in the process instead of handing it back.
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
MMAP_THRESHOLD = 32 << 20  # glibc's largest: blocks up to this size come from the heap, reused
TRIM_THRESHOLD = 1 << 30  # free memory kept at the top of the heap before it is returned


_KEEP = {"allowed": True}


def never_keep_freed_memory() -> None:
    """Make ``keep_freed_memory`` a no-op in this process from now on (call it before anything
    samples or trains). For long-lived servers: in a Ray Serve replica, whose threads allocate the
    pieces of a streamed answer and free them elsewhere, the options made every 1M-row answer leave
    about 27 MB more resident, without end (bench/serve_memory.py: 231 -> 566 MB over 12 answers;
    flat at about 260 MB without them)."""
    _KEEP["allowed"] = False


def keep_freed_memory() -> bool:
    """Make glibc's malloc reuse freed memory across training steps and sampling blocks (Linux;
    elsewhere nothing).

    A step allocates and frees the same large tensors every time (a private step's per-example
    gradients: tens of MB per chunk), and so does every decoder block of a draw (a few MB of
    activations). With glibc's defaults each came back from the kernel as fresh pages, zero-filled
    on first touch, and went back at the end: measured at batch 1,000 on one core, 30 % of a
    private step was that kernel time, and about 9 % of a draw. The numbers computed do not
    change; the process keeps up to ``TRIM_THRESHOLD`` of freed memory (its peak does not grow).
    Returns whether the options were set (False after ``never_keep_freed_memory``)."""
    if not sys.platform.startswith("linux") or not _KEEP["allowed"]:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    return all(mallopt(option, value) == 1 for option, value in
               ((M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_TOP_PAD, 64 << 20)))
