"""schemathesis against the running app: every phase (examples, coverage, fuzzing, stateful),
at least 1,000 generated cases with an API key; no 5xx, every status code and content type
documented, 405 answers carry ``Allow``.

The run is seeded so CI sees the same cases every time; its JSON report is kept in the test's
temporary folder and its console output is shown when the test fails.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.service.conftest import Stack, make_stack

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "unsupported_method",
        "allow_header_conformance",
        "response_schema_conformance",
    ]
)
PHASES = ["examples", "coverage", "fuzzing", "stateful"]
MIN_CASES = 1000


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest, demo_model_dir: Path
) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("schemathesis")
    st = make_stack("sqlite-local", home, request, demo_model_dir)
    try:
        st.start()
        yield st
    finally:
        st.stop()


def test_schemathesis_finds_nothing(server: Stack, tmp_path: Path) -> None:
    report = tmp_path / "schemathesis.json"
    cmd = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{server.server.url}/openapi.json",
        "--header",
        f"Authorization: Bearer {server.server.key}",
        "--checks",
        CHECKS,
        "--phases",
        ",".join(PHASES),
        "--max-examples",
        "60",
        "--seed",
        "20261130",
        "--no-shrink",
        "--workers",
        "1",  # hypothesis' lambda descriptions are not thread-safe on Python 3.11 (AST errors)
        "--request-timeout",
        "60",
        "--report",
        "json",
        "--report-json-path",
        str(report),
    ]
    out = subprocess.run(  # in tmp_path: schemathesis keeps a .schemathesis/ cache in its cwd
        cmd, capture_output=True, text=True, timeout=600, check=False, cwd=tmp_path
    )
    console = (out.stdout + out.stderr)[-12000:]
    assert report.is_file(), console
    r = json.loads(report.read_text())
    assert r["complete"], console
    assert [p for p in PHASES if r["phases"][p]["status"] in ("skipped", None)] == [], r["phases"]
    assert r["operations"]["tested"] == r["operations"]["total"] > 10, r["operations"]
    assert r["test_cases"]["generated"] >= MIN_CASES, r["test_cases"]
    assert r["failures"] == [] and r["errors"] == [], console
    assert out.returncode == 0, console
    assert "Traceback" not in server.logs(), server.logs()
