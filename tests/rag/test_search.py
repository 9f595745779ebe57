"""Search: BM25 against bm25s and rank-bm25, dense against sentence-transformers + exact inner
products, hybrid fusion, filters, the query cache, FAISS index kinds, rerankers."""

from __future__ import annotations

import sqlite3

import bm25s
import numpy as np
import pytest
import rank_bm25

from lmforge import rag
from lmforge.errors import LMForgeError
from lmforge.rag.bm25 import BM25, tokenize


def _chunks(store):
    rows = sqlite3.connect(store).execute("SELECT id, text FROM chunks ORDER BY id").fetchall()
    return [r[0] for r in rows], [r[1] for r in rows]


QUERY = "what makes bread dough rise when baking"


def test_bm25_scores_match_bm25s_and_rank_bm25(built):
    _, store, _ = built
    ids, texts = _chunks(store)
    retriever = bm25s.BM25(method="lucene", k1=1.5, b=0.75)
    retriever.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)
    docs, scores = retriever.retrieve(
        bm25s.tokenize([QUERY], stopwords="en", show_progress=False), k=len(texts), show_progress=False
    )
    oracle = np.zeros(len(texts))
    oracle[docs[0]] = scores[0]
    np.testing.assert_allclose(BM25(texts).scores(QUERY), oracle, rtol=1e-5, atol=1e-5)
    okapi = rank_bm25.BM25Okapi([tokenize(t) for t in texts])
    np.testing.assert_allclose(
        BM25(texts, variant="okapi").scores(QUERY), okapi.get_scores(tokenize(QUERY)), atol=1e-12
    )
    # search returns the chunks of the bm25s ranking with its scores
    hits = rag.search(store, QUERY, mode="bm25", k=3)
    assert [h.chunk_id for h in hits] == [ids[i] for i in np.argsort(-oracle, kind="stable")[:3]]
    np.testing.assert_allclose([h.score for h in hits], np.sort(oracle)[::-1][:3], rtol=1e-5)
    assert hits[0].path == "bread.txt"


def test_dense_matches_sentence_transformers_exact_search(built):
    from sentence_transformers import SentenceTransformer

    from lmforge.assets import asset_path

    _, store, _ = built
    ids, texts = _chunks(store)
    st = SentenceTransformer(str(asset_path("minilm")), device="cpu")
    emb = st.encode(texts, normalize_embeddings=True)
    q = st.encode([QUERY], normalize_embeddings=True)[0]
    exact = emb @ q
    hits = rag.search(store, QUERY, mode="dense", k=5)
    assert [h.chunk_id for h in hits] == [ids[i] for i in np.argsort(-exact)[:5]]
    np.testing.assert_allclose([h.score for h in hits], np.sort(exact)[::-1][:5], atol=1e-4)


