#!/usr/bin/env bash
# Builds the release binary: static musl where the target is installed, else glibc.
# Prints the binary's path on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

musl=x86_64-unknown-linux-musl
if command -v rustup >/dev/null && rustup target list --installed | grep -qx "$musl" && command -v musl-gcc >/dev/null; then
    cargo build --release --locked --quiet --target "$musl" >&2
    echo "$PWD/target/$musl/release/podcidr"
else
    echo "build: musl target not available, building for glibc" >&2
    cargo build --release --locked --quiet >&2
    echo "$PWD/target/release/podcidr"
fi
