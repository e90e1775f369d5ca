"""POST /submit with an Idempotency-Key: a retry answers the first run and creates, queues and
counts nothing; concurrent retries make one run; keys are per owner; a deleted run frees its key.

Run against SQLite (local queue) and PostgreSQL (Celery on Redis, no workers: every message a
submit queues stays in the Redis list and is counted).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from cellfoundry.config import Settings
from cellfoundry.service.app import create_app
from cellfoundry.store.db import Database, migrate
from cellfoundry.store.keys import create_key
from cellfoundry.store.tables import Run, User
from tests.service.conftest import state_with_model
from tests.service.test_quota_races import _all_at_once
from tests.service.test_store_db import _seed

CSV = "cell,CD3D,CD3E,MS4A1,LYZ,NKG7\nc1,1,2,0,9,0\nc2,0,0,5,1,3\nc3,4,0,0,2,1\n"
REPLAYED = "Idempotent-Replayed"


@dataclass
class Api:
    client: TestClient
    settings: Settings
    alice: dict[str, str]  # Authorization headers
    bob: dict[str, str]
    queue: str | None  # the Redis list Celery messages go to (PostgreSQL only)

    def runs(self) -> int:
        db = self.client.app.state.platform.db  # type: ignore[attr-defined]
        with db.session() as s:
            return int(s.scalar(select(func.count()).select_from(Run)) or 0)

    def messages(self) -> int | None:
        """Messages waiting in the Celery queue (None on the local queue: no messages)."""
        if self.queue is None:
            return None
        import redis

        r = redis.Redis.from_url(self.settings.broker_url)
        try:
            return int(r.llen(self.queue))
        finally:
            r.close()

    def body(self, who: dict[str, str], name: str = "a.csv") -> dict[str, Any]:
        """A valid submit body of a dataset uploaded by ``who``."""
        up = self.client.post("/upload", files={"file": (name, CSV.encode())}, headers=who)
        assert up.status_code == 200, up.text
        model = self.client.get("/models").json()[0]["id"]
        return {"dataset_id": up.json()["id"], "model_id": model}

    def submit(self, who: dict[str, str], body: dict[str, Any], key: str | None) -> httpx.Response:
        headers = dict(who) if key is None else {**who, "Idempotency-Key": key}
        return self.client.post("/submit", json=body, headers=headers)


@pytest.fixture(params=["sqlite", "postgres"])
def api(request: pytest.FixtureRequest, tmp_path: Path, demo_model_dir: Path) -> Iterator[Api]:
    over: dict[str, Any] = {}
    queue = None
    if request.param == "postgres":
        url = str(request.getfixturevalue("pg_database")())
        broker, queue = request.getfixturevalue("redis_queue")()
        over = {"queue_backend": "celery", "broker_url": broker, "queue_name": queue}
    else:
        url = f"sqlite:///{tmp_path / 'idem.db'}"
    settings = Settings(
        home=tmp_path / "home",
        database_url=url,
        demo_model=False,
        web_dir=tmp_path / "no-web",
        max_active_runs_per_user=3,
        **over,
    )
    alice = state_with_model(settings, demo_model_dir)
    db = Database(url)
    with db.session() as s:
        bob = create_key(s, "bob")[1]
    db.dispose()
    with TestClient(create_app(settings)) as c:  # no workers: submitted runs stay queued
        yield Api(
            c,
            settings,
            {"Authorization": f"Bearer {alice}"},
            {"Authorization": f"Bearer {bob}"},
            queue,
        )


def test_a_retry_answers_the_first_run_and_creates_queues_and_counts_nothing(api: Api) -> None:
    body = api.body(api.alice)
    key = str(uuid.uuid4())
    first = api.submit(api.alice, body, key)
    assert first.status_code == 201, first.text
    assert REPLAYED not in first.headers
    run_id = first.json()["run_id"]
    # the same request again, its keys in another order and the default application named
    again = {"model_id": body["model_id"], "application_id": "annotation", **body}
    for _ in range(4):  # more retries than the quota (3) allows runs: none counts
        retry = api.submit(api.alice, again, key)
        assert retry.status_code == 201, retry.text
        assert retry.json() == {"run_id": run_id, "state": "queued"}
        assert retry.headers[REPLAYED] == "true"
    assert api.runs() == 1
    assert api.messages() in (None, 1)
    # the quota saw one run: two more fit, the third is refused
    assert api.submit(api.alice, body, None).status_code == 201
    assert api.submit(api.alice, body, str(uuid.uuid4())).status_code == 201
    over = api.submit(api.alice, body, str(uuid.uuid4()))
    assert over.status_code == 429 and over.json()["error"]["code"] == "run_quota_exceeded"
    # a retry of the first still answers its run at the limit (no quota check for a replay)
    assert api.submit(api.alice, body, key).json()["run_id"] == run_id
    # the replay answers the run's state now
    api.client.post(f"/runs/{run_id}/cancel", headers=api.alice)
    assert api.submit(api.alice, body, key).json() == {"run_id": run_id, "state": "cancelled"}
    assert api.runs() == 3
    assert api.messages() in (None, 3)


def test_the_same_key_with_another_body_is_refused(api: Api) -> None:
    body = api.body(api.alice)
    key = "order-42"
    run_id = api.submit(api.alice, body, key).json()["run_id"]
    other = {**body, "params": {"explain": True}}
    r = api.submit(api.alice, other, key)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "idempotency_key_reused"
    assert "'order-42'" in err["message"] and run_id in err["message"]
    assert err["hint"].startswith("use a new key for a different request")
    assert REPLAYED not in r.headers
    assert api.runs() == 1
    # the first request's retry still answers its run; the other body with a new key is a run
    assert api.submit(api.alice, body, key).json()["run_id"] == run_id
    assert api.submit(api.alice, other, "order-43").status_code == 201
    assert api.runs() == 2
    assert api.messages() in (None, 2)


def test_concurrent_submits_with_one_key_make_one_run(api: Api) -> None:
    body = api.body(api.alice)
    n = 8
    for round_ in range(3):
        key = f"burst-{round_}"
        answers = _all_at_once(n, lambda _, key=key: api.submit(api.alice, body, key))
        assert len(answers) == n
        assert [r.status_code for r in answers] == [201] * n, [r.text for r in answers]
        assert len({r.json()["run_id"] for r in answers}) == 1
        assert sum(REPLAYED not in r.headers for r in answers) == 1  # one created, n-1 replayed
        assert api.runs() == round_ + 1
        assert api.messages() in (None, round_ + 1)


def test_keys_are_per_owner(api: Api) -> None:
    a_body, b_body = api.body(api.alice), api.body(api.bob)
    key = "shared-key"
    a_run = api.submit(api.alice, a_body, key).json()["run_id"]
    # bob's request with alice's key is bob's own run, whatever its body
    b = api.submit(api.bob, b_body, key)
    assert b.status_code == 201 and REPLAYED not in b.headers
    b_run = b.json()["run_id"]
    assert b_run != a_run
    assert api.submit(api.bob, b_body, key).json()["run_id"] == b_run  # his retry: his run
    # alice's body from bob names alice's dataset: not found, not her run nor a key clash
    r = api.submit(api.bob, a_body, "another-key")
    assert r.status_code == 404 and r.json()["error"]["code"] == "dataset_not_found"
    assert api.client.get(f"/status/{a_run}", headers=api.bob).status_code == 404
    assert api.submit(api.alice, a_body, key).json()["run_id"] == a_run
    assert api.runs() == 2


def test_a_malformed_key_is_refused(api: Api) -> None:
    body = api.body(api.alice)
    for value, why in [
        (b"", "it is empty"),
        (b" ", "byte 1 is 0x20"),
        (b"two words", "byte 4 is 0x20"),
        (b"tab\there", "byte 4 is 0x09"),
        (b"x" * 256, "it has 256 characters"),
        ("clé".encode(), "byte 3 is 0xC3"),
        (b"\x7f", "byte 1 is 0x7F"),
    ]:
        headers = {**api.alice, "Idempotency-Key": value}
        r = api.client.post("/submit", json=body, headers=headers)
        assert r.status_code == 422, (value, r.text)
        err = r.json()["error"]
        assert err["code"] == "invalid_idempotency_key", value
        assert err["message"] == (
            f"the Idempotency-Key header is not 1-255 visible ASCII characters ({why})"
        )
        assert "new UUID" in err["hint"]
    assert api.runs() == 0


def test_two_key_headers_are_refused_and_the_limits_are_inclusive(api: Api) -> None:
    body = api.body(api.alice)
    headers = [*api.alice.items(), ("Idempotency-Key", "a"), ("Idempotency-Key", "b")]
    r = api.client.post("/submit", json=body, headers=headers)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_idempotency_key"
    assert r.json()["error"]["hint"] == "send one Idempotency-Key header"
    assert api.runs() == 0
    # a quoted key (the IETF draft's sf-string) is a key like any other, quotes and all
    for key in ("k", "x" * 255, '"8e03978e-40d5-43e8-bc93-6894a57f9324"~!#$%&\'*+.^_`|'):
        assert api.submit(api.alice, body, key).status_code == 201, key
        assert api.submit(api.alice, body, key).headers[REPLAYED] == "true"
    assert api.runs() == 3


def test_a_deleted_run_frees_its_key(api: Api) -> None:
    body = api.body(api.alice)
    key = "reused-after-delete"
    first = api.submit(api.alice, body, key).json()["run_id"]
    assert api.client.post(f"/runs/{first}/cancel", headers=api.alice).status_code == 200
    assert api.client.delete(f"/runs/{first}", headers=api.alice).status_code == 204
    # the key is free: a new run, even for another body
    second = api.submit(api.alice, {**body, "params": {"explain": True}}, key)
    assert second.status_code == 201 and REPLAYED not in second.headers
    assert second.json()["run_id"] != first
    assert api.runs() == 1


def test_the_database_allows_one_run_per_owner_and_key(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """The unique index on runs (owner_id, idempotency_key), on both databases: the last word
    when two submits race past every check (runs without a key are not limited)."""
    for url in (f"sqlite:///{tmp_path / 'u.db'}", str(request.getfixturevalue("pg_database")())):
        migrate(url)
        db = Database(url)
        (seeded,) = _seed(db, 1)  # a user, their dataset, model "m", the applications
        with db.session() as s:
            first = s.get_one(Run, seeded)
            other = User(name="u2")
            s.add(other)
            s.flush()
            owners = [(first.owner_id, first.dataset_id), (other.id, first.dataset_id)]

        def add(owner: tuple[str, str], key: str | None, db: Database = db) -> None:
            with db.session() as s:
                s.add(
                    Run(
                        owner_id=owner[0],
                        dataset_id=owner[1],
                        model_id="m",
                        application_id="annotation",
                        idempotency_key=key,
                    )
                )

        add(owners[0], "k")
        add(owners[1], "k")  # another owner
        add(owners[0], None)
        add(owners[0], None)  # no key: any number
        with pytest.raises(sa.exc.IntegrityError):
            add(owners[0], "k")
        with db.session() as s:
            assert s.scalar(select(func.count()).select_from(Run)) == 5
        db.dispose()
