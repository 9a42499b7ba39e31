"""Capped, jittered exponential backoff (pure; the caller does the waiting)."""

from __future__ import annotations

import random


class Backoff:
    def __init__(self, initial_s: float, max_s: float, rng: random.Random | None = None) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        """The next wait: ``initial * 2**attempt`` capped at ``max``, with "full
        jitter" in the upper half so many clients do not retry in lockstep."""
        base = min(self.max_s, self.initial_s * (2 ** min(self.attempt, 30)))
        self.attempt += 1
        return base / 2 + self._rng.uniform(0, base / 2)

    def reset(self) -> None:
        self.attempt = 0
