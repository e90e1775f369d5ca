"""A delete racing a submit on the same dataset (or private model), and two deletes racing each
other: every answer is a documented one and the database agrees with it. Either the submit wins
(201, and the delete is refused 409 active_runs) or the delete wins (204, and the submit is 404);
a run is never accepted and then removed with its dataset, and nothing answers 500."""

from __future__ import annotations

import time
from collections import Counter
from functools import partial
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from cellfoundry.service.app import create_app
from cellfoundry.store.model_records import register_model
from cellfoundry.store.tables import Dataset, ModelRecord, Run, User
from tests.service.test_quota_races import _all_at_once, _settings, database_url

__all__ = ["database_url"]  # the fixture

ROUNDS = 10


def _csv(i: int) -> bytes:
    """A small dataset of its own per round (the same bytes twice would be one dataset)."""
    return f"cell,CD3D,CD3E,MS4A1,LYZ,NKG7\nc1,1,2,0,9,{i}\nc2,0,0,5,1,3\nc3,4,0,0,2,1\n".encode()


def _submit_or_delete(
    c: TestClient, auth: dict[str, str], body: dict[str, object], doomed: str, pause: float, j: int
) -> httpx.Response:
    """Thread 0 submits ``body``; thread 1 deletes ``doomed`` after ``pause`` seconds."""
    if j == 0:
        return c.post("/submit", json=body, headers=auth)
    time.sleep(pause)
    return c.delete(doomed, headers=auth)


@pytest.mark.parametrize("target", ["dataset", "model"])
def test_a_delete_racing_a_submit_either_refuses_or_wins(
    tmp_path: Path,
    database_url: str,
    demo_model_dir: Path,
    target: str,
) -> None:
    settings, key = _settings(tmp_path, database_url, demo_model_dir)
    auth = {"Authorization": f"Bearer {key}"}
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        platform = c.app.state.platform  # type: ignore[attr-defined]
        public = c.get("/models").json()[0]["id"]
        with platform.db.session() as s:
            uid = s.scalar(select(User.id))
        outcomes: Counter[tuple[int, int]] = Counter()
        for i in range(ROUNDS):
            ds = c.post("/upload", files={"file": (f"d{i}.csv", _csv(i))}, headers=auth).json()
            model = public
            if target == "model":  # a private model of the user, which they may delete
                model = f"mine-{i}"
                with platform.db.session() as s:
                    register_model(
                        s, platform.storage, demo_model_dir, model_id=model, owner_id=uid
                    )
            body = {"dataset_id": ds["id"], "model_id": model, "params": {"layout": "none"}}
            doomed = f"/datasets/{ds['id']}" if target == "dataset" else f"/models/{model}"
            pause = 0.003 * (i % 5)  # the delete starts at several points of the submit
            submitted, deleted = _all_at_once(
                2, partial(_submit_or_delete, c, auth, body, doomed, pause)
            )
            outcome = (submitted.status_code, deleted.status_code)
            outcomes[outcome] += 1
            won = {(201, 409), (404, 204)}
            if target == "model":  # the delete's folder removal seen before the lock: no run
                won.add((409, 204))
            assert outcome in won, (i, submitted.text, deleted.text)
            if outcome == (201, 409):
                assert deleted.json()["error"]["code"] == "active_runs"
                rid = submitted.json()["run_id"]
                assert c.get(f"/status/{rid}", headers=auth).json()["state"] == "queued"
                c.post(f"/runs/{rid}/cancel", headers=auth)
            elif outcome == (409, 204):
                assert submitted.json()["error"]["code"] == "model_not_ready"
            else:
                assert submitted.json()["error"]["code"] == f"{target}_not_found"
        with platform.db.session() as s:  # every run accepted is still there, with its inputs
            runs = s.scalar(select(func.count()).select_from(Run))
            dangling = s.scalar(
                select(func.count())
                .select_from(Run)
                .where(
                    ~Run.dataset_id.in_(select(Dataset.id))
                    | ~Run.model_id.in_(select(ModelRecord.id))
                )
            )
        assert runs == outcomes[(201, 409)] and dangling == 0, outcomes


def test_two_deletes_of_one_dataset_at_once_are_204_and_404(
    tmp_path: Path,
    database_url: str,
    demo_model_dir: Path,
) -> None:
    settings, key = _settings(tmp_path, database_url, demo_model_dir)
    auth = {"Authorization": f"Bearer {key}"}
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        for i in range(ROUNDS):
            ds = c.post("/upload", files={"file": (f"d{i}.csv", _csv(i))}, headers=auth).json()
            path = f"/datasets/{ds['id']}"
            answers = _all_at_once(2, lambda _, path=path: c.delete(path, headers=auth))
            assert sorted(r.status_code for r in answers) == [204, 404], [r.text for r in answers]
            refused = next(r for r in answers if r.status_code == 404)
            assert refused.json()["error"]["code"] == "dataset_not_found"
