"""The small real corpus the RAG tests share (Markdown, text, HTML, JSONL on distinct topics), in a module
of its own: `from conftest import` is ambiguous when several test folders have a conftest.py."""

from __future__ import annotations

import json
from pathlib import Path

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