def test_hybrid_fusions(built):
    _, store, _ = built
    q = "rupture where magma escapes"
    bm = rag.search(store, q, mode="bm25", k=50)
    dn = rag.search(store, q, mode="dense", k=50)
    fused: dict[int, float] = {}
    for ranking in (dn, bm):
        for h in ranking:
            fused[h.chunk_id] = fused.get(h.chunk_id, 0.0) + 1 / (60 + h.rank)
    hy = rag.search(store, q, mode="hybrid", k=5)
    expect = sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    assert [(h.chunk_id, round(h.score, 12)) for h in hy] == [(c, round(s, 12)) for c, s in expect]

    def norm(hits):
        s = np.array([h.score for h in hits])
        return {h.chunk_id: v for h, v in zip(hits, (s - s.min()) / (s.max() - s.min()))}

    d, b = norm(dn), norm(bm)
    weighted = {c: 0.3 * d.get(c, 0) + 0.7 * b.get(c, 0) for c in {*d, *b}}
    hw = rag.search(store, q, mode="hybrid", fusion="weighted", alpha=0.3, k=3)
    best = sorted(weighted.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    assert [h.chunk_id for h in hw] == [c for c, _ in best]
    np.testing.assert_allclose([h.score for h in hw], [s for _, s in best])


def test_filters(built):
    _, store, _ = built
    hits = rag.search(store, "flows into the sea", mode="dense", k=10, filters={"path": "notes/*"})
    assert hits and {h.path for h in hits} == {"notes/rivers.md"}
    hits = rag.search(store, "insects", mode="hybrid", k=10, filters={"meta": {"topic": "insects"}})
    assert {h.path for h in hits} == {"insects.jsonl#bees", "insects.jsonl#ants"}
    assert rag.search(store, "chess", mode="bm25", k=10, filters={"title": "Nothing*"}) == []
    with pytest.raises(LMForgeError, match="unknown filter field"):
        rag.search(store, "chess", filters={"colour": "red"})


def test_query_cache_keyed_by_version(own_store):
    folder, store = own_store
    idx = rag.Index(store)
    first = idx.search("lava", mode="hybrid", k=2)
    assert idx.search("lava", mode="hybrid", k=2) is first and idx.cache_hits == 1
    (folder / "lava.md").write_text("# Lava\n\nLava is molten rock flowing from a volcano.")
    rag.index([folder], store)
    again = idx.search("lava", mode="hybrid", k=2)
    assert idx.cache_hits == 1 and again is not first
    assert "lava.md" in {h.path for h in again}


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_faiss_indexes(tmp_path, built, kind):
    folder, store, _ = built
    other = tmp_path / f"{kind}.db"
    rag.index([folder], other, chunk_tokens=24, overlap=8, faiss_index=kind)
    import faiss

    index = faiss.read_index(str(other) + ".faiss")
    assert (kind == "hnsw") == ("HNSW" in type(faiss.downcast_index(index.index)).__name__)
    exact = rag.search(store, QUERY, mode="dense", k=3)
    approx = rag.search(other, QUERY, mode="dense", k=3)
    assert [h.text for h in approx] == [h.text for h in exact]  # a small collection: same neighbours


def test_fuse_orders_by_hand():
    from lmforge.rag.rerank import fuse_orders

    ids, scores = [7, 8, 9], [0.1, 0.9, 0.5]  # the reranker's order: 8, 9, 7
    assert fuse_orders(ids, scores, 1.0) == [(8, 0.9), (9, 0.5), (7, 0.1)]
    fused = {7: 0.5 / 61 + 0.5 / 63, 8: 0.5 / 62 + 0.5 / 61, 9: 0.5 / 63 + 0.5 / 62}
    assert fuse_orders(ids, scores, 0.5, 60) == [
        (8, pytest.approx(fused[8])),
        (7, pytest.approx(fused[7])),
        (9, pytest.approx(fused[9])),
    ]
    assert [i for i, _ in fuse_orders(ids, scores, 0.0)] == ids  # weight 0: the first stage's order
    with pytest.raises(LMForgeError, match="rerank_weight must be between 0 and 1, got 1.5"):
        rag.SearchConfig(rerank_weight=1.5)


def test_fuse_scores_by_hand():
    from lmforge.rag.rerank import fuse_scores

    ids, first, scores = [7, 8, 9], [0.05, 0.04, 0.01], [0.1, 0.9, 0.5]
    # min-max: first stage 7 -> 1, 8 -> 0.75, 9 -> 0; reranker 7 -> 0, 8 -> 1, 9 -> 0.5
    fused = {7: 0.7 * 1.0, 8: 0.3 * 1.0 + 0.7 * 0.75, 9: 0.3 * 0.5}
    assert fuse_scores(ids, first, scores, 0.3) == [
        (8, pytest.approx(fused[8])),
        (7, pytest.approx(fused[7])),
        (9, pytest.approx(fused[9])),
    ]
    assert fuse_scores(ids, first, scores, 1.0) == [(8, 0.9), (9, 0.5), (7, 0.1)]  # its order and scores
    assert [i for i, _ in fuse_scores(ids, first, [0.2] * 3, 0.5)] == ids  # a flat reranker changes nothing
    assert [i for i, _ in fuse_scores(ids, first, scores, 0.0)] == ids


def test_sentence_reranker_is_the_best_sentence_similarity(built):
    from lmforge.rag.faithfulness import split_sentences
    from lmforge.rag.rerank import fuse_orders, fuse_scores

    _, store, _ = built
    idx = rag.Index(store)
    query = "how do bees tell each other where flowers are"
    first = idx.search(query, mode="hybrid", k=6)
    opts = {"mode": "hybrid-rerank", "rerank": "sentence", "k": 6, "rerank_depth": 6}
    hits = idx.search(query, rerank_weight=1.0, **opts)
    q = idx.embed([query])[0]
    best = {
        h.chunk_id: max(float(idx.embed([s])[0] @ q) for s in split_sentences(h.text) or [h.text])
        for h in first
    }
    assert [h.chunk_id for h in hits] == sorted(best, key=lambda c: -best[c])
    assert [h.score for h in hits] == pytest.approx(sorted(best.values(), reverse=True), abs=1e-5)
    # weighted: the min-max normalized scores of both stages
    fused = idx.search(query, rerank_fusion="weighted", **opts)
    ids, first_scores = [h.chunk_id for h in first], [h.score for h in first]
    weight = rag.SearchConfig().weight_for("sentence")
    want = fuse_scores(ids, first_scores, [best[c] for c in ids], weight)
    assert [h.chunk_id for h in fused] == [c for c, _ in want]
    assert [h.score for h in fused] == pytest.approx([s for _, s in want], abs=1e-5)
    # default: reciprocal-rank fusion of the two orders
    assert rag.SearchConfig().rerank_fusion == "rrf"
    rrf = idx.search(query, **opts)
    assert [h.chunk_id for h in rrf] == [c for c, _ in fuse_orders(ids, [best[c] for c in ids], weight)]


def test_ask_passes_every_search_option_to_its_searches(built):
    """`rag ask` retrieves with the search options it was given, rerank_weight included (a hand-kept
    list of fields once dropped it, so `--rerank-weight` did nothing in ask)."""
    from lmforge.rag.answer import gather
    from lmforge.rag.config import AskConfig

    _, store, _ = built
    idx = rag.Index(store)
    query = "how do bees tell each other where flowers are"
    opts = {"mode": "hybrid-rerank", "rerank": "sentence", "k": 6, "rerank_depth": 6}
    alone = [h.chunk_id for h in idx.search(query, rerank_weight=1.0, **opts)]
    assert alone != [h.chunk_id for h in idx.search(query, **opts)]  # the weight matters for this query
    hits, _ = gather(idx, None, query, AskConfig(rerank_weight=1.0, **opts))
    assert [h.chunk_id for h in hits] == alone


def test_rerank_only_where_the_retrievers_disagree(built):
    """rerank_when="disagree": when BM25's and the dense retriever's best chunks come from one document,
    the fused order stands; otherwise the reranker runs as always."""
    _, store, _ = built
    idx = rag.Index(store, cross_encoder=lambda q, texts: [float("ants" in t) for t in texts])
    opts = {"mode": "hybrid", "rerank": "cross-encoder", "rerank_weight": 1.0, "k": 1}
    assert idx.search(QUERY, mode="bm25", k=1)[0].path == idx.search(QUERY, mode="dense", k=1)[0].path
    assert idx.search(QUERY, **opts)[0].path == "insects.jsonl#ants"
    assert idx.search(QUERY, rerank_when="disagree", **opts)[0].path == "bread.txt"
    assert idx.search("water", mode="bm25", k=1)[0].path != idx.search("water", mode="dense", k=1)[0].path
    assert idx.search("water", rerank_when="disagree", **opts)[0].path == "insects.jsonl#ants"
    assert rag.SearchConfig(mode="hybrid-rerank").rerank_gate == "disagree"  # its default
    assert rag.SearchConfig(mode="hybrid-rerank", rerank="sentence").rerank_gate == "always"


def test_rerankers(built):
    _, store, _ = built
    idx = rag.Index(store, cross_encoder=lambda q, texts: [float("ants" in t) for t in texts])
    hits = idx.search("insects", mode="hybrid", rerank="cross-encoder", rerank_weight=1.0, k=2)
    assert hits[0].path == "insects.jsonl#ants"
    with pytest.raises(LMForgeError, match="needs a cross encoder"):
        rag.Index(store).search("insects", rerank="cross-encoder")
    plain = idx.search("volcano lava eruptions", mode="dense", k=4)
    diverse = idx.search("volcano lava eruptions", mode="dense", k=4, rerank="mmr", mmr_lambda=0.3)
    assert diverse[0].chunk_id == plain[0].chunk_id  # MMR keeps the most relevant first
    assert len({h.path for h in diverse}) > len({h.path for h in plain})
