#!/usr/bin/env bash
# End to end with containerd 1.6's CRI plugin (no kubelet): podcidr as the IPAM of a `bridge`
# network, pod sandboxes driven through CRI gRPC as a kubelet would.
#
# Installs what it needs (Debian: containerd, runc, busybox-static, containernetworking-plugins,
# iproute2, iputils-ping, python3-venv; PyPI, in a venv under /var/cache/podcidr-e2e:
# container-runtime-interface-api, the CRI stubs), builds the release binary (scripts/build.sh,
# or takes $PODCIDR_BIN) and runs a containerd of its own: private root, state, socket, runc
# root, CNI conf and bin dirs, network namespaces under its state dir, pod cgroups under a
# parent of our own (see scripts/e2e/lib.sh). The pause image is an OCI archive of
# busybox-static with `sleep` as entrypoint, imported with ctr: no registry.
#
# Asserts: every sandbox gets an address from the expected range, the same in
# PodSandboxStatus, inside its network namespace and in the lease store, all distinct; a ping
# each way over the bridge; what containerd sends (K8S_POD_* in CNI_ARGS); StopPodSandbox,
# a second StopPodSandbox and RemovePodSandbox: three DELs, all exit 0, the lease freed by the
# first and only once; `podcidr status` shows namespace/name; dual stack (containerd restarted on
# a second network). Ends with `e2e-containerd: N passed, N failed`.
#
# Idempotent; removes whatever an interrupted run left, at start and (trap) at exit; restores
# the host's forwarding sysctls, which the bridge plugin's isGateway switches on. Needs root.
set -euo pipefail
E2E_NAME=e2e-containerd
# shellcheck source-path=SCRIPTDIR source=e2e/lib.sh
source "$(dirname "$0")/e2e/lib.sh"

NET4=podcidr-e2e-cri      # IPv4 network
NET6=podcidr-e2e-cri6     # dual-stack network
BR4=pcidre2e-cd0
BR6=pcidre2e-cd6
SUB4=10.252.0.0/24 FIRST4=10.252.0.100 LAST4=10.252.0.199
SUBD4=10.252.1.0/24 FIRSTD4=10.252.1.100 LASTD4=10.252.1.199
SUBD6=fd00:252:1::/64 FIRSTD6=fd00:252:1::100 LASTD6=fd00:252:1::1ff
PAUSE_IMAGE=localhost/podcidr-e2e/pause:1
CGROUP_PARENT=/podcidr-e2e-containerd
SOCK=$E2E_RUN/containerd.sock
PIDFILE=$E2E_RUN/containerd.pid
VENV=$E2E_CACHE/venv
CRI_REQ=container-runtime-interface-api==2.0.1
# Set when this run made /run/containerd (containerd 1.6 puts shim sockets in /run/containerd/s
# whatever its config says), so that the cleanup removes it again if empty.
MADE_RUN_CONTAINERD=/var/lib/podcidr-e2e/$E2E_NAME.made-run-containerd

cri() { timeout 120 "$VENV/bin/python" "$E2E_ROOT/scripts/e2e/cri.py" --sock "$SOCK" "$@"; }
ctr_() { timeout 120 ctr --address "$SOCK" --namespace k8s.io "$@"; }

