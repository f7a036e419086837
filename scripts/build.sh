#!/usr/bin/env bash
# Builds the release binaries: static musl where the target is installed, else glibc.
# Prints the plugin's path on stdout; podcidr-operator (and every other binary of the
# workspace) is beside it.
#
# The plugin is built on its own (-p podcidr) so that its dependencies are compiled with its own
# features only: in one build with the operator, cargo would unify kube's features and link the
# operator's runtime and derive code into every exec.
set -euo pipefail
cd "$(dirname "$0")/.."

musl=x86_64-unknown-linux-musl
target_args=()
dir="$PWD/target/release"
if command -v rustup >/dev/null && rustup target list --installed | grep -qx "$musl" && command -v musl-gcc >/dev/null; then
    target_args=(--target "$musl")
    dir="$PWD/target/$musl/release"
else
    echo "build: musl target not available, building for glibc" >&2
fi
cargo build --release --locked --quiet "${target_args[@]}" -p podcidr >&2
cargo build --release --locked --quiet "${target_args[@]}" --workspace --exclude podcidr --bins >&2
echo "$dir/podcidr"
