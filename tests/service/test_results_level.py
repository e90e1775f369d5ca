"""GET /results?level=: labels, terms and counts at a broader Cell Ontology level (issue #9 §3).

In process (SQLite, local queue); the library's ``cellfoundry.annotate(level=...)`` (the CLI's
``--level``) on the same data and model is the reference for the counts, and the expected
compartment of each demo class is written out by hand from the Cell Ontology.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

import cellfoundry
from cellfoundry.config import Settings
from cellfoundry.demo import demo_dataset
from cellfoundry.models.registry import load_model
from tests.service.test_service_layout import _run, uploaded

# pbmc68k_reduced's bulk labels in CL's broad compartments (CL is_a: CD4+/CD8+ T subsets are
# T cells, CD14+ monocytes are monocytes, ...)
BROAD = {
    "CD14+ Monocyte": ("monocyte", "CL:0000576"),
    "CD19+ B": ("B cell", "CL:0000236"),
    "CD34+": ("hematopoietic precursor cell", "CL:0008001"),
    "CD4+/CD25 T Reg": ("T cell", "CL:0000084"),
    "CD4+/CD45RA+/CD25- Naive T": ("T cell", "CL:0000084"),
    "CD4+/CD45RO+ Memory": ("T cell", "CL:0000084"),
    "CD56+ NK": ("natural killer cell", "CL:0000623"),
    "CD8+ Cytotoxic T": ("T cell", "CL:0000084"),
    "CD8+/CD45RA+ Naive Cytotoxic": ("T cell", "CL:0000084"),
    "Dendritic": ("dendritic cell", "CL:0000451"),
}


def _query(demo_model_dir: Path) -> ad.AnnData:
    ref = demo_dataset()
    raw = ref.raw.to_adata() if ref.raw is not None else ref
    genes = (demo_model_dir / "genes.txt").read_text().split()
    raw = raw[:, [g for g in genes if g in raw.var_names]]
    x = sp.csr_matrix(raw.X).astype(np.float32)
    obs = pd.DataFrame(index=[f"c{i}" for i in range(raw.n_obs)])
    return ad.AnnData(X=x, obs=obs, var=raw.var[[]].copy())


def test_results_roll_up_to_a_level(tmp_path: Path, demo_model_dir: Path) -> None:
    path = tmp_path / "cells.h5ad"
    _query(demo_model_dir).write_h5ad(path)
    library = cellfoundry.annotate(ad.read_h5ad(path), load_model(demo_model_dir), level="broad")
    settings = Settings(home=tmp_path / "home", demo_model=False, local_workers=0)
    with uploaded(settings, demo_model_dir, path) as (c, _platform, model, ds):
        rid = _run(c, settings, ds, model, "annotation", {"layout": "pca"})
        plain = c.get(f"/results/{rid}", params={"page_size": 5000}).json()
        r = c.get(f"/results/{rid}", params={"page_size": 5000, "level": "broad"})
        assert r.status_code == 200, r.text
        res = r.json()

        # without level nothing is rolled up
        assert "level" not in plain and "rolled_up_counts" not in plain["summary"]["ontology"]
        assert not any(k.startswith("rolled_up") for k in plain["cells"]["items"][0])

        counts = plain["summary"]["label_counts"]
        assert set(counts) - {"Unknown"} <= set(BROAD) and len(counts) >= 4
        want: Counter[str] = Counter()
        for label, n in counts.items():
            want[BROAD[label][0] if label in BROAD else label] += n
        onto = res["summary"]["ontology"]
        assert res["level"] == "broad" and onto["level"] == "broad"
        assert onto["rolled_up_counts"] == dict(want)
        assert sum(onto["rolled_up_counts"].values()) == res["summary"]["n_cells"] == 700
        t_classes = [c for c in BROAD if BROAD[c][0] == "T cell"]
        assert onto["rolled_up_counts"]["T cell"] > max(counts.get(c, 0) for c in t_classes)
        # the library's (CLI --level) figures on the same cells
        assert onto["rolled_up_counts"] == library.summary()["ontology"]["rolled_up_counts"]
        assert onto["rolled_up_terms"] == dict(BROAD.values())  # every class of the model
        # the class-level figures stay as they are beside the rolled-up ones
        assert res["summary"]["label_counts"] == counts

        items = res["cells"]["items"]
        assert len(items) == 700
        for it in items:
            name, term = BROAD[it["predicted"]]
            assert it["rolled_up_predicted"] == name
            assert it["rolled_up_ontology_term_id"] == term
            assert it["rolled_up_label"] == ("Unknown" if it["unknown"] else name)
        assert Counter(it["rolled_up_label"] for it in items) == want
        assert [it["label"] for it in items] == [it["label"] for it in plain["cells"]["items"]]

        lay, lay0 = res["layout"], plain["layout"]
        assert lay["cells"] == lay0["cells"] and lay["x"] == lay0["x"]
        assert lay["labels"] == [BROAD[lab][0] if lab in BROAD else lab for lab in lay0["labels"]]
        assert lay["top3"] == lay0["top3"]  # class probabilities are not summed

        # one cell's page answers the same
        one = c.get(f"/results/{rid}/cells/3", params={"level": "broad"}).json()
        assert {k: v for k, v in one.items() if k.startswith("rolled_up")} == {
            k: v for k, v in items[3].items() if k.startswith("rolled_up")
        }
        assert "rolled_up_label" not in c.get(f"/results/{rid}/cells/3").json()

        # one CL term as the level: T subsets become "T cell", other classes keep their own term
        t = c.get(f"/results/{rid}", params={"page_size": 5000, "level": "CL:0000084"}).json()
        for it in t["cells"]["items"]:
            is_t = BROAD[it["predicted"]][0] == "T cell"
            assert (it["rolled_up_predicted"] == "T cell") == is_t
            if not is_t:
                assert it["rolled_up_ontology_term_id"] == library.class_terms.term(it["predicted"])
        by_name = c.get(f"/results/{rid}", params={"level": "T cell"}).json()
        assert (
            by_name["summary"]["ontology"]["rolled_up_counts"]
            == (t["summary"]["ontology"]["rolled_up_counts"])
        )


def test_unknown_level_is_refused_with_a_hint(tmp_path: Path, demo_model_dir: Path) -> None:
    path = tmp_path / "cells.h5ad"
    _query(demo_model_dir)[:60].copy().write_h5ad(path)
    settings = Settings(home=tmp_path / "home", demo_model=False, local_workers=0)
    with uploaded(settings, demo_model_dir, path) as (c, _platform, model, ds):
        rid = _run(c, settings, ds, model, "annotation", {"layout": "none"})
        for bad in ("T-cells please", "CL:9999999", "narrow"):
            r = c.get(f"/results/{rid}", params={"level": bad})
            assert r.status_code == 422, (bad, r.text)
            assert c.get(f"/results/{rid}/cells/0", params={"level": bad}).status_code == 422
            err = r.json()["error"]
            assert err["code"] == "invalid_level" and bad in err["message"]
            assert "broad" in err["hint"] and "CL:0000084" in err["hint"]
        for bad in ("", "x" * 201):  # bounded by the schema
            r = c.get(f"/results/{rid}", params={"level": bad})
            assert r.status_code == 422 and "level" in r.json()["error"]["message"]
        assert c.get(f"/results/{rid}", params={"level": "monocyte"}).status_code == 200
