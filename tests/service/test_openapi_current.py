"""The web client's types come from the committed OpenAPI document; it must be the live one."""

from __future__ import annotations

import json
from pathlib import Path

from cellfoundry.service.openapi import openapi_text

COMMITTED = Path(__file__).resolve().parents[2] / "web" / "src" / "api" / "openapi.json"
FIX = (
    "run `python -m cellfoundry.service.openapi web/src/api/openapi.json`, then "
    "`cd web && npm run gen:api`, and commit both files"
)


def test_committed_openapi_is_the_live_schema() -> None:
    live = openapi_text()
    committed = COMMITTED.read_text(encoding="utf-8")
    if live != committed:
        old, new = json.loads(committed), json.loads(live)
        changed = sorted(
            set(old["paths"]) ^ set(new["paths"])
            | set(old["components"]["schemas"]) ^ set(new["components"]["schemas"])
            | {
                k
                for k in set(old["components"]["schemas"]) & set(new["components"]["schemas"])
                if old["components"]["schemas"][k] != new["components"]["schemas"][k]
            }
        )
        raise AssertionError(f"web/src/api/openapi.json is stale (differs in {changed}): {FIX}")
    assert "/results/{run_id}" in json.loads(live)["paths"]
