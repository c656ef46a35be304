"""What the trainer asks of a task: the `Task` protocol.

The idiom is a `typing.Protocol`: the trainer calls these methods and reads these
attributes, and nothing else, so any class that has them is a task (structural typing;
no registration with the trainer). A task may also subclass `Task` explicitly to inherit
the defaults written here (`num_batches`, `epoch_extras`, `report`, `describe`,
`tables`, `finish`). The trainer imports
no task; tasks live in `lstm_jax.tasks`, one per job, each with its data, artefacts,
model and loss.

Batches are pytrees of NumPy (or JAX) arrays with `config.batch_size` rows on axis 0 and a
fixed shape per bucket, so the jitted step compiles once per shape; rows that only fill a
batch up carry weight 0 in the task's sums. Metrics are sums over a batch: `"loss"` (what
training minimises, summed over the real examples, or positions), `"count"` (how many
the sums run over) and any others; the trainer reports each as its sum over an epoch
divided by the count.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol

import jax

from lstm_jax.train.config import TrainConfig

SPLITS = ("train", "val", "test")


class Task(Protocol):
    """A sequence task the trainer can fit, evaluate and checkpoint.

    Attributes:
      config: the run's config (a `TrainConfig` subclass naming this task).
      artefacts: files `prepare` writes into the run directory (a tokenizer, a scaler);
        the trainer removes them with the run on `--overwrite`.
      selection: `(metric, "max" | "min")`: the validation metric whose best epoch's
        parameters are kept in `best/` and evaluated on the test split.
    """

    config: TrainConfig
    artefacts: ClassVar[tuple[str, ...]]
    selection: ClassVar[tuple[str, str]]

    def prepare(self, workdir: Path, splits: Sequence[str] = SPLITS) -> None:
        """Load the data of `splits`. With "train" among them, learn the artefacts from the
        training data (or reload those already in `workdir`) and save them there; without
        it, read them from `workdir`, where a training run left them."""
        ...

    def init_params(self, key: jax.Array) -> Any:
        """The model's initial parameters from `key` (a pure function of it: the
        trainer jits it)."""
        ...

    def metrics(
        self, params: Any, batch: Any, *, train: bool, rng: jax.Array | None
    ) -> dict[str, jax.Array]:
        """Sums over the batch's real examples: `"loss"`, `"count"` and the task's
        metrics. `train=True` applies dropout with `rng`; the trainer differentiates
        `"loss"` and divides the gradient by the count."""
        ...

    def batches(self, split: str, epoch: int = 0) -> list[Any]:
        """The batches of one pass over `split` (prepared), in order; the training split
        is shuffled by `(config.seed, epoch)`, so a resumed run sees the same batches."""
        ...

    def num_batches(self, split: str) -> int:
        """How many batches one pass over `split` has (the same for every epoch)."""
        return len(self.batches(split))

    def epoch_extras(self, batches: list[Any]) -> dict[str, float]:
        """Numbers about one epoch's training batches for its history record (none)."""
        return {}

    def report(self, means: dict[str, float]) -> dict[str, float]:
        """Metrics derived from the per-example means, added for reports (none)."""
        return means

    def describe(self) -> str:
        """One paragraph on the prepared data, for the run's log (none)."""
        return ""

    def tables(self, params: Any) -> str:
        """The task's own evaluation of `params` on the prepared test split, as Markdown,
        for `lstm-jax evaluate` (none)."""
        return ""

    def finish(self, workdir: Path, params: Any) -> dict[str, Any]:
        """After the test evaluation, with the best parameters: the task's own reports
        (written into `workdir`) and what of them goes into `results.json` (nothing)."""
        return {}
