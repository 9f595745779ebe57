"""`lmforge embeddings plot`: a thin layer over `lmforge.plot_embeddings`; its options are
`EmbeddingPlotConfig`'s fields."""

from __future__ import annotations

from typing import Any

import lmforge
from lmforge.options import with_options


@with_options(lmforge.EmbeddingPlotConfig)
def embeddings_plot(model: str, **options: Any) -> lmforge.EmbeddingPlot:
    """Plot token embeddings (`--tokens king queen ...`) or sentence embeddings (`--texts FILE`, one
    text per line, optionally `group<TAB>text`) in 2-D with PCA or t-SNE, labelled, as a PNG.

    Args:
        model: asset name (minilm, smollm2), checkpoint directory or .gguf file.
    """
    result = lmforge.plot_embeddings(model, **options)
    axes = (
        f" (PC1 {result.explained[0]:.0%}, PC2 {result.explained[1]:.0%} of variance)"
        if result.explained
        else ""
    )
    print(f"wrote {result.out}: {len(result.labels)} points, {result.method}{axes}")
    return result


COMMANDS = {"embeddings plot": embeddings_plot}
