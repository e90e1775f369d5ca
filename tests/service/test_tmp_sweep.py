"""Upload leftovers do not stay for ever: a partial upload (``storage/tmp/*.part``) or an intake
folder (``storage/tmp/intake-*``) left by an API process killed mid-upload is removed by the
reaper once nothing has written to it for ``tmp_sweep_after_s``; everything else stays.

An upload still being received is swept only when its client has sent nothing for that long
(each chunk received refreshes its file); one that goes on after that is refused with 409
``upload_expired`` and leaves nothing behind (before, it ended in a 500: FileNotFoundError)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from cellfoundry.config import Settings
from cellfoundry.data.untrusted.sandbox import prepare
from cellfoundry.jobs.engine import Engine
from cellfoundry.service.app import create_app
from cellfoundry.service.ingest import intake_limits
from cellfoundry.store.db import migrate
from cellfoundry.store.keys import create_key
from cellfoundry.store.storage import TMP_LEFTOVERS, FileStorage

HOUR = 3600.0


def _age(path: Path, seconds: float) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t), follow_symlinks=False)


def test_only_stale_upload_leftovers_are_removed(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path / "storage")
    tmp = storage.tmp_dir()
    stale_part = tmp / "tmpa1b2.part"
    fresh_part = tmp / "tmpc3d4.part"  # an upload still being received
    stale_intake = tmp / "intake-old"
    busy_intake = tmp / "intake-busy"  # an old folder whose file was just written: in use
    other = tmp / "demo-model"  # not an upload leftover
    for p in (stale_part, fresh_part):
        p.write_bytes(b"x" * 10)
    for d in (stale_intake, busy_intake, other):
        d.mkdir()
        (d / "data.h5ad").write_bytes(b"y")
    _age(stale_part, 7 * HOUR)
    _age(stale_intake / "data.h5ad", 7 * HOUR)
    _age(busy_intake, 7 * HOUR)
    _age(other / "data.h5ad", 7 * HOUR)
    for d in (stale_intake, other):
        _age(d, 7 * HOUR)

    removed = storage.sweep_tmp(6 * HOUR)

    assert sorted(removed) == ["intake-old", "tmpa1b2.part"]
    assert not stale_part.exists() and not stale_intake.exists()
    assert fresh_part.is_file() and busy_intake.is_dir() and other.is_dir()
    assert storage.sweep_tmp(6 * HOUR) == []  # nothing more to do


def test_the_reaper_sweeps_what_a_killed_upload_left(tmp_path: Path) -> None:
    """A process killed while it writes a .part file (as the API is, by SIGKILL, mid-upload)
    leaves it; the reaper's periodic pass removes it once it is older than the setting."""
    settings = Settings(
        home=tmp_path / "home", demo_model=False, shard_sweep_s=0, tmp_sweep_after_s=2
    )
    storage = FileStorage(settings.storage)
    writer = (
        "import sys, tempfile, time\n"
        "fd, p = tempfile.mkstemp(dir=sys.argv[1], suffix='.part')\n"
        "print(p, flush=True)\n"
        "while True:\n"
        "    import os; os.write(fd, b'x' * 4096); time.sleep(0.05)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", writer, str(storage.tmp_dir())], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    part = Path(proc.stdout.readline().strip())
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert part.is_file() and part.stat().st_size > 0  # what the killed upload left

    migrate(settings.database_url)
    engine = Engine(settings, "local")
    engine.reap()
    assert part.is_file()  # written within the last 2 s: kept
    _age(part, 3)
    engine._last_sweep = float("-inf")  # the next pass is due (shard_sweep_s = 0 anyway)
    engine.reap()
    assert not part.exists()
    engine.db.dispose()


CSV = b"cell,CD3D,CD3E,MS4A1,LYZ,NKG7\nc1,1,2,0,9,0\nc2,0,0,5,1,3\nc3,4,0,0,2,1\n"
BOUNDARY = "cf-test-boundary"
FILE_HEAD = (
    f"--{BOUNDARY}\r\n"
    'Content-Disposition: form-data; name="file"; filename="cells.csv"\r\n'
    "Content-Type: text/csv\r\n\r\n"
).encode()
FILE_TAIL = f"\r\n--{BOUNDARY}--\r\n".encode()
Upload = Callable[[AsyncIterator[bytes]], Awaitable[httpx.Response]]


def _upload_app_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """The API's own reaper sweeps storage/tmp at every pass (every 0.1 s), after 1 s idle
    (unless ``overrides`` say otherwise)."""
    given: dict[str, Any] = {"tmp_sweep_after_s": 1, "shard_sweep_s": 0, "reaper_s": 0.1}
    return Settings(
        home=tmp_path / "home",
        demo_model=False,
        web_dir=tmp_path / "no-web",
        **{**given, **overrides},
    )


def _with_app(settings: Settings, scenario: Callable[[Upload], Awaitable[None]]) -> None:
    """Run ``scenario`` with an ``upload(body)`` that POSTs /upload the multipart ``body`` as it
    is generated: each piece reaches the app, which writes it, before the next one is asked for
    (the client's pauses are real)."""

    async def main() -> None:
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            with app.state.platform.db.session() as s:
                _, key = create_key(s, "alice")
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://cf") as client:
                auth = {"Authorization": f"Bearer {key}"}
                multipart = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}

                async def upload(body: AsyncIterator[bytes]) -> httpx.Response:
                    r = await client.post(
                        "/upload", content=body, headers={**auth, **multipart}, timeout=120
                    )
                    if r.status_code == 200:  # the dataset is listed
                        listed = (await client.get("/datasets", headers=auth)).json()
                        assert r.json()["id"] in [d["id"] for d in listed]
                    return r

                await scenario(upload)

    asyncio.run(main())


