#!/usr/bin/env bash
# Every test: installs the test dependencies (as root), checks formatting and lints, runs the
# unit, exec-level and end-to-end tests, then (as root) podcidr under podman and containerd.
# The end-to-end tests create network namespaces and bridges of their own and remove them; as
# root they are required, not skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh

echo "==> cargo fmt --check"
cargo fmt --all --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked --quiet -- -D warnings

if [[ $(id -u) -eq 0 ]]; then
    export PODCIDR_E2E=1
else
    echo "test: not root; the network namespace tests will be skipped" >&2
fi
echo "==> cargo test"
cargo test --workspace --locked

if [[ $(id -u) -ne 0 ]]; then
    echo "test: not root; skipping the benchmark smoke run and the container runtime end-to-end scripts" >&2
    exit 0
fi
# The benchmark, briefly: it must run and hand out no address twice; no timing is asserted.
echo "==> scripts/bench.sh --smoke"
bash scripts/bench.sh --smoke
# Real container runtimes with podcidr as IPAM (each installs what it needs and cleans up).
bin=$(bash scripts/build.sh)
echo "==> scripts/e2e-podman.sh"
PODCIDR_BIN=$bin bash scripts/e2e-podman.sh
echo "==> scripts/e2e-containerd.sh"
PODCIDR_BIN=$bin bash scripts/e2e-containerd.sh
# Both images built offline, the agent's run under podman (docs/install.md's commands).
echo "==> scripts/image-test.sh"
bash scripts/image-test.sh
