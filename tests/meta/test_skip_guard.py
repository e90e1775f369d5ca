"""The skip guard: under CI=true an unlisted skip fails the run; a listed one does not."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(tmp_path: Path, body: str, ci: str) -> subprocess.CompletedProcess[str]:
    # the probe file lives in tests/ so that the project's conftest (and its guard) applies
    dest = ROOT / "tests" / "meta" / f"_probe_{os.getpid()}_{tmp_path.name}.py"
    dest.write_text(body)
    try:
        env = {**os.environ, "CI": ci}
        return subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(dest)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        dest.unlink()


def test_unlisted_skip_fails_under_ci(tmp_path: Path) -> None:
    body = "import pytest\n\ndef test_x():\n    pytest.skip('no reason on the list')\n"
    out = _run(tmp_path, body, "true")
    assert out.returncode == 1, out.stdout
    assert "not on skip_allowlist.txt" in out.stdout


def test_unlisted_skip_passes_outside_ci(tmp_path: Path) -> None:
    body = "import pytest\n\ndef test_x():\n    pytest.skip('fine locally')\n"
    out = _run(tmp_path, body, "")
    assert out.returncode == 0, out.stdout


def test_allowlist_entries_have_reasons_and_exist() -> None:
    from tests.conftest import _allowed_skips

    allowed = _allowed_skips()
    assert allowed, "the allowlist is read"
    for node, reason in allowed.items():
        path = ROOT / node.split("::")[0]
        assert path.is_file(), f"allowlisted {node} does not exist"
        assert len(reason) > 20
