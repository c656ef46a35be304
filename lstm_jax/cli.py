"""`lstm-jax`: the command line. Each subcommand parses its arguments and calls the library."""

from __future__ import annotations

import argparse
import json
import os
import sys

from lstm_jax import benchmark, configs, host
from lstm_jax.cells import CELLS
from lstm_jax.recurrence import ENGINES, MATMUL_DTYPES

PAD_DEMO = 1000  # extra pad tokens in `predict --show-padding`


def _train(args: argparse.Namespace) -> int:
    from lstm_jax import recurrence, training

    overrides = {
        k: v
        for k, v in {
            "model": args.model,
            "epochs": args.epochs,
            "seed": args.seed,
            "max_len": args.max_len,
            "batch_size": args.batch_size,
            "learning_rate": args.learning_rate,
            "dropout": args.dropout,
            "schedule": args.schedule,
            "normalize_text": args.normalize_text,
            "max_train_examples": args.max_train_examples,
            "matmul_dtype": args.matmul_dtype,
        }.items()
        if v is not None
    }
    config = configs.get(args.config, model=args.model).replace(**overrides)
    previous_engine = recurrence.set_engine(args.engine or "fused")
    try:
        results = training.fit(
            config,
            args.workdir,
            archive=args.imdb_archive,
            resume=args.resume,
            overwrite=args.overwrite,
            progress=not args.quiet,
        )
    except training.Interrupted as stop:
        print(stop, file=sys.stderr)
        return 130
    finally:
        recurrence.set_engine(previous_engine)
    print(json.dumps(results, indent=2))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from lstm_jax import training

    print(json.dumps(training.evaluate(args.workdir, archive=args.imdb_archive), indent=2))
    return 0


def _predict(args: argparse.Namespace) -> int:
    from lstm_jax.predict import Predictor

    predictor = Predictor(args.workdir)
    for text in args.texts:
        p = predictor.predict(text)
        print(f"{p.probability:.4f}  {p.label:<8}  {text}")
        if args.show_padding:
            n = p.tokens
            bare = predictor.predict(text, width=n).probability
            padded = predictor.predict(text, width=n + PAD_DEMO).probability
            print(f"        without padding (T={n}): {bare:.4f}")
            print(f"        with {PAD_DEMO} pad tokens (T={n + PAD_DEMO}): {padded:.4f}")
    return 0


def _summary(args: argparse.Namespace) -> int:
    from lstm_jax.models import SentimentClassifier
    from lstm_jax.summary import summary

    print(summary(SentimentClassifier(args.vocab_size, args.model)))
    return 0


def _gradient_flow(args: argparse.Namespace) -> int:
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


def _memory_task(args: argparse.Namespace) -> int:
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


def _bench(args: argparse.Namespace) -> int:
    from lstm_jax import benchmark

    return benchmark.run_cli(args)


def _study_options(p: argparse.ArgumentParser, out: str) -> None:
    p.add_argument("--out", default=out, help="output directory")
    p.add_argument("--steps", type=int, default=500, help="training steps per run")
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--cells", nargs="+", default=list(CELLS), choices=list(CELLS))
    p.add_argument("--quick", action="store_true", help="tiny settings, seconds")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lstm-jax", description=__doc__)
    parser.add_argument(
        "--cpu-devices",
        type=int,
        default=None,
        help="JAX CPU devices to split this host into; training runs data-parallel over "
        "them (default: $LSTM_JAX_CPU_DEVICES, else one per available core; see lstm_jax.host)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    archive_help = (
        "IMDB as a .tar.gz or folder in the aclImdb/{train,test}/{pos,neg}/*.txt layout "
        "(default: $LSTM_JAX_IMDB_ARCHIVE, else tensorflow-datasets' imdb_reviews)"
    )

    p = sub.add_parser("train", help="train a sentiment classifier on IMDB")
    p.add_argument("--workdir", required=True, help="run directory (checkpoints, history)")
    p.add_argument("--config", default=None, help=f"experiment config: {configs.names()}")
    p.add_argument("--model", choices=["bilstm", "stacked"], default=None)
    p.add_argument("--imdb-archive", default=None, help=archive_help)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--max-len", type=int, default=None, help="truncate reviews (subwords)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--learning-rate", type=float, default=None)
    p.add_argument("--dropout", type=float, default=None, help="word and output dropout")
    p.add_argument("--schedule", choices=["constant", "cosine"], default=None)
    p.add_argument(
        "--normalize-text",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="lower-case and drop <br /> before tokenizing",
    )
    p.add_argument("--max-train-examples", type=int, default=None, help="for quick runs")
    p.add_argument(
        "--matmul-dtype",
        choices=MATMUL_DTYPES,
        default=None,
        help="bfloat16: bfloat16 inputs to the recurrent matmuls (float32 state)",
    )
    p.add_argument(
        "--engine",
        choices=ENGINES,
        default=None,
        help="recurrence engine (default fused; pallas: Pallas kernels on a GPU)",
    )
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace a run in --workdir")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_train)

    p = sub.add_parser("evaluate", help="test loss and accuracy of a trained run")
    p.add_argument("--workdir", required=True)
    p.add_argument("--imdb-archive", default=None, help=archive_help)
    p.set_defaults(run=_evaluate)

    p = sub.add_parser("predict", help="P(positive) of review texts")
    p.add_argument("--workdir", required=True)
    p.add_argument("--show-padding", action="store_true", help="also with extra padding")
    p.add_argument("texts", nargs="+", help="review texts")
    p.set_defaults(run=_predict)

    p = sub.add_parser("summary", help="layers, output shapes and parameter counts")
    p.add_argument("--model", choices=["bilstm", "stacked"], default="bilstm")
    p.add_argument("--vocab-size", type=int, default=8185)
    p.set_defaults(run=_summary)

    p = sub.add_parser("bench", help="speed of one training step against other LSTMs")
    benchmark.add_arguments(p)
    p.set_defaults(run=_bench)

    p = sub.add_parser(
        "gradient-flow",
        help="||d loss_T / d x_t|| against distance for each cell, at init and trained",
    )
    _study_options(p, "runs/gradient_flow")
    p.add_argument("--time", type=int, default=100, help="sequence length T")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.set_defaults(run=_gradient_flow)

    p = sub.add_parser("memory-task", help="long-range memory accuracy of each cell by length")
    _study_options(p, "runs/memory_task")
    p.add_argument("--times", type=int, nargs="+", default=[10, 50, 100, 200])
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=_memory_task)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.cpu_devices is not None:  # also for the processes `bench` starts
            os.environ[host.ENV_DEVICES] = str(args.cpu_devices)
        host.configure(args.cpu_devices)
        if args.command != "bench":  # the benchmark times compilation
            host.use_compilation_cache()
        return args.run(args)
    except (ValueError, FileNotFoundError, RuntimeError, TypeError) as error:
        print(f"lstm-jax {args.command}: error: {error}", file=sys.stderr)
        return 2


def entry() -> None:
    """The `lstm-jax` console command: relaunched once with glibc's malloc tunables where
    that needs a fresh process (`lstm_jax.host`: one malloc arena for `train`, huge pages
    for the others; not `bench`, whose workers get their own), then `main()`. Usage errors
    and `--help` end here, before any relaunch."""
    argv = sys.argv[1:]
    command = build_parser().parse_args(argv).command
    if command != "bench":
        host.relaunch_tuned("lstm_jax.cli", argv, arena=command == "train")
    sys.exit(main(argv))


if __name__ == "__main__":
    entry()
