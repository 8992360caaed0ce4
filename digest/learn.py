"""The self-trained part of ranking (pure: no I/O): tf-idf features and a linear SVM.

This is arxiv-sanity's method with its tags replaced by pseudo-labels: the top of a
reader's keyword ranking are the positives, the rest of the batch the negatives, and the
reader's 👍/👎 are added as real labels. ``Features`` is built once per batch and shared
by every reader; only the classifier is per reader.

Features are word uni- and bigrams of the analysed stems (stop words dropped first, the
title counted twice), sublinear tf, smoothed idf, rows L2-normalised, the ``MAX_FEATURES``
most frequent kept (each in at least two papers). The classifier is an L2-regularised
squared-hinge linear SVM with balanced class weights, solved exactly by dual coordinate
descent (LIBLINEAR's algorithm), with a bias feature.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

MAX_FEATURES = 20_000
C = 0.1  # the SVM's regularisation (RANKING-NOTES: C = 0.1, balanced)
MAX_TRAIN = 2_000  # at most this many training rows: the hardest negatives plus a spread
EPOCHS = 40
TOL = 1e-3

Floats = npt.NDArray[np.float32]
Ints = npt.NDArray[np.int64]
Doc = tuple[Sequence[str], Sequence[str]]  # (title stems, abstract stems)


@dataclass(slots=True)
class Features:
    """A batch's tf-idf rows in CSR form (row i = paper i), and how to make more rows."""

    indptr: Ints
    indices: Ints
    data: Floats
    n_features: int
    vocab: dict[str, int]  # stem -> id (stop words map to -1)
    feature_of: dict[int, int]  # packed gram -> column
    idf: Floats
    total: Floats  # the sum of every row: the batch centroid times n

    @property
    def n_rows(self) -> int:
        """How many papers."""
        return len(self.indptr) - 1

    @classmethod
    def build(cls, docs: Sequence[Doc], stop: frozenset[str]) -> Features:
        """tf-idf rows for a batch of analysed papers."""
        vocab: dict[str, int] = {s: -1 for s in stop}
        grams_per_doc = [_doc_grams(d, vocab) for d in docs]
        n = len(docs)
        df: dict[int, int] = {}
        for grams in grams_per_doc:
            for g in grams:
                df[g] = df.get(g, 0) + 1
        ranked = sorted((-c, g) for g, c in df.items() if c >= 2 or n < 4)
        feature_of = {g: j for j, (_, g) in enumerate(ranked[:MAX_FEATURES])}
        idf = np.array([np.log((1 + n) / (1 + -c)) + 1.0 for c, _ in ranked[:MAX_FEATURES]],
                       dtype=np.float32)
        indptr, indices, data = _rows(grams_per_doc, feature_of, idf)
        total = np.bincount(indices, weights=data, minlength=len(feature_of)).astype(np.float32)
        return cls(indptr, indices, data, len(feature_of), vocab, feature_of, idf, total)

    def transform(self, docs: Sequence[Doc]) -> tuple[Ints, Ints, Floats]:
        """CSR rows for papers outside the batch (a reader's judged papers), same columns."""
        vocab = dict(self.vocab)  # unseen words get ids no column uses
        return _rows([_doc_grams(d, vocab) for d in docs], self.feature_of, self.idf)

    def matvec(self, w: Floats) -> Floats:
        """Every row's dot product with a dense weight vector."""
        if not len(self.indices):
            return np.zeros(self.n_rows, dtype=np.float32)
        prod = w[self.indices] * self.data
        out = np.add.reduceat(prod, np.minimum(self.indptr[:-1], len(prod) - 1))
        out[self.indptr[:-1] == self.indptr[1:]] = 0.0
        return out.astype(np.float32)

    def row(self, i: int) -> tuple[Ints, Floats]:
        """Columns and values of row ``i``."""
        a, b = self.indptr[i], self.indptr[i + 1]
        return self.indices[a:b], self.data[a:b]


def _doc_grams(doc: Doc, vocab: dict[str, int]) -> dict[int, int]:
    """Packed uni/bigram -> count for one paper (title twice), stop words dropped first."""
    counts: dict[int, int] = {}
    for part, times in ((doc[0], 2), (doc[1], 1)):
        ids = []
        for s in part:
            v = vocab.get(s)
            if v is None:
                v = vocab[s] = len(vocab)
            if v >= 0:
                ids.append(v)
        for v in ids:
            counts[v] = counts.get(v, 0) + times
        for a, b in itertools.pairwise(ids):
            g = (a + 1) << 24 | b  # bigrams live above every unigram id
            counts[g] = counts.get(g, 0) + times
    return counts


