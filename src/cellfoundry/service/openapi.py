"""The service's OpenAPI document as a stable JSON file: the source of the web client's types.

``python -m cellfoundry.service.openapi web/src/api/openapi.json`` rewrites the committed copy;
``cd web && npm run gen:api`` then turns it into ``web/src/api/schema.d.ts``.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from cellfoundry.config import Settings


def openapi_document() -> dict[str, Any]:
    """The OpenAPI schema of an app built with default settings in a throwaway home."""
    from cellfoundry.service.app import create_app

    with tempfile.TemporaryDirectory(prefix="cellfoundry-openapi-") as home:
        settings = Settings.model_validate(
            {"home": Path(home), "database_url": "", "web_dir": None}
        )
        return create_app(settings, run_migrations=False).openapi()


def openapi_text() -> str:
    """The document as written to disk: indented, keys in the order FastAPI emits them."""
    return json.dumps(openapi_document(), indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m cellfoundry.service.openapi OUT.json", file=sys.stderr)
        return 2
    Path(args[0]).write_text(openapi_text(), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
