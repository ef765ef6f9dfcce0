#!/usr/bin/env bash
# GPU check on a machine with an NVIDIA GPU and the CUDA toolkit but no Rust, from the bundle
# benches/gpu-bundle.sh made: builds llama.cpp's CUDA backend module from the bundled ggml
# sources, makes a random-weight model (no download), and runs mood on the CPU and offloaded:
# devices, greedy MOD tokens and log-likelihoods on both (they must agree), and the bench.
#   benches/gpu-check-bundle.sh [BUNDLE] [LOG_DIR]
set -euo pipefail
bundle=$(realpath "${1:-target/gpu-bundle}")
logs=$(realpath -m "${2:-/tmp/mood-gpu-check}")
work=/tmp/mood-gpu-work
mkdir -p "$logs" "$work"
command -v nvcc >/dev/null || { echo "gpu-check-bundle: needs the CUDA toolkit (nvcc on PATH)" >&2; exit 1; }

echo "== llama.cpp CUDA backend module"
rm -rf "$work/ggml" "$work/build" && tar -xzf "$bundle/ggml.tar.gz" -C "$work"
# The sources as llama-cpp-sys-2 ships them lack ggml's tests, examples and pkg-config file.
touch "$work/ggml/ggml.pc.in"
cmake -S "$work/ggml" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DGGML_CUDA=ON -DGGML_BACKEND_DL=ON -DBUILD_SHARED_LIBS=ON -DGGML_NATIVE=OFF \
    -DGGML_BUILD_TESTS=OFF -DGGML_BUILD_EXAMPLES=OFF -DGGML_CUDA_FA=OFF \
    -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCH:-native}" >"$logs/build.log"
time cmake --build "$work/build" --target ggml-cuda -j"$(nproc)" >>"$logs/build.log"
cp "$work/build/bin/libggml-cuda.so" "$bundle/"

echo "== model"
python3 -m pip install -q --no-index --no-deps --target "$work/site" "$bundle"/gguf-*.whl
PYTHONPATH="$work/site" python3 "$bundle/make-bench-model.py" "$work/bench.gguf"
cat >"$work/bench.toml" <<TOML
divergence = "reverse-kl"
[reference]
model = "bench.gguf"
[[expert]]
name = "first"
model = "bench.gguf"
prefix = "w1 w2 w3 "
weight = 0.5
[[expert]]
name = "second"
model = "bench.gguf"
prefix = "w7 w8 w9 "
weight = 0.5
TOML

export LD_LIBRARY_PATH="$bundle:${LD_LIBRARY_PATH:-}" MOOD_BACKENDS_DIR="$bundle"
mood="$bundle/mood"
echo "== mood info"
"$mood" info --json | tee "$logs/info.json"
"$mood" info "$work/bench.gguf"
echo "== greedy MOD, CPU and offloaded"
for ngl in 0 99; do
    "$mood" generate --recipe "$work/bench.toml" -w 0.7,0.6 -p "The ocean" -n 32 \
        --n-gpu-layers $ngl --json >"$logs/generate-$ngl.json"
done
printf '{"id": 0, "prompt": "The ocean", "response": " w11 w12 w13 w14 w15 w16"}\n' >"$work/score.jsonl"
for ngl in 0 99; do
    "$mood" score --recipe "$work/bench.toml" -i "$work/score.jsonl" --n-gpu-layers $ngl \
        >"$logs/score-$ngl.jsonl"
done
python3 - "$logs" <<'PY'
import json, sys
d = sys.argv[1]
cpu, gpu = (json.load(open(f"{d}/generate-{n}.json")) for n in (0, 99))
same = next((i for i, (a, b) in enumerate(zip(cpu["tokens"], gpu["tokens"])) if a != b), len(cpu["tokens"]))
print(f"greedy tokens equal for the first {same} of {len(cpu['tokens'])}")
print("cpu timings", cpu["timings"]); print("gpu timings", gpu["timings"])
sc, sg = (json.loads(open(f"{d}/score-{n}.jsonl").readline()) for n in (0, 99))
print("score cpu", sc); print("score gpu", sg)
PY
echo "== bench, offloaded"
"$mood" bench --recipe "$work/bench.toml" -w 0.5,0.5 --n-gpu-layers 99 --rounds 3 --memory "" \
    | tee "$logs/bench-gpu.txt"
echo "== bench, CPU"
"$mood" bench --recipe "$work/bench.toml" -w 0.5,0.5 --rounds 1 --memory "" -n 32 \
    | tee "$logs/bench-cpu.txt"
