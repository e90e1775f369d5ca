"""The one normalisation: per cell, independent of the batch."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from cellfoundry.data.normalize import log1p_cp10k

counts = arrays(
    np.float32,
    st.tuples(st.integers(1, 12), st.integers(1, 15)),
    elements=st.integers(0, 500).map(float),
)


@settings(max_examples=80)
@given(counts)
def test_each_cell_normalised_alone_equals_in_batch(x: np.ndarray) -> None:
    batch = log1p_cp10k(sp.csr_matrix(x)).toarray()
    for i in range(x.shape[0]):
        alone = log1p_cp10k(sp.csr_matrix(x[i : i + 1])).toarray()
        np.testing.assert_array_equal(alone[0], batch[i])


@given(counts)
def test_totals_become_ten_thousand_and_empty_cells_stay_zero(x: np.ndarray) -> None:
    out = log1p_cp10k(x).toarray()
    totals = x.sum(axis=1)
    back = np.expm1(out.astype(np.float64)).sum(axis=1)
    np.testing.assert_allclose(back[totals > 0], 1e4, rtol=1e-4)
    assert (out[totals == 0] == 0).all()
    assert out.dtype == np.float32


@settings(max_examples=60)
@given(counts, st.data())
def test_transform_equals_normalise_then_select(x: np.ndarray, data) -> None:
    import anndata as ad

    from cellfoundry.data.prepare import plan_input, transform

    assume(x.sum() > 0)  # an all-zero matrix is refused by the validation report
    n_genes = x.shape[1]
    adata = ad.AnnData(sp.csr_matrix(x))
    adata.var_names = [f"G{i}" for i in range(n_genes)]
    perm = data.draw(st.permutations(list(adata.var_names)))
    target = [*list(perm)[: data.draw(st.integers(1, n_genes))], "ABSENT"]
    plan = plan_input(adata, target, min_coverage=0.0, min_genes=0)
    got = transform(adata.X, plan).toarray()
    want = (log1p_cp10k(adata.X) @ plan.selector).toarray()
    np.testing.assert_array_equal(got, want)
    assert (got[:, -1] == 0).all()
