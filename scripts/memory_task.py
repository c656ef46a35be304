"""Long-range memory task: accuracy of the four cells at T = 10, 50, 100, 200.

    .venv/bin/python scripts/memory_task.py --out runs/memory_task
    .venv/bin/python scripts/memory_task.py --out /tmp/mt --quick       # seconds

Prints a Markdown table (cells by rows, lengths by columns) and writes `memory_task.json`.
The same as `lstm-jax memory-task`; `--help` lists the options.
"""

import sys

from lstm_jax.cli import main

if __name__ == "__main__":
    sys.exit(main(["memory-task", *sys.argv[1:]]))
