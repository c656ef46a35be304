"""Train the forecasting configs over several seeds and print their test MAE against the
baselines, as docs/forecasting.md reports it.

    .venv/bin/python scripts/forecast_report.py                        # all four, seeds 0-2
    .venv/bin/python scripts/forecast_report.py --configs forecast_pm25 --seeds 0
    .venv/bin/python scripts/forecast_report.py --set horizon=1         # another horizon

Runs go to `--out` (default runs/forecast_report/<config>-<seed>); each run's comparison
with the baselines is its `comparison.json`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from lstm_jax import configs, host, tasks, train

CONFIGS = ("forecast_pm25", "forecast_min_temp", "forecast_sunspots", "forecast_synthetic")


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=configs.names())
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", nargs="*", default=[], help="config changes, name=value")
    parser.add_argument("--out", default="runs/forecast_report")
    args = parser.parse_args()
    changes = dict(item.split("=", 1) for item in args.set)
    changes = {k: _value(v) for k, v in changes.items()}
    host.configure()
    for name in args.configs:
        rows: dict[str, list[float]] = {}
        seconds = []
        for seed in args.seeds:
            config = configs.get(name).replace(seed=seed, **changes)
            workdir = Path(args.out) / f"{name}-{seed}"
            started = time.perf_counter()
            train.fit(tasks.build(config), workdir, overwrite=True, progress=False)
            seconds.append(time.perf_counter() - started)
            comparison = json.loads((workdir / "comparison.json").read_text())
            for model, row in comparison["models"].items():
                rows.setdefault(model, []).append(row["mae"])
        horizon = configs.get(name).replace(**changes).horizon
        print(
            f"\n{name} (horizon {horizon}), test MAE, seeds {args.seeds}; "
            f"{min(seconds):.0f}-{max(seconds):.0f} s per run (training and baselines)"
        )
        print("| model | " + " | ".join(f"seed {s}" for s in args.seeds) + " | mean |")
        print("|---|" + "---:|" * (len(args.seeds) + 1))
        for model, maes in sorted(rows.items(), key=lambda item: statistics.mean(item[1])):
            cells = " | ".join(f"{m:.3f}" for m in maes)
            print(f"| {model} | {cells} | {statistics.mean(maes):.3f} |", flush=True)


if __name__ == "__main__":
    main()
