"""The baselines' sparse standardised product against scipy's public `csr_matrix @ ndarray`."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from cellfoundry.models.baselines.standardise import (
    CLIP,
    csr_times_dense,
    standardise,
    standardised_product,
    zero_product,
)


def _random_csr(rng: np.random.Generator, n: int, g: int, density: float) -> sp.csr_matrix:
    x = sp.random(n, g, density=density, format="csr", random_state=rng, dtype=np.float64)
    x.data = rng.gamma(1.0, 3.0, x.nnz)
    return x


@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
def test_csr_times_dense_is_scipys_product_bit_for_bit(index_dtype: type) -> None:
    rng = np.random.default_rng(3)
    for n, g, c, density in [
        (1, 2000, 10, 0.4),
        (7, 300, 4, 0.1),
        (40, 50, 9, 0.0),
        (5, 64, 3, 1.0),
    ]:
        x = _random_csr(rng, n, g, density)
        m = rng.standard_normal((g, c))
        indptr, indices = x.indptr.astype(index_dtype), x.indices.astype(index_dtype)
        got = csr_times_dense(indptr, indices, x.data, g, m)
        assert got.shape == (n, c) and np.array_equal(got, np.asarray(x @ m))
    # unsorted columns within a row (a request's gene order) are summed in their stored order
    cols = rng.permutation(2000)[:700].astype(np.int32)
    data = rng.standard_normal(700)
    indptr = np.array([0, 700], dtype=np.int64)
    m = rng.standard_normal((2000, 10))
    want = np.asarray(sp.csr_matrix((data, cols, indptr), shape=(1, 2000)) @ m)
    assert np.array_equal(csr_times_dense(indptr, cols, data, 2000, m), want)


def test_csr_times_dense_refuses_a_broken_structure() -> None:
    m = np.ones((4, 2))
    data = np.ones(2)
    for indptr, cols in [
        ([0, 2], [1, 4]),  # a column past the end: refused, never read out of bounds
        ([0, 2], [-1, 2]),
        ([0, 3], [1, 2]),  # indptr does not end at the number of entries
        ([1, 2], [1, 2]),
        ([0, 2, 1, 2], [0, 1]),  # rows out of order
    ]:
        with pytest.raises(ValueError, match="CSR"):
            csr_times_dense(np.array(indptr), np.array(cols, dtype=np.int32), data, 4, m)


def test_standardised_product_is_the_dense_formula_and_absent_genes_count_zero() -> None:
    rng = np.random.default_rng(5)
    x = _random_csr(rng, 30, 200, 0.2)
    mean, scale = rng.gamma(1.0, 1.0, 200), rng.gamma(2.0, 0.5, 200) + 0.05
    m = rng.standard_normal((200, 6))
    want = standardise(x.toarray(), mean, scale) @ m
    assert np.allclose(standardised_product(x, mean, scale, m), want, atol=1e-9)
    zero = zero_product(mean, scale, m)
    assert np.array_equal(
        standardised_product(x, mean, scale, m, zero=zero), standardised_product(x, mean, scale, m)
    )
    present = rng.random(200) > 0.3
    x = sp.csr_matrix(x.multiply(present[None, :]))  # an absent gene has no values
    x.eliminate_zeros()
    z = standardise(x.toarray(), mean, scale)
    z[:, ~present] = 0.0
    got = standardised_product(x, mean, scale, m, present)
    assert np.allclose(got, z @ m, atol=1e-9) and np.abs(z).max() <= CLIP
