"""Metrics on model representations: BERTScore (Zhang et al., 2020) and MAUVE (Pillutla et al., 2021).

BERTScore follows the `bert-score` package exactly: each sentence is encoded with its special tokens
([CLS] ... [SEP]); token states come from one layer (`layer=L` is the output of block L, the package's
`num_layers=L`), are L2-normalized, and greedily matched by cosine similarity. Precision averages over
the candidate's tokens the best similarity to any reference token (recall the reverse), weighted by
idf (computed on the references: log((M + 1) / (df + 1))) or uniformly; [CLS] and [SEP] weigh 0 but
remain candidates for matching. With several references, the one with the best F1 counts.

MAUVE compares the distribution of model texts Q with human texts P in a feature space: features are
L2-normalized, reduced by PCA to the components explaining 90% of the variance, quantized by k-means
(scikit-learn, several restarts) into `n/10` buckets, and the area under the divergence frontier
{(exp(-c KL(Q|R_w)), exp(-c KL(P|R_w))) : R_w = w P + (1 - w) Q} is the score (c = 5), as the reference
`mauve-text` package computes it (that package clusters with faiss, so scores agree up to clustering).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from lmforge.errors import LMForgeError
from lmforge.eval.metrics.text import References, normalize_references

# --- BERTScore ---------------------------------------------------------------------------------------


def _special_ids(tokenizer) -> set[int]:
    """The sequence-boundary tokens bert-score gives weight 0: [CLS] and [SEP] (else BOS and EOS)."""
    ids: set[int] = set()
    named = getattr(tokenizer, "special_tokens", None) or {}
    for name in ("cls_token", "sep_token"):
        value = getattr(tokenizer, f"{name}_id", None)
        if value is None and name in named and hasattr(tokenizer, "token_to_id"):
            value = tokenizer.token_to_id(named[name])
        if value is not None:
            ids.add(int(value))
    if not ids:
        ids = {int(v) for v in (tokenizer.bos_token_id, tokenizer.eos_token_id) if v is not None}
    return ids


def _encode(lm, text: str) -> list[int]:
    ids = lm.tokenizer.encode(text.strip(), add_special_tokens=True)
    max_len = lm.config.max_seq_len
    if len(ids) > max_len:  # keep the closing special token, as Hugging Face truncation does
        ids = [*ids[: max_len - 1], ids[-1]]
    return ids


def idf_weights(lm, references: Sequence[str]) -> dict[int, float]:
    """bert-score's idf over the references: log((M + 1) / (df + 1)); unseen tokens log(M + 1)."""
    df: Counter[int] = Counter()
    for ref in references:
        df.update(set(_encode(lm, ref)))
    m = len(references)
    return {tok: math.log((m + 1) / (c + 1)) for tok, c in df.items()}


@torch.inference_mode()
def token_states(
    lm, texts: Sequence[str], layer: int | None = None, batch_size: int = 32
) -> list[torch.Tensor]:
    """Per text, (T, C) token states of block `layer` (default: the last) of an encoder `LM`."""
    n_layer = lm.config.n_layer
    layer = n_layer if layer is None else layer
    if not 0 <= layer <= n_layer:
        raise LMForgeError(f"layer must be between 0 (embeddings) and {n_layer}, got {layer}")
    device = next(lm.model.parameters()).device
    encoded = [_encode(lm, t) for t in texts]
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    out: list[torch.Tensor] = [torch.empty(0)] * len(texts)
    order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))  # similar lengths share a batch
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        width = max(len(encoded[i]) for i in idx)
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            ids[row, : len(encoded[i])] = torch.tensor(encoded[i])
            mask[row, : len(encoded[i])] = 1
        layers = lm.model.hidden_states(ids.to(device), attention_mask=mask.to(device), all_layers=True)
        states = layers[layer].float().cpu()
        for row, i in enumerate(idx):
            out[i] = states[row, : len(encoded[i])]
    return out


@dataclass
class BERTScore:
    precision: float
    recall: float
    f1: float
    per_item: dict[str, list[float]] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, float]:
        return {
            "bertscore_precision": self.precision,
            "bertscore_recall": self.recall,
            "bertscore_f1": self.f1,
        }


