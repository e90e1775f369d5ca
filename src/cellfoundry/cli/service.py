"""``cellfoundry serve`` (API + local workers), ``cellfoundry worker`` (Celery) and ``cellfoundry keys``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

LOCAL_KEY_FILE = "local-api-key"


def _settings(**overrides: object):  # type: ignore[no-untyped-def]
    from cellfoundry.config import Settings, get_settings

    get_settings.cache_clear()
    base = get_settings()
    if not any(v is not None for v in overrides.values()):
        return base
    data = base.model_dump()
    data.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(**data)


def _local_key(settings, db) -> tuple[str | None, bool]:  # type: ignore[no-untyped-def]
    """The embedded default's key: created (and kept, mode 0600, in $HOME) at first start."""
    from sqlalchemy import func, select

    from cellfoundry.store.keys import create_key
    from cellfoundry.store.tables import ApiKey

    path = Path(settings.home) / LOCAL_KEY_FILE
    if path.is_file():
        return path.read_text().strip(), False
    with db.session() as s:
        if (s.scalar(select(func.count()).select_from(ApiKey)) or 0) > 0:
            return None, False
        _, key = create_key(s, "local")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    return key, True


def _settings_env(settings) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """The environment that gives the API processes these settings (the CLI's overrides too)."""
    return {
        "CELLFOUNDRY_HOME": str(settings.home),
        "CELLFOUNDRY_DATABASE_URL": settings.database_url,
        "CELLFOUNDRY_STORAGE_DIR": str(settings.storage),
        "CELLFOUNDRY_QUEUE_BACKEND": settings.queue_backend,
    }


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=int, help="Port to listen on.")
@click.option(
    "--workers",
    "local_workers",
    type=int,
    default=None,
    help="Local worker processes (local backend; default from settings: 1).",
)
@click.option(
    "--api-workers",
    type=int,
    default=None,
    help="API processes sharing the port, each with the models preloaded (default from "
    "CELLFOUNDRY_API_WORKERS: 1). More processes serve more /predict requests per second.",
)
@click.option(
    "--backend",
    type=click.Choice(["local", "celery"]),
    default=None,
    help="Job queue backend (default from CELLFOUNDRY_QUEUE_BACKEND: local).",
)
@click.option(
    "--model",
    "model_dirs",
    multiple=True,
    type=click.Path(exists=True, file_okay=False),
    help="Register this trained model folder at start (repeatable).",
)
@click.option("--log-level", default="warning", show_default=True)
def serve_cmd(
    host: str,
    port: int,
    local_workers: int | None,
    api_workers: int | None,
    backend: str | None,
    model_dirs: tuple[str, ...],
    log_level: str,
) -> None:
    """Start the API (and the local workers): embedded defaults keep all state under $CELLFOUNDRY_HOME."""
    import logging

    import uvicorn
    from sqlalchemy import select

    from cellfoundry.jobs.local import LocalWorkers
    from cellfoundry.service.app import create_app
    from cellfoundry.service.http_protocol import BoundedHeadProtocol
    from cellfoundry.store.db import Database, migrate
    from cellfoundry.store.model_records import ensure_demo_model, register_model
    from cellfoundry.store.storage import FileStorage
    from cellfoundry.store.tables import ModelRecord

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    settings = _settings(
        queue_backend=backend, local_workers=local_workers, api_workers=api_workers
    )
    if settings.api_workers < 1:
        raise click.BadParameter("must be at least 1", param_hint="--api-workers")
    settings.home.mkdir(parents=True, exist_ok=True)
    migrate(settings.database_url)
    db = Database(settings.database_url)
    storage = FileStorage(settings.storage)
    for folder in model_dirs:
        with db.session() as s:
            from cellfoundry.artifacts import Manifest

            name = Manifest.read(folder).name
            if s.scalar(select(ModelRecord).where(ModelRecord.name == name)) is None:
                rec = register_model(s, storage, folder)
                click.echo(f"registered model {rec.id}", err=True)
    if settings.demo_model:
        created = ensure_demo_model(db, storage)
        if created:
            click.echo(f"trained and registered the demo model '{created}'", err=True)
    key, new = _local_key(settings, db)
    db.dispose()
    url = f"http://{host}:{port}"
    click.echo(f"cellfoundry is running at {url}  (API docs: {url}/docs)")
    if key:
        click.echo(f"API key{' (new)' if new else ''}: {key}")
        click.echo(f"  use it as: curl -H 'Authorization: Bearer {key}' {url}/runs")
    else:
        click.echo("API key: use a key from `cellfoundry keys create NAME`")
    click.echo(
        f"state: {settings.home}   database: {settings.database_url.split('@')[-1]}   "
        f"queue: {settings.queue_backend}   API processes: {settings.api_workers}"
    )
    sys.stdout.flush()
    workers = None
    if settings.queue_backend == "local" and settings.local_workers > 0:
        workers = LocalWorkers(settings.local_workers, _settings_env(settings))
        workers.start()
    try:
        n = settings.api_workers
        if n > 1:  # uvicorn's supervisor: N processes on one socket, each app built from the env
            os.environ.update(_settings_env(settings))
        target = (
            create_app(settings, run_migrations=False, serving=True)
            if n == 1
            else "cellfoundry.service.app:app_from_environment"
        )
        opts = {"factory": True, "workers": n} if n > 1 else {}
        uvicorn.run(
            target,
            host=host,
            port=port,
            log_level=log_level,
            access_log=False,
            http=BoundedHeadProtocol,  # request heads bounded (max_header_kb, 431)
            **opts,
        )
    finally:
        if workers is not None:
            workers.stop()


