#!/usr/bin/env bash
# Quick start on a fresh Debian machine (as root): installs what it needs, builds podcidr,
# installs /opt/cni/bin/podcidr, gives a new network namespace an address through cnitool with
# the bridge plugin, shows it and `podcidr status`, then removes everything it created.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) -ne 0 ]]; then
    echo "quickstart: run as root (it installs packages and creates a network namespace)" >&2
    exit 1
fi
step() { printf '\n==> %s\n' "$*"; }

step "Installing dependencies (musl target, reference CNI plugins, iproute2, cnitool)"
bash scripts/install-deps.sh

step "Building podcidr"
bin=$(bash scripts/build.sh)
install -D -m 0755 "$bin" /opt/cni/bin/podcidr
echo "installed /opt/cni/bin/podcidr ($(/opt/cni/bin/podcidr version | head -n1))"

net=podcidr-demo
ns=podcidr-demo-$$
confdir=$(mktemp -d)
bridge=podcidr-demo0
cleanup() {
    set +e
    [[ -e /var/run/netns/$ns ]] && CNI_PATH=/opt/cni/bin:/usr/lib/cni NETCONFPATH=$confdir \
        cnitool del "$net" "/var/run/netns/$ns" >/dev/null 2>&1
    ip netns del "$ns" 2>/dev/null
    ip link del "$bridge" 2>/dev/null
    rm -rf "$confdir" "/var/lib/cni/podcidr/$net"
}
trap cleanup EXIT

step "A demo conflist: bridge + podcidr ($confdir/10-podcidr-demo.conflist)"
cat >"$confdir/10-podcidr-demo.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "$net",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$bridge",
      "isGateway": false,
      "ipMasq": false,
      "ipam": {
        "type": "podcidr",
        "mode": "static",
        "ranges": [[{ "subnet": "10.244.7.0/24" }]],
        "routes": [{ "dst": "10.244.0.0/16" }]
      }
    }
  ]
}
JSON
cat "$confdir/10-podcidr-demo.conflist"

step "ip netns add $ns; cnitool add $net"
ip netns add "$ns"
CNI_PATH=/opt/cni/bin:/usr/lib/cni NETCONFPATH=$confdir cnitool add "$net" "/var/run/netns/$ns"
echo

step "The address inside the namespace"
ip -n "$ns" -4 addr show eth0

step "podcidr status"
/opt/cni/bin/podcidr status --network "$net"

step "cnitool del $net, and cleaning up"
CNI_PATH=/opt/cni/bin:/usr/lib/cni NETCONFPATH=$confdir cnitool del "$net" "/var/run/netns/$ns"
/opt/cni/bin/podcidr status --network "$net"
echo
echo "Done. Next: scripts/test.sh runs every test."
