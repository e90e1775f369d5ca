"""The web UI end to end: Debian's headless Chromium (playwright-core) against a real `cellfoundry serve`.

Runs ``node web/e2e/run.mjs``, which starts the service itself with a temporary CELLFOUNDRY_HOME,
uploads the real PBMC 3k file, runs an annotation, checks the UMAP, the downloads, a failing run
and an evaluation report; ``web/e2e/layout.mjs`` checks the every-cell layout view (WebGL, zoom
fetches). Build the UI first: ``cd web && npm ci && npm run build``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "web"
CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
SKIP_CODE = 77  # run.mjs: the environment cannot run the browser tests


def _cellfoundry_bin() -> Path:
    """The `cellfoundry` executable next to this interpreter (the project's venv)."""
    return Path(os.environ.get("CELLFOUNDRY_BIN", Path(sys.executable).parent / "cellfoundry"))


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.timeout(1200)
@pytest.mark.parametrize(
    "script",
    [
        "e2e/run.mjs",
        # the Run page's every-cell layout: WebGL, and a zoom fetches GET /runs/{id}/layout's viewport
        "e2e/layout.mjs",
        # consensus of two models from the wizard, a clicked cell's genes, the Broad types toggle
        "e2e/consensus.mjs",
    ],
)
def test_web_ui_end_to_end(script: str, shared_dir: Path, tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (Node 20+ is needed for the web UI tests)")
    if not CHROMIUM.exists():
        pytest.skip(
            f"Chromium not found at {CHROMIUM}: apt-get install -y chromium chromium-driver"
        )
    if not (WEB / "dist" / "index.html").is_file():
        pytest.skip("web/dist is not built: run `make web` (cd web && npm ci && npm run build)")
    if not (WEB / "node_modules" / "playwright-core").is_dir():
        pytest.skip("web/node_modules is missing: run `cd web && npm ci`")
    if not _cellfoundry_bin().exists():
        pytest.skip(f"cellfoundry executable not found at {_cellfoundry_bin()}")
    env = {
        **os.environ,
        "CELLFOUNDRY_BIN": str(_cellfoundry_bin()),
        "CHROMIUM_PATH": str(CHROMIUM),
        "CELLFOUNDRY_SHARED": str(shared_dir),
        "E2E_ARTIFACTS": str(tmp_path / "artifacts"),
    }
    proc = subprocess.run(
        [node, script], cwd=WEB, env=env, capture_output=True, text=True, timeout=1150
    )
    out = proc.stdout + proc.stderr
    if proc.returncode == SKIP_CODE:
        pytest.skip(out.strip().splitlines()[-1] if out.strip() else "e2e runner skipped")
    lines = out.strip().splitlines()
    assert proc.returncode == 0, (
        f"web e2e failed (artifacts in {tmp_path / 'artifacts'}):\n{out[-8000:]}"
    )
    assert lines and lines[-1].endswith("0 failed"), out[-4000:]
    assert "not ok" not in out, out[-4000:]