containerd_pid() { # the pid of our containerd, if it runs
    local pid
    pid=$(cat "$PIDFILE" 2>/dev/null) || return 1
    [[ -n $pid ]] && { tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -qF -- "--config $E2E_STATE/" && echo "$pid"
}
# start_containerd CONFIG: starts our containerd and waits until its CRI is ready
start_containerd() {
    echo "$1" >"$E2E_STATE/active-config"
    containerd --config "$1" >>"$E2E_LOGS/containerd.log" 2>&1 &
    echo $! >"$PIDFILE"
    for _ in $(seq 100); do
        [[ -S $SOCK ]] && break
        kill -0 "$(cat "$PIDFILE")" 2>/dev/null || return 1
        sleep 0.1
    done
    [[ -x $VENV/bin/python ]] || return 0
    cri ready 30
}
stop_containerd() {
    local pid
    pid=$(containerd_pid) || return 0
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null
    rm -f "$PIDFILE"
    return 0
}

cleanup() {
    set +e
    # Pods an interrupted run left: ask (a restarted) containerd to stop and remove them, so
    # their shims, mounts and network namespaces go the proper way.
    local config
    config=$(cat "$E2E_STATE/active-config" 2>/dev/null)
    if [[ -x $VENV/bin/python ]]; then
        if containerd_pid >/dev/null; then
            cri remove-all
        elif [[ -f $config && -n $(ls -A "$E2E_RUN/state/io.containerd.runtime.v2.task/k8s.io" 2>/dev/null) ]]; then
            log "restarting containerd to remove the pods an earlier run left"
            start_containerd "$config" && cri remove-all
        fi
    fi
    stop_containerd
    # Last resort: shims (and a containerd) that still name our private paths.
    kill_procs_with_arg "$SOCK"
    kill_procs_with_arg "--config $E2E_STATE/"
    local a
    for a in "$E2E_RUN"/state/io.containerd.runtime.v2.task/*/*/address; do
        [[ -f $a ]] || continue
        a=$(cat "$a")
        a=${a#unix://}
        [[ $a == /run/containerd/s/* ]] && rm -f "$a"
    done
    umount_under "$E2E_STATE" "$E2E_RUN"
    remove_leftover_netns 'cni-*'
    remove_cgroups "$CGROUP_PARENT"
    remove_links "$BR4" "$BR6"
    remove_cni_cache "$NET4" "$NET6"
    rm -rf "$E2E_STATE" "$E2E_RUN"
    if [[ -f $MADE_RUN_CONTAINERD ]]; then
        rmdir /run/containerd/s /run/containerd 2>/dev/null
        rm -f "$MADE_RUN_CONTAINERD"
    fi
    restore_forwarding
    rmdir /run/podcidr-e2e /var/lib/podcidr-e2e 2>/dev/null
    return 0
}

e2e_start
apt_install containerd runc busybox-static containernetworking-plugins iproute2 iputils-ping python3-venv ||
    die "installing the Debian packages"
if ! { [[ -x $VENV/bin/python && $(cat "$VENV/.podcidr-e2e" 2>/dev/null) == "$CRI_REQ" ]] &&
    "$VENV/bin/python" -c 'import cri_api.v1.api_pb2_grpc' 2>/dev/null; }; then
    log "pip install $CRI_REQ (venv $VENV)"
    t0=$SECONDS
    rm -rf "$VENV"
    if "$PY" -m venv "$VENV" >"$E2E_LOGS/pip.log" 2>&1 &&
        "$VENV/bin/pip" install --quiet --disable-pip-version-check "$CRI_REQ" >>"$E2E_LOGS/pip.log" 2>&1; then
        echo "$CRI_REQ" >"$VENV/.podcidr-e2e"
    else
        die "installing $CRI_REQ in $VENV" "$(tail -n 20 "$E2E_LOGS/pip.log")"
    fi
    log "pip install took $((SECONDS - t0)) s"
fi
save_forwarding
install_podcidr || die "building and installing podcidr"

# containerd_config NAME: a config whose CRI uses the CNI conf dir cni-NAME
containerd_config() {
    mkdir -p "$E2E_STATE/cni-$1"
    cat >"$E2E_STATE/config-$1.toml" <<EOF
# podcidr e2e: a private containerd with its CRI plugin. No systemd here, hence cgroupfs.
version = 2
root = "$E2E_STATE/root"
state = "$E2E_RUN/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing"]

[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[debug]
  address = ""
  level = "info"
[metrics]
  address = ""

[plugins."io.containerd.runtime.v1.linux"]
  runtime_root = "$E2E_RUN/runc-v1"
[plugins."io.containerd.internal.v1.opt"]
  path = "$E2E_STATE/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  restrict_oom_score_adj = true
  enable_selinux = false
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN"
    conf_dir = "$E2E_STATE/cni-$1"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$E2E_RUN/runc"
EOF
}
containerd_config v4
conflist "$NET4" "$BR4" "[[{ \"subnet\": \"$SUB4\", \"rangeStart\": \"$FIRST4\", \"rangeEnd\": \"$LAST4\" }]]" \
    10.252.0.0/16 \
    >"$E2E_STATE/cni-v4/50-$NET4.conflist"
containerd_config dual
conflist "$NET6" "$BR6" "[[{ \"subnet\": \"$SUBD4\", \"rangeStart\": \"$FIRSTD4\", \"rangeEnd\": \"$LASTD4\" }],
                [{ \"subnet\": \"$SUBD6\", \"rangeStart\": \"$FIRSTD6\", \"rangeEnd\": \"$LASTD6\" }]]" \
    10.252.0.0/16 \
    >"$E2E_STATE/cni-dual/50-$NET6.conflist"

pause=$E2E_CACHE/pause-oci.tar
if [[ ! -s $pause || /bin/busybox -nt $pause || $E2E_ROOT/scripts/e2e/mkimage.py -nt $pause ]]; then
    "$PY" "$E2E_ROOT/scripts/e2e/mkimage.py" oci "$pause.tmp" "$PAUSE_IMAGE" /bin/sleep 2147483647 &&
        mv "$pause.tmp" "$pause"
fi
[[ -d /run/containerd ]] || touch "$MADE_RUN_CONTAINERD"
start_containerd "$E2E_STATE/config-v4.toml" || die "starting containerd" "$(tail -n 20 "$E2E_LOGS/containerd.log")"
out=$(ctr_ images import "$pause" 2>&1) || die "ctr images import of the pause image" "$out"
check "containerd sees the pause image" eval "ctr_ images ls -q | grep -qx '$PAUSE_IMAGE'"

# ---------------------------------------------------------------------------------------------
# Helpers

POD_ID=
# run_pod NAMESPACE NAME: RunPodSandbox; sets POD_ID
run_pod() {
    local out
    if out=$(cri run "$2" "$1" "uid-$1-$2" "$CGROUP_PARENT" 2>&1); then
        POD_ID=$out
        pass "RunPodSandbox $1/$2 (${POD_ID:0:12})"
    else
        POD_ID=
        fail "RunPodSandbox $1/$2" "${out:0:3000}"
        return 1
    fi
}
pod_status() { cri status "$1"; }
netns_of() { pod_status "$1" | e2epy get netns; }
# inside_ip NETNS 4|6
inside_ip() { nsenter --net="$1" ip -o "-$2" addr show dev eth0 scope global | awk '{ split($4, a, "/"); print a[1]; exit }'; }
store_ips() { leases "$1" | awk -v id="$2" '$2 == id { print $1 }' | sort | xargs; }

ADDR=
# check_addr ID NAMESPACE/NAME NETWORK FAMILY CIDR FIRST LAST: the sandbox's address of that
# family is in FIRST..LAST and the same in PodSandboxStatus, inside its network namespace and in
# the store (with the pod's namespace and name). Sets ADDR.
check_addr() {
    local id=$1 pod=$2 net=$3 fam=$4 cidr=$5 first=$6 last=$7 st rt ns in lease
    st=$(pod_status "$id" 2>&1) || st='{}'
    rt=$(e2epy get ips <<<"$st" | tr -d '[]",' | tr ' ' '\n' | while read -r a; do
        [[ -n $a && $(e2epy family "$a") == "$fam" ]] && echo "$a"; done | head -n1)
    ns=$(e2epy get netns <<<"$st")
    in=$(inside_ip "$ns" "$fam" 2>&1) || in="(ip addr in $ns failed: $in)"
    lease=$(leases "$net" | awk -v id="$id" -v f="$fam" '$2 == id && (f == 4 ? $1 !~ /:/ : $1 ~ /:/) { print $1, $3, $4 "/" $5 }')
    ADDR=$rt
    if in_subnet "$rt" "$cidr" "$first" "$last" >/dev/null 2>&1 && [[ "$in" == "$rt" && "$lease" == "$rt eth0 $pod" ]]; then
        pass "$pod: IPv$fam $rt in $first-$last; the same inside its netns and in the store"
    else
        fail "$pod: IPv$fam address in $first-$last, the same for containerd, inside and in the store" \
            "PodSandboxStatus: $st" "inside: $in" "store (ip ifname namespace/name): ${lease:-none}"
    fi
}
ping_from() { # ping_from NETNS_PATH POD ADDRESS
    check "$2 pings $3 over the bridge" nsenter --net="$1" ping -c 1 -W 3 "$3"
}
# released_count ID: how many of podcidr's DELs for that sandbox released something
released_count() { grep -c "DEL container=$1 .*released=\[[^]]" "$PODCIDR_LOG" || true; }

# ---------------------------------------------------------------------------------------------
section "IPv4 network $NET4 ($FIRST4-$LAST4)"
run_pod default web-0 || die "cannot run a pod sandbox; nothing else can work" \
    "$(tail -n 20 "$E2E_LOGS/containerd.log")"
id_a=$POD_ID
run_pod default web-1
id_b=$POD_ID
run_pod kube-system dns-0
id_c=$POD_ID
check_addr "$id_a" default/web-0 "$NET4" 4 "$SUB4" "$FIRST4" "$LAST4"; ip_a=$ADDR
check_addr "$id_b" default/web-1 "$NET4" 4 "$SUB4" "$FIRST4" "$LAST4"; ip_b=$ADDR
check_addr "$id_c" kube-system/dns-0 "$NET4" 4 "$SUB4" "$FIRST4" "$LAST4"; ip_c=$ADDR
distinct "$ip_a" "$ip_b" "$ip_c"
expect_eq "the store holds 3 leases" 3 "$(lease_count "$NET4")"
args=$(trace_for "$id_a" | awk '$1 == "ADD" { print $7 }' | tr ';' '\n' | sort | xargs)
expect_eq "containerd sent K8S_POD_* and IgnoreUnknown in CNI_ARGS" \
    "IgnoreUnknown=1 K8S_POD_INFRA_CONTAINER_ID=$id_a K8S_POD_NAME=web-0 K8S_POD_NAMESPACE=default K8S_POD_UID=uid-default-web-0" \
    "$args"
status_text=$("$PODCIDR" status --data-dir "$DATA_DIR" --network "$NET4" 2>&1)
check "podcidr status shows namespace/name" \
    contains_lines "$status_text" "  $ip_a (default/web-0)" "  $ip_b (default/web-1)" "  $ip_c (kube-system/dns-0)"
ns_a=$(netns_of "$id_a")
ns_b=$(netns_of "$id_b")
ping_from "$ns_a" default/web-0 "$ip_b"
ping_from "$ns_b" default/web-1 "$ip_a"

section "StopPodSandbox, StopPodSandbox again, RemovePodSandbox"
check "StopPodSandbox default/web-0" cri stop "$id_a"
expect_eq "stop released web-0's lease" "" "$(store_ips "$NET4" "$id_a")"
expect_eq "the store holds 2 leases" 2 "$(lease_count "$NET4")"
check "StopPodSandbox default/web-0 again" cri stop "$id_a"
check "RemovePodSandbox default/web-0" cri remove "$id_a"
check "the sandbox is gone" eval "! cri status $id_a >/dev/null 2>&1"
dels=$(trace_for "$id_a" | awk '$1 == "DEL"')
expect_eq "three DELs, all exit 0" "DEL 0|DEL 0|DEL 0" "$(awk '{ print $1, $2 }' <<<"$dels" | paste -sd'|')"
expect_eq "the first DEL has CNI_NETNS and prevResult, the later two neither" "$ns_a yes|- no|- no" \
    "$(awk '{ print $5, $6 }' <<<"$dels" | paste -sd'|')"
expect_eq "the lease was freed once (one DEL released it)" 1 "$(released_count "$id_a")"
expect_eq "the other leases are untouched" "$ip_b $ip_c" "$(store_ips "$NET4" "$id_b") $(store_ips "$NET4" "$id_c")"
for id in "$id_b" "$id_c"; do
    check "StopPodSandbox ${id:0:12}" cri stop "$id"
    check "RemovePodSandbox ${id:0:12}" cri remove "$id"
done
expect_eq "the $NET4 store is empty" 0 "$(lease_count "$NET4")"

section "Dual-stack network $NET6 ($FIRSTD4-$LASTD4, $FIRSTD6-$LASTD6): containerd restarted on it"
stop_containerd
start_containerd "$E2E_STATE/config-dual.toml" || die "restarting containerd" "$(tail -n 20 "$E2E_LOGS/containerd.log")"
run_pod default dual-0
id_d=$POD_ID
run_pod default dual-1
id_e=$POD_ID
check_addr "$id_d" default/dual-0 "$NET6" 4 "$SUBD4" "$FIRSTD4" "$LASTD4"; d4=$ADDR
check_addr "$id_d" default/dual-0 "$NET6" 6 "$SUBD6" "$FIRSTD6" "$LASTD6"; d6=$ADDR
check_addr "$id_e" default/dual-1 "$NET6" 4 "$SUBD4" "$FIRSTD4" "$LASTD4"; e4=$ADDR
check_addr "$id_e" default/dual-1 "$NET6" 6 "$SUBD6" "$FIRSTD6" "$LASTD6"; e6=$ADDR
distinct "$d4" "$e4"
distinct "$d6" "$e6"
expect_eq "the store holds 4 leases" 4 "$(lease_count "$NET6")"
ns_d=$(netns_of "$id_d")
ping_from "$ns_d" default/dual-0 "$e4"
ping_from "$ns_d" default/dual-0 "$e6"
for id in "$id_d" "$id_e"; do
    check "StopPodSandbox ${id:0:12}" cri stop "$id"
    check "StopPodSandbox ${id:0:12} again" cri stop "$id"
    check "RemovePodSandbox ${id:0:12}" cri remove "$id"
    expect_eq "three DELs for ${id:0:12}, all exit 0, one released the lease" "DEL 0|DEL 0|DEL 0 1" \
        "$(trace_for "$id" | awk '$1 == "DEL" { print $1, $2 }' | paste -sd'|') $(released_count "$id")"
done
expect_eq "the $NET6 store is empty" 0 "$(lease_count "$NET6")"

section "Every call"
bad=$(e2epy trace "$TRACE_DIR" | awk '$2 != 0')
if [[ -z $bad ]]; then
    pass "all $(e2epy trace "$TRACE_DIR" | wc -l) CNI calls to podcidr exited 0"
else
    fail "every CNI call to podcidr exits 0" "$bad" "(every call in full: $E2E_LOGS/trace.txt)"
fi
warnings=$(grep -v -E '^\S+ +(INFO|DEBUG|TRACE) ' "$PODCIDR_LOG" || true)
expect_eq "podcidr logged no warning or error" "" "$warnings"
