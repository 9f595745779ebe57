"""Exact and near-duplicate document removal.

Exact: documents whose text (stripped of surrounding whitespace) has the same BLAKE2b hash; the first
occurrence is kept.

Near-duplicates: MinHash + LSH (Broder 1997; Leskovec et al., *Mining of Massive Datasets*, ch. 3),
written here in numpy:
- a document is the set of its word `ngram`-shingles (lowercased, whitespace-split; a document shorter
  than `ngram` words is one shingle), each hashed to 32 bits;
- `num_perm` universal hash functions h(x) = (a·x + b) mod p with p = 2^32 - 5 (a prime, so a·x + b
  fits in uint64 without overflow) and (a, b) drawn from `seed`; the signature is the minimum of each
  over the shingles, and P[sig_i(A) = sig_i(B)] = Jaccard(A, B);
- the signature is cut into `bands` bands of `rows` rows; documents sharing any band are candidates.
  (bands, rows) is chosen to minimise the weighted false-positive and false-negative areas around
  `threshold` (datasketch's `MinHashLSH` criterion, with false negatives weighted 0.9: for threshold
  0.8 and 128 permutations that is 14 bands of 9 rows, which makes a pair with Jaccard 0.85 a
  candidate with probability 0.975);
- a candidate pair is a duplicate when its estimated Jaccard (fraction of equal signature slots) is at
  least `threshold`; duplicates are joined into clusters (union-find) and the first document of each
  cluster is kept. Everything is deterministic for a given seed.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

PRIME = np.uint64(4294967291)  # 2^32 - 5
_WORD = re.compile(r"\S+")


def content_hash(text: str) -> bytes:
    return hashlib.blake2b(text.strip().encode("utf-8"), digest_size=16).digest()


def exact_duplicates(texts: list[str]) -> dict[int, int]:
    """{index of a duplicate: index of the first document with the same content}."""
    first: dict[bytes, int] = {}
    dups: dict[int, int] = {}
    for i, text in enumerate(texts):
        h = content_hash(text)
        if h in first:
            dups[i] = first[h]
        else:
            first[h] = i
    return dups


def shingles(text: str, ngram: int = 5) -> set[str]:
    """The set of lowercased word n-grams of `text` (the whole text when it is shorter than n words)."""
    words = _WORD.findall(text.lower())
    if len(words) < ngram:
        return {" ".join(words)}
    return {" ".join(words[i : i + ngram]) for i in range(len(words) - ngram + 1)}


def jaccard(a: set, b: set) -> float:
    """Exact Jaccard similarity |A ∩ B| / |A ∪ B| (1.0 for two empty sets)."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def shingle_hashes(text: str, ngram: int = 5) -> np.ndarray:
    """The distinct 32-bit hashes of `shingles(text, ngram)`, computed without building the strings:
    each word is hashed once (CRC-32), n-grams combine word hashes polynomially in uint64 and a
    SplitMix64 finalizer mixes the result down to 32 bits."""
    words = _WORD.findall(text.lower())
    if len(words) < ngram:
        return _hash32({" ".join(words)})
    cache: dict[str, int] = {}
    ids = np.array(
        [cache.get(w) or cache.setdefault(w, zlib.crc32(w.encode("utf-8")) | 1 << 32) for w in words],
        dtype=np.uint64,
    )
    n = len(ids) - ngram + 1
    h = np.zeros(n, dtype=np.uint64)
    for k in range(ngram):
        h = h * np.uint64(0x100000001B3) + ids[k : k + n]
    h ^= h >> np.uint64(30)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(27)
    h *= np.uint64(0x94D049BB133111EB)
    h ^= h >> np.uint64(31)
    return np.unique(h >> np.uint64(32))


def _hash32(items: set[str]) -> np.ndarray:
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(s.encode("utf-8"), digest_size=4).digest(), "little") for s in items),
        dtype=np.uint64,
        count=len(items),
    )


def _false_positive_area(threshold: float, bands: int, rows: int) -> float:
    s = np.linspace(0.0, threshold, 201)
    return float(np.trapezoid(1 - (1 - s**rows) ** bands, s))


