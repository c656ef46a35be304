"""A run's history: one record per epoch in `history.json`, its curves in `history.png`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HISTORY_FILE = "history.json"
PLOT_FILE = "history.png"


def read(workdir: Path) -> list[dict[str, Any]]:
    path = Path(workdir) / HISTORY_FILE
    return json.loads(path.read_text()) if path.exists() else []


def write(workdir: Path, history: Sequence[dict[str, Any]]) -> None:
    """Save the records and redraw the plot."""
    (Path(workdir) / HISTORY_FILE).write_text(json.dumps(list(history), indent=2) + "\n")
    plot(history, Path(workdir) / PLOT_FILE)


def metric_names(record: dict[str, Any]) -> list[str]:
    """The metrics a record holds for both splits (`train_x` and `val_x`), in its order."""
    return [
        k[len("train_") :] for k in record if k.startswith("train_") and f"val_{k[6:]}" in record
    ]


def plot(history: Sequence[dict[str, Any]], path: Path) -> None:
    """Each metric per epoch, train and validation, one panel each (no pyplot state)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    epochs = [h["epoch"] for h in history]
    names = metric_names(history[0])
    fig = Figure(figsize=(5 * len(names), 4))
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    for ax, name in zip(axes, names, strict=True):
        ax.plot(epochs, [h[f"train_{name}"] for h in history], "o-", label="train")
        ax.plot(epochs, [h[f"val_{name}"] for h in history], "o-", label="validation")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def format_record(record: dict[str, Any]) -> str:
    """One line for the log: `epoch 3: train loss 0.30 accuracy 0.88 | val ... | 25.4 s`."""
    names = metric_names(record)
    parts = [
        f"{split} " + " ".join(f"{n} {record[f'{prefix}_{n}']:.4f}" for n in names)
        for split, prefix in (("train", "train"), ("val", "val"))
    ]
    known = {"epoch", "step", "seconds", *(f"{p}_{n}" for p in ("train", "val") for n in names)}
    extras = "".join(f", {k} {v:.4g}" for k, v in record.items() if k not in known)
    return f"epoch {record['epoch']}: {' | '.join(parts)} | {record['seconds']:.1f} s{extras}"
