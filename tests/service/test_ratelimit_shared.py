"""The /predict rate limit is one bucket per key for every API process: processes of one host
share a memory-mapped file, processes anywhere share Redis when ``predict_rate_url`` is set."""

from __future__ import annotations

import logging
import multiprocessing
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cellfoundry.config import Settings
from cellfoundry.service.app import create_app
from cellfoundry.service.ratelimit import (
    RedisBuckets,
    SharedBuckets,
    TokenBuckets,
    make_limiter,
)
from tests.service.conftest import REDIS, Server, base_env, state_with_model, wait_for
from tests.service.test_service_processes import _fresh_predict, _kinds

BURST = 60
SLOW = 0.001  # tokens per second: nothing refills during a test


def _take_many(kind: str, where: str, key: str, n: int) -> int:
    """In a separate process: ``n`` takes for ``key``; how many were allowed."""
    if kind == "shared":
        lim: SharedBuckets | RedisBuckets = SharedBuckets(Path(where), SLOW, BURST)
    else:
        lim = RedisBuckets(REDIS, SLOW, BURST, prefix=where)
    return sum(lim.take(key) == 0 for _ in range(n))


@pytest.fixture(params=["shared", "redis"])
def kind_where(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    if request.param == "redis":
        _, name = request.getfixturevalue("redis_queue")()  # its keys go at the session's end
        return "redis", f"{name}:rl:"
    return "shared", str(tmp_path / "predict-rate.bin")


def test_processes_share_one_bucket_per_key(kind_where: tuple[str, str]) -> None:
    kind, where = kind_where
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(4, mp_context=ctx) as pool:
        runs = [pool.submit(_take_many, kind, where, "Bearer k1", 40) for _ in range(4)]
        allowed = [r.result() for r in runs]
        other = pool.submit(_take_many, kind, where, "Bearer k2", 10).result()
    assert sum(allowed) == BURST, allowed  # 160 tries from 4 processes, one burst of 60
    assert other == 10  # another key has its own bucket


def test_threads_of_one_process_share_the_file_bucket_exactly(tmp_path: Path) -> None:
    lim = SharedBuckets(tmp_path / "rl.bin", SLOW, BURST)
    allowed: list[int] = []
    barrier = threading.Barrier(8)

    def spend() -> None:
        barrier.wait()
        allowed.append(sum(lim.take("Bearer k") == 0 for _ in range(40)))

    threads = [threading.Thread(target=spend) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert len(allowed) == 8 and sum(allowed) == BURST, allowed


def test_redis_chunks_never_allow_more_than_the_bucket_holds(
    redis_queue: Callable[[], tuple[str, str]],
) -> None:
    prefix = f"{redis_queue()[1]}:rl:"
    a, b = (RedisBuckets(REDIS, 2_000, 100, prefix=prefix) for _ in range(2))
    assert a.chunk == 10  # 5 ms of the rate
    allowed = 0
    for _ in range(150):  # two processes alternating, each spending its own chunk
        allowed += (a.take("k") == 0) + (b.take("k") == 0)
    # what the bucket held, plus what refilled while the loop ran (at most 2,000/s)
    assert 100 - 2 * a.chunk <= allowed <= 300


def test_the_limiter_falls_back_per_process_only_when_nothing_shared_exists(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    home = tmp_path / "home"
    (home / "predict-rate.bin").mkdir(parents=True)  # the shared file cannot be made
    with caplog.at_level(logging.WARNING, logger="cellfoundry.service"):
        lim = make_limiter(Settings(home=home, demo_model=False))
    assert isinstance(lim, TokenBuckets)
    assert "per process" in caplog.text
    ok = make_limiter(Settings(home=tmp_path / "other", demo_model=False))
    assert isinstance(ok, SharedBuckets)
    down = RedisBuckets("redis://127.0.0.1:9/0", SLOW, 2)  # nothing listens: per process
    with caplog.at_level(logging.WARNING, logger="cellfoundry.service"):
        assert [down.take("k") == 0 for _ in range(3)] == [True, True, False]
    assert "cannot reach Redis" in caplog.text


@pytest.mark.parametrize("backend", ["shared", "redis"])
def test_two_api_processes_answer_429_once_the_shared_bucket_is_empty(
    backend: str, tmp_path: Path, demo_model_dir: Path, request: pytest.FixtureRequest
) -> None:
    """Two apps on one state folder (as two server workers): the burst is spent across both."""
    url = ""
    if backend == "redis":
        request.getfixturevalue("redis_queue")
        url = REDIS
    settings = Settings(
        home=tmp_path / "home",
        demo_model=False,
        web_dir=tmp_path / "no-web",
        predict_rate_per_s=0.5,
        predict_burst=3,
        predict_rate_url=url,
    )
    key = state_with_model(settings, demo_model_dir)
    auth = {"Authorization": f"Bearer {key}"}
    cell = {"expression": {"CD3D": 5.0, "CD3E": 4.0, "LYZ": 1.0}}
    with TestClient(create_app(settings)) as one, TestClient(create_app(settings)) as two:
        codes = [(one, two)[i % 2].post("/predict", json=cell, headers=auth) for i in range(4)]
    assert [r.status_code for r in codes] == [200, 200, 200, 429], codes[-1].text
    err = codes[-1].json()["error"]
    assert err["code"] == "rate_limited" and err["hint"] and err["request_id"]
    assert 1 <= int(codes[-1].headers["Retry-After"]) <= 2  # one token every 2 s


def test_serve_with_two_api_processes_spends_one_bucket(
    tmp_path: Path, demo_model_dir: Path
) -> None:
    """`cellfoundry serve --api-workers 2`: requests spread over both processes draw from one
    bucket (per-process buckets would allow up to twice the burst)."""
    env = base_env(
        tmp_path,
        CELLFOUNDRY_QUEUE_BACKEND="local",
        CELLFOUNDRY_PREDICT_RATE_PER_S=str(SLOW),
        CELLFOUNDRY_PREDICT_BURST="10",
    )
    server = Server(tmp_path, env, ["--model", str(demo_model_dir), "--api-workers", "2"])
    server.start(timeout=180)
    try:
        wait_for(lambda: _kinds(server.proc.pid)["api"] == 2, 60, "two API processes")  # type: ignore[union-attr]
        codes = [r.status_code for r in _fresh_predict(server.url, server.key, 30)]
    finally:
        server.stop()
    assert codes.count(200) == 10 and codes.count(429) == 20, codes
