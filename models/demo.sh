#!/usr/bin/env bash
# The main job on the default model: set-up if needed, build, then decode one prompt with the
# demo recipe (a poet and a scientist expert) at several weightings, to show MOD steering.
#   models/demo.sh ["PROMPT"] [extra mood flags…]
# The set-up steps and the build say what they do in one line each; what the tools print goes
# to logs (models/.cache/setup.log, target/demo-build.log), shown only when a step fails.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
models/setup.sh

mkdir -p target
log=target/demo-build.log
if [[ -x target/release/mood ]]; then
    echo "demo: building mood (cargo build --release)"
else
    echo "demo: building mood (cargo build --release; the first build compiles llama.cpp: about 6 minutes on 2 cores)"
fi
started=$SECONDS
if ! cargo build --release --quiet >"$log" 2>&1; then
    echo "demo: the build failed; the end of $log:" >&2
    tail -n 30 "$log" | sed 's/^/  /' >&2
    exit 1
fi
if ((SECONDS - started >= 10)); then
    echo "demo: built in $(((SECONDS - started) / 60)) min $(((SECONDS - started) % 60)) s"
fi

prompt="${1:-The ocean}"
shift || true
for w in 1,0 0.75,0.25 0.5,0.5 0.25,0.75 0,1 1.5,-0.5; do
    printf '\n=== weights (poet, scientist) = (%s)\n' "$w"
    printf '%s' "$prompt"
    ./target/release/mood generate --recipe models/demo.toml --weights="$w" \
        --prompt "$prompt" --max-tokens 48 "$@"
done
