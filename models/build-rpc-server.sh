#!/usr/bin/env bash
# Builds rpc-server — the process that holds and computes a policy's model for `mood --rpc` on
# another host — from the llama.cpp sources in vendor/, with cmake, so that it speaks the RPC
# protocol version of the mood built from the same sources. Run it on every server host (in a
# copy of this repository); the binary lands in target/rpc-server/rpc-server.
#
#   models/build-rpc-server.sh                    # CPU (and this machine's instruction sets)
#   models/build-rpc-server.sh -DGGML_CUDA=ON     # NVIDIA GPUs (needs the CUDA toolkit)
#
# Extra arguments are passed to cmake's configure step (any ggml option). It then prints how
# to start the server. Safe to run again: an unchanged build takes seconds.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$root/target/rpc-server"
mkdir -p "$build"
log="$build/build.log"
jobs="$(nproc 2>/dev/null || echo 2)"
echo "build-rpc-server: building rpc-server from vendor/llama-cpp-sys-2/llama.cpp in target/rpc-server (a few minutes the first time; log: target/rpc-server/build.log)"
if ! { cmake -S "$root/models/rpc-server" -B "$build" -DCMAKE_BUILD_TYPE=Release "$@" &&
       cmake --build "$build" --target rpc-server --parallel "$jobs"; } >"$log" 2>&1; then
    echo "build-rpc-server: failed; the end of target/rpc-server/build.log:" >&2
    tail -n 20 "$log" | sed 's/^/  /' >&2
    exit 1
fi
echo "build-rpc-server: built target/rpc-server/rpc-server; start it with"
echo "  target/rpc-server/rpc-server --host 127.0.0.1 --port 50052"
echo "(--host: a loopback or private address; the RPC protocol has no authentication)"