async def _sandbox_ready(settings: Settings) -> None:
    """Wait until the upload sandbox's spare process is started, so the check of an upload
    takes well under the (1 s) sweep age of these tests."""
    assert await asyncio.to_thread(prepare, intake_limits(settings))


def _leftovers(storage: Path) -> list[str]:
    return sorted(p.name for pattern in TMP_LEFTOVERS for p in (storage / "tmp").glob(pattern))


def test_an_upload_idle_past_the_sweep_is_refused_409_upload_expired(tmp_path: Path) -> None:
    settings = _upload_app_settings(tmp_path)

    async def idle_then_finish() -> AsyncIterator[bytes]:
        yield FILE_HEAD + CSV[:20]
        parts = list((settings.storage / "tmp").glob("*.part"))  # the upload's partial file
        assert len(parts) == 1 and parts[0].read_bytes() == CSV[:20]
        deadline = time.monotonic() + 30
        while parts[0].exists():  # the client pauses; the reaper sweeps the idle upload
            assert time.monotonic() < deadline, "the idle upload was not swept"
            await asyncio.sleep(0.1)
        yield CSV[20:] + FILE_TAIL  # ... and the client goes on

    async def at_once() -> AsyncIterator[bytes]:
        yield FILE_HEAD + CSV + FILE_TAIL

    async def scenario(upload: Upload) -> None:
        r = await upload(idle_then_finish())
        assert r.status_code == 409, r.text
        err = r.json()["error"]
        assert err["code"] == "upload_expired"
        assert err["message"] == (
            "the upload was idle (no data received) for more than 1 second, and what it had "
            "sent was discarded"
        )
        assert err["hint"].startswith("start the upload again from the beginning (POST /upload)")
        assert _leftovers(settings.storage) == []  # nothing half-written stays
        assert not any((settings.storage / "datasets").rglob("*.csv"))
        await _sandbox_ready(settings)
        again = await upload(at_once())  # started again, as the hint says: accepted
        assert again.status_code == 200, again.text
        assert _leftovers(settings.storage) == []

    _with_app(settings, scenario)


def test_an_upload_receiving_small_chunks_is_not_swept_however_long_it_lasts(
    tmp_path: Path,
) -> None:
    """Chunks of 6 bytes (which a buffered file would not write at once) 0.3 s apart, for over
    3 s in all: three times the sweep's age, but never idle for it. Accepted whole."""
    settings = _upload_app_settings(tmp_path)
    pieces = [CSV[i : i + 6] for i in range(0, len(CSV), 6)]
    assert len(pieces) >= 10

    async def slowly() -> AsyncIterator[bytes]:
        yield FILE_HEAD
        for piece in pieces:
            await asyncio.sleep(0.3)
            yield piece
        yield FILE_TAIL

    async def scenario(upload: Upload) -> None:
        await _sandbox_ready(settings)
        r = await upload(slowly())
        assert r.status_code == 200, r.text
        assert r.json()["n_cells"] == 3 and r.json()["size_bytes"] == len(CSV)
        assert _leftovers(settings.storage) == []

    _with_app(settings, scenario)


def test_an_upload_whose_client_falls_silent_is_stopped_408_at_the_idle_timeout(
    tmp_path: Path,
) -> None:
    """Before, a client that stopped sending mid-upload held its connection and its partial
    file for as long as it liked (until the 6-hour sweep, and the open file's disk space until
    the connection closed). Now it is answered 408 upload_idle once silent for
    upload_idle_timeout_s, and its partial file is removed at once, long before any sweep."""
    settings = _upload_app_settings(
        tmp_path,
        upload_idle_timeout_s=0.5,
        tmp_sweep_after_s=HOUR,  # the sweep plays no part
    )
    seen: list[Path] = []

    async def silent_after_a_start() -> AsyncIterator[bytes]:
        yield FILE_HEAD + CSV[:20]
        seen.extend((settings.storage / "tmp").glob("*.part"))
        await asyncio.sleep(3)  # silent: the server gives up after 0.5 s
        yield CSV[20:] + FILE_TAIL

    async def slow_but_steady() -> AsyncIterator[bytes]:
        yield FILE_HEAD
        for i in range(0, len(CSV), 8):
            await asyncio.sleep(0.2)  # 1.7 s in all, never 0.5 s silent
            yield CSV[i : i + 8]
        yield FILE_TAIL

    async def scenario(upload: Upload) -> None:
        t0 = time.monotonic()
        r = await upload(silent_after_a_start())
        assert r.status_code == 408, r.text
        err = r.json()["error"]
        assert err["code"] == "upload_idle"
        assert err["message"] == (
            "no data arrived for 0.5 seconds in the middle of the upload; it was stopped and "
            "what it had sent was discarded"
        )
        assert "upload the file again" in err["hint"] and "UPLOAD_IDLE_TIMEOUT_S" in err["hint"]
        assert len(seen) == 1 and not seen[0].exists()  # removed at once, not by a sweep
        assert _leftovers(settings.storage) == []
        assert not any((settings.storage / "datasets").rglob("*.csv"))
        await _sandbox_ready(settings)
        ok = await upload(slow_but_steady())
        assert ok.status_code == 200, ok.text
        assert ok.json()["n_cells"] == 3 and time.monotonic() - t0 > 1.5

    _with_app(settings, scenario)
