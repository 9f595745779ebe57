"""Evaluation reports: one JSON for machines (config, model identity, seed, versions, results) and a
Markdown page for people (a table per task, models side by side, a PNG bar chart with the intervals).
`compare` lines up two JSON reports metric by metric.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib.metadata
import json
import math
import platform
from pathlib import Path
from typing import Any

from lmforge.errors import LMForgeError
from lmforge.hardware import describe
from lmforge.io.atomic import atomic_file, atomic_write_text

REPORT_VERSION = 1
_PACKAGES = ("lmforge", "torch", "numpy", "sacrebleu", "rouge-score", "nltk", "scikit-learn", "transformers")


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _file_sha256(path: Path, limit_bytes: int = 2**31) -> str | None:
    if not path.is_file() or path.stat().st_size > limit_bytes:
        return None
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_identity(name: str, lm) -> dict[str, Any]:
    """What was evaluated: the name given, where it came from, its shape, and a weights fingerprint."""
    source = getattr(lm, "source", None) or name
    path: Path | None = None
    try:
        from lmforge.assets import ASSETS, asset_path

        path = asset_path(source) if source in ASSETS else Path(str(source))
    except LMForgeError:
        path = None
    weights: list[Path] = []
    if path is not None and path.is_file():
        weights = [path]
    elif path is not None and path.is_dir():
        weights = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.gguf"))
    fingerprint = None
    if weights:
        digest = hashlib.sha256()
        for w in weights:
            digest.update((_file_sha256(w) or f"{w.name}:{w.stat().st_size}").encode())
        fingerprint = digest.hexdigest()[:16]
    params = next(lm.model.parameters())
    config = lm.config
    tokenizer = getattr(lm, "tokenizer", None)
    return {
        "name": name,
        "source": str(path) if path is not None else str(source),
        "family": getattr(config, "family", None),
        "n_layer": config.n_layer,
        "d_model": config.d_model,
        "parameters": int(sum(p.numel() for p in lm.model.parameters())),
        "dtype": str(params.dtype).replace("torch.", ""),
        "device": str(params.device),
        "weights_sha256": fingerprint,
        "tokenizer": getattr(tokenizer, "fingerprint", None) if tokenizer is not None else None,
    }


def build_report(
    results: list[dict[str, Any]],
    models: list[dict[str, Any]],
    tasks: list[dict[str, Any]],
    config: dict[str, Any],
    seed: int,
) -> dict[str, Any]:
    return {
        "report_version": REPORT_VERSION,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "seed": seed,
        "config": config,
        "machine": describe(),  # CPU model and flags: the machines change between runs
        "versions": versions(),
        "models": models,
        "tasks": tasks,
        "results": results,
    }


def format_value(m: dict[str, float]) -> str:
    """`12.34 [11.90, 12.80]` with an interval, `12.34` without."""

    def fmt(x: float) -> str:
        if x is None or (isinstance(x, float) and math.isnan(x)):
            return "n/a"
        ax = abs(x)
        return f"{x:.4f}" if ax < 10 else f"{x:.2f}" if ax < 1e4 else f"{x:.4g}"

    text = fmt(m["value"])
    if "low" in m and "high" in m:
        text += f" [{fmt(m['low'])}, {fmt(m['high'])}]"
    return text


def _by_task(report: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in report["results"]:
        out.setdefault(r["task"], []).append(r)
    return out


def summary_table(report: dict[str, Any]) -> str:
    """Plain-text summary: one line per (task, model, metric)."""
    lines = []
    for task, rows in _by_task(report).items():
        for r in rows:
            for name, m in r["metrics"].items():
                lines.append(f"{task:28s} {r['model']:20s} {name:24s} {format_value(m)}")
    return "\n".join(lines)


def markdown(report: dict[str, Any], plots: dict[str, str] | None = None) -> str:
    plots = plots or {}
    conf = None
    for r in report["results"]:
        for m in r["metrics"].values():
            conf = conf or m.get("confidence")
    out = ["# lmforge evaluation report", ""]
    out.append(
        f"Created {report['created']} · seed {report['seed']} · lmforge {report['versions'].get('lmforge')}"
    )
    if conf:
        out.append(f"Intervals: {int(round(conf * 100))}% percentile bootstrap.")
    out += [
        "",
        "## Models",
        "",
        "| model | source | family | parameters | dtype | weights sha256 |",
        "|---|---|---|---:|---|---|",
    ]
    for m in report["models"]:
        out.append(
            f"| {m['name']} | `{m['source']}` | {m['family']} | {m['parameters']:,} | {m['dtype']} | "
            f"{m['weights_sha256'] or 'n/a'} |"
        )
    tasks = {t["name"]: t for t in report.get("tasks", [])}
    for task, rows in _by_task(report).items():
        out += ["", f"## {task}", ""]
        if task in tasks and tasks[task].get("description"):
            out += [tasks[task]["description"], ""]
        metric_names: list[str] = []
        for r in rows:
            metric_names += [n for n in r["metrics"] if n not in metric_names]
        out.append("| model | " + " | ".join(metric_names) + " | examples | seconds |")
        out.append("|---|" + "---:|" * (len(metric_names) + 2))
        for r in rows:
            cells = [format_value(r["metrics"][n]) if n in r["metrics"] else "" for n in metric_names]
            out.append(
                f"| {r['model']} | " + " | ".join(cells) + f" | {r['n_examples']} | {r['seconds']:.1f} |"
            )
        if task in plots:
            out += ["", f"![{task}]({plots[task]})"]
        samples = [d for r in rows for d in r.get("details", []) if "prediction" in d][:3]
        if samples:
            out += ["", "Sample generations:", ""]
            for d in samples:
                pred = d["prediction"].replace("\n", " ")[:200]
                out.append(
                    f"- prompt: {d['prompt'][:120]!r} → {pred!r} (reference: {d['references'][0][:120]!r})"
                )
    out += ["", "## Versions", "", "| package | version |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in report["versions"].items()]
    return "\n".join(out) + "\n"


def plot_task(rows: list[dict[str, Any]], path: Path) -> None:
    """Bar chart: one panel per metric, one bar per model, bootstrap intervals as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names: list[str] = []
    for r in rows:
        names += [n for n in r["metrics"] if n not in names]
    names = names[:8]
    fig, axes = plt.subplots(1, len(names), figsize=(max(3.0, 2.6 * len(names)), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        models = [r["model"] for r in rows if name in r["metrics"]]
        ms = [r["metrics"][name] for r in rows if name in r["metrics"]]
        values = [m["value"] for m in ms]
        err = [
            [max(0.0, m["value"] - m.get("low", m["value"])) for m in ms],
            [max(0.0, m.get("high", m["value"]) - m["value"]) for m in ms],
        ]
        ax.bar(range(len(values)), values, yerr=err, capsize=4, color="#4C72B0")
        ax.set_xticks(range(len(values)), models, rotation=20, ha="right", fontsize=8)
        ax.set_title(name, fontsize=9)
        ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    with atomic_file(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name)


def write_report(report: dict[str, Any], output_dir: str | Path, plots: bool = True) -> dict[str, Path]:
    """Write `report.json`, `report.md` and one PNG per task into `output_dir`; return their paths."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    plot_files: dict[str, str] = {}
    if plots:
        for task, rows in _by_task(report).items():
            png = output_dir / f"{_slug(task)}.png"
            plot_task(rows, png)
            plot_files[task] = png.name
            paths[f"plot:{task}"] = png
    paths["json"] = atomic_write_text(
        output_dir / "report.json", json.dumps(report, indent=2, default=str) + "\n"
    )
    paths["markdown"] = atomic_write_text(output_dir / "report.md", markdown(report, plot_files))
    return paths


def load_report(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise LMForgeError(f"report not found: {path}")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise LMForgeError(f"{path} is not a JSON report ({exc.msg})") from None
    if not isinstance(report, dict) or "results" not in report:
        raise LMForgeError(f"{path} is not an lmforge evaluation report (no 'results')")
    return report


def compare(a: dict[str, Any], b: dict[str, Any], a_name: str = "A", b_name: str = "B") -> str:
    """Markdown table of every (task, model, metric) in either report: A, B, B - A and relative change;
    `*` marks a difference outside A's interval."""

    def index(rep: dict[str, Any]) -> dict[tuple[str, str, str], dict[str, float]]:
        return {(r["task"], r["model"], n): m for r in rep["results"] for n, m in r["metrics"].items()}

    ia, ib = index(a), index(b)
    keys = list(dict.fromkeys([*ia, *ib]))
    lines = [
        f"| task | model | metric | {a_name} | {b_name} | {b_name} - {a_name} | change |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for key in keys:
        ma, mb = ia.get(key), ib.get(key)
        va = format_value(ma) if ma else "—"
        vb = format_value(mb) if mb else "—"
        diff = rel = ""
        if ma and mb:
            d = mb["value"] - ma["value"]
            diff = f"{d:+.4g}"
            rel = f"{100 * d / abs(ma['value']):+.2f}%" if ma["value"] else ""
            if "low" in ma and not ma["low"] <= mb["value"] <= ma["high"]:
                diff += " *"
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {va} | {vb} | {diff} | {rel} |")
    return "\n".join(lines) + "\n"