def _rows(grams_per_doc: Sequence[dict[int, int]], feature_of: dict[int, int],
          idf: Floats) -> tuple[Ints, Ints, Floats]:
    indptr = [0]
    cols: list[int] = []
    vals: list[float] = []
    for grams in grams_per_doc:
        row = [(feature_of[g], c) for g, c in grams.items() if g in feature_of]
        row.sort()
        cols.extend(j for j, _ in row)
        vals.extend(c for _, c in row)
        indptr.append(len(cols))
    ip = np.array(indptr, dtype=np.int64)
    ix = np.array(cols, dtype=np.int64)
    tf = np.array(vals, dtype=np.float32)
    data = ((1.0 + np.log(tf)) * idf[ix]).astype(np.float32) if len(ix) else tf
    # L2-normalise each row
    if len(ix):
        sq = np.add.reduceat(data * data, np.minimum(ip[:-1], len(data) - 1))
        sq[ip[:-1] == ip[1:]] = 1.0
        norms = np.sqrt(np.repeat(sq, np.diff(ip)))
        data = (data / np.where(norms > 0, norms, 1.0)).astype(np.float32)
    return ip, ix, data


def train(feat: Features, positives: Sequence[int], negatives: Sequence[int] | None = None,
          extra: tuple[Ints, Ints, Floats] | None = None,
          extra_labels: Sequence[bool] = (), extra_weight: float = 1.0) -> Floats:
    """The decision value of every batch row under a linear SVM fitted to the labels.

    Batch rows in ``positives`` are +1; ``negatives`` (default: every other row) are -1;
    ``extra`` rows (papers outside the batch) carry ``extra_labels``. Class weights are
    balanced, and an ``extra`` row counts ``extra_weight`` times. Returns
    ``feat.matvec(w) + bias``.
    """
    pos = list(dict.fromkeys(positives))
    pos_set = set(pos)
    neg = ([i for i in range(feat.n_rows) if i not in pos_set] if negatives is None
           else [i for i in negatives if i not in pos_set])
    if len(neg) > MAX_TRAIN:  # large batch: every other negative would barely move w
        neg = neg[: MAX_TRAIN // 2] + neg[MAX_TRAIN // 2:: max(1, len(neg) // (MAX_TRAIN // 2))]
    rows: list[tuple[Ints, Floats]] = [feat.row(i) for i in pos] + [feat.row(i) for i in neg]
    labels = [1.0] * len(pos) + [-1.0] * len(neg)
    if extra is not None:
        ip, ix, dv = extra
        for k, like in enumerate(extra_labels):
            rows.append((ix[ip[k]:ip[k + 1]], dv[ip[k]:ip[k + 1]]))
            labels.append(1.0 if like else -1.0)
    y = np.array(labels, dtype=np.float64)
    n_pos, n_neg = int((y > 0).sum()), int((y < 0).sum())
    if not n_pos or not n_neg:
        return np.zeros(feat.n_rows, dtype=np.float32)
    total = n_pos + n_neg
    cw = np.where(y > 0, total / (2.0 * n_pos), total / (2.0 * n_neg)) * C
    if extra is not None:
        cw[len(pos) + len(neg):] *= extra_weight
    w = np.zeros(feat.n_features + 1, dtype=np.float64)  # last: the bias feature
    bias = feat.n_features
    alpha = np.zeros(len(rows))
    diag = 1.0 / (2.0 * cw)  # squared hinge: D_ii = 1 / (2 C_i), no upper bound
    qii = np.array([float(v @ v) + 1.0 for _, v in rows]) + diag
    cols = [np.append(ix, bias) for ix, _ in rows]
    vals = [np.append(v.astype(np.float64), 1.0) for _, v in rows]
    order = np.arange(len(rows))
    rng = np.random.default_rng(0)
    for _ in range(EPOCHS):
        rng.shuffle(order)
        biggest = 0.0
        for i in order.tolist():
            c, v = cols[i], vals[i]
            yi = y[i]
            g = yi * float(w[c] @ v) - 1.0 + diag[i] * alpha[i]
            pg = min(g, 0.0) if alpha[i] == 0.0 else g
            if abs(pg) > 1e-12:
                old = alpha[i]
                alpha[i] = max(old - g / qii[i], 0.0)
                w[c] += (alpha[i] - old) * yi * v
                biggest = max(biggest, abs(pg))
        if biggest < TOL:
            break
    return (feat.matvec(w[:-1].astype(np.float32)) + np.float32(w[-1])).astype(np.float32)


def cosine_to(feat: Features, i: int, extra: tuple[Ints, Ints, Floats], k: int) -> float:
    """Cosine between batch row ``i`` and row ``k`` of ``extra`` (both L2-normalised)."""
    ci, vi = feat.row(i)
    ip, ix, dv = extra
    ck, vk = ix[ip[k]:ip[k + 1]], dv[ip[k]:ip[k + 1]]
    common, a, b = np.intersect1d(ci, ck, assume_unique=True, return_indices=True)
    return float(vi[a] @ vk[b]) if len(common) else 0.0
