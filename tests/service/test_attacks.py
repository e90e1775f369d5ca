"""Attacks on a running server: each is refused with a 4xx and a hint, leaks nothing, and the
server stays healthy.

Uploads: an .h5ad whose X is HDF5 external storage pointing at the server's own
``local-api-key`` (the reported exfiltration), an external link, a virtual dataset, a huge
declared shape, a CSV with a million columns and a gzip bomb. /predict: the reported freeze
body (5,000 cells x 100 distinct gene names, 14 MB), too many distinct genes, too many cells;
/health must answer while each is being refused.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anndata as ad
import httpx
import numpy as np
import pytest

from tests.data_intake import hostile
from tests.service.conftest import Stack, make_stack

MODEL = "demo-logreg-pbmc68k"


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest, demo_model_dir: Path
) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("attacks")
    st = make_stack("sqlite-local", home, request, demo_model_dir, CELLFOUNDRY_UPLOAD_LIMIT_MB="64")
    try:
        st.start()
        yield st
    finally:
        st.stop()


def _upload(c: httpx.Client, path: Path) -> httpx.Response:
    with open(path, "rb") as fh:
        return c.post("/upload", files={"file": (path.name, fh, "application/octet-stream")})


def _refused(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code and err["message"] and err["hint"], err
    return err  # type: ignore[no-any-return]


def _healthy(st: Stack) -> None:
    r = st.server.client(key="").get("/health")
    assert r.status_code == 200 and r.json()["status"] == "ok", r.text


def _no_dataset_named(st: Stack, name: str) -> None:
    listed = st.server.client().get("/datasets").json()
    items = listed["items"] if isinstance(listed, dict) else listed
    assert all(d["filename"] != name for d in items)


def test_external_storage_upload_cannot_exfiltrate_the_api_key(
    server: Stack, tmp_path: Path
) -> None:
    key_file = server.home / "local-api-key"
    key = key_file.read_text().strip()
    assert key == server.server.key and len(key) > 20
    path = hostile.external_storage_h5ad(tmp_path / "exfiltrate.h5ad", key_file)
    assert key in bytes(np.asarray(ad.read_h5ad(path).X).ravel()).decode()  # a real attack
    c = server.server.client()
    r = _upload(c, path)
    err = _refused(r, 422, "unsafe_file")
    assert "external storage" in err["message"]
    assert key not in r.text and str(server.home) not in r.text
    _no_dataset_named(server, path.name)
    for url in ("/datasets", "/runs", "/health", "/models"):
        assert key not in c.get(url).text
    _healthy(server)


@pytest.mark.parametrize("kind", ["external_link", "virtual_dataset"])
def test_links_and_virtual_datasets_are_refused(server: Stack, tmp_path: Path, kind: str) -> None:
    key = (server.home / "local-api-key").read_text().strip().encode()
    target = hostile.secret_h5(tmp_path / "other.h5", key)
    make = hostile.external_link_h5ad if kind == "external_link" else hostile.virtual_h5ad
    path = make(tmp_path / f"{kind}.h5ad", target, len(key))
    assert key in bytes(np.asarray(ad.read_h5ad(path).X).ravel())  # a real attack
    r = _upload(server.server.client(), path)
    _refused(r, 422, "unsafe_file")
    assert key.decode() not in r.text
    _healthy(server)


def test_size_bombs_are_refused_with_413(server: Stack, tmp_path: Path) -> None:
    c = server.server.client()
    bombs = [
        hostile.huge_dense_h5ad(tmp_path / "declared.h5ad"),
        hostile.huge_sparse_h5ad(tmp_path / "declared_sparse.h5ad"),
        hostile.wide_csv(tmp_path / "columns.csv"),
        hostile.gzip_bomb_csv(tmp_path / "bomb.csv.gz", n_members=150),
    ]
    for path in bombs:
        assert path.stat().st_size < 64 * 1024**2
        r = _upload(c, path)
        _refused(r, 413, "file_too_large")
        assert str(server.home) not in r.text
        _no_dataset_named(server, path.name)
        _healthy(server)
    assert not list((server.home / "storage" / "tmp").glob("*.part"))


def _while_health_answers(st: Stack, send: Any) -> tuple[httpx.Response, list[int]]:
    """Send a request in a thread and query /health while it is in flight."""
    result: dict[str, httpx.Response] = {}
    started = threading.Event()

    def go() -> None:
        started.set()
        result["r"] = send()

    t = threading.Thread(target=go)
    t.start()
    started.wait()
    health = []
    with httpx.Client(base_url=st.server.url, timeout=30) as h:
        while t.is_alive() or not health:
            health.append(h.get("/health").status_code)
    t.join()
    return result["r"], health


def _freeze_body(n_cells: int, genes_per_cell: int) -> bytes:
    """Cells with distinct gene names each (the reported freeze: 5,000 x 100 -> 14 MB)."""
    cells = [
        {f"NOVEL_GENE_{i * genes_per_cell + j:07d}": float(j % 7) for j in range(genes_per_cell)}
        for i in range(n_cells)
    ]
    return json.dumps({"expression": cells, "model_id": MODEL}).encode()


def test_predict_freeze_body_is_refused_and_health_answers(server: Stack) -> None:
    body = _freeze_body(5000, 100)
    assert len(body) > 13_500_000
    c = server.server.client()
    r, health = _while_health_answers(
        server,
        lambda: c.post("/predict", content=body, headers={"content-type": "application/json"}),
    )
    assert r.status_code in (413, 422), r.text[:500]
    assert r.json()["error"]["hint"]
    assert health and all(s == 200 for s in health)


def test_predict_too_many_distinct_genes_is_422(server: Stack) -> None:
    body = _freeze_body(1500, 100)  # 150,000 distinct gene names, under the body limit
    assert len(body) < 5_000_000
    c = server.server.client()
    r, health = _while_health_answers(
        server,
        lambda: c.post("/predict", content=body, headers={"content-type": "application/json"}),
    )
    _refused(r, 422, "too_many_genes")
    assert health and all(s == 200 for s in health)


def test_predict_too_many_cells_is_413(server: Stack) -> None:
    body = json.dumps({"expression": [{"CD3D": 1.0}] * 20_001}).encode()
    r = server.server.client().post(
        "/predict", content=body, headers={"content-type": "application/json"}
    )
    _refused(r, 413, "too_many_cells")
    _healthy(server)


def test_predict_many_small_cells_are_answered_sparse(server: Stack) -> None:
    """Under the limits, a wide request is answered (built sparse), matching one-cell answers."""
    rng = np.random.default_rng(0)
    names = ["CD3D", "CD3E", "MS4A1", "CD79A", "LYZ", "NKG7", "GNLY", "CST3"]
    cells = [{**{g: float(rng.poisson(3)) for g in names}, f"NOVEL{i}": 1.0} for i in range(2000)]
    c = server.server.client()
    r = c.post("/predict", json={"expression": cells, "model_id": MODEL, "top_k": 1})
    assert r.status_code == 200, r.text[:500]
    many = r.json()["predictions"]
    for i in (0, 999, 1999):
        one = c.post("/predict", json={"expression": cells[i], "model_id": MODEL, "top_k": 1})
        (got,), (want,) = one.json()["predictions"][0]["top_k"], many[i]["top_k"]
        assert got["label"] == want["label"]
        assert got["probability"] == pytest.approx(want["probability"], rel=1e-5)


def test_a_refused_upload_never_touches_another_owners_file(server: Stack, tmp_path: Path) -> None:
    """Owner B sends owner A's bytes under a .csv name: B is refused, A's stored file stays."""
    from tests.conftest import make_counts_adata

    path = tmp_path / "mine.h5ad"
    make_counts_adata(n_cells=50, n_genes=40).write_h5ad(path)
    alice = server.server.client(server.server.new_key("alice"))
    bob = server.server.client(server.server.new_key("bob"))
    a = _upload(alice, path)
    assert a.status_code == 200, a.text
    stored = list((server.home / "storage").rglob("mine.h5ad"))
    assert len(stored) == 1 and stored[0].read_bytes() == path.read_bytes()
    with open(path, "rb") as fh:
        b = bob.post("/upload", files={"file": ("mine.csv", fh, "text/csv")})
    assert 400 <= b.status_code < 500 and b.json()["error"]["hint"], b.text
    assert stored[0].read_bytes() == path.read_bytes()
    assert alice.get(f"/datasets/{a.json()['id']}").status_code == 200
    _healthy(server)


def test_schemathesis_findings_stay_fixed(server: Stack) -> None:
    """The issue's schemathesis findings, each as a plain request: no 5xx, documented answers."""
    c = server.server.client()
    spec = c.get("/openapi.json").json()["paths"]
    r = c.get("/runs", params={"page": 4611686018427387905})
    assert r.status_code == 422 and r.json()["error"]["hint"], r.text
    r = c.request("TRACE", "/health")
    assert r.status_code == 405 and "GET" in r.headers.get("allow", ""), r.headers
    r = c.post("/upload", content=b"not multipart", headers={"content-type": "text/plain"})
    assert r.status_code == 415 and "415" in spec["/upload"]["post"]["responses"]
    r = c.post("/submit", content=b"\xff\xfe", headers={"content-type": "application/json"})
    assert r.status_code < 500 and str(r.status_code) in spec["/submit"]["post"]["responses"]
