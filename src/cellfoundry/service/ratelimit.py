"""A token bucket per API key for ``/predict``, in the memory of one API process.

Each key may send ``predict_burst`` requests at once and ``predict_rate_per_s`` per second
after that; beyond it the answer is 429 with ``Retry-After``. The buckets are per process:
with N API processes (replicas or server workers) one key can reach N times the rate, so set
the rate per process. The default leaves room for the /predict throughput target
(5,000 requests/s from one key).
"""

from __future__ import annotations

import time

from cellfoundry.errors import TooManyRequestsError

MAX_KEYS = 100_000  # buckets kept; past that the full ones are forgotten


class TokenBuckets:
    """``take(key)``: 0.0 when a token was taken, else the seconds until one is available."""

    def __init__(self, rate_per_s: float, burst: int) -> None:
        self.rate = float(rate_per_s)
        self.burst = float(max(1, burst))
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str, now: float | None = None) -> float:
        if self.rate <= 0:
            return 0.0
        t = time.monotonic() if now is None else now
        tokens, last = self._buckets.get(key, (self.burst, t))
        tokens = min(self.burst, tokens + (t - last) * self.rate)
        if tokens >= 1.0:
            if len(self._buckets) >= MAX_KEYS and key not in self._buckets:
                self._forget_full(t)
            self._buckets[key] = (tokens - 1.0, t)
            return 0.0
        self._buckets[key] = (tokens, t)
        return (1.0 - tokens) / self.rate

    def _forget_full(self, now: float) -> None:
        full = [
            k
            for k, (tok, last) in self._buckets.items()
            if tok + (now - last) * self.rate >= self.burst
        ]
        for k in full or list(self._buckets):
            del self._buckets[k]

    def check(self, key: str) -> None:
        """Raise 429 (with the wait) when ``key`` has no token left."""
        wait = self.take(key)
        if wait > 0:
            raise TooManyRequestsError(
                f"too many /predict requests for this API key (limit {self.rate:g} per second)",
                f"retry after {wait:.2f} s, batch cells into fewer requests, or ask for a higher "
                "CELLFOUNDRY_PREDICT_RATE_PER_S",
                code="rate_limited",
                retry_after_s=wait,
            )
