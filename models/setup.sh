#!/usr/bin/env bash
# One-time set-up on a fresh Debian/Ubuntu machine, safe to run again:
#   1. the build tools llama.cpp needs (cmake, libclang-dev for bindgen, a C++ compiler),
#   2. the default model (models/fetch-default.sh),
#   3. the small test models in models/fixtures/ (models/make-fixtures.py, needs PyPI `gguf`),
#   4. a random test LoRA adapter for the default model (models/make-lora.py),
#   5. PyPI `mpmath` and `openai`, for the tests (tests/highprec.py, tests/openai_client.py).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v c++ >/dev/null || missing+=(g++)
ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1 || dpkg -s libclang-dev >/dev/null 2>&1 || missing+=(libclang-dev)
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

"$here/fetch-default.sh"

if ! python3 -c "import gguf" 2>/dev/null; then
    echo "setup: installing the gguf Python package (writes the test models)"
    python3 -m pip install --quiet --disable-pip-version-check "gguf>=0.17,<1"
fi
if ! python3 -c "import mpmath" 2>/dev/null; then
    echo "setup: installing the mpmath Python package (high-precision test reference)"
    python3 -m pip install --quiet --disable-pip-version-check "mpmath>=1.2,<2"
fi
if ! python3 -c "import openai" 2>/dev/null; then
    echo "setup: installing the openai Python package (client compatibility test)"
    python3 -m pip install --quiet --disable-pip-version-check "openai>=1.0,<3"
fi
python3 "$here/make-fixtures.py" "$here/fixtures"
python3 "$here/make-lora.py" "$here/gemma-3-270m-q4_k_m.gguf" "$here/fixtures/test-lora.gguf"
echo "setup: done"
