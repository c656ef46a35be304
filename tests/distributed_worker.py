"""One process of a test run of the toy task, alone or as one of several (`test_distributed`).

    python tests/distributed_worker.py WORKDIR OUT.npz --processes 2 --process-id 0 \\
        --port 12345 --cpu-devices 1 [--resume] [--die-at STEP]

It trains with `lstm_jax.train.fit` and, on process 0, writes the mean loss of every step
it ran and the final parameters (the latest checkpoint's) to OUT.npz. `--die-at STEP`
kills this process (SIGKILL) right after that step, as a crash would; `--interrupt-at
STEP` sends it SIGINT there, as Ctrl-C would.
"""

from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path

import jax
import numpy as np
from toy_task import ToyConfig, ToyTask

from lstm_jax import host, train
from lstm_jax.train import checkpoints

EPOCHS = 3  # 6 steps each


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("workdir")
    parser.add_argument("out")
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--process-id", type=int, default=0)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cpu-devices", type=int, default=1)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--die-at", type=int, default=None)
    parser.add_argument("--interrupt-at", type=int, default=None)
    args = parser.parse_args()

    host.configure(args.cpu_devices)
    if args.processes > 1:
        host.start_distributed(
            f"127.0.0.1:{args.port}", args.processes, args.process_id, heartbeat_timeout_s=10
        )
    config = ToyConfig(learning_rate=1e-2, epochs=EPOCHS)
    losses: list[float] = []

    def on_step(step: int, sums: dict) -> None:
        losses.append(float(sums["loss"]) / float(sums["count"]))
        if step == args.die_at:
            os.kill(os.getpid(), signal.SIGKILL)
        if step == args.interrupt_at:
            os.kill(os.getpid(), signal.SIGINT)

    task = ToyTask(config)
    try:
        train.fit(task, args.workdir, resume=args.resume, progress=False, on_step=on_step)
    except train.Interrupted as stop:
        print(f"interrupted at step {stop.step}")
        raise SystemExit(130) from None
    template = train.Trainer(task, task.num_batches("train")).init_state()
    state, _ = checkpoints.restore_state(checkpoints.state_manager(args.workdir), template)
    if jax.process_index() == 0:
        leaves = [np.asarray(leaf) for leaf in jax.tree.leaves(jax.device_get(state.params))]
        np.savez(Path(args.out), *leaves, losses=np.array(losses), step=int(state.step))


if __name__ == "__main__":
    main()
