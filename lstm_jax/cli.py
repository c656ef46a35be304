"""`lstm-jax`: the command line. Each subcommand parses its arguments and calls the library.

`train` takes a config by name (`--config`, `lstm_jax.configs`) and one flag per config
field of every task (`--epochs`, `--max-len`, ...), generated from the fields' declarations
(`lstm_jax.train.config.option`), so a value out of range is refused as the command is
parsed. A flag that is not a field of the chosen task's config is an error.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import signal
import sys
import traceback
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lstm_jax import __version__, configs, host, tasks
from lstm_jax.cells import CELLS
from lstm_jax.models import HEADS, KINDS
from lstm_jax.tasks.errors import written_for_users
from lstm_jax.train import ConfigError, TrainConfig
from lstm_jax.train.config import CONFIG_FILE

PAD_DEMO = 1000  # extra pad tokens in `predict --show-padding`
ECHO_CHARS = 70  # characters of a review `predict` echoes


# ----------------------------------------------------------------------------------
# Values checked as they are parsed.
# ----------------------------------------------------------------------------------
def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _optional(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """`parse`, or None for the word "none" (an optional field's unset value)."""

    def parse_or_none(text: str) -> Any:
        return None if text.strip().lower() == "none" else parse(text)

    return parse_or_none


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


# ----------------------------------------------------------------------------------
# `train`'s config flags, one per field of every task's config.
# ----------------------------------------------------------------------------------
def _config_fields() -> dict[str, tuple[dataclasses.Field, Any, list[str]]]:
    """Each config field of every task: (field, its type, the tasks that have it)."""
    found: dict[str, tuple[dataclasses.Field, Any, list[str]]] = {}
    for name, (config_class, _) in tasks.TASKS.items():
        hints = typing.get_type_hints(config_class)
        for field in dataclasses.fields(config_class):
            entry = found.setdefault(field.name, (field, hints[field.name], []))
            entry[2].append(name)
    return found


def _shown_config(argv: Sequence[str] | None) -> tuple[str, TrainConfig]:
    """The experiment whose values `train --help` shows: the `--config` in `argv` when it
    names one, the default experiment otherwise."""
    argv = list(argv or [])
    name = None
    for i, flag in enumerate(argv):
        if flag == "--config" and i + 1 < len(argv):
            name = argv[i + 1]
        elif flag.startswith("--config="):
            name = flag.partition("=")[2]
    name = name if name in configs.names() else configs.DEFAULT
    return name, configs.get(name)


def _add_config_flags(parser: argparse.ArgumentParser, shown: tuple[str, TrainConfig]) -> None:
    """A flag per config field of every task. Its help gives the value in the experiment
    `shown` (`--config NAME --help` shows NAME's), or the field's own default, with the
    tasks that have it, where that experiment's task has no such field."""
    name_shown, config_shown = shown
    group = parser.add_argument_group(
        "config fields",
        f"override the config's value; the values shown are {name_shown}'s (give --config "
        "NAME with --help for another's); see lstm_jax.configs and each task",
    )
    shared = {f.name for f in dataclasses.fields(TrainConfig)}
    own = {f.name for f in dataclasses.fields(config_shown)}
    for name, (field, kind, owners) in _config_fields().items():
        optional = type(None) in typing.get_args(kind)
        base = next((t for t in typing.get_args(kind) if t is not type(None)), kind)
        where = "" if name in shared else f" [{', '.join(owners)}]"
        spec = field.metadata
        kwargs: dict[str, Any] = dict(default=argparse.SUPPRESS, dest=f"field_{name}")
        if base is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            parse = {int: _int, float: _finite, str: str}[base]
            kwargs["type"] = _optional(parse) if optional else parse
            if spec.get("choices"):
                kwargs["choices"] = [*spec["choices"], *([None] if optional else [])]
                kwargs["metavar"] = "{" + ",".join(spec["choices"]) + "}"
        if name in own:
            value = f"{name_shown}: {getattr(config_shown, name)!r}"
        else:
            default = field.default if field.default is not dataclasses.MISSING else None
            value = f"default {default!r}"
        help_text = f"{spec.get('help', '')} ({value}){where}"
        group.add_argument(f"--{name.replace('_', '-')}", help=help_text, **kwargs)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields given as flags (an optional field's "none" included)."""
    return {k[len("field_") :]: v for k, v in vars(args).items() if k.startswith("field_")}


def _train_config(args: argparse.Namespace, parser: argparse.ArgumentParser) -> TrainConfig:
    """The config `train` runs: `--config` (or, on `--resume` without it, the saved one)
    with the flags given; a flag foreign to the task, or a bad value, is a usage error."""
    saved = args.resume and args.config is None and (Path(args.workdir) / CONFIG_FILE).exists()
    try:
        if saved:
            config = tasks.load_config(args.workdir)
        else:
            config = configs.get(args.config or configs.DEFAULT)
        changes = _overrides(args)
        names = {f.name for f in dataclasses.fields(config)}
        foreign = sorted(set(changes) - names)
        if foreign:
            flags = ", ".join("--" + n.replace("_", "-") for n in foreign)
            parser.error(f"{flags} is not a field of the {config.task!r} task's config")
        return config.replace(**changes)
    except ConfigError as error:
        parser.error(str(error))


# ----------------------------------------------------------------------------------
# The subcommands.
# ----------------------------------------------------------------------------------
def _train(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from lstm_jax import train

    config = _train_config(args, parser)
    task = tasks.build(config, args.data)
    try:
        results = train.fit(
            task,
            args.workdir,
            resume=args.resume,
            overwrite=args.overwrite,
            progress=not args.quiet,
        )
    except train.Interrupted as stop:
        data = f" --data {args.data}" if args.data else ""
        print(
            f"interrupted at step {stop.step}; checkpoint saved in {stop.workdir}. "
            f"Continue with: lstm-jax train --workdir {stop.workdir} --resume{data}",
            file=sys.stderr,
        )
        return 130
    print(json.dumps(results, indent=2))
    return 0


def _evaluate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from lstm_jax import train

    task = tasks.load(args.workdir, args.data)
    task.prepare(Path(args.workdir), ("test",))
    params = train.load_params(task, args.workdir)  # once, for the metrics and the tables
    print(json.dumps(train.evaluate(task, args.workdir, params), indent=2))
    tables = task.tables(params)
    if tables:
        print(f"\n{tables}")
    return 0


def _forecast(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from lstm_jax import train

    task = tasks.load(args.workdir, args.data)
    if task.config.task != "forecasting":
        raise ConfigError(
            f"{args.workdir} holds a {task.config.task!r} run; forecast reads forecasting runs"
        )
    task.prepare(Path(args.workdir), ("test",))
    params = train.load_params(task, args.workdir)
    times, values = task.forecast(params, args.horizon)
    unit = task.config.target or "value"
    print(f"| time | {unit} |\n|---|---:|")
    for time, value in zip(times, values, strict=True):
        print(f"| {str(time)[:19]} | {value:.3f} |")
    out = Path(args.out or Path(args.workdir) / "forecast_future.png")
    task.plot(params, out, future=(times, values))
    print(f"\nwrote {out}")
    return 0


def _generate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from lstm_jax.tasks.charlm import Sampler

    sampler = Sampler.from_run(args.workdir)
    options = dict(
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        num_samples=args.num_samples,
    )
    if args.num_samples == 1:  # one stream, printed as it is drawn
        for i, (piece,) in enumerate(sampler.stream(args.prompt, args.length, **options)):
            print(("" if i else args.prompt) + piece, end="", flush=True)  # once it is valid
        print()
        return 0
    for i, sample in enumerate(sampler.generate(args.prompt, args.length, **options)):
        print(f"--- sample {i + 1} ---\n{args.prompt}{sample}")
    return 0


def _probability(text: str) -> float:
    value = _finite(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {value}")
    return value


def _non_negative(text: str) -> float:
    value = _finite(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def _echo(text: str) -> str:
    """`text` on one line, shortened to `ECHO_CHARS` characters for display."""
    flat = " ".join(text.split())
    return flat if len(flat) <= ECHO_CHARS else flat[: ECHO_CHARS - 3] + "..."


def _predict(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from lstm_jax.tasks.sentiment import Predictor

    task = tasks.load_config(args.workdir).task
    if task != "sentiment":
        raise ConfigError(f"{args.workdir} holds a {task!r} run; predict scores sentiment runs")
    predictor = Predictor(args.workdir)
    for text in args.texts:
        p = predictor.predict(text)
        print(f"{p.probability:.4f}  {p.label:<8}  {_echo(text)}")
        if args.show_padding:
            n = p.tokens
            bare = predictor.predict(text, width=n).probability
            padded = predictor.predict(text, width=n + PAD_DEMO).probability
            print(f"        without padding (T={n}): {bare:.4f}")
            print(f"        with {PAD_DEMO} pad tokens (T={n + PAD_DEMO}): {padded:.4f}")
    return 0


def _summary(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from lstm_jax.models import SentimentClassifier
    from lstm_jax.summary import summary

    print(summary(SentimentClassifier(args.vocab_size, args.model, head=args.head)))
    return 0


def _gradient_flow(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from lstm_jax import study

    results = study.run_gradient_flow(
        args.out,
        time=args.time,
        steps=args.steps,
        seeds=args.seeds,
        hidden=args.hidden,
        batch=args.batch,
        lr=args.lr,
        cells=args.cells,
        quick=args.quick,
    )
    print(study.format_gradient_flow(results))
    print(f"wrote {args.out}/gradient_flow.png and gradient_flow.json ({results['seconds']} s)")
    return 0


def _memory_task(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from lstm_jax import study

    results = study.run_memory_table(
        args.out,
        times=args.times,
        cells=args.cells,
        steps=args.steps,
        batch=args.batch,
        hidden=args.hidden,
        seed=args.seed,
        lr=args.lr,
        quick=args.quick,
    )
    print(study.format_memory_table(results))
    print(f"wrote {args.out}/memory_task.json")
    return 0


def _study_options(p: argparse.ArgumentParser, out: str) -> None:
    p.add_argument("--out", default=out, help="output directory")
    p.add_argument("--steps", type=_positive_int, default=500, help="training steps per run")
    p.add_argument("--hidden", type=_positive_int, default=32)
    p.add_argument("--batch", type=_positive_int, default=64)
    p.add_argument("--lr", type=_finite, default=1e-2)
    p.add_argument("--cells", nargs="+", default=list(CELLS), choices=list(CELLS))
    p.add_argument("--quick", action="store_true", help="tiny settings, seconds")


def _distributed_flags(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group(
        "several processes", "one run over many processes or hosts (docs/distributed.md)"
    )
    group.add_argument(
        "--coordinator",
        default=None,
        help=f"HOST:PORT of process 0 (default ${host.ENV_COORDINATOR})",
    )
    group.add_argument(
        "--num-processes",
        type=_positive_int,
        default=None,
        help=f"processes in the run (default ${host.ENV_NUM_PROCESSES})",
    )
    group.add_argument(
        "--process-id",
        type=_int,
        default=None,
        help=f"this process's id, 0 to N-1 (default ${host.ENV_PROCESS_ID})",
    )
    group.add_argument(
        "--distributed",
        action="store_true",
        help="let JAX detect the processes (SLURM, Open MPI, Cloud TPU)",
    )
    group.add_argument(
        "--heartbeat-timeout",
        type=_positive_int,
        default=host.HEARTBEAT_TIMEOUT_S,
        help="seconds after which a silent process counts as dead and the others stop "
        f"(default {host.HEARTBEAT_TIMEOUT_S})",
    )


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The command's parser; `argv` (the arguments it will parse) picks the experiment
    whose values `train --help` shows."""
    parser = argparse.ArgumentParser(prog="lstm-jax", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--cpu-devices",
        type=_positive_int,
        default=None,
        help="JAX CPU devices to split this host into; training runs data-parallel over "
        "them (default: $LSTM_JAX_CPU_DEVICES, else one per available core)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    data_help = (
        "where the task's data lies; sentiment: IMDB as a .tar.gz or folder in the "
        "aclImdb/{train,test}/{pos,neg}/*.txt layout (default: $LSTM_JAX_IMDB_ARCHIVE, "
        "else tensorflow-datasets' imdb_reviews); forecasting: the CSV (default: --csv)"
    )

    p = sub.add_parser("train", help="train a task's model from a config")
    p.add_argument("--workdir", required=True, help="run directory (checkpoints, history)")
    p.add_argument(
        "--config",
        default=None,
        help=f"experiment: {configs.names()} (default {configs.DEFAULT}; on --resume, the "
        "saved config)",
    )
    p.add_argument("--data", "--imdb-archive", default=None, help=data_help)
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace a run in --workdir")
    p.add_argument(
        "--quiet",
        action="store_true",
        help="print the results alone: no description of the data, no epoch lines and no "
        "progress bar (which shows only on a terminal)",
    )
    _distributed_flags(p)
    _add_config_flags(p, _shown_config(argv))
    p.set_defaults(run=_train, parser=p)

    p = sub.add_parser("evaluate", help="test metrics of a trained run")
    p.add_argument("--workdir", required=True)
    p.add_argument("--data", "--imdb-archive", default=None, help=data_help)
    p.set_defaults(run=_evaluate, parser=p)

    p = sub.add_parser("forecast", help="the steps after a series' end (forecasting runs)")
    p.add_argument("--workdir", required=True)
    p.add_argument("--data", "--csv", default=None, help="the CSV to forecast (default: the run's)")
    p.add_argument(
        "--horizon", type=_positive_int, default=None, help="steps ahead (default: the run's)"
    )
    p.add_argument("--out", default=None, help="plot file (default: DIR/forecast_future.png)")
    p.set_defaults(run=_forecast, parser=p)

    p = sub.add_parser("generate", help="sample text from a language-model run")
    p.add_argument("--workdir", required=True)
    p.add_argument("--prompt", default="\n", help="text to start from (default: a new line)")
    p.add_argument("--length", type=_positive_int, default=500, help="characters to draw")
    p.add_argument("--temperature", type=_non_negative, default=0.8, help="0: greedy (default 0.8)")
    p.add_argument("--top-k", type=_positive_int, default=None, help="draw from the K likeliest")
    p.add_argument(
        "--top-p", type=_probability, default=None, help="draw from the likeliest mass P"
    )
    p.add_argument("--seed", type=_int, default=0, help="the samples' random seed")
    p.add_argument("--num-samples", type=_positive_int, default=1, help="samples, as a batch")
    p.set_defaults(run=_generate, parser=p)

    p = sub.add_parser("predict", help="P(positive) of review texts (sentiment runs)")
    p.add_argument("--workdir", required=True)
    p.add_argument("--show-padding", action="store_true", help="also with extra padding")
    p.add_argument("texts", nargs="+", help="review texts")
    p.set_defaults(run=_predict, parser=p)

    p = sub.add_parser("summary", help="layers, output shapes and parameter counts")
    p.add_argument("--model", choices=sorted(KINDS), default="bilstm")
    p.add_argument("--head", choices=HEADS, default="last", help="last: the tutorial's")
    p.add_argument("--vocab-size", type=_positive_int, default=8185)
    p.set_defaults(run=_summary, parser=p)

    p = sub.add_parser(
        "gradient-flow",
        help="||d loss_T / d x_t|| against distance for each cell, at init and trained",
    )
    _study_options(p, "runs/gradient_flow")
    p.add_argument("--time", type=_positive_int, default=100, help="sequence length T")
    p.add_argument("--seeds", type=_int, nargs="+", default=[0, 1, 2])
    p.set_defaults(run=_gradient_flow, parser=p)

    p = sub.add_parser("memory-task", help="long-range memory accuracy of each cell by length")
    _study_options(p, "runs/memory_task")
    p.add_argument("--times", type=_positive_int, nargs="+", default=[10, 50, 100, 200])
    p.add_argument("--seed", type=_int, default=0)
    p.set_defaults(run=_memory_task, parser=p)
    return parser


def _tune_malloc() -> None:
    """`host.tune_malloc()` unless `$LSTM_JAX_MALLOC` is "default" (glibc's own settings)."""
    choice = os.environ.get(host.ENV_MALLOC, "tuned").strip() or "tuned"
    if choice not in ("tuned", "default"):
        raise ValueError(
            f"${host.ENV_MALLOC} must be 'tuned' (one malloc arena, freed memory kept for "
            f"the next step) or 'default' (glibc's own settings), got {choice!r}"
        )
    if choice == "tuned":
        host.tune_malloc()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    several = False
    try:
        host.configure(args.cpu_devices)
        if args.command == "train":
            several = host.start_distributed(
                args.coordinator,
                args.num_processes,
                args.process_id,
                auto=args.distributed,
                heartbeat_timeout_s=args.heartbeat_timeout,
            )
        host.use_compilation_cache()
        return args.run(args, args.parser)
    except KeyboardInterrupt:  # outside the training loop, which saves and says how to resume
        print(f"lstm-jax {args.command}: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print(f"lstm-jax {args.command}: terminated", file=sys.stderr)
        return 143
    except BrokenPipeError:  # what reads the output stopped (`| head`): end quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush
        return 141  # as a command that SIGPIPE ended
    except (ValueError, OSError, RuntimeError, TypeError) as error:
        if not written_for_users(error):
            traceback.print_exc()
        print(f"lstm-jax {args.command}: error: {error}", file=sys.stderr)
        if several:
            print(
                "lstm-jax train: this is one process of several, and the others stop too "
                "(if one of them failed first, its log says why). Once the cause is mended, "
                "start every process again; add --resume to continue from the last "
                "checkpoint of a run that has one.",
                file=sys.stderr,
            )
        return 2


class Terminated(BaseException):
    """SIGTERM arrived outside the training loop (which saves a checkpoint first)."""


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated


def entry() -> None:
    """The `lstm-jax` console command: malloc tuned for the process (`_tune_malloc`), then
    `main`, with SIGTERM raising `Terminated` (as Ctrl-C raises `KeyboardInterrupt`), so
    that a command stopped outside the training loop cleans up (the tokenizer's child
    process) and says so."""
    try:
        _tune_malloc()
    except ValueError as error:
        print(f"lstm-jax: error: {error}", file=sys.stderr)
        sys.exit(2)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        code = main(sys.argv[1:])
    finally:
        signal.signal(signal.SIGTERM, previous)
    sys.exit(code)


if __name__ == "__main__":
    entry()
