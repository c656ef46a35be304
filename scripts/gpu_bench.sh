#!/usr/bin/env bash
# The benchmark on a lent NVIDIA GPU machine (H100): a fresh venv, the CUDA and bench
# extras, the Pallas kernels' tests on the device (compiled by Triton, against the fused
# loop: 1e-5 in float32), then bilstm + stacked at T = 128, 256, 1024 against every
# implementation (our Pallas kernels, jax-cudnn and torch included). About 9 minutes:
# install ~3-4, tests ~1, benchmark <= 4. A failed test does not stop the benchmark; the
# script then exits non-zero.
#
#     bash scripts/gpu_bench.sh                    # results in benchmarks/results/
#     OUT=/some/dir bash scripts/gpu_bench.sh      # bench.json, bench.md, pallas_tests.txt,
#                                                  # nvidia-smi.txt there
#
# Environment: PYTHON (default python3), VENV (default .venv-gpu), TEST_TIMEOUT (seconds
# for the tests, default 180), BENCH_TIMEOUT (seconds for the benchmark itself, default
# 260; finished cells are saved even when it is cut), BENCH_ARGS (extra flags, e.g.
# "--impls lstm_jax,jax-cudnn"), LSTM_JAX_IMDB_ARCHIVE.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv-gpu}"
OUT_DIR="${OUT:-benchmarks/results}"
mkdir -p "$OUT_DIR"

fail() { echo "gpu_bench: $*" >&2; exit 2; }

command -v nvidia-smi >/dev/null || fail "nvidia-smi not found: this script needs an NVIDIA GPU machine"
nvidia-smi | tee "$OUT_DIR/nvidia-smi.txt"

"$PYTHON" -m venv "$VENV" || fail "cannot create a venv with $PYTHON (install python3-venv)"
pip=("$VENV/bin/python" -m pip --disable-pip-version-check)
# Fail fast, with a clear message, when no package index is reachable.
timeout 60 "${pip[@]}" download --quiet --no-deps --dest "$VENV/probe" pip >/dev/null 2>&1 \
  || fail "no package index reachable from this machine (pip could not fetch 'pip'); \
install jax[cuda12], torch and keras from a local wheelhouse and run python -m benchmarks"
echo "== installing (.[cuda,bench] and pytest) at $((SECONDS - started)) s"
"${pip[@]}" install --quiet -e '.[cuda,bench]' pytest || fail "pip install -e '.[cuda,bench]' failed"

"$VENV/bin/python" - <<'PY' || fail "JAX sees no GPU or torch has no CUDA (see above)"
import jax, torch
print("jax", jax.__version__, jax.devices())
print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available())
assert jax.default_backend() == "gpu" and torch.cuda.is_available()
PY

echo "== the Pallas kernels' tests on the GPU at $((SECONDS - started)) s"
set +e
timeout "${TEST_TIMEOUT:-180}" "$VENV/bin/python" -m pytest -q -rs -p no:cacheprovider \
  tests/test_pallas_lstm.py 2>&1 | tee "$OUT_DIR/pallas_tests.txt"
tests=${PIPESTATUS[0]}
set -e

imdb=(--no-imdb)
archive="${LSTM_JAX_IMDB_ARCHIVE:-}"
for candidate in "$archive" shared/data/aclImdb_labeled.tar.gz ../shared/data/aclImdb_labeled.tar.gz; do
  if [ -n "$candidate" ] && [ -e "$candidate" ]; then imdb=(--imdb-archive "$candidate"); break; fi
done

impls=lstm_jax,lstm_jax-pallas,lstm_jax-scan,flax,keras-jax,keras-jax-nomask
impls+=,torch,torch-nopack,jax-cudnn
echo "== benchmark at $((SECONDS - started)) s"
set +e
# shellcheck disable=SC2086  # BENCH_ARGS is a list of flags
timeout "${BENCH_TIMEOUT:-260}" "$VENV/bin/python" -m benchmarks \
  --workloads bilstm,stacked --lengths 128,256,1024 --batch 64 --rounds 3 --warmup 3 \
  --impls "$impls" \
  "${imdb[@]}" --out "$OUT_DIR/bench.json" ${BENCH_ARGS:-} | tee "$OUT_DIR/bench.md"
status=${PIPESTATUS[0]}
set -e
if [ "$status" -eq 124 ]; then
  echo "gpu_bench: the benchmark ran past ${BENCH_TIMEOUT:-260} s; $OUT_DIR/bench.json holds the cells that finished" >&2
fi
echo "== done in $((SECONDS - started)) s (tests exit $tests, benchmark exit $status)"
if [ "$status" -eq 0 ] && [ "$tests" -ne 0 ]; then
  echo "gpu_bench: the Pallas kernels' tests failed on the GPU: $OUT_DIR/pallas_tests.txt" >&2
  exit 1
fi
exit "$status"
