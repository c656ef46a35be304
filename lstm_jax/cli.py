"""`lstm-jax`: the command line. Each subcommand parses its arguments and calls the library."""

from __future__ import annotations

import argparse
import json
import sys

from lstm_jax import configs

PAD_DEMO = 1000  # extra pad tokens in `predict --show-padding`


def _train(args: argparse.Namespace) -> int:
    from lstm_jax import training

    overrides = {
        k: v
        for k, v in {
            "model": args.model,
            "epochs": args.epochs,
            "seed": args.seed,
            "max_len": args.max_len,
            "batch_size": args.batch_size,
            "learning_rate": args.learning_rate,
            "max_train_examples": args.max_train_examples,
        }.items()
        if v is not None
    }
    config = configs.get(args.config, model=args.model).replace(**overrides)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lstm-jax", description=__doc__)
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
    p.add_argument("--max-train-examples", type=int, default=None, help="for quick runs")
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError, RuntimeError, TypeError) as error:
        print(f"lstm-jax {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
