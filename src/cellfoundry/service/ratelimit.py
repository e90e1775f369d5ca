"""A token bucket per API key for ``/predict``, shared by every API process.

Each key may send ``predict_burst`` requests at once and ``predict_rate_per_s`` per second
after that; beyond it the answer is 429 with ``Retry-After``. Where the buckets live
(:func:`make_limiter`):

* ``predict_rate_url`` set (``redis://...``): in Redis, one hash per key updated by a Lua script
  (Redis's clock), shared by the API processes of every host. Each process takes tokens in
  small chunks (:data:`CHUNK_S` of the rate), so most requests never reach Redis; a process may
  hold up to one chunk it has not used yet. Redis unreachable: each process limits alone
  (per-process buckets) until it answers again; the limiter never refuses because of Redis.
* otherwise: a shared-memory file in ``HOME`` (``predict-rate.bin``, :class:`SharedBuckets`),
  shared by the API processes of one host (``serve --api-workers N``, or replicas on the same
  host sharing ``HOME``; replicas on other hosts need ``predict_rate_url``); a
  few microseconds per request.
* only when that file cannot be made (read-only ``HOME``): per-process buckets
  (:class:`TokenBuckets`, logged at start): N processes then allow N times the rate.

The default (20,000/s, burst 40,000) leaves room for the /predict target of 5,000 requests/s
from one key. The cost per call is measured by ``benchmarks/bench_ratelimit.py``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import mmap
import os
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from cellfoundry.config import Settings
from cellfoundry.errors import TooManyRequestsError

log = logging.getLogger("cellfoundry.service")
T = TypeVar("T")

MAX_KEYS = 100_000  # buckets (and key hashes) kept per process; past that the full ones go
SLOTS = 1 << 16  # buckets in the shared file (64 Ki keys; 2 MiB)
PROBES = 8  # slots tried for a key before it shares the last one
CHUNK_S = 0.005  # Redis: a process takes this many seconds' worth of tokens at once
_SLOT = struct.Struct("<Qdd")  # key fingerprint (0: free), tokens, last refill (monotonic s)
_SLOT_BYTES = 32
REBOOTED_S = 1.0  # a bucket last refilled this far in the future was written before a reboot


class Limiter(Protocol):
    rate: float

    def take(self, key: str, now: float | None = None) -> float: ...


def check(limiter: Limiter, key: str) -> None:
    """Raise 429 (with the wait) when ``key`` has no token left."""
    wait = limiter.take(key)
    if wait > 0:
        raise TooManyRequestsError(
            f"too many /predict requests for this API key (limit {limiter.rate:g} per second)",
            f"retry after {wait:.2f} s, batch cells into fewer requests, or ask for a higher "
            "CELLFOUNDRY_PREDICT_RATE_PER_S",
            code="rate_limited",
            retry_after_s=wait,
        )


class TokenBuckets:
    """Per-process buckets. ``take(key)``: 0.0 when a token was taken, else the seconds until
    one is available."""

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
        check(self, key)


def _digest(key: str) -> bytes:
    """16 stable bytes of ``key`` (the same in every process; the key itself is never stored)."""
    return hashlib.blake2b(key.encode(), digest_size=16, person=b"cf-predict-rl").digest()


def _slot_of(key: str) -> tuple[int, int]:
    """The first slot of ``key``'s bucket in the shared file, and its fingerprint (never 0)."""
    d = _digest(key)
    return int.from_bytes(d[:8], "little") % SLOTS, int.from_bytes(d[8:], "little") | 1


def _memo(cache: dict[str, T], key: str, make: Callable[[str], T]) -> T:
    """``make(key)``, computed once per key (at most ``MAX_KEYS`` kept)."""
    hit = cache.get(key)
    if hit is None:
        if len(cache) >= MAX_KEYS:
            cache.clear()
        hit = cache[key] = make(key)
    return hit


