"""`lmforge quickstart --recipe clip` end to end through the CLI (slow: it trains and evaluates on the
whole easy-VQA test split)."""

from __future__ import annotations

import json

import pytest

from lmforge.cli import main


@pytest.mark.slow
def test_clip_recipe_from_the_cli(tmp_path, capsys):
    assert (
        main(["quickstart", "--recipe", "clip", "--minutes", "1", "--out", str(tmp_path), "--no-progress"])
        == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("accuracy ") and "%" in lines[-1]
    assert any(line.startswith("zero-shot on 1000 held-out images") for line in lines)
    run = tmp_path / "clip-1"
    results = json.loads((run / "results.json").read_text())
    assert results["evaluation"]["images"] == 1000 and "hardware" in results and "load_average" in results
    assert f"{results['accuracy']:.1%}" in lines[-1]
    assert (run / "zero_shot_grid.png").read_bytes()[:4] == b"\x89PNG"
    assert (run / "retrieval_grid.png").read_bytes()[:4] == b"\x89PNG"
    assert (run / "final" / "model.safetensors").is_file()
    # colour is learned within seconds; the whole recipe (4 minutes) is measured in the README
    assert results["evaluation"]["colour_accuracy"] > 0.5
