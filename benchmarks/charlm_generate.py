"""Generation speed of a trained language-model run (characters per second): `Sampler`
drawing `--length` characters after a prompt, for one stream and for a batch, after a
first call that compiles; median of `--repeats` calls.

    .venv/bin/python benchmarks/charlm_generate.py --workdir runs/charlm
    .venv/bin/python benchmarks/charlm_generate.py --workdir runs/charlm --batches 1 64 --devices 1

Characters per second count every sample's characters (a batch of 64 draws 64 per step).
"""

from __future__ import annotations

import argparse
import statistics
import time

from lstm_jax import host


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--length", type=int, default=2000)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--devices", type=int, default=1)
    args = parser.parse_args()
    host.configure(args.devices)
    from lstm_jax.tasks.charlm import Sampler

    sampler = Sampler.from_run(args.workdir)
    for batch in args.batches:
        options = dict(temperature=0.8, num_samples=batch)
        started = time.perf_counter()
        sampler.generate("ROMEO:", args.length, seed=0, **options)
        first = time.perf_counter() - started
        times = []
        for seed in range(1, args.repeats + 1):
            started = time.perf_counter()
            sampler.generate("ROMEO:", args.length, seed=seed, **options)
            times.append(time.perf_counter() - started)
        t = statistics.median(times)
        print(
            f"batch {batch}: {args.length} characters each in {t * 1e3:.0f} ms (first call "
            f"{first:.1f} s): {batch * args.length / t:,.0f} chars/s"
        )


if __name__ == "__main__":
    main()
