"""The fields every task's config shares, their checks, and the run directory's `config.json`.

A task's config is a frozen dataclass that subclasses `TrainConfig` and names its task in
the class variable `task`. Each field carries its help text and its valid range in the
field's metadata (`option`), so one declaration serves the checks here, the `lstm-jax
train` flags (`lstm_jax.cli`) and the docs. A config is saved as `config.json` in its
run directory, with a `"task"` key, so the model can be rebuilt from the directory alone.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from pathlib import Path
from typing import Any, ClassVar, Self

from lstm_jax.recurrence import ENGINES, FUSED_ENGINES, MATMUL_DTYPES, fused_only, fused_runs

CONFIG_FILE = "config.json"
SCHEDULES = ("constant", "cosine", "wsd")


class ConfigError(ValueError):
    """A config that cannot be used: an unknown field, a value out of range, a bad file."""


def option(
    default: Any,
    help: str,
    *,
    low: float | None = None,
    high: float | None = None,
    open_low: bool = False,
    open_high: bool = False,
    choices: tuple[str, ...] | None = None,
) -> Any:
    """A config field: `default`, a `help` line, and the values it accepts (`low`/`high`
    bounds, excluded where `open_low`/`open_high`; or `choices`). None passes the bounds
    of an optional field."""
    spec = dict(
        help=help, low=low, high=high, open_low=open_low, open_high=open_high, choices=choices
    )
    return dataclasses.field(default=default, metadata=spec)


def rate(help: str) -> Any:
    """A config field for a rate or decay in [0, 1), 0 (off) by default (`option`)."""
    return option(0.0, help, low=0.0, high=1.0, open_high=True)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """What the trainer reads; a task's config adds its own fields (data, model).

    `engine` changes how the recurrence computes, not the model or its parameters, so a
    run may resume on another engine (`RUNTIME_FIELDS`).
    """

    task: ClassVar[str] = ""
    RUNTIME_FIELDS: ClassVar[tuple[str, ...]] = ("engine",)

    seed: int = option(0, "root of every random choice: init, splits, shuffles, dropout", low=0)
    epochs: int = option(4, "passes over the training split", low=1)
    batch_size: int = option(64, "examples per batch (split over the devices)", low=1)
    learning_rate: float = option(
        1e-3, "Adam's step size (its peak, with a schedule)", low=0, open_low=True
    )
    schedule: str = option(
        "constant",
        "learning-rate schedule (cosine: to 0 over the run; wsd: held, then linearly to 0 "
        "over the run's last decay_fraction)",
        choices=SCHEDULES,
    )
    decay_fraction: float = option(
        0.2,
        "the share of the run (after any warm-up) that wsd decays over",
        low=0,
        high=1,
        open_low=True,
    )
    warmup_epochs: float = option(
        0.0, "epochs of linear warm-up from 0 to the learning rate, then the schedule", low=0
    )
    clip_norm: float = option(1.0, "global gradient-norm clip (0: none)", low=0)
    weight_decay: float = option(
        0.0, "decoupled weight decay (AdamW) on the weight matrices (0: plain Adam)", low=0
    )
    ema_decay: float = rate(
        "evaluate and keep an exponential moving average of the weights (0: off)"
    )
    matmul_dtype: str = option(
        "float32", "input dtype of the recurrent matmuls (fused engines)", choices=MATMUL_DTYPES
    )
    engine: str = option(
        "fused", "how the recurrence computes (lstm_jax.recurrence)", choices=ENGINES
    )

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for field in dataclasses.fields(self):
            value = _check_value(field, hints[field.name], getattr(self, field.name))
            object.__setattr__(self, field.name, value)
        cell = getattr(self, "cell", "lstm")  # the tasks that offer other cells have a field
        if fused_only(self.matmul_dtype) and not fused_runs(cell, self.engine):
            raise ConfigError(
                f"matmul_dtype {self.matmul_dtype!r} needs the 'lstm' cell on a fused engine "
                f"({' or '.join(map(repr, FUSED_ENGINES))}), not cell {cell!r} on engine "
                f"{self.engine!r}; set matmul_dtype to 'float32' with it (--matmul-dtype float32)"
            )
        if self.warmup_epochs >= self.epochs:
            raise ConfigError(
                f"warmup_epochs ({self.warmup_epochs}) must be below epochs ({self.epochs}): "
                "the warm-up is part of the run"
            )

    def replace(self, **changes: Any) -> Self:
        """A copy with `changes`; an unknown name raises instead of passing silently."""
        return type(self).from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        """The fields as a dict, with the task's name under `"task"`."""
        return {"task": self.task, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, source: str = "the config") -> Self:
        """A config from `values` (a `"task"` key, if any, must name this class's task);
        a misspelt or foreign key is an error that names it."""
        values = dict(values)
        task = values.pop("task", cls.task)
        if task != cls.task:
            raise ConfigError(f"{source} is a {task!r} config, not a {cls.task!r} one")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise ConfigError(
                f"{source}: unknown field(s) {unknown} for the {cls.task!r} task; "
                f"its fields are {names}"
            )
        return cls(**values)

    def save(self, workdir: str | Path) -> None:
        """Write `config.json` into `workdir`."""
        (Path(workdir) / CONFIG_FILE).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


def _check_value(field: dataclasses.Field, kind: Any, value: Any) -> Any:
    """`value` (an int given for a float field made a float); `ConfigError` naming the
    field when it is not of the field's type and range."""
    spec, name = field.metadata, field.name
    optional = type(None) in typing.get_args(kind)
    base = next((t for t in typing.get_args(kind) if t is not type(None)), kind)
    if value is None and optional:
        return value
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, base) or (base is int and isinstance(value, bool)):
        raise ConfigError(f"{name} must be {base.__name__}, got {value!r}")
    if base is float and not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    if spec.get("choices") and value not in spec["choices"]:
        raise ConfigError(f"{name} must be one of {list(spec['choices'])}, got {value!r}")
    low, high = spec.get("low"), spec.get("high")
    below = low is not None and (value <= low if spec["open_low"] else value < low)
    above = high is not None and (value >= high if spec["open_high"] else value > high)
    if below or above:
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        left = "(" if spec.get("open_low") or low is None else "["
        right = ")" if spec.get("open_high") or high is None else "]"
        raise ConfigError(f"{name} must lie in {left}{lo}, {hi}{right}, got {value!r}")
    return value


def read_config_json(workdir: str | Path) -> dict[str, Any]:
    """The dict saved in `workdir/config.json`, with a `"task"` key; an error that names
    the file and what is wrong with it otherwise."""
    path = Path(workdir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: {workdir} is not a training directory; "
            "train one with `lstm-jax train --workdir DIR`"
        )
    try:
        values = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(
            f"{path} is not valid JSON ({error}); the run directory is damaged: "
            "train again with --overwrite"
        ) from None
    if not isinstance(values, dict) or not isinstance(values.get("task"), str):
        raise ConfigError(
            f'{path} is not an lstm_jax config (a JSON object with a "task" field); '
            "was this directory written by another program?"
        )
    return values
