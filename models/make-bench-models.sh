#!/usr/bin/env bash
# Makes the random-weight llama-shaped bench models, quantized to Q4_K_M with llama.cpp's
# quantizer (`mood quantize`), for speed checks at sizes beyond the default model:
#   models/bench-0.5b-q4_k_m.gguf  24 layers, embedding 1024, feed-forward 4096 (~0.47B)
#   models/bench-1b-q4_k_m.gguf    16 layers, embedding 2048, feed-forward 5632 (~0.95B)
#   models/bench-3b-q4_k_m.gguf    28 layers, embedding 3072, feed-forward 8192 (~3.4B)
# Their text is meaningless; their speed is that of real models of the same shape and type.
# Usage: models/make-bench-models.sh [0.5b] [1b] [3b]   (default: all three; a model already
# made is kept). Needs the release build (cargo build --release) and the Python packages of
# models/setup.sh (numpy, gguf). The F16 file is written, quantized and removed: the 3B one
# needs about 7 GB of disk and 14 GB of memory for a minute.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mood="$here/../target/release/mood"
[[ -x "$mood" ]] || { echo "make-bench-models: build mood first: cargo build --release" >&2; exit 1; }
sizes=("$@")
((${#sizes[@]})) || sizes=(0.5b 1b 3b)
for size in "${sizes[@]}"; do
    case "$size" in
        0.5b) shape=(--layers 24 --embd 1024 --ff 4096) ;;
        1b) shape=(--layers 16 --embd 2048 --ff 5632) ;;
        3b) shape=(--layers 28 --embd 3072 --ff 8192 --heads 24) ;;
        *) echo "make-bench-models: unknown size '$size' (0.5b, 1b or 3b)" >&2; exit 2 ;;
    esac
    out="$here/bench-$size-q4_k_m.gguf"
    if [[ -f "$out" ]]; then
        echo "make-bench-models: $out is there"
        continue
    fi
    f16="$here/.cache/bench-$size-f16.gguf"
    mkdir -p "$here/.cache"
    python3 "$here/make-bench-model.py" "$f16" "${shape[@]}"
    "$mood" quantize "$f16" "$out" Q4_K_M
    rm -f "$f16"
done
