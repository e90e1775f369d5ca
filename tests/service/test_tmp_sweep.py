"""Upload leftovers do not stay for ever: a partial upload (``storage/tmp/*.part``) or an intake
folder (``storage/tmp/intake-*``) left by an API process killed mid-upload is removed by the
reaper once nothing has written to it for ``tmp_sweep_after_s``; everything else stays."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from cellfoundry.config import Settings
from cellfoundry.jobs.engine import Engine
from cellfoundry.store.db import migrate
from cellfoundry.store.storage import FileStorage

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
