"""Unique random tokens (hex digits) without a system call.

Revisions, write intents and query epochs each need a token that no other writer draws. They
must be unique, not secret, so they come from a private Mersenne Twister seeded from the OS,
not from ``os.urandom`` / ``uuid4``: those are a system call that lets go of the interpreter
lock, and on a busy threaded client every let-go is one more wait for the lock (measured on
revisions: the memory tier's ``gateway bench`` figure went from x11.9-13.8 to x15.0-23.7 of the
bare service when saves stopped calling ``uuid4``).

The generator is private (an application's ``random.seed(42)`` must not make two processes draw
the same tokens) and is seeded again in a forked child, so parent and child never share a
sequence. A copy of the process made without ``fork`` (a restored memory snapshot, as AWS
Lambda SnapStart starts many environments from one; CRIU; a cloned VM) would share it, so each
draw is also mixed with the wall clock in nanoseconds (reading it keeps the interpreter lock):
two copies draw the same token only if they draw it in the same nanosecond.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable

_TOKENS = random.Random()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_TOKENS.seed)

#: The clock mixed into each draw (injected in tests).
_clock_ns: Callable[[], int] = time.time_ns


def random_hex(digits: int) -> str:
    """``digits`` random hex digits (a multiple of 2, at least 2)."""
    if digits < 2 or digits % 2:
        raise ValueError(f"digits must be an even number >= 2, got {digits!r}")
    bits = digits * 4
    # XOR with any value keeps a uniform draw uniform: unique within the process as before.
    token = (_TOKENS.getrandbits(bits) ^ _clock_ns()) & ((1 << bits) - 1)
    return f"{token:0{digits}x}"


__all__ = ["random_hex"]
