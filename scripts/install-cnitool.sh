#!/usr/bin/env bash
# Install `cnitool` at /usr/local/bin/cnitool on Debian bookworm, using apt only.
#
# Debian ships no cnitool binary, but the source package golang-github-appc-cni
# contains cnitool/cnitool.go, which builds offline with Debian's golang-go in
# GOPATH mode against golang-github-appc-cni-dev (/usr/share/gocode).
# The deb-src index is fetched into a private, temporary apt state, so the
# machine's own sources.list.d, lists and caches are left untouched.
# Also installs containernetworking-plugins (reference plugins in /usr/lib/cni).
#
# Idempotent: exits at once if /usr/local/bin/cnitool already runs.
# Must run as root.
set -euo pipefail

DEST=/usr/local/bin/cnitool
SRC_PKG=golang-github-appc-cni
DEPS=(golang-go golang-github-appc-cni-dev dpkg-dev containernetworking-plugins)

log() { printf 'install-cnitool: %s\n' "$*" >&2; }

# cnitool with no arguments prints its usage (and exits 1); treat that as "runs".
if [[ -x "$DEST" ]] && [[ $("$DEST" 2>&1 || true) == *"cnitool add"* ]]; then
    log "$DEST already present, nothing to do"
    exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
    log "must run as root"
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive

missing=()
for p in "${DEPS[@]}"; do
    if ! dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null | grep -qx installed; then
        missing+=("$p")
    fi
done
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    log "build deps already installed"
fi

work=$(mktemp -d /tmp/install-cnitool.XXXXXX)
trap 'rm -rf "$work"' EXIT
# apt downloads as the unprivileged _apt user: let it reach the private dirs.
chmod 0755 "$work"

# Private apt state: own deb-src list, own lists dir, own caches, no hooks.
mkdir -p "$work/apt/lists/partial" "$work/apt/cache/archives/partial" "$work/src"
cat >"$work/apt/deb-src.sources" <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
cat >"$work/apt/apt.conf" <<EOF
#clear APT::Update::Post-Invoke;
#clear APT::Update::Post-Invoke-Success;
Dir::Etc::SourceList "$work/apt/deb-src.sources";
Dir::Etc::SourceParts "/dev/null";
Dir::State::Lists "$work/apt/lists";
Dir::Cache "$work/apt/cache";
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
if getent passwd _apt >/dev/null; then
    chown -R _apt:root "$work/apt/lists" "$work/apt/cache" "$work/src"
fi
# The -o options repeat the key settings explicitly (they override the -c file).
apt_priv=(-c "$work/apt/apt.conf"
    -o "Dir::Etc::SourceList=$work/apt/deb-src.sources"
    -o "Dir::Etc::SourceParts=/dev/null"
    -o "Dir::State::Lists=$work/apt/lists")

log "fetching deb-src index (private apt state in $work/apt)"
apt-get "${apt_priv[@]}" update -qq
log "downloading source package $SRC_PKG"
(cd "$work/src" && apt-get "${apt_priv[@]}" source -qq "$SRC_PKG" >/dev/null 2>&1) || {
    # re-run verbosely so the failure is visible
    (cd "$work/src" && apt-get "${apt_priv[@]}" source "$SRC_PKG")
}

srcdir=$(find "$work/src" -mindepth 1 -maxdepth 1 -type d -name "${SRC_PKG}-*" | head -n1)
if [[ -z "$srcdir" || ! -f "$srcdir/cnitool/cnitool.go" ]]; then
    log "cnitool/cnitool.go not found in the unpacked source"
    exit 1
fi
log "building cnitool from $(basename "$srcdir")"

# GOPATH mode, offline: imports resolve against /usr/share/gocode (the -dev package).
gopath="$work/gopath"
pkgdir="$gopath/src/github.com/containernetworking/cni/cnitool"
mkdir -p "$pkgdir"
cp "$srcdir"/cnitool/*.go "$pkgdir/"
(
    cd "$pkgdir"
    env GO111MODULE=off GOPROXY=off GOFLAGS= CGO_ENABLED=0 \
        GOPATH="$gopath:/usr/share/gocode" GOCACHE="$work/gocache" \
        go build -trimpath -o "$work/cnitool" .
)

install -m 0755 "$work/cnitool" "$DEST"
log "installed $DEST"
