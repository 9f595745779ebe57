"""A small real corpus (Markdown, text, HTML, JSONL on distinct topics) indexed once with the real
MiniLM encoder; tests that change a store build their own copy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

DOCS = {
    "volcano.md": "# Volcanoes\n\nA volcano is a rupture in the crust of a planet that lets hot lava, ash and gases "
    "escape from a magma chamber below the surface.\n\n## Eruptions\n\nExplosive eruptions happen when "
    "gas-rich magma fragments violently. Effusive eruptions pour out runny basalt lava that forms broad "
    "shield volcanoes such as Mauna Loa in Hawaii.\n",
    "bread.txt": "Baking bread starts with flour, water, salt and yeast. The yeast ferments sugars and releases "
    "carbon dioxide, which makes the dough rise. Kneading develops gluten, a network of proteins that traps "
    "the gas. Sourdough uses a culture of wild yeast and lactic acid bacteria instead of commercial yeast.\n",
    "chess.html": "<html><head><title>Chess openings</title></head><body><h1>Chess openings</h1>"
    "<p>The Sicilian Defence answers 1.e4 with c5 and leads to sharp, unbalanced positions.</p>"
    "<h2>Gambits</h2><p>In the Queen's Gambit White offers a pawn on c4 to gain control of the centre."
    "</p><script>var x = 'never indexed';</script></body></html>",
    "notes/rivers.md": "# Rivers\n\nThe Nile flows north through eleven countries into the Mediterranean Sea. "
    "The Amazon carries more water than any other river on Earth and drains most of South America.\n",
}
RECORDS = [
    {
        "id": "bees",
        "text": "Honey bees communicate the direction of flowers with a waggle dance inside the hive.",
        "topic": "insects",
    },
    {
        "id": "ants",
        "text": "Leafcutter ants farm a fungus on chewed leaves deep in underground chambers.",
        "topic": "insects",
    },
]


def write_corpus(folder: Path) -> Path:
    for name, text in DOCS.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    (folder / "insects.jsonl").write_text("\n".join(json.dumps(r) for r in RECORDS) + "\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def minilm():
    from lmforge.rag.models import load_model

    return load_model("minilm")


@pytest.fixture(scope="session")
def built(tmp_path_factory, minilm):
    """(corpus folder, store path, IndexReport) of the shared read-only index (small chunks so each
    document gives several)."""
    from lmforge import rag

    folder = write_corpus(tmp_path_factory.mktemp("corpus"))
    store = tmp_path_factory.mktemp("store") / "index.db"
    report = rag.index([folder], store, chunk_tokens=24, overlap=8)
    return folder, store, report


@pytest.fixture
def own_store(tmp_path, minilm):
    """A private index of a private copy of the corpus (folder, store path), for tests that change it."""
    from lmforge import rag

    folder = write_corpus(tmp_path / "corpus")
    store = tmp_path / "index.db"
    rag.index([folder], store, chunk_tokens=24, overlap=8)
    return folder, store
