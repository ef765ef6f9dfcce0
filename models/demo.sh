#!/usr/bin/env bash
# The main job on the default model: set-up if needed, build, then decode one prompt with the
# demo recipe (a poet and a scientist expert) at several weightings, to show MOD steering.
#   models/demo.sh ["PROMPT"] [extra mood flags…]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
models/setup.sh >/dev/null
cargo build --release --quiet
prompt="${1:-The ocean}"
shift || true
for w in 1,0 0.75,0.25 0.5,0.5 0.25,0.75 0,1 1.5,-0.5; do
    printf '\n=== weights (poet, scientist) = (%s)\n' "$w"
    printf '%s' "$prompt"
    ./target/release/mood generate --recipe models/demo.toml --weights="$w" \
        --prompt "$prompt" --max-tokens 48 "$@"
done
