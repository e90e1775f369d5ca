"""deploy/: the compose file parses, its commands are real CLI commands, its settings are real settings."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import click
import pytest
import yaml

from cellfoundry.cli import cli
from cellfoundry.config import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def test_compose_services_commands_and_env() -> None:
    doc = _compose()
    services = doc["services"]
    assert {"api", "worker", "redis", "postgres"} <= set(services)
    fields = set(Settings.model_fields)
    for name in ("api", "worker"):
        svc = services[name]
        argv = svc["command"]
        assert argv[0] == "cellfoundry"
        cmd = cli.get_command(click.Context(cli), argv[1])
        assert cmd is not None, f"{name}: no CLI command {argv[1]}"
        cmd.make_context(argv[1], list(argv[2:]), resilient_parsing=False)  # options parse
        env = svc["environment"]
        for key in env:
            assert (
                key.startswith("CELLFOUNDRY_")
                and key.removeprefix("CELLFOUNDRY_").lower() in fields
            ), key
        settings = Settings(**{k.removeprefix("CELLFOUNDRY_").lower(): v for k, v in env.items()})
        assert settings.queue_backend == "celery"
        assert (
            settings.database_url.startswith("postgresql+psycopg://")
            and "@postgres:" in settings.database_url
        )
        assert settings.broker_url.startswith("redis://redis:")
        assert set(svc["depends_on"]) >= {"postgres", "redis"}
    assert "8000:8000" in services["api"]["ports"]
    # the Dockerfile's default command is the same serve command
    docker = (DEPLOY / "Dockerfile").read_text()
    assert 'CMD ["cellfoundry", "serve"' in docker and "constraints.txt" in docker


def test_docker_compose_config_when_available() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker CLI")
    if subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("the docker CLI has no compose plugin here")
    out = subprocess.run(
        [docker, "compose", "-f", str(DEPLOY / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "cellfoundry" in out.stdout


def test_readme_documents_plain_commands() -> None:
    text = (DEPLOY / "README.md").read_text()
    for needle in (
        "cellfoundry serve",
        "cellfoundry worker",
        "cellfoundry keys create",
        "redis-server",
        "CELLFOUNDRY_DATABASE_URL",
    ):
        assert needle in text


def test_compose_redis_keeps_the_queue_across_restarts() -> None:
    """Redis runs with the append-only file on a volume, so queued messages survive a restart."""
    redis = _compose()["services"]["redis"]
    argv = redis["command"]
    assert argv[argv.index("--appendonly") + 1] == "yes"
    data_dir = argv[argv.index("--dir") + 1]
    assert any(str(v).endswith(":" + data_dir) for v in redis["volumes"])
