"""Training throughput over processes and devices: the shared trainer's step of the IMDB
BiLSTM (`SentimentTask`, batch 64, random full-length reviews of T tokens) as one process
with one device, one process with two, and two processes with one each (`jax.distributed`
on the loopback interface, JAX's gloo CPU collectives). Median examples/s over the timed
steps; the first step's loss must agree across the layouts before a number is printed.

    .venv/bin/python benchmarks/distributed.py                       # 1x1, 1x2, 2x1
    .venv/bin/python benchmarks/distributed.py --layouts 1x2,2x1 --length 256 --steps 20

Each layout runs in fresh processes (`PxD`: P processes of D devices each).
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import time

LOSS_RTOL = 1e-5


def _worker(args: argparse.Namespace) -> None:
    from lstm_jax import host

    host.configure(args.devices)
    if args.processes > 1:
        host.start_distributed(f"127.0.0.1:{args.port}", args.processes, args.process_id)
    import jax
    import numpy as np

    from benchmarks.harness import random_batch
    from lstm_jax.tasks.sentiment import SentimentConfig, SentimentTask
    from lstm_jax.tasks.sentiment.data import Batch
    from lstm_jax.train import Trainer

    config = SentimentConfig(model="bilstm", batch_size=args.batch, clip_norm=0.0)
    trainer = Trainer(SentimentTask(config))
    state = trainer.init_state()
    data = random_batch(args.batch, args.length)
    batch = Batch(data["tokens"], data["lengths"], data["labels"], np.ones(args.batch, np.float32))
    first = None
    for _ in range(args.warmup):
        state, sums = trainer.train_step(state, batch)
        jax.block_until_ready(sums)
        first = float(sums["loss"]) / float(sums["count"]) if first is None else first
    times = []
    for _ in range(args.steps):
        started = time.perf_counter()
        state, sums = trainer.train_step(state, batch)
        jax.block_until_ready(sums)
        times.append(time.perf_counter() - started)
    if jax.process_index() == 0:
        step = statistics.median(times)
        print(json.dumps({"first_loss": first, "step_ms": step * 1e3, "examples_per_s":
                          args.batch / step, "mesh_devices": trainer.mesh.size}))  # fmt: skip


def _run(layout: str, args: argparse.Namespace) -> dict:
    processes, devices = (int(n) for n in layout.split("x"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [
        sys.executable, "-m", "benchmarks.distributed", "--worker",
        "--processes", str(processes), "--devices", str(devices), "--port", str(port),
        "--length", str(args.length), "--batch", str(args.batch),
        "--steps", str(args.steps), "--warmup", str(args.warmup),
    ]  # fmt: skip
    procs = [
        subprocess.Popen([*command, "--process-id", str(i)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for i in range(processes)
    ]  # fmt: skip
    outs = [p.communicate() for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        if p.returncode:
            raise RuntimeError(f"layout {layout}: a worker failed:\n{err[-2000:]}")
    return json.loads(outs[0][0].strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layouts", default="1x1,1x2,2x1", help="PxD: processes x devices")
    parser.add_argument("--length", type=int, default=128, help="tokens per review (T)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--processes", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--process-id", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--devices", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return _worker(args)
    from benchmarks.harness import machine_info

    print(f"{machine_info()['cpu']}; BiLSTM, batch {args.batch}, T {args.length}, float32")
    rows = {layout: _run(layout, args) for layout in args.layouts.split(",")}
    reference = next(iter(rows.values()))["first_loss"]
    for layout, row in rows.items():
        if abs(row["first_loss"] - reference) > LOSS_RTOL * abs(reference):
            raise SystemExit(f"layout {layout}: first loss {row['first_loss']} != {reference}")
    print("| processes x devices | step ms | examples/s |\n|---|---|---|")
    for layout, row in rows.items():
        print(f"| {layout} | {row['step_ms']:.1f} | {row['examples_per_s']:.0f} |")


if __name__ == "__main__":
    main()
