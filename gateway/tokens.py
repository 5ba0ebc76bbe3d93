"""Unique random tokens (hex digits) without a system call.

Revisions, write intents and query epochs each need a token that no other writer draws. They
must be unique, not secret, so they come from a private Mersenne Twister seeded from the OS,
not from ``os.urandom`` / ``uuid4``: those are a system call that lets go of the interpreter
lock, and on a busy threaded client every let-go is one more wait for the lock (measured on
revisions: the memory tier's ``gateway bench`` figure went from x11.9-13.8 to x15.0-23.7 of the
bare service when saves stopped calling ``uuid4``).

The generator is private (an application's ``random.seed(42)`` must not make two processes draw
the same tokens) and is seeded again in a forked child, so parent and child never share a
sequence.
"""

from __future__ import annotations

import os
import random

_TOKENS = random.Random()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_TOKENS.seed)


def random_hex(digits: int) -> str:
    """``digits`` random hex digits (a multiple of 2, at least 2)."""
    if digits < 2 or digits % 2:
        raise ValueError(f"digits must be an even number >= 2, got {digits!r}")
    return f"{_TOKENS.getrandbits(digits * 4):0{digits}x}"


__all__ = ["random_hex"]
