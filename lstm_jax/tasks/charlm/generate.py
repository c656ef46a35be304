"""Sampling text from a trained language model: the prompt primes the state, then one jitted
`lax.scan` draws each next character from the last (no Python loop per character).

`Sampler.stream` yields the text in chunks (one scan each) for interactive use;
`Sampler.generate` is the whole length at once. Step `t` of a sample draws with the key
`fold_in(key(seed), t)`, so both give the same text for the same seed, however the
length is cut into chunks. Temperature 0 is greedy decoding (the most likely character).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lstm_jax.models import CharLM
from lstm_jax.tasks.errors import DataError

CHUNK = 256  # characters per scan in `stream`


def _filtered(logits_BV: jax.Array, top_k: int | None, top_p: float | None) -> jax.Array:
    """Logits outside the `top_k` largest, or outside the smallest set whose probability
    reaches `top_p` (nucleus sampling), set to -inf; ties at a cut are kept."""
    if top_k is not None and top_k < logits_BV.shape[-1]:
        kth = jax.lax.top_k(logits_BV, top_k)[0][..., -1:]
        logits_BV = jnp.where(logits_BV < kth, -jnp.inf, logits_BV)
    if top_p is not None and top_p < 1.0:
        ranked = jnp.sort(logits_BV, axis=-1)[..., ::-1]
        probs = jax.nn.softmax(ranked, axis=-1)
        before = jnp.cumsum(probs, axis=-1) - probs  # probability of the better-ranked ones
        cutoff = jnp.min(jnp.where(before < top_p, ranked, jnp.inf), axis=-1, keepdims=True)
        logits_BV = jnp.where(logits_BV < cutoff, -jnp.inf, logits_BV)
    return logits_BV


@functools.partial(jax.jit, static_argnames=("model", "steps", "greedy", "top_k", "top_p"))
def _sample(
    model: CharLM,
    params: Any,
    carries: tuple,
    ids_B: jax.Array,
    key: jax.Array,
    offset: jax.Array,
    temperature: jax.Array,
    *,
    steps: int,
    greedy: bool,
    top_k: int | None,
    top_p: float | None,
) -> tuple[tuple, jax.Array, jax.Array]:
    """`steps` characters after `ids_B`, from `carries`: `(carries, last ids, <int32>[B,
    steps])`."""

    def body(state, t):
        carries, ids = state
        logits, carries = model.apply({"params": params}, carries, ids, method=CharLM.step)
        if greedy:
            ids = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        else:
            logits = _filtered(logits / temperature, top_k, top_p)
            keys = jax.random.split(jax.random.fold_in(key, t), ids.shape[0])
            ids = jax.vmap(jax.random.categorical)(keys, logits).astype(jnp.int32)
        return (carries, ids), ids

    (carries, ids), out_TB = jax.lax.scan(body, (carries, ids_B), offset + jnp.arange(steps))
    return carries, ids, out_TB.T


@functools.partial(jax.jit, static_argnames=("model",))
def _prime(model: CharLM, params: Any, ids_1P: jax.Array) -> tuple:
    """The layers' carries after reading `ids_1P` from a zero state."""
    _, carries = model.apply({"params": params}, ids_1P, carries=model.zero_carries(1))
    return carries


class Sampler:
    """Text from a prepared `CharLMTask`'s model and `params` (see the module docstring)."""

    def __init__(self, task: Any, params: Any):
        self.vocab = task.vocab
        self.model = task.carried_model
        self.params = params

    @classmethod
    def from_run(cls, workdir: str | Path) -> Sampler:
        """The sampler of a trained run (its best parameters); the text is not read."""
        from lstm_jax import tasks, train

        task = tasks.load(workdir)
        if task.config.task != "charlm":
            raise DataError(f"{workdir} holds a {task.config.task!r} run, not a language model")
        task.prepare(Path(workdir), ())
        return cls(task, train.load_params(task, workdir))

    def stream(
        self,
        prompt: str,
        length: int,
        *,
        temperature: float = 0.8,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int = 0,
        num_samples: int = 1,
        chunk: int = CHUNK,
    ) -> Iterator[list[str]]:
        """Yield the `num_samples` continuations of `prompt`, `chunk` characters at a time
        (one string per sample each time), `length` characters in all."""
        if not prompt:
            raise DataError("the prompt is empty: give at least one character to start from")
        if temperature < 0 or (top_k is not None and top_k < 1):
            raise ValueError(f"need temperature >= 0 and top_k >= 1, got {temperature}, {top_k}")
        if top_p is not None and not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        ids = self.vocab.encode(prompt, where="the prompt")
        carries = self.model.zero_carries(1)
        if len(ids) > 1:
            carries = _prime(self.model, self.params, jnp.asarray(ids[None, :-1]))
        carries = jax.tree.map(lambda a: jnp.repeat(a, num_samples, axis=0), carries)
        last = jnp.full((num_samples,), ids[-1], jnp.int32)
        key, done = jax.random.key(seed), 0
        options = dict(greedy=temperature == 0, top_k=top_k, top_p=top_p)
        while done < length:
            steps = min(chunk, length - done)
            carries, last, out = _sample(
                self.model,
                self.params,
                carries,
                last,
                key,
                jnp.int32(done),
                jnp.float32(temperature or 1.0),
                steps=steps,
                **options,
            )
            done += steps
            yield [self.vocab.decode(row) for row in np.asarray(out)]

    def generate(self, prompt: str, length: int, **options: Any) -> list[str]:
        """The `num_samples` continuations of `prompt`, `length` characters each."""
        pieces = list(self.stream(prompt, length, chunk=max(length, 1), **options))
        if not pieces:
            return [""] * options.get("num_samples", 1)
        return ["".join(parts) for parts in zip(*pieces, strict=True)]
