#!/usr/bin/env bash
# Every test: installs the test dependencies (as root), checks formatting and lints, then runs
# the unit, exec-level and end-to-end tests. The end-to-end tests create network namespaces
# and bridges of their own and remove them; as root they are required, not skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh

echo "==> cargo fmt --check"
cargo fmt --check
echo "==> cargo clippy"
cargo clippy --all-targets --locked --quiet -- -D warnings

if [[ $(id -u) -eq 0 ]]; then
    export PODCIDR_E2E=1
else
    echo "test: not root; the network namespace tests will be skipped" >&2
fi
echo "==> cargo test"
cargo test --locked
