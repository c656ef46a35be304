"""Training throughput of the character-level language model (characters per second): the
shared trainer's jitted step of `charlm_shakespeare` (2 x 512 LSTM, batch 64, window 128)
on random windows of Tiny Shakespeare, after a warm-up, median over the timed steps.

    .venv/bin/python benchmarks/charlm_step.py --devices 2                 # the command's split
    .venv/bin/python benchmarks/charlm_step.py --devices 1 --matmul-dtype bfloat16

`--devices N` splits the CPU into N JAX devices (as `lstm-jax` does with all cores) before
JAX starts; the step is data-parallel over them. Malloc is tuned as `lstm-jax` tunes it
(`host.tune_malloc`) unless `--malloc default`.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from lstm_jax import configs, host, tasks, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--matmul-dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--engine", default="fused")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=None, help="default: the config's (64)")
    parser.add_argument("--text", default=None, help="default: the config's")
    parser.add_argument(
        "--malloc", default="tuned", choices=("tuned", "default"), help="as `lstm-jax` runs"
    )
    args = parser.parse_args()
    if args.malloc == "tuned":
        host.tune_malloc()
    host.configure(args.devices)
    import jax

    config = configs.get("charlm_shakespeare").replace(
        matmul_dtype=args.matmul_dtype, engine=args.engine
    )
    if args.batch_size is not None:
        config = config.replace(batch_size=args.batch_size)
    task = tasks.build(config, args.text)
    with tempfile.TemporaryDirectory() as workdir:
        task.prepare(Path(workdir))
    trainer = train.Trainer(task, task.num_batches("train"))
    batches = task.batches("train")[: args.steps + 2]
    state = trainer.init_state()
    started = time.perf_counter()
    state, sums = trainer.train_step(state, batches[0])
    jax.block_until_ready(sums)
    compile_s = time.perf_counter() - started
    state, sums = trainer.train_step(state, batches[1])
    jax.block_until_ready(sums)
    times = []
    for batch in batches[2:]:
        started = time.perf_counter()
        state, sums = trainer.train_step(state, batch)
        jax.block_until_ready(sums)
        times.append(time.perf_counter() - started)
    step = statistics.median(times)
    chars = config.batch_size * config.window
    print(
        f"devices {len(jax.devices())}, {args.matmul_dtype}, {args.engine}: first step "
        f"{compile_s:.1f} s, step {step * 1e3:.0f} ms (min {min(times) * 1e3:.0f}), "
        f"{chars / step:,.0f} chars/s"
    )


if __name__ == "__main__":
    main()
