"""Gradient flow of the four cells at initialisation and after training on the memory task.

    .venv/bin/python scripts/gradient_flow.py --out runs/gradient_flow
    .venv/bin/python scripts/gradient_flow.py --out /tmp/gf --quick     # seconds

Writes `gradient_flow.png` (log-scale ||d loss_T / d x_t|| against distance, one colour
per cell, dashed at initialisation, solid after training) and `gradient_flow.json`.
The same as `lstm-jax gradient-flow`; `--help` lists the options.
"""

import sys

from lstm_jax.cli import main

if __name__ == "__main__":
    sys.exit(main(["gradient-flow", *sys.argv[1:]]))
