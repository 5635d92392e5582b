"""The search's clock: how much of its time budget is spent (the clock is injectable: tests pass a fake)."""

from __future__ import annotations

import time
from collections.abc import Callable


class Budget:
    """A time budget in seconds, started at construction; ``exhausted`` once it is spent."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        if not seconds > 0:
            raise ValueError(f"A search budget must be a positive number of seconds; got {seconds!r}.")
        self.seconds = float(seconds)
        self.clock = clock
        self.started = clock()

    @property
    def spent(self) -> float:
        """Seconds since the start."""
        return self.clock() - self.started

    @property
    def left(self) -> float:
        """Seconds left (0 once spent)."""
        return max(0.0, self.seconds - self.spent)

    @property
    def exhausted(self) -> bool:
        """True once the budget is spent: no new candidate starts."""
        return self.spent >= self.seconds
