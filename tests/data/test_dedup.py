"""Exact and MinHash/LSH near-duplicate removal, checked against exact Jaccard similarity."""

from __future__ import annotations

import numpy as np
import pytest
from data_helpers import paragraph

from lmforge.data.dedup import (
    MinHasher,
    estimated_jaccard,
    exact_duplicates,
    jaccard,
    near_duplicates,
    optimal_bands,
    shingles,
)


def test_exact_duplicates_keep_first_and_ignore_surrounding_whitespace():
    texts = ["alpha beta", "gamma", "alpha beta\n", "gamma", "Alpha beta"]
    assert exact_duplicates(texts) == {2: 0, 3: 1}


def test_minhash_estimate_matches_exact_jaccard():
    """Over many set pairs with known Jaccard J, the estimate is unbiased with variance J(1-J)/k."""
    rng = np.random.default_rng(0)
    num_perm = 128
    hasher = MinHasher(num_perm=num_perm, seed=3)
    universe = [f"shingle {i}" for i in range(2000)]
    errors, sigmas = [], []
    for _ in range(60):
        size = int(rng.integers(50, 400))
        a = set(rng.choice(universe, size, replace=False))
        keep = int(rng.integers(0, size))
        b = set(sorted(a)[:keep]) | set(rng.choice(universe, size - keep, replace=False))
        exact = jaccard(a, b)
        est = estimated_jaccard(hasher.signature_of_set(a), hasher.signature_of_set(b))
        errors.append(est - exact)
        sigmas.append(np.sqrt(max(exact * (1 - exact), 1e-4) / num_perm))
    errors, sigmas = np.array(errors), np.array(sigmas)
    assert np.all(np.abs(errors) < 5 * sigmas + 1e-9)
    assert abs(errors.mean()) < 3 * np.sqrt(np.mean(sigmas**2) / len(errors))
    assert np.mean(np.abs(errors)) < 0.05


def test_identical_sets_have_identical_signatures_and_seed_matters():
    items = shingles(paragraph(0, 100))
    assert np.array_equal(
        MinHasher(64, seed=1).signature_of_set(items), MinHasher(64, seed=1).signature_of_set(items)
    )
    assert not np.array_equal(
        MinHasher(64, seed=1).signature_of_set(items), MinHasher(64, seed=2).signature_of_set(items)
    )


def edit(text: str, fraction: float, seed: int) -> str:
    """`text` with about `fraction` of its words replaced."""
    rng = np.random.default_rng(seed)
    words = text.split()
    for i in rng.choice(len(words), int(fraction * len(words)), replace=False):
        words[i] = f"changed{i}"
    return " ".join(words)


def test_near_duplicates_found_unrelated_kept():
    base = [paragraph(i, 300) for i in range(8)]
    texts = [*base, edit(base[2], 0.01, 0), edit(base[5], 0.02, 1), edit(edit(base[2], 0.01, 0), 0.01, 2)]
    # index 8 and 10 are near-copies of 2, index 9 of 5; sanity-check with exact Jaccard
    for i, j in [(8, 2), (9, 5), (10, 2)]:
        assert jaccard(shingles(texts[i]), shingles(texts[j])) > 0.8
    found = near_duplicates(texts, threshold=0.7, seed=0)
    assert {i: kept for i, (kept, _) in found.items()} == {8: 2, 9: 5, 10: 2}
    for i, (kept, sim) in found.items():
        assert sim == pytest.approx(jaccard(shingles(texts[i]), shingles(texts[kept])), abs=0.15)


def test_threshold_decides():
    base = paragraph(11, 400)
    variant = edit(base, 0.06, 3)  # ~0.06 of words changed -> 5-gram Jaccard around 0.57
    j = jaccard(shingles(base), shingles(variant))
    assert 0.4 < j < 0.75
    assert near_duplicates([base, variant], threshold=0.9, seed=0) == {}
    assert set(near_duplicates([base, variant], threshold=0.3, seed=0)) == {1}


def test_near_duplicates_deterministic_for_seed():
    base = [paragraph(i, 120) for i in range(20)]
    texts = base + [edit(t, 0.02, i) for i, t in enumerate(base[:10])]  # Jaccard about 0.84
    first = near_duplicates(texts, threshold=0.7, seed=5)
    assert first == near_duplicates(texts, threshold=0.7, seed=5)
    assert set(first) == set(range(20, 30))


@pytest.mark.parametrize("threshold", [0.5, 0.8, 0.9])
def test_optimal_bands_put_the_s_curve_at_the_threshold(threshold):
    bands, rows = optimal_bands(threshold, 128)
    assert bands * rows <= 128

    def p_candidate(s: float) -> float:
        return 1 - (1 - s**rows) ** bands

    assert p_candidate(min(threshold + 0.1, 1.0)) > 0.95
    assert p_candidate(threshold - 0.3) < 0.1


def test_short_documents_are_one_shingle():
    assert shingles("Two words") == {"two words"}
