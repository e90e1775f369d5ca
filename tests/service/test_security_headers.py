"""Security headers: every answer is ``nosniff``, never framed and sends no referrer; the web UI's
pages carry a Content-Security-Policy that runs script from the app's origin only (so a label
such as ``<img src=x onerror=...>`` in a stranger's file can never run in the origin holding
the API key); API answers may not load anything as a document. Before, no response carried any
of them. /predict's fast path (outside the middleware) carries them too, errors included."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from cellfoundry.config import Settings
from cellfoundry.service.app import create_app
from tests.service.conftest import state_with_model


def _common(headers: object) -> None:
    h = headers  # httpx.Headers
    assert h["x-content-type-options"] == "nosniff"  # type: ignore[index]
    assert h["x-frame-options"] == "DENY"  # type: ignore[index]
    assert h["referrer-policy"] == "no-referrer"  # type: ignore[index]


def _directives(policy: str) -> dict[str, list[str]]:
    out = {}
    for part in policy.split(";"):
        name, *values = part.split()
        out[name] = values
    return out


def test_every_answer_carries_the_security_headers(tmp_path: Path, demo_model_dir: Path) -> None:
    web = tmp_path / "web"
    (web / "assets").mkdir(parents=True)
    (web / "index.html").write_text('<html><script type="module" src="/assets/a.js"></script>')
    (web / "assets" / "a.js").write_text("console.log(1)")
    settings = Settings(home=tmp_path / "home", demo_model=False, web_dir=web)
    key = state_with_model(settings, demo_model_dir)
    with TestClient(create_app(settings)) as c:
        page = c.get("/")  # the UI
        assert (
            c.get("/some/page").headers["content-security-policy"]
            == (
                page.headers["content-security-policy"]  # the UI at any client-side route
            )
        )
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        _common(page.headers)
        csp = _directives(page.headers["content-security-policy"])
        assert csp["script-src"] == ["'self'", "'unsafe-eval'"]  # no inline, no other origin
        assert csp["object-src"] == ["'none'"] and csp["base-uri"] == ["'none'"]
        assert csp["frame-ancestors"] == ["'none'"] and csp["connect-src"] == ["'self'"]

        for r in (
            c.get("/health"),
            c.get("/runs"),
            c.get("/runs/r_1/results"),
            c.get("/assets/a.js"),
        ):
            _common(r.headers)
            assert r.headers["content-security-policy"] == (
                "default-src 'none'; frame-ancestors 'none'"
            ), r.url
        assert c.get("/runs").status_code == 401  # errors too

        docs = c.get("/docs")  # Swagger UI: its CDN scripts and inline start-up stay allowed
        assert docs.status_code == 200 and "content-security-policy" not in docs.headers
        _common(docs.headers)

        # /predict, answered before the middleware: its answers and its errors
        refused = c.post("/predict", json={"expression": {"CD3E": 1.0}})
        assert refused.status_code == 401
        _common(refused.headers)
        assert refused.headers["content-security-policy"].startswith("default-src 'none'")
        ok = c.post(
            "/predict",
            json={"expression": {"CD3E": 5.0, "CD19": 0.0, "LYZ": 1.0}},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert ok.status_code == 200, ok.text
        _common(ok.headers)
        assert ok.headers["content-type"] == "application/json"
        assert ok.headers["content-security-policy"].startswith("default-src 'none'")
        assert ok.json()["predictions"], ok.text
