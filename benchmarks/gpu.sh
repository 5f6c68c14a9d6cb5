#!/usr/bin/env bash
# jssl against PyTorch on one GPU, in one command (under 8 minutes on one H100/H200):
#
#     bash benchmarks/gpu.sh OUT [gpu_compare.py options]     # e.g. --data PATH, --e2e-minutes 2
#     bash benchmarks/gpu.sh OUT --dry-run                    # the same pieces, tiny, on the CPU
#
# Writes OUT/check.json and OUT/check.txt (python -m jssl.check), then OUT/gpu_compare.json
# and OUT/gpu_compare.md (benchmarks/gpu_compare.py says what is measured). Made for a machine that already has JAX with CUDA, flax, optax, orbax-checkpoint,
# chex, torch and torchvision and no network: it installs nothing from a package index, and
# jssl runs from this checkout (not pip-installed). Whatever jssl needs beyond that is
# installed, if missing, from a folder of wheels, WHEELS (default: the first of
# shared/wheels/gpu-py312 and ../shared/wheels/gpu-py312 that exists), made beforehand on a
# machine with network (Python 3.12, manylinux x86_64):
#
#     pip download --dest shared/wheels/gpu-py312 --only-binary=:all: --no-deps \
#       --python-version 3.12 --implementation cp --abi cp312 \
#       --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
#       ml-collections==1.1.0 absl-py==2.5.1 PyYAML==6.0.4 \
#       scikit-learn==1.9.1 joblib==1.6.0 threadpoolctl==3.8.0 cloudpickle==3.1.3 \
#       narwhals==2.29.0 pillow==13.0.0
#
# (ml-collections, absl-py, PyYAML: configs; scikit-learn with joblib, threadpoolctl,
# cloudpickle and narwhals: jssl.evaluation; pillow: image folders. Each is installed,
# with --no-index --no-deps, only when it does not import.) The CIFAR-10 JPEG copy of the end-to-end run is found at
# shared/datasets/cifar10-jpeg.tar.gz or ../shared/datasets/cifar10-jpeg.tar.gz, or --data PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ] || [[ "$1" == -* ]]; then
  echo "usage: bash benchmarks/gpu.sh OUT [--dry-run] [benchmarks/gpu_compare.py options]" >&2
  exit 2
fi
out=$1
shift
py=${PYTHON:-python3}
dry_run=0
for a in "$@"; do [ "$a" = "--dry-run" ] && dry_run=1; done
mkdir -p "$out"

# module to import -> wheel (distribution) name
missing=()
for pair in ml_collections:ml-collections absl:absl-py yaml:PyYAML sklearn:scikit-learn \
  joblib:joblib threadpoolctl:threadpoolctl cloudpickle:cloudpickle narwhals:narwhals \
  PIL:pillow; do
  "$py" -c "import ${pair%%:*}" 2>/dev/null || missing+=("${pair##*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  wheels=${WHEELS:-}
  if [ -z "$wheels" ]; then
    for d in shared/wheels/gpu-py312 ../shared/wheels/gpu-py312; do
      if [ -d "$d" ]; then wheels=$d; break; fi
    done
  fi
  if [ -z "$wheels" ] || [ ! -d "$wheels" ]; then
    echo "error: missing ${missing[*]} and no wheel folder (set WHEELS=DIR; see the header)" >&2
    exit 1
  fi
  echo "installing ${missing[*]} from $wheels"
  "$py" -m pip install --no-index --find-links "$wheels" --no-deps "${missing[@]}"
fi

if [ "$dry_run" = 0 ]; then
  "$py" -c 'import jax; d = jax.devices(); print(d); assert jax.default_backend() == "gpu", "no GPU"'
  "$py" -c 'import torch; print(torch.__version__, torch.cuda.get_device_name())' || true
  export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-${TMPDIR:-/tmp}/jssl-xla-cache}
fi
# First python -m jssl.check (about a minute): numerics against float64, speed, MFU, memory,
# input rate; SimCLR's ResNet-18 on the CIFAR-10 JPEG copy (the digits smoke preset on a
# dry run). A failed verdict is reported in OUT/check.txt and does not stop the comparison.
if [ "$dry_run" = 0 ]; then
  folder=$("$py" -c 'from benchmarks import common; print(common.image_folder(common.DEFAULT_ARCHIVE))')
  check=(--config=configs/simclr.py:cifar10_folder "--config.data.path=$folder")
else
  check=(--config=configs/simclr.py:digits,smoke --config.model.kwargs.widths="(8,)" --steps=2)
fi
"$py" -m jssl.check "${check[@]}" --out="$out/check.json" | tee "$out/check.txt" || true
exec "$py" benchmarks/gpu_compare.py --out "$out" "$@"