class SharedBuckets:
    """Buckets in a memory-mapped file that every API process of the host opens.

    A key's bucket is a 32-byte slot found by its hash (open addressing, :data:`PROBES`
    probes; a slot whose bucket is full again is free to reuse; when all are other keys'
    active buckets, the last is shared). Each update holds a POSIX record lock on that slot
    only, so keys of other slots never wait, and a thread lock (record locks do not exclude
    threads of one process). Times are
    ``CLOCK_MONOTONIC``, the same clock for every process of the host."""

    def __init__(self, path: Path, rate_per_s: float, burst: int) -> None:
        self.rate = float(rate_per_s)
        self.burst = float(max(1, burst))
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        size = SLOTS * _SLOT_BYTES
        if os.fstat(self._fd).st_size < size:
            os.ftruncate(self._fd, size)  # zeros: every slot free (the same size in every process)
        self._map = mmap.mmap(self._fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self._slots: dict[str, tuple[int, int]] = {}  # key -> (first slot, fingerprint)
        self._thread_lock = threading.Lock()

    def close(self) -> None:
        with contextlib.suppress(BufferError, ValueError):
            self._map.close()
        with contextlib.suppress(OSError):
            os.close(self._fd)

    def take(self, key: str, now: float | None = None) -> float:
        if self.rate <= 0:
            return 0.0
        first, fp = _memo(self._slots, key, _slot_of)
        for probe in range(PROBES):
            off = ((first + probe) % SLOTS) * _SLOT_BYTES
            self._thread_lock.acquire()  # record locks do not exclude this process's threads
            fcntl.lockf(self._fd, fcntl.LOCK_EX, _SLOT_BYTES, off)
            try:
                t = time.monotonic() if now is None else now  # read under the lock: in order
                owner, tokens, last = _SLOT.unpack_from(self._map, off)
                if owner == fp:
                    if last > t + REBOOTED_S:  # written before a reboot (the clock restarted)
                        tokens, last = self.burst, t
                elif owner == 0 or self._full(tokens, last, t):
                    owner, tokens, last = fp, self.burst, t  # a free (or reusable) slot
                elif probe < PROBES - 1:
                    continue  # another key's bucket: the next slot
                # else: every probe is another key's active bucket: share the last one (never
                # reset it, which would let two colliding keys refill each other)
                tokens = min(self.burst, tokens + (t - last) * self.rate)
                if tokens >= 1.0:
                    _SLOT.pack_into(self._map, off, owner, tokens - 1.0, t)
                    return 0.0
                _SLOT.pack_into(self._map, off, owner, tokens, t)
                return (1.0 - tokens) / self.rate
            finally:
                fcntl.lockf(self._fd, fcntl.LOCK_UN, _SLOT_BYTES, off)
                self._thread_lock.release()
        raise AssertionError("unreachable: the last probe always takes its slot")

    def _full(self, tokens: float, last: float, now: float) -> bool:
        return last > now + REBOOTED_S or tokens + (now - last) * self.rate >= self.burst

    def check(self, key: str) -> None:
        check(self, key)


#: KEYS[1]: the bucket; ARGV: rate, burst, tokens wanted. Returns {tokens granted, wait s}.
TAKE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate, burst, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'last')
local tokens, last = tonumber(b[1]), tonumber(b[2])
if tokens == nil or last == nil then tokens, last = burst, now end
tokens = math.min(burst, tokens + math.max(0, now - last) * rate)
local got = math.min(want, math.floor(tokens))
tokens = tokens - got
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'last', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
if got > 0 then return {got, '0'} end
return {0, tostring((1 - tokens) / rate)}
"""


class RedisBuckets:
    """Buckets in Redis, shared by every API process that uses the same Redis.

    Tokens are taken in chunks of :data:`CHUNK_S` seconds' worth of the rate (at least 1,
    at most a tenth of the burst) and spent locally, so one Redis call serves many requests;
    when Redis cannot be reached, per-process buckets answer until it can again."""

    def __init__(self, url: str, rate_per_s: float, burst: int, prefix: str = "cf:rl:") -> None:
        import redis

        self.rate = float(rate_per_s)
        self.burst = float(max(1, burst))
        self.chunk = max(1, min(int(self.rate * CHUNK_S), int(self.burst) // 10))
        self.prefix = prefix
        self._client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._script: Any = self._client.register_script(TAKE_LUA)
        self._held: dict[str, int] = {}  # key -> tokens taken from Redis, not spent yet
        self._names: dict[str, str] = {}
        self._fallback = TokenBuckets(rate_per_s, burst)
        self._down_until = 0.0

    def take(self, key: str, now: float | None = None) -> float:
        if self.rate <= 0:
            return 0.0
        held = self._held.get(key, 0)
        if held > 0:
            self._held[key] = held - 1
            return 0.0
        t = time.monotonic()
        if t < self._down_until:
            return self._fallback.take(key, now)
        try:
            got, wait = self._script(
                keys=[_memo(self._names, key, self._name)], args=[self.rate, self.burst, self.chunk]
            )
        except Exception as exc:  # redis.RedisError, OSError: limit alone for a while
            log.warning("the /predict rate limit cannot reach Redis (%s); per process for now", exc)
            self._down_until = t + 5.0
            return self._fallback.take(key, now)
        got = int(got)
        if got > 0:
            if len(self._held) >= MAX_KEYS:
                self._held.clear()  # tokens not spent are lost: never more than the rate
            self._held[key] = got - 1
            return 0.0
        return max(float(wait), 1e-3)

    def _name(self, key: str) -> str:
        return self.prefix + _digest(key).hex()

    def check(self, key: str) -> None:
        check(self, key)


def make_limiter(settings: Settings) -> TokenBuckets | SharedBuckets | RedisBuckets:
    """The /predict limiter of ``settings``: Redis when ``predict_rate_url`` is set, else the
    host's shared file in ``HOME``, else (the file cannot be made) per process."""
    rate, burst = settings.predict_rate_per_s, settings.predict_burst
    if settings.predict_rate_url:
        return RedisBuckets(settings.predict_rate_url, rate, burst)
    path = settings.home / "predict-rate.bin"
    try:
        return SharedBuckets(path, rate, burst)
    except (OSError, ValueError) as exc:
        log.warning(
            "the /predict rate limit is per process: %s cannot be used (%s); with several "
            "API processes each allows the full rate",
            path,
            exc,
        )
        return TokenBuckets(rate, burst)