def bertscore(
    predictions: Sequence[str],
    references: References,
    lm=None,
    *,
    layer: int | None = None,
    idf: bool | dict[int, float] = False,
    batch_size: int = 32,
) -> BERTScore:
    """BERTScore precision/recall/F1 (means over items) with an lmforge encoder (MiniLM by default).

    Args:
        predictions: candidate texts.
        references: one reference (or a list of references) per candidate.
        lm: a loaded encoder `LM`; default `load("minilm")`.
        layer: block whose output gives the token states (default: the last).
        idf: weight tokens by idf computed on the references (or by the given {token id: weight}).
        batch_size: sentences per encoder forward.
    """
    refs = normalize_references(predictions, references)
    if lm is None:
        from lmforge.lm import load

        lm = load("minilm")
    if lm.tokenizer is None:
        raise LMForgeError("BERTScore needs an encoder with a tokenizer")
    flat_refs = [r for rs in refs for r in rs]
    if isinstance(idf, dict):
        weights, default = idf, 1.0
    elif idf:
        weights, default = idf_weights(lm, flat_refs), math.log(len(flat_refs) + 1)
    else:
        weights, default = {}, 1.0
    specials = _special_ids(lm.tokenizer)
    sentences = sorted(set(predictions) | set(flat_refs))
    index = {s: i for i, s in enumerate(sentences)}
    states = token_states(lm, sentences, layer=layer, batch_size=batch_size)
    states = [F.normalize(s, dim=-1) for s in states]
    token_weights = []
    for s in sentences:
        ids = _encode(lm, s)
        token_weights.append(
            torch.tensor([0.0 if t in specials else float(weights.get(t, default)) for t in ids])
        )
    p_all, r_all, f_all = [], [], []
    for pred, rs in zip(predictions, refs):
        best = None
        h, wh = states[index[pred]], token_weights[index[pred]]
        for ref in rs:
            r, wr = states[index[ref]], token_weights[index[ref]]
            sim = h @ r.T  # (Th, Tr) cosine similarities
            p = float((sim.max(dim=1).values * wh).sum() / wh.sum()) if wh.sum() > 0 else 0.0
            rec = float((sim.max(dim=0).values * wr).sum() / wr.sum()) if wr.sum() > 0 else 0.0
            f = 2 * p * rec / (p + rec) if p + rec != 0 else 0.0
            if best is None or f > best[2]:
                best = (p, rec, f)
        p_all.append(best[0])
        r_all.append(best[1])
        f_all.append(best[2])
    return BERTScore(
        precision=float(np.mean(p_all)),
        recall=float(np.mean(r_all)),
        f1=float(np.mean(f_all)),
        per_item={"precision": p_all, "recall": r_all, "f1": f_all},
    )


# --- MAUVE -------------------------------------------------------------------------------------------


@torch.inference_mode()
def text_features(lm, texts: Sequence[str], max_tokens: int = 512) -> np.ndarray:
    """One feature vector per text: a decoder's final hidden state at the last token (as MAUVE uses
    GPT-2's), or an encoder's sentence embedding."""
    if not texts:
        raise LMForgeError("no texts to featurize")
    if not lm.config.causal:
        return lm.embed(list(texts)).float().cpu().numpy()
    device = next(lm.model.parameters()).device
    feats = []
    for t in texts:
        ids = lm.tokenizer.encode(t, add_special_tokens=False)[: min(max_tokens, lm.config.max_seq_len)]
        if lm.tokenizer.bos_token_id is not None:
            ids = [lm.tokenizer.bos_token_id, *ids][: min(max_tokens, lm.config.max_seq_len)]
        if not ids:
            raise LMForgeError("cannot featurize an empty text with a model that has no BOS token")
        h = lm.model.hidden_states(torch.tensor([ids], device=device))
        feats.append(h[0, -1].float().cpu().numpy())
    return np.stack(feats)


