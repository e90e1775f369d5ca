"""SCimilarity's kNN annotation against a labelled reference of embeddings (spec §3.4).

Neighbours are found exactly (brute-force cosine over the reference embeddings; the official code
uses an approximate hnswlib index over the same normalised vectors). The vote and the statistics
follow the official ``get_predictions_knn``: labels are counted in neighbour order, the label with
the most votes wins and ties go to the label met first (the nearest), optional ``1/max(d, 1e-6)``
weighting, and ``min_dist``, ``max_dist``, ``vs2nd``, ``vsAll`` plus their weighted versions.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cellfoundry.errors import ModelError

DEFAULT_K = 50
STAT_COLUMNS = (
    "hits",
    "hits_weighted",
    "min_dist",
    "max_dist",
    "vs2nd",
    "vsAll",
    "vs2nd_weighted",
    "vsAll_weighted",
)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, n, out=np.zeros_like(x), where=n > 0)


def cosine_knn(
    query: np.ndarray, reference: np.ndarray, k: int, *, chunk_size: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest reference rows by cosine distance (1 - cos), nearest first.

    Returns ``(indices int64, distances float32)``, both ``n_query x k``; equal distances are
    ordered by reference index. ``chunk_size`` queries are scored at a time (0: automatic).
    """
    q = np.atleast_2d(np.asarray(query, dtype=np.float32))
    r = np.asarray(reference, dtype=np.float32)
    if r.ndim != 2 or q.shape[1] != r.shape[1]:
        raise ModelError(
            f"query embeddings have {q.shape[1]} dimensions, the reference has {r.shape[-1]}",
            "embed the query with the same model as the reference",
        )
    if not 1 <= k <= r.shape[0]:
        raise ModelError(
            f"k={k} but the reference has {r.shape[0]} cells", f"choose 1 <= k <= {r.shape[0]}"
        )
    qn, rn = _unit_rows(q), _unit_rows(r)
    if chunk_size <= 0:  # bound the distance block to ~64M floats
        chunk_size = max(1, min(4096, (64 << 20) // max(r.shape[0], 1)))
    idx = np.empty((q.shape[0], k), dtype=np.int64)
    dist = np.empty((q.shape[0], k), dtype=np.float32)
    for s in range(0, q.shape[0], chunk_size):
        d = 1.0 - qn[s : s + chunk_size] @ rn.T  # float32, rows = queries
        if k < d.shape[1]:
            part = np.argpartition(d, k - 1, axis=1)[:, :k]
            pdist = np.take_along_axis(d, part, axis=1)
            block = np.take_along_axis(part, np.lexsort((part, pdist), axis=1), axis=1)
            # rows where other cells tie with the k-th distance: keep the lowest reference indices
            kth = pdist.max(axis=1, keepdims=True)
            for i in np.flatnonzero((d <= kth).sum(axis=1) > k):
                cand = np.flatnonzero(d[i] <= kth[i])
                block[i] = cand[np.lexsort((cand, d[i, cand]))[:k]]
        else:
            block = np.lexsort((np.broadcast_to(np.arange(d.shape[1]), d.shape), d), axis=1)
        idx[s : s + d.shape[0]] = block
        dist[s : s + d.shape[0]] = np.take_along_axis(d, idx[s : s + d.shape[0]], axis=1)
    return idx, dist


@dataclass
class KNNResult:
    """Per-cell predictions, neighbours and the official statistics."""

    predictions: np.ndarray  # object array of labels
    nn_idxs: np.ndarray
    nn_dists: np.ndarray
    stats: pd.DataFrame  # STAT_COLUMNS

    def to_obs(self) -> pd.DataFrame:
        """The columns the official ``annotate_dataset`` writes to ``obs``."""
        return pd.DataFrame(
            {
                "celltype_hint": self.predictions,
                "min_dist": self.stats["min_dist"].to_numpy(),
                "celltype_hits": self.stats["hits"].to_numpy(),
                "celltype_hits_weighted": self.stats["hits_weighted"].to_numpy(),
                "celltype_hint_stat": self.stats["vsAll"].to_numpy(),
                "celltype_hint_weighted_stat": self.stats["vsAll_weighted"].to_numpy(),
            }
        )


def vote(
    nn_idxs: np.ndarray, nn_dists: np.ndarray, labels: Sequence[str], *, weighting: bool = False
) -> KNNResult:
    """Majority (or distance-weighted) vote over given neighbours, with the official statistics.

    Unlike the official code, statistics are also filled for k=1 (one label: ratios are 1.0).
    """
    lab = list(labels)
    preds: list[str] = []
    rows: dict[str, list[object]] = {c: [] for c in STAT_COLUMNS}
    for nns, dns in zip(np.asarray(nn_idxs), np.asarray(nn_dists), strict=True):
        counts: dict[str, float] = {}
        weighted: dict[str, float] = {}
        for n, d in zip(nns, dns, strict=True):
            name = lab[int(n)]
            counts[name] = counts.get(name, 0.0) + 1.0
            weighted[name] = weighted.get(name, 0.0) + 1.0 / max(float(d), 1e-6)
        table = weighted if weighting else counts
        best = max(table.values())
        preds.append(
            next(name for name, v in table.items() if v == best)
        )  # first maximal = nearest
        rows["hits"].append(json.dumps(counts))
        rows["hits_weighted"].append(json.dumps(weighted))
        rows["min_dist"].append(float(np.min(dns)))
        rows["max_dist"].append(float(np.max(dns)))
        hits = sorted(counts.values(), reverse=True)
        hw = [max(x, 1e-6) for x in sorted(weighted.values(), reverse=True)]
        if len(hits) > 1:
            rows["vs2nd"].append(hits[0] / (hits[0] + hits[1]))
            rows["vsAll"].append(hits[0] / sum(hits))
            rows["vs2nd_weighted"].append(hw[0] / (hw[0] + hw[1]))
            rows["vsAll_weighted"].append(hw[0] / sum(hw))
        else:
            for c in ("vs2nd", "vsAll", "vs2nd_weighted", "vsAll_weighted"):
                rows[c].append(1.0)
    return KNNResult(
        predictions=np.asarray(preds, dtype=object),
        nn_idxs=np.asarray(nn_idxs),
        nn_dists=np.asarray(nn_dists),
        stats=pd.DataFrame(rows, columns=list(STAT_COLUMNS)),
    )


class LabelledReference:
    """Reference cell embeddings with a label (and optional study) per cell."""

    def __init__(
        self, embeddings: np.ndarray, labels: Sequence[str], studies: Sequence[str] | None = None
    ) -> None:
        emb = np.asarray(embeddings, dtype=np.float32)
        if emb.ndim != 2 or emb.shape[0] == 0:
            raise ModelError(
                f"reference embeddings must be a non-empty 2-d array, got shape {emb.shape}",
                "pass the embeddings of the labelled reference cells (cells x dims)",
            )
        if len(labels) != emb.shape[0] or (studies is not None and len(studies) != emb.shape[0]):
            raise ModelError(
                f"{emb.shape[0]} reference embeddings but {len(labels)} labels"
                + ("" if studies is None else f" and {len(studies)} studies"),
                "give exactly one label (and study) per reference cell, in the same order",
            )
        if not np.isfinite(emb).all():
            raise ModelError(
                "reference embeddings contain NaN or Inf", "re-embed the reference cells"
            )
        self.embeddings = _unit_rows(emb)
        self.labels = [str(x) for x in labels]
        self.studies = None if studies is None else [str(x) for x in studies]

    def __len__(self) -> int:
        return len(self.labels)

    def neighbors(
        self, embeddings: np.ndarray, k: int = DEFAULT_K
    ) -> tuple[np.ndarray, np.ndarray]:
        """(indices, cosine distances) of the k nearest reference cells, nearest first."""
        return cosine_knn(embeddings, self.embeddings, k)

    def annotate(
        self,
        embeddings: np.ndarray,
        k: int = DEFAULT_K,
        *,
        weighting: bool = False,
        exclude_labels: Sequence[str] = (),
    ) -> KNNResult:
        """Predict a label per query cell by kNN vote (k capped at the reference size).

        ``exclude_labels`` removes reference cells of those labels, like the official block-list.
        """
        if exclude_labels:
            keep = np.flatnonzero(
                ~np.isin(np.asarray(self.labels, dtype=object), list(exclude_labels))
            )
            if keep.size == 0:
                raise ModelError(
                    "every reference cell carries an excluded label", "exclude fewer labels"
                )
            idx, dist = cosine_knn(embeddings, self.embeddings[keep], min(k, keep.size))
            return vote(keep[idx], dist, self.labels, weighting=weighting)
        idx, dist = cosine_knn(embeddings, self.embeddings, min(k, len(self)))
        return vote(idx, dist, self.labels, weighting=weighting)


# hnswlib index header (hnswalg.h saveIndex), little-endian: 6 x size_t, int, uint32, 3 x size_t,
# double, size_t. Verified against hnswlib 0.8.0 files (vectors, labels and total size).
_HNSW_HEADER = struct.Struct("<6QiI3QdQ")


@dataclass
class HnswIndexData:
    """The stored vectors of an hnswlib index file (cosine space: already L2-normalised)."""

    vectors: np.ndarray  # float32, n x dim, ordered by label
    labels: np.ndarray  # int64 label of each row (the caller's item ids)
    deleted: np.ndarray  # bool, element marked deleted in the file
    m: int
    ef_construction: int


def read_hnswlib_index(path: str | Path, dim: int) -> HnswIndexData:
    """Read the vectors and labels stored in an hnswlib ``save_index`` file, without hnswlib.

    Rows are returned sorted by label; the graph itself is checked for size but not used.
    """
    p = Path(path)
    size = p.stat().st_size
    bad = f"{p} is not an hnswlib index of {dim}-dimensional float vectors"
    if size < _HNSW_HEADER.size:
        raise ModelError(
            f"{bad} (only {size} bytes)", "use annotation/labelled_kNN.bin as published"
        )
    with open(p, "rb") as fh:
        head = _HNSW_HEADER.unpack(fh.read(_HNSW_HEADER.size))
    off0, _max_el, n, per_el, label_off, data_off, _maxlevel, _ep, _max_m, max_m0, m, _mult, efc = (
        head
    )
    links0 = 4 + 4 * max_m0
    if (
        off0 != 0
        or data_off != links0
        or label_off != data_off + 4 * dim
        or per_el != label_off + 8
    ):
        raise ModelError(
            f"{bad} (header: data offset {data_off}, label offset {label_off}, element size {per_el})",
            "check that the index was built with the model's latent dimension",
        )
    end0 = _HNSW_HEADER.size + n * per_el
    if size < end0:
        raise ModelError(
            f"{bad} (truncated: {size} bytes, level 0 alone needs {end0})",
            "download the index again",
        )
    level0 = np.memmap(p, dtype=np.uint8, mode="r", offset=_HNSW_HEADER.size, shape=(n, per_el))
    labels = (
        np.ascontiguousarray(level0[:, label_off : label_off + 8])
        .view("<u8")
        .ravel()
        .astype(np.int64)
    )
    deleted = (np.asarray(level0[:, 2]) & 1).astype(bool)
    vectors = (
        np.ascontiguousarray(level0[:, data_off : data_off + 4 * dim]).view("<f4").reshape(n, dim)
    )
    # walk the upper-level link lists to check the file size adds up
    with open(p, "rb") as fh:
        fh.seek(end0)
        pos = end0
        for _ in range(n):
            raw = fh.read(4)
            if len(raw) < 4:
                raise ModelError(f"{bad} (truncated link lists)", "download the index again")
            (ll,) = struct.unpack("<I", raw)
            pos += 4 + ll
            fh.seek(pos)
    if pos != size:
        raise ModelError(
            f"{bad} ({size - pos} unexpected trailing bytes)", "use the file as published"
        )
    order = np.argsort(labels, kind="stable")
    return HnswIndexData(
        vectors=np.asarray(vectors[order], dtype=np.float32),
        labels=labels[order],
        deleted=deleted[order],
        m=int(m),
        ef_construction=int(efc),
    )
