"""`lmforge eval` end to end on tiny models (lmforge.load patched): JSON + Markdown + PNG, compare, metric."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sacrebleu

import lmforge
from lmforge.cli import main
from lmforge.eval import report as report_mod
from lmforge.hardware import describe

from .conftest import make_tiny_lm


@pytest.fixture
def patched_load(monkeypatch):
    models = {"tiny-a": lambda: make_tiny_lm(0), "tiny-b": lambda: make_tiny_lm(1)}

    def fake_load(name, dtype=None, device=None):
        if name not in models:
            raise lmforge.LMForgeError(f"unknown model {name}")
        return models[name]()

    monkeypatch.setattr(lmforge.lm, "load", fake_load, raising=False)
    return fake_load


def test_eval_side_by_side_writes_json_markdown_and_plots(patched_load, tmp_path: Path, capsys) -> None:
    task = tmp_path / "ppl.jsonl"
    task.write_text("".join(json.dumps({"text": f"line {i}: to be or not to be"}) + "\n" for i in range(6)))
    out = tmp_path / "run1"
    rc = main(
        [
            "eval",
            "--model",
            "tiny-a",
            "--model",
            "tiny-b",
            "--task",
            str(task),
            "--output",
            str(out),
            "--n-resamples",
            "100",
            "--seed",
            "3",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "perplexity" in printed and "tiny-a" in printed and "tiny-b" in printed
    report = json.loads((out / "report.json").read_text())
    assert report["seed"] == 3 and report["config"]["models"] == ["tiny-a", "tiny-b"]
    assert report["versions"]["torch"] and report["versions"]["sacrebleu"]
    assert report["machine"] == describe()
    assert [m["name"] for m in report["models"]] == ["tiny-a", "tiny-b"]
    assert [r["model"] for r in report["results"]] == ["tiny-a", "tiny-b"]
    ppl = report["results"][0]["metrics"]["perplexity"]
    assert ppl["low"] <= ppl["value"] <= ppl["high"]
    assert report["results"][0]["metrics"]["perplexity"] != report["results"][1]["metrics"]["perplexity"]
    md = (out / "report.md").read_text()
    assert "| model | perplexity | bits_per_byte |" in md and "![ppl](ppl.png)" in md
    assert (out / "ppl.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # a second run (another seed) and the comparison
    out2 = tmp_path / "run2"
    assert (
        main(
            [
                "eval",
                "--model",
                "tiny-a",
                "--task",
                str(task),
                "--output",
                str(out2),
                "--n-resamples",
                "50",
                "--no-plots",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["eval", "compare", str(out / "report.json"), str(out2 / "report.json")]) == 0
    table = capsys.readouterr().out
    rows = {
        tuple(cells[:3]): cells[3:]
        for line in table.splitlines()
        if line.startswith("| ppl |")
        for cells in [[c.strip() for c in line.strip("|").split("|")]]
    }
    # tiny-a scored twice on the same text: the same perplexity (the seed moves only the interval)
    a, b, diff, change = rows[("ppl", "tiny-a", "perplexity")]
    assert a.split()[0] == b.split()[0] != "—" and diff == "+0" and change == "+0.00%"
    # tiny-b is only in the first report: a value, a dash, no difference
    a, b, diff, change = rows[("ppl", "tiny-b", "perplexity")]
    assert a != "—" and b == "—" and diff == "" and change == ""


def test_eval_errors_are_one_line(patched_load, tmp_path: Path, capsys) -> None:
    assert main(["eval", "--model", "tiny-a", "--task", "no-such-task"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lmforge: error: unknown task 'no-such-task'") and "shakespeare-perplexity" in err
    assert main(["eval", "--task", "speed"]) == 2
    assert "no model given" in capsys.readouterr().err
    assert main(["eval", "compare", str(tmp_path / "missing.json"), str(tmp_path / "b.json")]) == 2
    assert "report not found" in capsys.readouterr().err


def test_eval_metric_command(tmp_path: Path, capsys) -> None:
    preds = ["the cat sat on the mat", "a dog ran in the park today"]
    refs = ["the cat sat on a mat", "the dog runs in the park"]
    (tmp_path / "p.txt").write_text("\n".join(preds) + "\n")
    (tmp_path / "r.txt").write_text("\n".join(refs) + "\n")
    assert (
        main(
            [
                "eval",
                "metric",
                "bleu",
                "--predictions",
                str(tmp_path / "p.txt"),
                "--references",
                str(tmp_path / "r.txt"),
            ]
        )
        == 0
    )
    scores = json.loads(capsys.readouterr().out)
    assert scores["bleu"] == pytest.approx(sacrebleu.corpus_bleu(preds, [refs]).score)
    (tmp_path / "r1.txt").write_text(refs[0] + "\n")
    assert (
        main(
            [
                "eval",
                "metric",
                "chrf",
                "--predictions",
                str(tmp_path / "p.txt"),
                "--references",
                str(tmp_path / "r1.txt"),
            ]
        )
        == 2
    )
    assert "2 predictions but 1 references" in capsys.readouterr().err
    assert (
        main(
            [
                "eval",
                "metric",
                "blue",
                "--predictions",
                str(tmp_path / "p.txt"),
                "--references",
                str(tmp_path / "r.txt"),
            ]
        )
        == 2
    )
    assert "unknown metric 'blue'; known: bleu" in capsys.readouterr().err


def test_format_and_compare_helpers() -> None:
    assert report_mod.format_value({"value": 12.3456, "low": 11.0, "high": 13.5}) == "12.35 [11.00, 13.50]"
    assert report_mod.format_value({"value": 0.123456}) == "0.1235"
    a = {
        "results": [{"task": "t", "model": "m", "metrics": {"acc": {"value": 0.5, "low": 0.4, "high": 0.6}}}]
    }
    b = {"results": [{"task": "t", "model": "m", "metrics": {"acc": {"value": 0.7}}}]}
    table = report_mod.compare(a, b)
    assert "| t | m | acc | 0.5000 [0.4000, 0.6000] | 0.7000 | +0.2 * | +40.00% |" in table


def _without_timing(report: dict) -> dict:
    """A report less what differs between two runs of the same evaluation: the time it was made and took."""
    out = {k: v for k, v in report.items() if k != "created"}
    out["results"] = [{k: v for k, v in r.items() if k != "seconds"} for r in report["results"]]
    return out


def test_api_evaluate_gives_the_cli_report(patched_load, tmp_path: Path, capsys) -> None:
    task = tmp_path / "ppl.jsonl"
    task.write_text(
        "".join(json.dumps({"text": f"line {i}: all the world's a stage"}) + "\n" for i in range(5))
    )
    out = tmp_path / "cli"
    args = ["--task", str(task), "--output", str(out), "--n-resamples", "60", "--seed", "7", "--no-plots"]
    assert main(["eval", "--model", "tiny-a", "--model", "tiny-b", *args]) == 0
    from_cli = json.loads((out / "report.json").read_text())
    result = lmforge.evaluate(["tiny-a", "tiny-b"], [str(task)], n_resamples=60, seed=7)
    assert isinstance(result, lmforge.EvalResult) and result.paths == {}  # no output: nothing written
    assert _without_timing(json.loads(json.dumps(result.report))) == _without_timing(from_cli)
    assert result.summary() in capsys.readouterr().out
    config = lmforge.EvalConfig(seed=7, n_resamples=60, output=tmp_path / "api", plots=False)
    written = lmforge.evaluate("tiny-a", str(task), config=config)
    assert written.paths["json"] == tmp_path / "api" / "report.json" and written.paths["markdown"].is_file()
    assert written.report["results"][0]["metrics"] == from_cli["results"][0]["metrics"]


def test_api_evaluate_checks_options_before_loading(patched_load, monkeypatch) -> None:
    monkeypatch.setattr(lmforge.lm, "load", lambda *a, **k: pytest.fail("a model was loaded"))
    with pytest.raises(
        lmforge.LMForgeError, match=r"unknown option\(s\) in evaluate: n_resample \(did you mean"
    ):
        lmforge.evaluate(["tiny-a"], ["speed"], n_resample=10)
    with pytest.raises(lmforge.LMForgeError, match="evaluate: option seed must be an integer, got '3'"):
        lmforge.evaluate(["tiny-a"], ["speed"], seed="3")
    with pytest.raises(lmforge.LMForgeError, match=r"option confidence must be in \(0, 1\), got 95"):
        lmforge.evaluate(["tiny-a"], ["speed"], confidence=95)


def test_api_score_and_compare_reports(tmp_path: Path) -> None:
    preds = ["the cat sat on the mat", "a dog ran in the park today"]
    refs = ["the cat sat on a mat", "the dog runs in the park"]
    assert lmforge.score("bleu", preds, refs)["bleu"] == pytest.approx(
        sacrebleu.corpus_bleu(preds, [refs]).score
    )
    (tmp_path / "p.txt").write_text("\n".join(preds) + "\n")
    assert lmforge.score("bleu", tmp_path / "p.txt", refs) == lmforge.score("bleu", preds, refs)
    a = {"results": [{"task": "t", "model": "m", "metrics": {"acc": {"value": 0.5}}}]}
    b = {"results": [{"task": "t", "model": "m", "metrics": {"acc": {"value": 0.75}}}]}
    table = lmforge.compare_reports(a, b, output=tmp_path / "cmp.md")
    assert "| t | m | acc | 0.5000 | 0.7500 | +0.25 | +50.00% |" in table
    assert (tmp_path / "cmp.md").read_text() == table
