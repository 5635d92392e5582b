"""The circuit breaker of serving: a variant that keeps failing is skipped for a while.

Per process, keyed by the variant's sha256. A load error opens it at once (a file that does not
load will not load next time); runtime errors and non-finite outputs open it after
``MODELHUB_SERVING_BREAKER_FAILURES`` in a row. It stays open ``MODELHUB_SERVING_BREAKER_OPEN_S``
seconds, then the variant is tried again. Its clock is ``breaker.clock`` (tests replace it;
nothing else is faked).
"""

from __future__ import annotations

import threading
import time

from django.conf import settings

clock = time.monotonic


class Breaker:
    """Per process: a variant failing N times in a row (a load error at once) is skipped for a while."""

    def __init__(self) -> None:
        self._state: dict[str, list[float]] = {}  # sha256 -> [consecutive failures, open until]
        self._lock = threading.Lock()

    def allows(self, sha256: str) -> bool:
        """True unless the variant's breaker is open now."""
        state = self._state.get(sha256)
        return state is None or state[1] <= clock()

    def success(self, sha256: str) -> None:
        """The variant answered: its failures are forgotten."""
        if sha256 in self._state:
            with self._lock:
                self._state.pop(sha256, None)

    def failure(self, sha256: str, *, at_once: bool = False) -> None:
        """Count one failure; open the breaker at the threshold, or at once (a load error)."""
        with self._lock:
            state = self._state.setdefault(sha256, [0, 0.0])
            state[0] += 1
            if at_once or state[0] >= settings.MODELHUB_SERVING_BREAKER_FAILURES:
                state[1] = clock() + settings.MODELHUB_SERVING_BREAKER_OPEN_S

    def is_open(self, sha256: str) -> bool:
        """True while the variant is skipped."""
        return not self.allows(sha256)

    def clear(self) -> None:
        """Forget every variant's failures (tests)."""
        with self._lock:
            self._state.clear()


BREAKER = Breaker()
