#!/usr/bin/env bash
# Makes target/gpu-bundle/: a `dynamic-backends` build of mood with llama.cpp as shared
# libraries (CPU backends for every x86-64 instruction-set level), the C++ runtime it was
# built against, llama.cpp's ggml sources (the same version) and the gguf Python package.
# On a GPU machine without Rust, benches/gpu-check-bundle.sh builds llama.cpp's CUDA backend
# module from those sources beside mood and checks offload. Not part of CI.
#   benches/gpu-bundle.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# A portable build: the bundle runs on another machine (RUSTFLAGS overrides the native build).
RUSTFLAGS="" cargo build --release --features dynamic-backends --target-dir target/dyn
out=target/gpu-bundle
rm -rf "$out" && mkdir -p "$out"
cp target/dyn/release/mood "$out/"
build=$(ls -td target/dyn/release/build/llama-cpp-sys-2-*/out | head -1)
# The libraries mood links (under their sonames, as plain files: links do not travel
# everywhere) and the CPU backend variants llama.cpp chooses from at start-up.
for lib in $(ldd target/dyn/release/mood | awk '/not found/ {print $1}'); do
    cp -L "$(find "$build" -name "$lib" | head -1)" "$out/$lib"
done
find "$build" -name 'libggml-cpu-*.so' -exec cp -L {} "$out/" \;
for lib in libstdc++.so.6 libgomp.so.1 libgcc_s.so.1; do
    path=$(ldconfig -p | awk -v l="$lib" '$1 == l && /x86-64/ {print $NF; exit}')
    [ -n "$path" ] && cp -L "$path" "$out/"
done
src=$(cargo metadata --format-version 1 | python3 -c '
import json, sys, os
m = json.load(sys.stdin)
p = next(p for p in m["packages"] if p["name"] == "llama-cpp-sys-2")
print(os.path.join(os.path.dirname(p["manifest_path"]), "llama.cpp"))')
tar -czf "$out/ggml.tar.gz" -C "$src" ggml
python3 -m pip download -q --no-deps --only-binary=:all: -d "$out" gguf
cp models/make-bench-model.py models/llama_gguf.py "$out/"
du -sh "$out"
ls "$out"
