#!/usr/bin/env bash
# Installs what building and testing podcidr needs on a fresh Debian bookworm machine:
# the musl target (static binary, ~0.2 ms exec instead of ~0.8 ms), the reference CNI plugins,
# iproute2 and ping for the namespace tests, and cnitool; podman, runc and conmon to build and
# run the images (scripts/images.sh, scripts/image-test.sh), binutils' readelf to check their
# binaries are static, and a kubectl for the kustomize package's test (the machine's own, else
# Debian's kubernetes-client). Idempotent; quiet when all is there.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'install-deps: %s\n' "$*" >&2; }
export DEBIAN_FRONTEND=noninteractive

packages=(musl-tools containernetworking-plugins iproute2 iputils-ping podman runc conmon binutils)
command -v kubectl >/dev/null || packages+=(kubernetes-client)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null | grep -qx installed || missing+=("$p")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        log "missing packages (${missing[*]}); run as root to install them"
        exit 1
    fi
    log "apt-get install ${missing[*]}"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx x86_64-unknown-linux-musl; then
    log "rustup target add x86_64-unknown-linux-musl"
    # A machine that cannot fetch the target still builds with glibc (scripts/build.sh falls back).
    rustup target add x86_64-unknown-linux-musl >/dev/null 2>&1 || log "musl target unavailable; glibc build instead"
fi

if [[ $(id -u) -eq 0 ]]; then
    bash scripts/install-cnitool.sh
fi
