"""Training logs: one JSON object per line (`log.jsonl`), TensorBoard when installed, and a PNG plot
of loss and learning rate, all in the run directory. Only rank 0 makes a `RunLogger`."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from lmforge.io.atomic import atomic_file, atomic_write_text


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The records of a JSONL log (a torn last line from a killed run is skipped)."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


class RunLogger:
    """Appends records to `run_dir/log.jsonl` (flushed per line) and mirrors scalars to TensorBoard."""

    def __init__(self, run_dir: str | Path, tensorboard: bool = True):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / "log.jsonl"
        self._file = self.path.open("a", encoding="utf-8")
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.run_dir / "tensorboard"))
            except ImportError:  # tensorboard not installed: JSONL and PNG only
                self._tb = None

    @staticmethod
    def truncate(run_dir: str | Path, after_step: int) -> None:
        """Drop records past `after_step` (a resumed run replays them), atomically."""
        path = Path(run_dir) / "log.jsonl"
        kept = [r for r in read_log(path) if r.get("step", 0) <= after_step]
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))

    def log(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            step = record.get("step", 0)
            kind = record.get("kind", "train")
            for key, value in record.items():
                if key not in ("step", "kind") and isinstance(value, (int, float)) and math.isfinite(value):
                    self._tb.add_scalar(f"{kind}/{key}", value, step)

    def plot(self) -> Path | None:
        """Write `plot.png`: train (and validation) loss over steps, learning rate on a second panel."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return None
        records = read_log(self.path)
        train = [r for r in records if r.get("kind") == "train"]
        val = [r for r in records if r.get("kind") == "val"]
        if not train:
            return None
        alerts = [r for r in records if r.get("kind") == "alert"]
        activations = [r for r in train if any(k.startswith("act_rms/") for k in r)]
        rows = 5 if activations else 3
        fig, axes = plt.subplots(rows, 1, figsize=(7, 2.8 * rows + 0.1), sharex=True)
        ax_loss, ax_lr, ax_grad = axes[:3]
        ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], label="train", lw=1)
        if val:
            ax_loss.plot([r["step"] for r in val], [r["loss"] for r in val], "o-", label="validation")
        for kind, color in (
            ("loss_spike", "tab:orange"),
            ("non_finite", "tab:red"),
            ("overfitting", "tab:purple"),
        ):
            steps = [r["step"] for r in alerts if r.get("alert") == kind]
            for i, step in enumerate(steps):
                ax_loss.axvline(
                    step, color=color, lw=0.8, ls="--", label=kind.replace("_", " ") if i == 0 else None
                )
        ax_loss.set_ylabel("loss (nats/token)")
        ax_loss.legend()
        ax_loss.grid(alpha=0.3)
        ax_lr.plot([r["step"] for r in train], [r["lr"] for r in train], color="tab:green", lw=1)
        ax_lr.set_ylabel("learning rate")
        ax_lr.grid(alpha=0.3)
        norms = [(r["step"], r["grad_norm"]) for r in train if _positive(r.get("grad_norm"))]
        if norms:
            ax_grad.plot(*zip(*norms), lw=1, label="gradient norm (before clipping)")
        ratios = [
            (r["step"], r["update_ratio/total"]) for r in train if _positive(r.get("update_ratio/total"))
        ]
        if ratios:
            ax_grad.plot(*zip(*ratios), "o-", ms=2, lw=1, label="update / weight ratio")
        if norms or ratios:
            ax_grad.set_yscale("log")
            ax_grad.legend()
        ax_grad.grid(alpha=0.3)
        if activations:
            _plot_activations(axes[3], axes[4], activations)
        axes[-1].set_xlabel("step")
        fig.tight_layout()
        out = self.run_dir / "plot.png"
        with atomic_file(out) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        plt.close(fig)
        return out

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def _plot_activations(ax_act, ax_entropy, records: list[dict[str, Any]]) -> None:
    """Activation RMS per layer group (max-abs dotted, same colour) and each block's attention entropy."""
    steps = [r["step"] for r in records]
    groups = [k.removeprefix("act_rms/") for k in records[0] if k.startswith("act_rms/")]
    for i, group in enumerate(groups):
        color = f"C{i % 10}"
        ax_act.plot(
            steps, [r.get(f"act_rms/{group}") for r in records], "o-", ms=2, lw=1, color=color, label=group
        )
        ax_act.plot(steps, [r.get(f"act_max/{group}") for r in records], ":", lw=1, color=color)
    ax_act.set_ylabel("activation RMS (max-abs dotted)")
    ax_act.set_yscale("log")
    ax_act.legend(fontsize=7, ncol=3)
    ax_act.grid(alpha=0.3)
    for key in (k for k in records[0] if k.startswith("attn_entropy/")):
        ax_entropy.plot(steps, [r.get(key) for r in records], "o-", ms=2, lw=1, label=key.split("/", 1)[1])
    ax_entropy.set_ylabel("attention entropy (nats)")
    ax_entropy.legend(fontsize=7, ncol=3)
    ax_entropy.grid(alpha=0.3)
