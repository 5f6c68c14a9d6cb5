#!/usr/bin/env bash
# The accelerator figures of the performance issue in one run (needs JAX with CUDA:
# pip install -e ".[gpu]"):
#
#     bash benchmarks/gpu.sh [OUT_DIR] [PEAK_TFLOPS]
#
# Measures the jitted train step (augmentation included, bf16 compute with float32
# parameters and losses, synthetic images: no data set needed) of
#   1. SimCLR, ResNet-18 (CIFAR stem), 32 px, batch 512,
#   2. SimCLR, ResNet-50 (ImageNet stem), 224 px, batch 256,
#   3. DINO, ViT-S/16, 2 x 224 px global + 10 x 96 px local crops, batch 128,
# and writes one JSON per run (images/s, XLA FLOPs per step, achieved FLOP/s, the
# bf16 matmul rate measured in the same run, utilisation against it and against
# PEAK_TFLOPS, default 989 = H100 SXM dense bf16; minutes for 200 CIFAR-10 epochs)
# to OUT_DIR (default benchmarks/results), then prints a summary table.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmarks/results}
peak=${2:-989}
mkdir -p "$out"
date_tag=$(date -u +%Y-%m-%d)
python -c 'import jax; print(jax.devices()); assert jax.default_backend() != "cpu", "no accelerator"'
run() {
  local name=$1
  shift
  python benchmarks/throughput.py --dtype=bfloat16 --peak_tflops="$peak" --steps=20 \
    --out="$out/gpu_${name}_${date_tag}.json" "$@"
}
run simclr_resnet18_cifar --config=configs/simclr.py:cifar10 --batch_size=512
run simclr_resnet50_224 --config=configs/simclr.py:imagenet --batch_size=256
run dino_vits16_224 --config=configs/dino.py:imagenet --batch_size=128
python - "$out" "$date_tag" <<'PY'
import json, sys
out, tag = sys.argv[1:]
print("| run | images/s | TFLOP/s | of bf16 matmul | of peak | 200 CIFAR epochs (min) |")
print("|---|---|---|---|---|---|")
for name in ("simclr_resnet18_cifar", "simclr_resnet50_224", "dino_vits16_224"):
    r = json.load(open(f"{out}/gpu_{name}_{tag}.json"))
    print(f"| {name} | {r['images_per_sec']:.0f} | {r['achieved_flops_per_sec'] / 1e12:.1f} | "
          f"{r['utilisation_vs_matmul_in_dtype']:.2f} | {r.get('utilisation_vs_peak', 0):.2f} | "
          f"{r['minutes_for_200_epochs_of_50k']:.1f} |")
PY
