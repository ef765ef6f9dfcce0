#!/usr/bin/env bash
# Checks that vendor/ holds exactly the published crates plus our patches: fetches
# llama-cpp-sys-2 and llama-cpp-2 0.1.160 from crates.io with cargo (into a scratch project),
# applies vendor/*.patch to clean copies, and compares them with vendor/, file by file.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
version="0.1.160"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

mkdir -p "$work/fetch/src"
cat > "$work/fetch/Cargo.toml" <<TOML
[package]
name = "vendor-check"
version = "0.0.0"
edition = "2021"
[dependencies]
llama-cpp-sys-2 = "=$version"
llama-cpp-2 = { version = "=$version", default-features = false }
TOML
echo "fn main() {}" > "$work/fetch/src/main.rs"
(cd "$work/fetch" && cargo fetch --quiet)

home="${CARGO_HOME:-$HOME/.cargo}"
for crate in llama-cpp-sys-2 llama-cpp-2; do
    archive="$(ls "$home"/registry/cache/*/"$crate-$version.crate" | head -n 1)"
    tar -xzf "$archive" -C "$work"
    (cd "$work/$crate-$version" && patch -p1 --quiet --no-backup-if-mismatch < "$here/$crate.patch")
    if ! diff -r --exclude=.cargo-ok "$work/$crate-$version" "$here/$crate" > "$work/diff.txt"; then
        echo "vendor/check: vendor/$crate differs from $crate $version + vendor/$crate.patch:" >&2
        head -n 20 "$work/diff.txt" >&2
        exit 1
    fi
    echo "vendor/check: vendor/$crate = $crate $version + vendor/$crate.patch"
done
