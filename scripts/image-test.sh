#!/usr/bin/env bash
# CI for the images: builds both offline (scripts/images.sh: FROM scratch, --pull=never) in a
# private podman store, runs the operator image, and runs the node image's agent under podman
# against temporary host directories and the stand-in API server on loopback
# (crates/agent/tests/image.rs). The machine's own podman storage and config are not touched.
# Needs root and podman, runc, conmon (scripts/install-deps.sh installs them).
# Ends with `image-test: N passed, N failed`.
set -euo pipefail
cd "$(dirname "$0")/.."

state=$(mktemp -d /var/tmp/podcidr-image-test.XXXXXX)
export CONTAINERS_CONF=$state/containers.conf
export CONTAINERS_STORAGE_CONF=$state/storage.conf
export CONTAINERS_REGISTRIES_CONF=$state/registries.conf
cleanup() {
    set +e
    podman rm --all --force --time 0 >/dev/null 2>&1
    podman system reset --force >/dev/null 2>&1
    rm -rf "$state"
}
trap cleanup EXIT

mkdir -p "$state/bin" "$state/tmp"
# runc keeps its state under a root of our own; no systemd here, hence cgroupfs and file events.
printf '#!/bin/sh\nexec runc --root %s "$@"\n' "$state/runc" >"$state/bin/runc"
chmod 0755 "$state/bin/runc"
# No CAP_SYS_RESOURCE on some machines: podman's default rlimits could not be set, so the ones
# in force are given (as scripts/e2e-podman.sh does).
nofile=$(ulimit -Hn)
[[ $nofile == unlimited ]] && nofile=1048576
cat >"$CONTAINERS_CONF" <<CONF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=32768:32768"]
log_driver = "k8s-file"
[engine]
runtime = "$state/bin/runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$state/events.log"
tmp_dir = "$state/tmp"
CONF
cat >"$CONTAINERS_STORAGE_CONF" <<CONF
[storage]
driver = "overlay"
graphroot = "$state/storage"
runroot = "$state/runroot"
CONF
echo 'unqualified-search-registries = []' >"$CONTAINERS_REGISTRIES_CONF"

passed=0 failed=0
check() { # NAME COMMAND...
    if "${@:2}"; then passed=$((passed + 1)); echo "ok: $1"; else failed=$((failed + 1)); echo "FAILED: $1"; fi
}

# The commands of docs/install.md, as written there.
mapfile -t images < <(bash scripts/images.sh --registry registry.example.com/platform)
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
node_image=localhost/podcidr:$version operator_image=localhost/podcidr-operator:$version
check "images tagged with the crate version $version, and for the registry" test "${images[*]}" = \
    "$node_image registry.example.com/platform/podcidr:$version $operator_image registry.example.com/platform/podcidr-operator:$version"
check "both images saved to one archive for ctr import" bash -c "
    podman save --multi-image-archive -o '$state/podcidr-images.tar' $node_image $operator_image &&
    tar -xOf '$state/podcidr-images.tar' manifest.json | grep -q '$node_image' &&
    tar -xOf '$state/podcidr-images.tar' manifest.json | grep -q '$operator_image'"
check "the operator image starts, as uid 65532" \
    bash -c "podman run --rm --pull=never --network=none $operator_image --help >/dev/null &&
             [[ \$(podman image inspect --format '{{.Config.User}}' $operator_image) == 65532:65532 ]]"
check "the node image holds the plugin" podman run --rm --pull=never --network=none --entrypoint /podcidr "$node_image" version
check "the agent image installs plugin, conflist and kubeconfig" \
    env PODCIDR_IMAGE="$node_image" cargo test --locked -p podcidr-agent --test image -- --ignored

echo "image-test: $passed passed, $failed failed"
((failed == 0))
