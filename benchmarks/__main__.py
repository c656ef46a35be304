"""`python -m benchmarks [options]`: the benchmark's table and JSON (`--help` lists them)."""

import sys

from benchmarks.harness import main

sys.exit(main())