def _false_negative_area(threshold: float, bands: int, rows: int) -> float:
    s = np.linspace(threshold, 1.0, 201)
    return float(np.trapezoid((1 - s**rows) ** bands, s))


def optimal_bands(threshold: float, num_perm: int, false_negative_weight: float = 0.9) -> tuple[int, int]:
    """(bands, rows) with bands·rows ≤ num_perm minimising the weighted false-positive and
    false-negative areas of the LSH S-curve. False negatives weigh more by default: candidates are
    verified afterwards, so a false positive costs one comparison while a false negative is a miss."""
    best, best_err = (1, num_perm), float("inf")
    w = false_negative_weight
    for bands in range(1, num_perm + 1):
        rows = num_perm // bands
        err = (1 - w) * _false_positive_area(threshold, bands, rows) + w * _false_negative_area(
            threshold, bands, rows
        )
        if err < best_err:
            best, best_err = (bands, rows), err
    return best


@dataclass
class MinHasher:
    """MinHash signatures with `num_perm` seeded universal hash functions."""

    num_perm: int = 128
    seed: int = 0
    ngram: int = 5
    a: np.ndarray = field(init=False, repr=False)
    b: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        self.a = rng.integers(1, int(PRIME), size=self.num_perm, dtype=np.uint64)
        self.b = rng.integers(0, int(PRIME), size=self.num_perm, dtype=np.uint64)

    def signature_of_set(self, items: set[str]) -> np.ndarray:
        """(num_perm,) uint64 minimum of each hash function over the items."""
        return self.signature_of_hashes(_hash32(items))

    def signature_of_hashes(self, hashes: np.ndarray) -> np.ndarray:
        """(num_perm,) uint64 minimum of each hash function over 32-bit item hashes."""
        x = hashes % PRIME
        sig = np.full(self.num_perm, PRIME, dtype=np.uint64)
        for start in range(0, len(x), 4096):  # bounded memory: (num_perm, 4096) at a time
            chunk = x[start : start + 4096]
            h = (self.a[:, None] * chunk[None, :] + self.b[:, None]) % PRIME
            np.minimum(sig, h.min(axis=1), out=sig)
        return sig

    def signature(self, text: str) -> np.ndarray:
        """Signature of the word-shingle set of `text`."""
        return self.signature_of_hashes(shingle_hashes(text, self.ngram))


def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    return float(np.mean(sig_a == sig_b))


def near_duplicates(
    texts: list[str],
    threshold: float = 0.8,
    num_perm: int = 128,
    ngram: int = 5,
    seed: int = 0,
    map_fn: Callable = map,
) -> dict[int, tuple[int, float]]:
    """{index of a near-duplicate: (index of the kept document of its cluster, estimated Jaccard with
    the document it was matched to)}. The first document (lowest index) of each cluster is kept.
    `map_fn` computes the signatures (pass an ordered process-pool map to parallelize)."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    hasher = MinHasher(num_perm=num_perm, seed=seed, ngram=ngram)
    sigs = np.stack(list(map_fn(hasher.signature, texts))) if texts else np.zeros((0, num_perm), np.uint64)
    bands, rows = optimal_bands(threshold, num_perm)
    candidates: set[tuple[int, int]] = set()
    for band in range(bands):
        buckets: dict[bytes, list[int]] = defaultdict(list)
        block = np.ascontiguousarray(sigs[:, band * rows : (band + 1) * rows])
        for i in range(len(texts)):
            buckets[block[i].tobytes()].append(i)
        for members in buckets.values():
            for j in range(1, len(members)):
                for i in members[:j]:
                    candidates.add((i, members[j]))
    parent = list(range(len(texts)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    similarity: dict[int, float] = {}
    for i, j in sorted(candidates):
        sim = estimated_jaccard(sigs[i], sigs[j])
        if sim >= threshold:
            ri, rj = find(i), find(j)
            if ri != rj:
                parent[max(ri, rj)] = min(ri, rj)
            for k in (i, j):
                similarity[k] = max(similarity.get(k, 0.0), sim)
    return {i: (find(i), similarity[i]) for i in range(len(texts)) if find(i) != i}
