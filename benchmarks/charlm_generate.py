"""Generation speed of a trained language-model run (characters per second): `Sampler`
drawing `--length` characters after a prompt, for one stream and for a batch, after a
first call that compiles; median of `--repeats` calls.

    .venv/bin/python -m benchmarks.charlm_generate --workdir runs/charlm
    .venv/bin/python -m benchmarks.charlm_generate --workdir runs/charlm --batches 1 --torch

Characters per second count every sample's characters (a batch of 64 draws 64 per step).
`--torch` adds the peer: the run's weights in PyTorch's `nn.LSTM` (denormals flushed, a
thread per core), sampling in the Python loop PyTorch users write, carrying the state,
with its oneDNN kernels (the default) and without (`torch-no-onednn`: on the Intel Xeon
a one-character step is several times faster without them); before timing, both sides
must write the same greedy text after the prompt.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable

import jax
import numpy as np

from lstm_jax import host

PROMPT = "ROMEO:"
CHECK_LENGTH = 200  # greedy characters both sides must agree on


def _timed(generate: Callable[[int, int], object], batch: int, length: int, repeats: int) -> str:
    started = time.perf_counter()
    generate(batch, 0)
    first = time.perf_counter() - started
    times = []
    for seed in range(1, repeats + 1):
        started = time.perf_counter()
        generate(batch, seed)
        times.append(time.perf_counter() - started)
    t = statistics.median(times)
    return (
        f"batch {batch}: {length} characters each in {t * 1e3:.0f} ms (first call "
        f"{first:.1f} s): {batch * length / t:,.0f} chars/s"
    )


def torch_generator(sampler, prompt: str, length: int) -> Callable[..., list[str]]:
    """`generate(batch, seed, temperature=0.8, steps=length, onednn=True)` with the
    sampler's weights in PyTorch: prime on `prompt`, then one `nn.LSTM` step and one draw
    per character, with or without PyTorch's oneDNN kernels."""
    import torch

    from benchmarks import harness

    params = jax.tree.map(np.array, sampler.params)  # writable copies for torch
    layers = sorted(k for k in params if k.startswith("layer_"))
    vocab, embed = params["embed"]["embedding"].shape
    widths = tuple(params[k]["recurrent_kernel"].shape[0] for k in layers)
    spec = dict(kind="charlm", vocab=vocab, embed=embed, widths=widths)
    harness.torch_settings(torch, True, layout=None, autocast=False)
    model = harness.torch_model(torch, spec, layout="packed").eval()
    harness.load_torch(model, params, spec, torch, "packed")
    primer = torch.from_numpy(sampler.vocab.encode(prompt, where="the prompt").astype(np.int64))

    @torch.no_grad()
    def generate(
        batch: int, seed: int, temperature: float = 0.8, steps: int = length, onednn: bool = True
    ) -> list[str]:
        before = torch.backends.mkldnn.enabled
        torch.backends.mkldnn.enabled = onednn
        try:
            return draw(batch, seed, temperature, steps)
        finally:
            torch.backends.mkldnn.enabled = before

    def draw(batch: int, seed: int, temperature: float, steps: int) -> list[str]:
        torch.manual_seed(seed)
        out, state = model.lstm(model.embedding(primer[None].expand(batch, -1)))
        logits, drawn = model.head(out[:, -1]), []
        for _ in range(steps):
            if temperature == 0:
                ids = logits.argmax(-1, keepdim=True)
            else:
                ids = torch.multinomial(torch.softmax(logits / temperature, -1), 1)
            drawn.append(ids)
            out, state = model.lstm(model.embedding(ids), state)
            logits = model.head(out[:, -1])
        rows = torch.cat(drawn, 1).numpy()
        return [sampler.vocab.decode(row) for row in rows]

    return generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--length", type=int, default=2000)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--torch", action="store_true", help="time PyTorch on the same weights")
    args = parser.parse_args()
    host.configure(args.devices)
    from lstm_jax.tasks.charlm import Sampler

    sampler = Sampler.from_run(args.workdir)

    def ours(batch: int, seed: int) -> list[str]:
        return sampler.generate(PROMPT, args.length, temperature=0.8, num_samples=batch, seed=seed)

    peers = {"lstm_jax": ours}
    if args.torch:
        greedy = sampler.generate(PROMPT, CHECK_LENGTH, temperature=0)[0]
        torch_model = torch_generator(sampler, PROMPT, args.length)  # built once for both rows
        for name, onednn in (("torch", True), ("torch-no-onednn", False)):
            torch_generate = functools.partial(torch_model, onednn=onednn)
            theirs = torch_generate(1, 0, temperature=0, steps=CHECK_LENGTH)[0]
            if greedy != theirs:
                raise SystemExit(f"{name}'s greedy text differs:\n{greedy!r}\n{theirs!r}")
            peers[name] = torch_generate
    for name, generate in peers.items():
        for batch in args.batches:
            print(f"{name} {_timed(generate, batch, args.length, args.repeats)}")


if __name__ == "__main__":
    main()
