#!/usr/bin/env bash
# The benchmark on an NVIDIA GPU machine: the Pallas kernels' tests on the device (compiled
# by Triton, against the fused loop: 1e-5 in float32), one layer's kernels against the loop,
# cuDNN and PyTorch per hidden size (benchmarks/gpu_kernels.py), then full training steps:
# bilstm + stacked at T = 256, 1024 (ours with the fused loop and the Pallas kernels, Flax,
# cuDNN through JAX and PyTorch) and the char LM (2 x 512, window 128).
#
#     bash scripts/gpu_bench.sh                    # results in benchmarks/results/
#     OUT=/some/dir bash scripts/gpu_bench.sh      # bench.json, bench.md, charlm.json,
#                                                  # charlm.md, kernels.jsonl,
#                                                  # pallas_tests.txt, nvidia-smi.txt there
#
# Where $PYTHON already runs JAX on the GPU and PyTorch with CUDA (a prepared image, a
# machine with no package index), it is used as it is, the repository on PYTHONPATH;
# otherwise a fresh venv gets the CUDA and bench extras (install ~3-4 minutes). On an H200
# (jax 0.11.2) the tests took 43 s and each JAX row compiled for 10-30 s per cell, so the
# whole script takes about 25 minutes; STAGES and BENCH_ARGS run a part. Each stage has its
# own time limit; a failed stage does not stop the next, and the script then exits
# non-zero. Environment: STAGES (default tests,layer,classifiers,charlm: the ones to run),
# PYTHON (default python3), VENV (default .venv-gpu), TEST_TIMEOUT (seconds, default 180),
# KERNELS_TIMEOUT (default 300), BENCH_TIMEOUT (default 1200; the classifiers' benchmark:
# each cell is saved as it finishes), CHARLM_TIMEOUT (default 400), BENCH_ARGS (extra
# flags for the classifiers' benchmark, e.g. "--lengths 256"), LSTM_JAX_IMDB_ARCHIVE.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv-gpu}"
OUT_DIR="${OUT:-benchmarks/results}"
mkdir -p "$OUT_DIR"

fail() { echo "gpu_bench: $*" >&2; exit 2; }
STAGES=",${STAGES:-tests,layer,classifiers,charlm},"
for stage in ${STAGES//,/ }; do
  case "$stage" in
    tests | layer | classifiers | charlm) ;;
    *) fail "unknown stage '$stage' in STAGES; choose from tests,layer,classifiers,charlm" ;;
  esac
done
want() { [[ "$STAGES" == *",$1,"* ]]; }
tests=0 kernels=0 status=0 charlm=0

command -v nvidia-smi >/dev/null || fail "nvidia-smi not found: this script needs an NVIDIA GPU machine"
nvidia-smi | tee "$OUT_DIR/nvidia-smi.txt"

ready() {
  "$1" - <<'PY'
import jax, torch
print("jax", jax.__version__, jax.devices())
print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available())
assert jax.default_backend() == "gpu" and torch.cuda.is_available()
PY
}

if ready "$PYTHON" 2>/dev/null; then
  py="$PYTHON"
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
  echo "== $PYTHON has JAX on the GPU and PyTorch with CUDA: used as it is, no installs"
else
  "$PYTHON" -m venv "$VENV" || fail "cannot create a venv with $PYTHON (install python3-venv)"
  pip=("$VENV/bin/python" -m pip --disable-pip-version-check)
  # Fail fast, with a clear message, when no package index is reachable.
  timeout 60 "${pip[@]}" download --quiet --no-deps --dest "$VENV/probe" pip >/dev/null 2>&1 \
    || fail "no package index reachable from this machine (pip could not fetch 'pip'), and \
$PYTHON lacks JAX on the GPU or PyTorch with CUDA: set PYTHON to a Python that has both"
  echo "== installing (.[cuda,bench] and pytest) at $((SECONDS - started)) s"
  "${pip[@]}" install --quiet -e '.[cuda,bench]' pytest || fail "pip install -e '.[cuda,bench]' failed"
  py="$VENV/bin/python"
  ready "$py" || fail "JAX sees no GPU or torch has no CUDA (see above)"
fi
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # JAX and PyTorch share the card in one process

set +e
if want tests; then
  echo "== the Pallas kernels' tests on the GPU at $((SECONDS - started)) s"
  timeout "${TEST_TIMEOUT:-180}" "$py" -m pytest -q -rs -p no:cacheprovider -p no:benchmark \
    tests/test_pallas_lstm.py 2>&1 | tee "$OUT_DIR/pallas_tests.txt"
  tests=${PIPESTATUS[0]}
fi
if want layer; then
  echo "== one layer: the kernels, the fused loop, cuDNN, PyTorch at $((SECONDS - started)) s"
  rm -f "$OUT_DIR/kernels.jsonl"
  timeout "${KERNELS_TIMEOUT:-300}" "$py" -m benchmarks.gpu_kernels --out "$OUT_DIR/kernels.jsonl"
  kernels=$?
fi
set -e

imdb=(--no-imdb)
archive="${LSTM_JAX_IMDB_ARCHIVE:-}"
for candidate in "$archive" shared/data/aclImdb_labeled.tar.gz ../shared/data/aclImdb_labeled.tar.gz; do
  if [ -n "$candidate" ] && [ -e "$candidate" ]; then imdb=(--imdb-archive "$candidate"); break; fi
done

impls=lstm_jax,lstm_jax-bf16,lstm_jax-lib,lstm_jax-pallas,flax,torch,torch-nopack,torch-bf16
impls+=,jax-cudnn
set +e
if want classifiers; then
  echo "== the classifiers' steps at $((SECONDS - started)) s"
  # shellcheck disable=SC2086  # BENCH_ARGS is a list of flags
  timeout "${BENCH_TIMEOUT:-1200}" "$py" -m benchmarks \
    --workloads bilstm,stacked --lengths 256,1024 --batch 64 --rounds 3 --warmup 2 \
    --impls "$impls" \
    "${imdb[@]}" --out "$OUT_DIR/bench.json" ${BENCH_ARGS:-} | tee "$OUT_DIR/bench.md"
  status=${PIPESTATUS[0]}
  if [ "$status" -eq 124 ]; then
    echo "gpu_bench: the benchmark ran past ${BENCH_TIMEOUT:-1200} s; $OUT_DIR/bench.json holds the cells that finished" >&2
  fi
fi
if want charlm; then
  echo "== the char LM's step at $((SECONDS - started)) s"
  timeout "${CHARLM_TIMEOUT:-400}" "$py" -m benchmarks \
    --workloads charlm --windows 128 --batch 64 --rounds 3 --warmup 2 --no-imdb \
    --impls lstm_jax-lib,lstm_jax-lib-bf16,torch,torch-bf16 \
    --out "$OUT_DIR/charlm.json" | tee "$OUT_DIR/charlm.md"
  charlm=${PIPESTATUS[0]}
fi
set -e
echo "== done in $((SECONDS - started)) s (exits: tests $tests, layer $kernels, classifiers $status, char LM $charlm)"
for code in "$tests" "$kernels" "$status" "$charlm"; do
  [ "$code" -eq 0 ] || exit 1
done
