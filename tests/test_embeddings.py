"""`lmforge embeddings plot`: PCA against scikit-learn's, token embeddings as the model's own rows,
MiniLM sentence embeddings of four topics separated in 2-D (t-SNE from scikit-learn), a labelled PNG,
and bad input as one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import lmforge
from lmforge.cli import run
from lmforge.embeddings import pca_2d, token_embeddings
from lmforge.errors import LMForgeError

TOPICS = Path(__file__).resolve().parents[1] / "docs" / "minilm_topics.txt"


@pytest.fixture(scope="module")
def minilm():
    return lmforge.load("minilm", dtype=torch.float32, device="cpu")


def test_pca_matches_scikit_learn():
    from sklearn.decomposition import PCA

    x = torch.randn(30, 12, generator=torch.Generator().manual_seed(0)) * torch.linspace(3, 0.1, 12)
    points, explained = pca_2d(x)
    reference = PCA(2).fit(x.double().numpy())
    ref_points = reference.transform(x.double().numpy())
    for axis in range(2):  # an axis's sign is arbitrary
        sign = np.sign(np.dot(points[:, axis].numpy(), ref_points[:, axis]))
        np.testing.assert_allclose(points[:, axis].numpy() * sign, ref_points[:, axis], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(explained, reference.explained_variance_ratio_, rtol=1e-6)


def _check_topic_plot(minilm, tmp_path, method):
    groups = [line.split("\t")[0] for line in TOPICS.read_text().splitlines() if line.strip()]
    out = tmp_path / f"{method}.png"
    result = lmforge.plot_embeddings(minilm, texts=TOPICS, method=method, out=out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and result.groups == groups
    assert result.points.shape == (20, 2)
    # each point's nearest neighbour in the plot is mostly from its own topic
    d = torch.cdist(result.points, result.points).fill_diagonal_(float("inf"))
    same = [groups[int(j)] == g for g, j in zip(groups, d.argmin(1))]
    assert sum(same) / len(same) >= 0.8
    return result


def test_sentence_embeddings_of_topics_cluster_under_pca(minilm, tmp_path):
    result = _check_topic_plot(minilm, tmp_path, "pca")
    assert len(result.explained) == 2 and 0 < result.explained[1] <= result.explained[0] < 1


@pytest.mark.slow
def test_sentence_embeddings_of_topics_cluster_under_tsne(minilm, tmp_path):
    _check_topic_plot(minilm, tmp_path, "tsne")


def test_token_embeddings_are_the_models_rows(minilm, tmp_path):
    ids = [minilm.tokenizer.encode(w) for w in ("king", "queen", "paris")]
    rows = token_embeddings(minilm, ["king", "queen", "paris"])
    weight = minilm.model.tok_emb.weight.detach()
    for row, i in zip(rows, ids):
        torch.testing.assert_close(row, weight[i].mean(0))
    result = run(
        [
            "embeddings",
            "plot",
            "minilm",
            "--tokens",
            "king",
            "queen",
            "man",
            "woman",
            "--out",
            str(tmp_path / "t.png"),
        ]
    )
    assert result.labels == ["king", "queen", "man", "woman"] and (tmp_path / "t.png").is_file()


def test_bad_input_is_a_one_line_error(tmp_path):
    with pytest.raises(LMForgeError, match="exactly one of tokens or texts"):
        lmforge.plot_embeddings("minilm", out=tmp_path / "x.png")
    with pytest.raises(LMForgeError, match="no such file"):
        lmforge.plot_embeddings("minilm", texts=tmp_path / "missing.txt")
