"""Real human datasets turned into mouse data through the Ensembl ortholog table itself.

Built with pandas from the source tables in ``shared/vocab/species/``, not from cellfoundry's
shipped copies or its mapping code. Only genes with a 1:1 ortholog are kept. They are renamed to
their mouse symbols (``Cd3e``) or, with ``ensembl_ids=True``, to mouse Ensembl IDs (``ENSMUSG…``)
through the mouse gene table. No human annotation is left in ``var``. Used by the tests and by
``benchmarks/eval_orthologs.py``.
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd


def one_to_one_human_to_mouse(shared: Path) -> dict[str, str]:
    """Human symbol -> mouse symbol for the pairs where each side has exactly one ortholog."""
    t = pd.read_csv(
        shared / "vocab" / "species" / "Ensembl105_Human2Mouse_Genes.csv.gz",
        header=None,
        dtype=str,
        keep_default_na=False,
    )
    t = t[(t[0] != "") & (t[1] != "")].drop_duplicates()
    n_h, n_m = t[0].value_counts(), t[1].value_counts()
    one = t[(t[0].map(n_h) == 1) & (t[1].map(n_m) == 1)]
    return dict(zip(one[0], one[1], strict=True))


def mouse_symbol_to_id(shared: Path) -> dict[str, str]:
    """Mouse symbol -> Ensembl ID, for symbols that name exactly one ID in the mouse gene table."""
    g = pd.read_csv(
        shared / "vocab" / "species" / "genes_mus_musculus.csv.gz",
        header=None,
        dtype=str,
        keep_default_na=False,
    )
    n = g[1].value_counts()
    g = g[g[1].map(n) == 1]
    return dict(zip(g[1], g[0], strict=True))


def mouse_columns(
    adata: ad.AnnData, shared: Path, *, symbol_column: str | None = None, ensembl_ids: bool = False
) -> tuple[np.ndarray, list[str]]:
    """Indices of ``adata``'s genes with a 1:1 mouse ortholog (and a unique mouse name), and those names."""
    symbols = pd.Index(
        adata.var[symbol_column].astype(str) if symbol_column else adata.var_names.astype(str)
    )
    h2m = one_to_one_human_to_mouse(shared)
    new = [h2m.get(s) for s in symbols]
    if ensembl_ids:
        s2id = mouse_symbol_to_id(shared)
        new = [s2id.get(m) if m else None for m in new]
    names = pd.Series(new, dtype=object)
    keep = np.flatnonzero(names.notna().to_numpy() & ~names.duplicated(keep=False).to_numpy())
    return keep, [str(new[i]) for i in keep]


def mouseify(
    adata: ad.AnnData, shared: Path, *, symbol_column: str | None = None, ensembl_ids: bool = False
) -> ad.AnnData:
    """``adata`` (human) with only its 1:1-ortholog genes, named as mouse genes; X only."""
    keep, names = mouse_columns(adata, shared, symbol_column=symbol_column, ensembl_ids=ensembl_ids)
    x = adata.X[:, keep]
    return ad.AnnData(
        X=x.copy() if hasattr(x, "copy") else np.array(x),
        obs=adata.obs.copy(),
        var=pd.DataFrame(index=pd.Index(names)),
    )
