"""`cellfoundry serve --api-workers 2`: two API processes on one port, each with the models
preloaded, one set of local job workers, and a model deleted elsewhere is forgotten by each."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx

from tests.service.conftest import Server, base_env, wait_for

MODEL = "demo-logreg-pbmc68k"
CELL = {"CD3D": 12.0, "CD3E": 7.0, "IL7R": 5.0, "LTB": 9.0, "MALAT1": 40.0, "CD74": 3.0}


def _children(pid: int) -> list[str]:
    """The command lines of ``pid``'s child processes (Linux /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                out.append((stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except (OSError, ValueError, IndexError):
            continue  # the process ended meanwhile
    return out


def _kinds(pid: int) -> dict[str, int]:
    """The serve process's children by kind: API processes and local job workers."""
    out = {"api": 0, "local_worker": 0}
    for cmd in _children(pid):
        if "cellfoundry.jobs.local" in cmd:
            out["local_worker"] += 1
        elif "spawn_main" in cmd:  # a uvicorn worker process
            out["api"] += 1
    return out


def _fresh_predict(url: str, key: str, n: int) -> list[httpx.Response]:
    """``n`` requests, each on a new connection (so the kernel spreads them over the processes)."""
    body = {"expression": CELL, "model_id": MODEL, "top_k": 2}
    headers = {"Authorization": f"Bearer {key}"}
    return [httpx.post(url + "/predict", json=body, headers=headers, timeout=60) for _ in range(n)]


def test_two_api_processes_serve_predict_and_forget_a_deleted_model(
    tmp_path: Path, demo_model_dir: Path
) -> None:
    env = base_env(tmp_path, CELLFOUNDRY_QUEUE_BACKEND="local", CELLFOUNDRY_LOCAL_WORKERS="1")
    server = Server(tmp_path, env, ["--model", str(demo_model_dir), "--api-workers", "2"])
    server.start(timeout=180)
    try:
        wait_for(lambda: _kinds(server.proc.pid)["api"] == 2, 60, "two API processes")  # type: ignore[union-attr]
        assert _kinds(server.proc.pid)["local_worker"] == 1  # type: ignore[union-attr]
        answers = _fresh_predict(server.url, server.key, 24)
        assert [r.status_code for r in answers] == [200] * 24, answers[0].text
        assert len({r.content for r in answers}) == 1  # every process gives the same answer
        assert answers[0].json()["model_id"] == MODEL
        # another process or replica deletes the model: every process stops serving it
        with sqlite3.connect(tmp_path / "cellfoundry.db") as db:
            assert db.execute("DELETE FROM models WHERE id = ?", (MODEL,)).rowcount == 1

        def all_refused() -> bool:
            return all(r.status_code == 404 for r in _fresh_predict(server.url, server.key, 12))

        wait_for(all_refused, 30, "every API process to forget the deleted model")
        err = _fresh_predict(server.url, server.key, 1)[0].json()["error"]
        assert err["code"] == "model_not_found" and err["hint"]
    finally:
        server.stop()
    assert not server.log.read_text().count("Traceback"), server.log.read_text()[-3000:]
