"""Reconnect and retry delays: exponential backoff with proportional jitter.

Attempt ``n`` (0-based) waits ``min(max_delay, base * 2**n)`` scaled by a random
factor in ``[1 - jitter, 1 + jitter]``, never more than ``max_delay``. With the
defaults that is about 1 s, 2 s, 4 s, 8 s, 16 s, then 30 s for every further
attempt. The jitter keeps many clients that lost the same server from all
coming back in the same instant.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["Backoff"]


@dataclass
class Backoff:
    base: float = 1.0
    max_delay: float = 30.0
    jitter: float = 0.2
    attempts: int = 0
    _rng: random.Random = field(default_factory=random.Random, repr=False)

    def next_delay(self) -> float:
        """The delay before the next attempt; counts the attempt."""
        raw = min(self.max_delay, self.base * (2.0 ** min(self.attempts, 62)))
        self.attempts += 1
        factor = 1.0 + self.jitter * (2.0 * self._rng.random() - 1.0)
        return max(0.0, min(self.max_delay, raw * factor))

    def reset(self) -> None:
        """Call after a success, so the next failure starts from ``base`` again."""
        self.attempts = 0
