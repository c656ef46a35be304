"""Speed of one training step, lstm_jax against Flax, Keras (JAX), PyTorch and cuDNN.

    .venv/bin/python scripts/benchmark.py                         # the full benchmark
    .venv/bin/python scripts/benchmark.py --quick --impls lstm_jax,flax   # a smoke run
    .venv/bin/python scripts/benchmark.py --lengths 64 --rounds 2 --steps 3 --no-imdb

Prints a Markdown table and writes JSON (`--out`, default benchmarks/results/<date>-<device>.json).
The same as `lstm-jax bench`; `--help` lists the options, `lstm_jax/benchmark.py` explains them.
"""

import sys

from lstm_jax.benchmark import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
