"""BM25 over chunk texts, scored as one sparse matrix product.

The index is a (terms x chunks) sparse matrix whose entries are each term's full BM25 contribution in
each chunk (idf x saturated term frequency), so a query's scores are the sum of its terms' rows, as
bm25s computes them ("eager" scoring). Two variants:
- `lucene` (bm25s' default): idf = ln(1 + (N - df + 0.5) / (df + 0.5)), tf part tf / (tf + k1 (1 - b + b dl / avgdl));
- `okapi` (rank-bm25's BM25Okapi): idf = ln((N - df + 0.5) / (df + 0.5)), with negative idfs replaced by
  epsilon x the mean idf, tf part tf (k1 + 1) / (tf + k1 (1 - b + b dl / avgdl)).
Tokens: lowercased runs of word characters (bm25s' default pattern `(?u)\\b\\w\\w+\\b`), with bm25s'
English stopwords left out when `stopwords` is on.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

import numpy as np
import scipy.sparse as sp

TOKEN = re.compile(r"(?u)\b\w\w+\b")


def _stopwords() -> frozenset[str]:
    try:
        from bm25s.stopwords import STOPWORDS_EN

        return frozenset(STOPWORDS_EN)
    except ImportError:  # pragma: no cover - bm25s is a dependency
        return frozenset()


STOPWORDS = _stopwords()


def tokenize(text: str, stopwords: bool = True) -> list[str]:
    words = TOKEN.findall(text.lower())
    return [w for w in words if w not in STOPWORDS] if stopwords else words


class BM25:
    def __init__(
        self,
        texts: Sequence[str],
        *,
        variant: Literal["lucene", "okapi"] = "lucene",
        k1: float = 1.5,
        b: float = 0.75,
        epsilon: float = 0.25,
        stopwords: bool = True,
    ):
        self.variant, self.k1, self.b, self.stopwords = variant, k1, b, stopwords
        self.vocab: dict[str, int] = {}
        rows, cols, vals = [], [], []
        lengths = np.zeros(len(texts), dtype=np.float64)
        for j, text in enumerate(texts):
            counts: dict[int, int] = {}
            toks = tokenize(text, stopwords)
            lengths[j] = len(toks)
            for t in toks:
                i = self.vocab.setdefault(t, len(self.vocab))
                counts[i] = counts.get(i, 0) + 1
            rows.extend(counts)
            cols.extend([j] * len(counts))
            vals.extend(counts.values())
        n = len(texts)
        tf = sp.csr_matrix((np.asarray(vals, np.float64), (rows, cols)), shape=(len(self.vocab), n))
        df = np.diff(tf.indptr).astype(np.float64)
        if variant == "lucene":
            idf = np.log(1.0 + (n - df + 0.5) / (df + 0.5))
        else:
            idf = np.log((n - df + 0.5) / (df + 0.5))
            idf = np.where(idf < 0, epsilon * idf.mean() if len(idf) else 0.0, idf)
        avgdl = lengths.mean() if n else 0.0
        norm = self.k1 * (1 - self.b + self.b * lengths / avgdl) if avgdl > 0 else np.full(n, self.k1)
        data = tf.data
        doc_of = tf.indices
        sat = data / (data + norm[doc_of])
        if variant == "okapi":
            sat = sat * (self.k1 + 1)
        term_of = np.repeat(np.arange(tf.shape[0]), np.diff(tf.indptr))
        self.matrix = sp.csr_matrix((sat * idf[term_of], doc_of, tf.indptr), shape=tf.shape)
        self.idf = idf
        self.n = n

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every chunk for `query` (a repeated query word counts once per occurrence,
        as in rank-bm25 and bm25s)."""
        ids = [self.vocab[t] for t in tokenize(query, self.stopwords) if t in self.vocab]
        if not ids:
            return np.zeros(self.n, dtype=np.float64)
        return np.asarray(self.matrix[ids].sum(axis=0)).ravel()