def quantize(
    p_features: np.ndarray,
    q_features: np.ndarray,
    n_clusters: int,
    *,
    explained_variance: float = 0.9,
    n_init: int = 5,
    max_iter: int = 500,
    seed: int = 25,
) -> tuple[np.ndarray, np.ndarray]:
    """Histograms of P and Q over k-means clusters of their joint, PCA-reduced, L2-normalized features."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import normalize

    data = normalize(np.vstack([q_features, p_features]).astype(np.float64), norm="l2", axis=1)
    pca = PCA(n_components=None, whiten=False, random_state=seed + 1).fit(data)
    keep = int(np.argmax(np.cumsum(pca.explained_variance_ratio_) >= explained_variance)) + 1
    reduced = pca.transform(data)[:, :keep].astype(np.float32)
    kmeans = KMeans(n_clusters=n_clusters, n_init=n_init, max_iter=max_iter, random_state=seed + 2)
    labels = kmeans.fit_predict(reduced)
    q_counts = np.bincount(labels[: len(q_features)], minlength=n_clusters).astype(np.float64)
    p_counts = np.bincount(labels[len(q_features) :], minlength=n_clusters).astype(np.float64)
    return p_counts / p_counts.sum(), q_counts / q_counts.sum()


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    if np.any((p != 0) & (q == 0)):
        return math.inf
    keep = (p != 0) & (q != 0)
    return float(np.sum(p[keep] * np.log(p[keep] / q[keep])))


def divergence_curve(p: np.ndarray, q: np.ndarray, n_points: int = 25, scaling: float = 5.0) -> np.ndarray:
    """(n_points + 2, 2) frontier points (exp(-c KL(Q|R)), exp(-c KL(P|R))) incl. the two extremes."""
    points = [[0.0, math.inf]]
    for w in np.linspace(1e-6, 1 - 1e-6, n_points):
        r = w * p + (1 - w) * q
        points.append([_kl(q, r), _kl(p, r)])
    points.append([math.inf, 0.0])
    return np.exp(-scaling * np.asarray(points))


def mauve_from_histograms(p: np.ndarray, q: np.ndarray, n_points: int = 25, scaling: float = 5.0) -> float:
    """Area under the divergence frontier, averaged over both orientations (as mauve-text)."""
    x, y = divergence_curve(p, q, n_points, scaling).T
    i, j = np.argsort(x), np.argsort(y)
    return float(0.5 * (np.trapezoid(y[i], x[i]) + np.trapezoid(x[j], y[j])))


@dataclass
class MauveResult:
    mauve: float
    n_clusters: int
    p_hist: np.ndarray = field(repr=False)
    q_hist: np.ndarray = field(repr=False)

    def to_dict(self) -> dict[str, float]:
        return {"mauve": self.mauve, "mauve_clusters": self.n_clusters}


def mauve(
    p_features: np.ndarray,
    q_features: np.ndarray,
    *,
    n_clusters: int | None = None,
    explained_variance: float = 0.9,
    n_init: int = 5,
    max_iter: int = 500,
    scaling: float = 5.0,
    seed: int = 25,
) -> MauveResult:
    """MAUVE between human features P (n, d) and model features Q (m, d); 1 means indistinguishable.

    `n_clusters` defaults to max(2, round(min(n, m) / 10)) as in the paper's code.
    """
    p_features, q_features = np.asarray(p_features), np.asarray(q_features)
    if p_features.ndim != 2 or q_features.ndim != 2 or p_features.shape[1] != q_features.shape[1]:
        raise LMForgeError("MAUVE needs two 2-D feature arrays of the same width")
    if min(len(p_features), len(q_features)) < 2:
        raise LMForgeError("MAUVE needs at least 2 texts on each side (use tens to hundreds)")
    if n_clusters is None:
        n_clusters = max(2, int(round(min(len(p_features), len(q_features)) / 10)))
    p, q = quantize(
        p_features,
        q_features,
        n_clusters,
        explained_variance=explained_variance,
        n_init=n_init,
        max_iter=max_iter,
        seed=seed,
    )
    return MauveResult(mauve_from_histograms(p, q, scaling=scaling), n_clusters, p, q)
