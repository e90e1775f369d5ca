"""The store: migrations match the models, keys are stored hashed, ids and paths cannot escape."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from cellfoundry.errors import CellfoundryError
from cellfoundry.store.db import Database, migrate
from cellfoundry.store.keys import create_key, hash_key, revoke_key, verify_key
from cellfoundry.store.storage import FileStorage, check_id, safe_filename
from cellfoundry.store.tables import ApiKey, Base, Dataset, ModelRecord, Run, User


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db.sqlite'}"
    return str(request.getfixturevalue("pg_database")())


def test_migrations_create_exactly_the_models(db_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    migrate(db_url)
    migrate(db_url)  # idempotent: upgrade head twice
    eng = sa.create_engine(db_url)
    with eng.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == [], diff
        tables = set(sa.inspect(conn).get_table_names())
    assert {
        "users",
        "api_keys",
        "datasets",
        "models",
        "applications",
        "runs",
        "run_shards",
        "results",
        "evaluations",
        "workers",
        "alembic_version",
    } <= tables
    eng.dispose()


def test_keys_are_hashed_verified_and_revocable(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'k.db'}"
    migrate(url)
    db = Database(url)
    with db.session() as s:
        rec, key = create_key(s, "alice")
        _, key2 = create_key(s, "laptop", user_name="alice")
        _, other = create_key(s, "bob")
    with db.session() as s:
        stored = s.get(ApiKey, rec.id)
        assert (
            stored is not None and stored.key_hash == hash_key(key) and key not in stored.key_hash
        )
        assert verify_key(s, key).name == "alice"  # type: ignore[union-attr]
        assert verify_key(s, key2).id == verify_key(s, key).id  # type: ignore[union-attr]
        assert verify_key(s, other).name == "bob"  # type: ignore[union-attr]
        assert verify_key(s, key[:-1] + ("A" if key[-1] != "A" else "B")) is None
        assert verify_key(s, "nonsense") is None and verify_key(s, "cf_unknown_x") is None
        assert revoke_key(s, rec.id) and not revoke_key(s, "nope")
    with db.session() as s:
        assert verify_key(s, key) is None and verify_key(s, key2) is not None
    db.dispose()


def test_ids_and_file_names_cannot_escape(tmp_path: Path) -> None:
    st = FileStorage(tmp_path / "storage")
    assert safe_filename("../../etc/passwd.h5ad") == "passwd.h5ad"
    assert safe_filename("..\\..\\win.csv") == "win.csv"
    assert safe_filename("a b;rm -rf.csv") == "a_b_rm_-rf.csv"
    assert safe_filename("...") == "upload"
    # names in other scripts keep their letters (a name of only such letters was cut to 'csv',
    # which then had no extension and was refused 415); at most 120 bytes, the end kept
    assert safe_filename("日本語データ.csv") == "日本語データ.csv"
    assert safe_filename("données\u202e.h5ad") == "données_.h5ad"  # no bidi override
    long = safe_filename("é" * 200 + ".h5ad")
    assert long.endswith("é.h5ad") and len(long.encode()) <= 120
    for bad in ("../x", "a/b", "", "a.b", "x" * 65, "a\x00b"):
        with pytest.raises(CellfoundryError):
            check_id(bad)
    with pytest.raises(CellfoundryError):
        st.resolve("../outside")
    with pytest.raises(CellfoundryError):
        st.run_dir("../../x")
    assert st.run_dir("r_abc").is_relative_to(st.root)


def _seed(db: Database, n_runs: int) -> list[str]:
    with db.session() as s:
        u = User(name="u")
        s.add(u)
        s.flush()
        d = Dataset(
            owner_id=u.id,
            sha256="0" * 64,
            filename="x.h5ad",
            path="datasets/x",
            size_bytes=1,
            format="h5ad",
            n_cells=1,
            n_genes=1,
        )
        m = ModelRecord(id="m", name="m", family="logreg", path="models/m")
        s.add_all([d, m])
        s.flush()
        from cellfoundry.service.platform import sync_applications

        sync_applications(s)
        runs = [
            Run(owner_id=u.id, dataset_id=d.id, model_id="m", application_id="annotation")
            for _ in range(n_runs)
        ]
        s.add_all(runs)
        s.flush()
        return [r.id for r in runs]


def test_each_run_is_claimed_exactly_once_under_contention(db_url: str, tmp_path: Path) -> None:
    """Eight workers race for five queued runs: every run is taken once, by one worker."""
    from cellfoundry.config import Settings
    from cellfoundry.jobs.engine import Engine

    migrate(db_url)
    settings = Settings(home=tmp_path, database_url=db_url)
    ids = _seed(Database(db_url), 5)
    engines = [Engine(settings, "local") for _ in range(8)]
    for i, e in enumerate(engines):
        e.name = f"local:test:{i}"
    claimed: list[tuple[str, str]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(len(engines))

    def work(e: Engine) -> None:
        barrier.wait()
        while True:
            got = e.next_local_work()
            if got is None:
                return
            with lock:
                claimed.append((got[1], e.name))

    threads = [threading.Thread(target=work, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(r for r, _ in claimed) == sorted(ids)
    db = Database(db_url)
    with db.session() as s:
        rows = s.scalars(sa.select(Run)).all()
        assert all(r.state == "running" and r.attempts == 1 for r in rows)
        assert {r.id: r.worker for r in rows} == dict(claimed)
        # a re-delivered task for a run that is running with a live heartbeat is a no-op
        assert not engines[0].claim_run(s, ids[0])
    db.dispose()


def test_reaper_requeues_then_fails_with_a_reason(tmp_path: Path) -> None:
    import datetime as dt

    from cellfoundry.config import Settings
    from cellfoundry.jobs.engine import Engine

    url = f"sqlite:///{tmp_path / 'r.db'}"
    migrate(url)
    settings = Settings(home=tmp_path, database_url=url, stale_after_s=5, max_attempts=2)
    db = Database(url)
    (rid,) = _seed(db, 1)
    e = Engine(settings, "local", db)
    old = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=60)
    for attempt in (1, 2):
        with db.session() as s:
            assert e.claim_run(s, rid)
            s.execute(
                sa.update(Run).where(Run.id == rid).values(heartbeat_at=old, stage="annotating")
            )
        assert e.reap() == ([rid] if attempt == 1 else [])
        with db.session() as s:
            run = s.get(Run, rid)
            assert run is not None
            if attempt == 1:
                assert run.state == "queued" and run.worker is None
            else:
                assert run.state == "failed" and run.error_code == "worker_lost"
                assert "stopped responding" in (run.error_message or "") and "annotating" in (
                    run.error_message or ""
                )
                assert run.error_hint
    db.dispose()


def test_api_processes_starting_together_store_the_applications_once(db_url: str) -> None:
    """Eight API processes start at the same moment on a new database (``serve --api-workers
    8``): each stores the registered applications and none fails on the unique key. A row left
    by an older release is brought up to date."""
    from cellfoundry.jobs.applications import APPLICATIONS
    from cellfoundry.service.platform import sync_applications
    from cellfoundry.store.tables import Application

    migrate(db_url)
    gate = threading.Barrier(8)
    errors: list[BaseException] = []
    dbs = [Database(db_url) for _ in range(8)]  # one engine per "process"

    def start(own: Database) -> None:
        try:
            with own.session() as s:
                s.execute(sa.select(Application.id)).all()  # connected: all read "no rows"
                gate.wait()
                sync_applications(s)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)
        finally:
            own.dispose()

    threads = [threading.Thread(target=start, args=(d,)) for d in dbs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    db = Database(db_url)
    first = next(iter(APPLICATIONS))
    with db.session() as s:
        assert sorted(s.scalars(sa.select(Application.id))) == sorted(APPLICATIONS)
        s.get_one(Application, first).name = "old"  # as an older release stored it
        s.get_one(Application, first).params_schema = {}
    with db.session() as s:
        sync_applications(s)
    with db.session() as s:
        row = s.get_one(Application, first)
        assert row.name == APPLICATIONS[first].to_dict()["name"]
        assert row.params_schema == APPLICATIONS[first].to_dict()["params_schema"]
    db.dispose()
