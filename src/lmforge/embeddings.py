"""Embedding plots: token embeddings (rows of a model's input embedding matrix) or sentence embeddings
(`LM.embed`, e.g. MiniLM) projected to 2-D with PCA (torch's SVD) or t-SNE (scikit-learn), labelled,
and coloured by group.

A texts file holds one text per line, optionally `group<TAB>text`: the group colours the point (a few
topics make clusters visible at a glance).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from lmforge.errors import LMForgeError
from lmforge.options import check_types, configure, option


@dataclass
class EmbeddingPlotConfig:
    """Every option of `lmforge.plot_embeddings` / `lmforge embeddings plot`."""

    tokens: list[str] | None = option(None, "tokens (words) whose input embeddings to plot")
    texts: Path | None = option(
        None, "file of texts, one per line, optionally 'group<TAB>text': their sentence embeddings"
    )
    method: Literal["pca", "tsne"] = option("pca", "pca (torch SVD) or tsne (scikit-learn)")
    out: Path = option(Path("embeddings.png"), "PNG file to write")
    perplexity: float = option(5.0, "t-SNE perplexity (kept below the number of points)")
    seed: int = option(0, "t-SNE seed")
    title: str | None = option(None, "plot title (none: the model and method)")

    def __post_init__(self) -> None:
        check_types(self)
        if (self.tokens is None) == (self.texts is None):
            raise LMForgeError("pass exactly one of tokens or texts (--tokens ... or --texts FILE)")
        if self.perplexity <= 0:
            raise LMForgeError(f"perplexity must be positive, got {self.perplexity}")


@dataclass
class EmbeddingPlot:
    """The 2-D points, their labels and groups, and where the PNG went."""

    points: torch.Tensor  # (N, 2)
    labels: list[str]
    groups: list[str]
    out: Path
    method: str
    explained: list[float] = field(default_factory=list)  # PCA: variance share of each axis


def pca_2d(x: torch.Tensor) -> tuple[torch.Tensor, list[float]]:
    """The centred rows of `x` on their two principal axes (the signs fixed so each axis's largest
    loading is positive), and the share of the variance each axis explains."""
    x = x.double() - x.double().mean(0)
    _, s, vh = torch.linalg.svd(x, full_matrices=False)
    axes = vh[:2]
    signs = torch.sign(axes.gather(1, axes.abs().argmax(1, keepdim=True)))
    axes = axes * signs
    variance = s**2
    return (x @ axes.T).float(), (variance[:2] / variance.sum()).tolist()


def tsne_2d(x: torch.Tensor, perplexity: float, seed: int) -> torch.Tensor:
    from sklearn.manifold import TSNE

    n = x.shape[0]
    if n < 3:
        raise LMForgeError(f"t-SNE needs at least 3 points, got {n}")
    tsne = TSNE(2, perplexity=min(perplexity, n - 1.0), random_state=seed, init="pca")
    return torch.from_numpy(tsne.fit_transform(x.double().numpy())).float()


def read_texts(path: Path) -> tuple[list[str], list[str]]:
    """(texts, groups) of a texts file; a line without a tab has no group."""
    if not Path(path).is_file():
        raise LMForgeError(f"--texts {path}: no such file")
    texts, groups = [], []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        group, tab, text = line.partition("\t")
        texts.append(text.strip() if tab else group.strip())
        groups.append(group.strip() if tab else "")
    if not texts:
        raise LMForgeError(f"--texts {path} has no lines of text")
    return texts, groups


def token_embeddings(lm: Any, tokens: list[str]) -> torch.Tensor:
    """Rows of the input embedding matrix; a word the tokenizer splits is the mean of its pieces' rows."""
    weight = lm.model.tok_emb.weight.detach().float()
    rows = []
    for token in tokens:
        ids = lm.tokenizer.encode(token)
        if not ids:
            raise LMForgeError(f"token {token!r} encodes to nothing")
        rows.append(weight[ids].mean(0))
    return torch.stack(rows)


def plot_embeddings(
    model: str | Path | Any, config: EmbeddingPlotConfig | None = None, **options: Any
) -> EmbeddingPlot:
    """Project token or sentence embeddings of `model` (a loadable source or an `LM`) to 2-D with PCA
    or t-SNE and write a labelled scatter plot (PNG)."""
    from lmforge.lm import LM, load

    cfg = configure(EmbeddingPlotConfig, config, options, "embeddings plot")
    lm = model if isinstance(model, LM) else load(model, dtype=torch.float32, device="cpu")
    if cfg.tokens is not None:
        labels, groups = list(cfg.tokens), [""] * len(cfg.tokens)
        x = token_embeddings(lm, labels)
    else:
        labels, groups = read_texts(cfg.texts)
        with torch.no_grad():
            x = lm.embed(labels).float()
    if x.shape[0] < 2:
        raise LMForgeError(f"need at least 2 points to plot, got {x.shape[0]}")
    explained: list[float] = []
    if cfg.method == "pca":
        points, explained = pca_2d(x)
    else:
        points = tsne_2d(x, cfg.perplexity, cfg.seed)
    title = cfg.title or f"{getattr(lm, 'source', None) or model} ({cfg.method})"
    _draw(points, labels, groups, cfg.out, title, cfg.method, explained)
    return EmbeddingPlot(points, labels, groups, Path(cfg.out), cfg.method, explained)


def _draw(
    points: torch.Tensor,
    labels: list[str],
    groups: list[str],
    out: Path,
    title: str,
    method: str,
    explained: list[float],
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lmforge.io.atomic import atomic_file

    fig, ax = plt.subplots(figsize=(8, 6.5))
    names = list(dict.fromkeys(groups))
    colors = plt.get_cmap("tab10")
    for i, name in enumerate(names):
        idx = [j for j, g in enumerate(groups) if g == name]
        ax.scatter(points[idx, 0], points[idx, 1], s=36, color=colors(i % 10), label=name or None)
    for (px, py), label in zip(points.tolist(), labels):
        short = label if len(label) <= 32 else label[:30] + "…"
        ax.annotate(short, (px, py), fontsize=7, alpha=0.8, xytext=(3, 3), textcoords="offset points")
    if any(names):
        ax.legend(fontsize=8)
    if method == "pca" and explained:
        ax.set_xlabel(f"PC1 ({explained[0]:.0%} of variance)")
        ax.set_ylabel(f"PC2 ({explained[1]:.0%} of variance)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_file(out, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