@click.command("worker")
@click.option("--concurrency", "-c", type=int, default=1, show_default=True, help="Task processes.")
@click.option(
    "--pool",
    type=click.Choice(["prefork", "solo", "threads"]),
    default="prefork",
    show_default=True,
)
@click.option(
    "--backend",
    type=click.Choice(["celery", "local"]),
    default="celery",
    show_default=True,
    help="celery: consume the Redis queue; local: poll the database (what serve starts).",
)
@click.option("--loglevel", default="INFO", show_default=True)
def worker_cmd(concurrency: int, pool: str, backend: str, loglevel: str) -> None:
    """Run a worker: a Celery worker on the broker (any number of machines), or a local DB-polling worker."""
    import logging

    from cellfoundry.store.db import migrate

    settings = _settings()
    migrate(settings.database_url)
    if backend == "local":
        from cellfoundry.jobs.local import worker_loop

        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s local-worker %(message)s"
        )
        worker_loop(settings)
        return
    from cellfoundry.jobs.celery_app import get_app

    app = get_app(settings)
    app.worker_main(
        [
            "worker",
            f"--concurrency={concurrency}",
            f"--pool={pool}",
            f"--loglevel={loglevel}",
            "-Q",
            settings.queue_name,
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
    )


@click.group("keys")
def keys_group() -> None:
    """Manage API keys (stored hashed in the database)."""


@keys_group.command("create")
@click.argument("name")
@click.option("--user", default=None, help="Owner of the key (default: a user called NAME).")
def keys_create(name: str, user: str | None) -> None:
    """Create a key and print it alone on stdout (it is shown only once)."""
    from cellfoundry.store.db import Database, migrate
    from cellfoundry.store.keys import create_key

    settings = _settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    migrate(settings.database_url)
    db = Database(settings.database_url)
    with db.session() as s:
        _, key = create_key(s, name, user)
    db.dispose()
    click.echo(key)


@keys_group.command("list")
def keys_list() -> None:
    """List keys (id, name, user, created, revoked)."""
    from sqlalchemy import select

    from cellfoundry.store.db import Database, migrate
    from cellfoundry.store.tables import ApiKey, User

    settings = _settings()
    migrate(settings.database_url)
    db = Database(settings.database_url)
    with db.session() as s:
        for k, u in s.execute(
            select(ApiKey, User).join(User, User.id == ApiKey.user_id).order_by(ApiKey.created_at)
        ):
            state = f"revoked {k.revoked_at:%Y-%m-%d}" if k.revoked_at else "active"
            click.echo(
                f"{k.id}  {k.name:<20} user={u.name:<20} created {k.created_at:%Y-%m-%d %H:%M}  {state}"
            )
    db.dispose()


@keys_group.command("revoke")
@click.argument("key_id")
def keys_revoke(key_id: str) -> None:
    """Revoke a key by its id (the part after 'cf_' and before the next '_')."""
    from cellfoundry.errors import CellfoundryError
    from cellfoundry.store.db import Database, migrate
    from cellfoundry.store.keys import revoke_key

    settings = _settings()
    migrate(settings.database_url)
    db = Database(settings.database_url)
    with db.session() as s:
        ok = revoke_key(s, key_id)
    db.dispose()
    if not ok:
        raise CellfoundryError(f"no key with id '{key_id}'", "see `cellfoundry keys list`")
    click.echo(f"revoked {key_id}", err=True)
