"""What the API process holds: settings, database, storage, /predict models and the reaper."""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy import select
from sqlalchemy.orm import Session

from cellfoundry.config import Settings
from cellfoundry.errors import CellfoundryError
from cellfoundry.jobs.applications import APPLICATIONS
from cellfoundry.jobs.engine import Engine
from cellfoundry.service.predict import Predictor, ProbaBatcher
from cellfoundry.service.ratelimit import make_limiter
from cellfoundry.store.db import Database
from cellfoundry.store.keys import verify_key
from cellfoundry.store.storage import FileStorage
from cellfoundry.store.tables import Application, ModelRecord, Visibility

log = logging.getLogger("cellfoundry.service")


class Platform:
    """Settings, database, storage, predictor and the API-side engine (reaper, model loading)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database(settings.database_url)
        self.storage = FileStorage(settings.storage)
        self.engine = Engine(settings, "api", self.db)
        self.predictor = Predictor()
        self.batcher = ProbaBatcher()  # /predict's one-cell requests share model calls
        self.predict_limit = make_limiter(settings)  # shared by the API processes
        self._keys: dict[str, tuple[str, float]] = {}
        self._stopping = threading.Event()

    def start(self) -> None:
        with self.db.session() as s:
            sync_applications(s)
        self.preload()
        self.engine.start_reaper()  # one reaper at a time across replicas: a database lease
        threading.Thread(target=self._warm_intake, daemon=True, name="cf-intake").start()
        threading.Thread(target=self._model_sync_loop, daemon=True, name="cf-model-sync").start()

    def _model_sync_loop(self) -> None:
        """Every ``key_cache_s`` (at least 1 s): forget models deleted through another API process
        or replica (the process that deletes one forgets it at once), as a revoked key is."""
        while not self._stopping.wait(max(1.0, self.settings.key_cache_s)):
            try:
                self.forget_deleted_models()
            except Exception:
                log.exception("checking the loaded models against the database failed")

    def forget_deleted_models(self) -> list[str]:
        """Drop the loaded /predict models whose database record is gone; their ids."""
        loaded = list(self.predictor.models)
        if not loaded:
            return []
        with self.db.session() as s:
            kept = set(s.scalars(select(ModelRecord.id).where(ModelRecord.id.in_(loaded))))
        gone = [m for m in loaded if m not in kept]
        for m in gone:
            self.predictor.remove(m)
        return gone

    def _warm_intake(self) -> None:
        """Start the upload sandbox's spare process now, so the first upload need not wait."""
        from cellfoundry.data.untrusted import prepare
        from cellfoundry.service.ingest import intake_limits

        try:
            prepare(intake_limits(self.settings))
        except Exception:
            log.exception("the upload sandbox could not be prepared")

    def stop(self) -> None:
        self._stopping.set()
        self.engine.stop()
        self.db.dispose()

    def preload(self) -> None:
        """Load the models for /predict (``settings.preload_models``; empty: every ready one)."""
        with self.db.session() as s:
            recs = s.scalars(select(ModelRecord).order_by(ModelRecord.created_at)).all()
        wanted = set(self.settings.preload_models)
        for rec in recs:
            if wanted and rec.id not in wanted:
                continue
            try:
                ann = self.engine.annotator(rec)
                self.predictor.add(rec.id, ann, rec.owner_id, rec.visibility == Visibility.PUBLIC)
            except CellfoundryError as exc:
                log.info("model %s not preloaded for /predict: %s", rec.id, exc.message)

    def user_for_key(self, key: str) -> str | None:
        """The id of the user owning ``key`` (cached for ``settings.key_cache_s``)."""
        now = time.monotonic()
        hit = self._keys.get(key)
        if hit and hit[1] > now:
            return hit[0]
        with self.db.session() as s:
            user = verify_key(s, key)
            uid = user.id if user else None
        if uid:
            if len(self._keys) > 10_000:
                self._keys.clear()
            self._keys[key] = (uid, now + self.settings.key_cache_s)
        return uid


def sync_applications(session: Session) -> None:
    """Store the registered applications (id, schema, families) in the database.

    One upsert per application (``INSERT … ON CONFLICT (id) DO UPDATE``), so API processes that
    start together (``serve --api-workers N``, replicas) cannot both insert the same row."""
    from sqlalchemy.dialects import postgresql, sqlite

    dialect = session.get_bind().dialect.name
    if dialect not in ("postgresql", "sqlite"):  # pragma: no cover - the store's two databases
        raise RuntimeError(f"unsupported database dialect {dialect!r}")
    for spec in APPLICATIONS.values():
        d = spec.to_dict()
        values = {
            "name": d["name"],
            "description": d["description"],
            "families": d["families"] or [],
            "params_schema": d["params_schema"],
        }
        if dialect == "postgresql":
            pg = postgresql.insert(Application).values(id=spec.id, **values)
            session.execute(pg.on_conflict_do_update(index_elements=["id"], set_=values))
        else:
            lite = sqlite.insert(Application).values(id=spec.id, **values)
            session.execute(lite.on_conflict_do_update(index_elements=["id"], set_=values))
