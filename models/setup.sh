#!/usr/bin/env bash
# One-time set-up on a fresh Debian/Ubuntu machine, safe to run again:
#   1. Debian packages: the build tools llama.cpp needs (cmake, libclang-dev for bindgen, a C++
#      compiler) and Chromium, for the test of the web page in a real browser,
#   2. the default model (models/fetch-default.sh),
#   3. the assistant model (models/fetch-assistant.sh),
#   4. PyPI `gguf` (writes the test models), `mpmath` and `openai`, for the tests
#      (tests/highprec.py, tests/openai_client.py), and `maturin`, `numpy`, `pytest` and
#      `hypothesis` for the Python package and its tests,
#   5. the small test models in models/fixtures/ (models/make-fixtures.py) and random test
#      LoRA adapters, for the default model and for a tiny one (models/make-lora.py).
# Each step says what it does in one line. What the tools it runs print (apt-get, pip) goes to
# models/.cache/setup.log and is shown only when a step fails.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mkdir -p "$here/.cache"
log="$here/.cache/setup.log"
: >"$log"
# pip's warning about running as root, and its notice of newer pip releases, are not ours.
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1

# Runs a command with its output in the log; on failure shows the end of the log and stops.
quietly() {
    if ! "$@" >>"$log" 2>&1; then
        echo "setup: failed: $*" >&2
        tail -n 20 "$log" | sed 's/^/  /' >&2
        exit 1
    fi
}

missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v c++ >/dev/null || missing+=(g++)
ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1 || dpkg -s libclang-dev >/dev/null 2>&1 || missing+=(libclang-dev)
browser=()
command -v chromium >/dev/null || browser=(chromium)
packages=("${missing[@]}" "${browser[@]}")
if ((${#packages[@]})); then
    echo "setup [1/5]: installing Debian packages ${packages[*]} (1-2 minutes)"
    sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    quietly $sudo apt-get update -qq
    if ((${#missing[@]})); then
        quietly $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    fi
    # The browser serves one test only: where apt has no chromium, the rest still works.
    if ((${#browser[@]})) &&
        ! $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >>"$log" 2>&1; then
        echo "setup: chromium could not be installed (see $log); only the browser test of the page needs it"
    fi
else
    echo "setup [1/5]: build tools and chromium present"
fi

echo "setup [2/5]: the default model, Gemma 3 270M (base)"
"$here/fetch-default.sh"

echo "setup [3/5]: the assistant model, SmolLM2 135M Instruct"
"$here/fetch-assistant.sh"

wanted=()
python3 -c "import gguf" 2>/dev/null || wanted+=("gguf>=0.17,<1")
python3 -c "import mpmath" 2>/dev/null || wanted+=("mpmath>=1.2,<2")
python3 -c "import openai" 2>/dev/null || wanted+=("openai>=1.0,<3")
# The Python package: maturin builds it, numpy is its one dependency, pytest and hypothesis
# run its tests.
python3 -c "import maturin" 2>/dev/null || wanted+=("maturin>=1.8,<2")
python3 -c "import numpy" 2>/dev/null || wanted+=("numpy>=1.21")
python3 -c "import pytest" 2>/dev/null || wanted+=("pytest>=7")
python3 -c "import hypothesis" 2>/dev/null || wanted+=("hypothesis>=6")
if ((${#wanted[@]})); then
    echo "setup [4/5]: installing Python packages ${wanted[*]%%>=*} (test models and test references)"
    quietly python3 -m pip install --quiet "${wanted[@]}"
else
    echo "setup [4/5]: Python packages gguf, mpmath, openai, maturin, numpy, pytest and hypothesis present"
fi

echo "setup [5/5]: writing the test models and test LoRA adapters to models/fixtures/"
quietly python3 "$here/make-fixtures.py" "$here/fixtures"
quietly python3 "$here/make-lora.py" "$here/gemma-3-270m-q4_k_m.gguf" "$here/fixtures/test-lora.gguf"
quietly python3 "$here/make-lora.py" "$here/fixtures/tiny-a.gguf" "$here/fixtures/tiny-lora-output.gguf" output
echo "setup: done"
