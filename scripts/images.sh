#!/usr/bin/env bash
# Builds podcidr's two images offline, with podman (else buildah), tagged with the crate
# version:
#   localhost/podcidr:<version>           the plugin and podcidr-agent (conf/Containerfile)
#   localhost/podcidr-operator:<version>  podcidr-operator (conf/operator/Containerfile)
# Both are FROM scratch and built with --pull=never: nothing is fetched. The binaries are
# static: musl where the target is installed (scripts/install-deps.sh tries to add it), else
# glibc linked with crt-static; a dynamically linked binary stops the build.
#
#   scripts/images.sh                    build both; print their names
#   scripts/images.sh --registry REG     also tag them REG/podcidr:<version>, REG/podcidr-operator:<version>
# PODCIDR_BIN_DIR=DIR takes the three binaries from DIR instead of building them.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'images: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

registry=
while (($#)); do
    case $1 in
        --registry) registry=${2:?--registry needs a value}; shift 2 ;;
        *) die "unknown argument $1" ;;
    esac
done

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
[[ -n $version ]] || die "no version in Cargo.toml"
if command -v podman >/dev/null; then
    tool=podman
elif command -v buildah >/dev/null; then
    tool=buildah
else
    die "neither podman nor buildah is installed (Debian: apt-get install podman)"
fi

bins=(podcidr podcidr-agent podcidr-operator)
if [[ -n ${PODCIDR_BIN_DIR:-} ]]; then
    dir=$PODCIDR_BIN_DIR
else
    musl=x86_64-unknown-linux-musl
    # The plugin on its own, so that it keeps its own dependencies' features (scripts/build.sh).
    build() {
        cargo build --release --locked -p podcidr --bin podcidr "$@" &&
            cargo build --release --locked -p podcidr-agent -p podcidr-operator --bin podcidr-agent --bin podcidr-operator "$@"
    }
    if command -v rustup >/dev/null && rustup target list --installed | grep -qx "$musl" && command -v musl-gcc >/dev/null; then
        log "building static musl binaries"
        build --target "$musl" >&2
        dir=target/$musl/release
    else
        # With --target, RUSTFLAGS reach the binaries only, not build scripts or proc macros.
        gnu=x86_64-unknown-linux-gnu
        log "musl target not available: building static glibc binaries (crt-static)"
        RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-C target-feature=+crt-static" build --target "$gnu" >&2
        dir=target/$gnu/release
    fi
fi

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
for b in "${bins[@]}"; do
    [[ -x $dir/$b ]] || die "$dir/$b is missing"
    # FROM scratch has no dynamic loader: a binary with a program interpreter cannot start.
    if LC_ALL=C readelf -l "$dir/$b" 2>/dev/null | grep -q 'Requesting program interpreter'; then
        die "$dir/$b is dynamically linked; FROM scratch needs a static binary"
    fi
    cp "$dir/$b" "$ctx/$b"
done

build_image() { # CONTAINERFILE NAME
    local tags=(-t "localhost/$2:$version")
    [[ -n $registry ]] && tags+=(-t "$registry/$2:$version")
    if [[ $tool == podman ]]; then
        podman build --pull=never --network=none -f "$1" "${tags[@]}" "$ctx" >&2
    else
        buildah bud --pull=never --network=none -f "$1" "${tags[@]}" "$ctx" >&2
    fi
    echo "localhost/$2:$version"
    [[ -z $registry ]] || echo "$registry/$2:$version"
}
build_image conf/Containerfile podcidr
build_image conf/operator/Containerfile podcidr-operator
