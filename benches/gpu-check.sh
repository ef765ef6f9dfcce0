#!/usr/bin/env bash
# GPU check, for a machine with an NVIDIA GPU and the CUDA toolkit (not part of CI):
# builds mood with --features cuda, shows the devices it sees, decodes with the demo recipe
# fully offloaded, and runs the end-to-end bench (threads and batched strategies) offloaded.
#   benches/gpu-check.sh [EXTRA BENCH FLAGS…]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v nvcc >/dev/null || { echo "gpu-check: needs the CUDA toolkit (nvcc on PATH)" >&2; exit 1; }
models/fetch-default.sh
# A separate target folder keeps the CPU build intact.
cargo build --release --features cuda --target-dir target/cuda
mood=target/cuda/release/mood
"$mood" info models/gemma-3-270m-q4_k_m.gguf
echo "== MOD decode, demo recipe, all layers on the GPU"
"$mood" generate --recipe models/demo.toml --weights 0.5,0.5 --prompt "The ocean" \
    --max-tokens 64 --n-gpu-layers 99 --json
echo "== end-to-end bench, offloaded"
"$mood" bench --recipe models/demo.toml --n-gpu-layers 99 --rounds 3 --memory "" "$@"
