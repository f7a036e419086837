#!/usr/bin/env bash
# End to end with podman (4.3, CNI backend, runc): podcidr as the IPAM of a `bridge` network.
#
# Installs what it needs (Debian: podman, runc, conmon, busybox-static,
# containernetworking-plugins, iproute2, python3-venv), builds the release binary
# (scripts/build.sh, or takes $PODCIDR_BIN) and runs podman with private config, storage, run
# and CNI dirs (see scripts/e2e/lib.sh), so the machine's own podman state, /etc/cni/net.d and
# /opt/cni/bin are not touched: runc keeps its state under a private --root (a wrapper), the
# containers' cgroups are under a cgroup parent of our own, and the containers run from a
# busybox-static root file system (--rootfs) rather than an image, so no registry is needed and
# podman's image code does not write its blob cache in /var/lib/containers.
#
# Asserts: addresses from the expected ranges, the same in `podman inspect`, inside the
# container and in the lease store, all distinct; a ping each way over the bridge; --ip (and
# --ip/--ip6, sent as runtimeConfig.ips); `podman network reload` keeps every address; stop,
# start, rm and a container exiting by itself each leave the store as they should; pod names in
# `podcidr status`; dual stack; every CNI call exits 0. Ends with `e2e-podman: N passed, N failed`.
#
# Idempotent; removes whatever an interrupted run left, at start and (trap) at exit; restores
# the host's forwarding sysctls, which the bridge plugin's isGateway switches on. Needs root.
set -euo pipefail
E2E_NAME=e2e-podman
# shellcheck source-path=SCRIPTDIR source=e2e/lib.sh
source "$(dirname "$0")/e2e/lib.sh"

NET4=podcidr-e2e-pm       # IPv4 network
NET6=podcidr-e2e-pm6      # dual-stack network
BR4=pcidre2e-pm0
BR6=pcidre2e-pm6
SUB4=10.251.0.0/24 FIRST4=10.251.0.100 LAST4=10.251.0.199 STATIC4=10.251.0.150
SUBD4=10.251.1.0/24 FIRSTD4=10.251.1.100 LASTD4=10.251.1.199 STATICD4=10.251.1.150
SUBD6=fd00:251:1::/64 FIRSTD6=fd00:251:1::100 LASTD6=fd00:251:1::1ff STATICD6=fd00:251:1::150
ROOTFS=$E2E_STATE/rootfs
CGROUP_PARENT=/podcidr-e2e-podman
# A container that stops at once on SIGTERM (busybox sh as PID 1 has no default handler).
SLEEPER=(sh -c 'trap "exit 0" TERM; while :; do sleep 1; done')

export CONTAINERS_CONF=$E2E_STATE/containers.conf
export CONTAINERS_STORAGE_CONF=$E2E_STATE/storage.conf
export CONTAINERS_REGISTRIES_CONF=$E2E_STATE/registries.conf
pm() { timeout 120 podman "$@"; }

cleanup() {
    set +e
    if [[ -f "$CONTAINERS_CONF" && -f "$CONTAINERS_STORAGE_CONF" ]] && command -v podman >/dev/null; then
        pm rm --all --force --time 0 >/dev/null 2>&1
    fi
    kill_procs_with_arg "$E2E_RUN/" # conmon of a container podman could no longer remove
    remove_leftover_netns 'netns-*'
    umount_under "$E2E_STATE" "$E2E_RUN"
    remove_cgroups "$CGROUP_PARENT"
    remove_links "$BR4" "$BR6"
    remove_cni_cache "$NET4" "$NET6"
    rm -rf "$E2E_STATE" "$E2E_RUN"
    restore_forwarding
    rmdir /run/podcidr-e2e /var/lib/podcidr-e2e 2>/dev/null
    return 0
}

e2e_start
apt_install podman runc conmon busybox-static containernetworking-plugins iproute2 python3-venv ||
    die "installing the Debian packages"
save_forwarding
install_podcidr || die "building and installing podcidr"

mkdir -p "$E2E_STATE/cni-conf" "$E2E_RUN/tmp"
nofile=$(ulimit -Hn)
[[ $nofile == unlimited ]] && nofile=1048576
cat >"$CONTAINERS_CONF" <<EOF
# podcidr e2e: a private podman, CNI backend. No CAP_SYS_RESOURCE here, hence explicit ulimits;
# crun refuses the hybrid cgroup layout, hence runc; no systemd, hence cgroupfs and file events.
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=32768:32768"]
log_driver = "k8s-file"

[network]
network_backend = "cni"
cni_plugin_dirs = ["$CNI_BIN"]
network_config_dir = "$E2E_STATE/cni-conf"
default_network = "$NET4"

[engine]
runtime = "$E2E_STATE/bin/runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$E2E_RUN/events.log"
tmp_dir = "$E2E_RUN/tmp"
volume_path = "$E2E_STATE/volumes"
lock_type = "file"
EOF
cat >"$CONTAINERS_STORAGE_CONF" <<EOF
[storage]
driver = "overlay"
graphroot = "$E2E_STATE/storage"
runroot = "$E2E_RUN/runroot"
EOF
echo 'unqualified-search-registries = []' >"$CONTAINERS_REGISTRIES_CONF"
printf '#!/bin/sh\nexec /usr/sbin/runc --root %s "$@"\n' "$E2E_RUN/runc" >"$E2E_STATE/bin/runc"
chmod 0755 "$E2E_STATE/bin/runc"

conflist "$NET4" "$BR4" "[[{ \"subnet\": \"$SUB4\", \"rangeStart\": \"$FIRST4\", \"rangeEnd\": \"$LAST4\" }]]" \
    10.251.0.0/16 '"capabilities": { "ips": true }' \
    >"$E2E_STATE/cni-conf/50-$NET4.conflist"
conflist "$NET6" "$BR6" "[[{ \"subnet\": \"$SUBD4\", \"rangeStart\": \"$FIRSTD4\", \"rangeEnd\": \"$LASTD4\" }],
                [{ \"subnet\": \"$SUBD6\", \"rangeStart\": \"$FIRSTD6\", \"rangeEnd\": \"$LASTD6\" }]]" \
    10.251.0.0/16 '"capabilities": { "ips": true }' \
    >"$E2E_STATE/cni-conf/50-$NET6.conflist"

rootfs=$E2E_CACHE/busybox-rootfs.tar
if [[ ! -s $rootfs || /bin/busybox -nt $rootfs || $E2E_ROOT/scripts/e2e/mkimage.py -nt $rootfs ]]; then
    "$PY" "$E2E_ROOT/scripts/e2e/mkimage.py" rootfs "$rootfs.tmp" && mv "$rootfs.tmp" "$rootfs"
fi
mkdir -p "$ROOTFS"
tar -xf "$rootfs" -C "$ROOTFS" || die "unpacking the busybox root file system"
nets=$(pm network ls --format '{{.Name}} {{.Driver}}' 2>&1) || die "podman network ls" "$nets"
check "podman sees both networks" contains_lines "$nets" "$NET4 bridge" "$NET6 bridge"

# ---------------------------------------------------------------------------------------------
# Helpers

# run_c NAME NETWORK [podman run options] [-- command]: starts a container, detached.
run_c() {
    local name=$1 net=$2 opts=() out
    shift 2
    while (($#)) && [[ $1 != -- ]]; do opts+=("$1"); shift; done
    (($#)) && shift
    (($#)) || set -- "${SLEEPER[@]}"
    if out=$(pm run -d --name "$name" --network "$net" --cgroup-parent "$CGROUP_PARENT" "${opts[@]}" \
        --rootfs "$ROOTFS" "$@" 2>&1); then
        pass "podman run $name (${opts[*]:-no options})"
    else
        fail "podman run $name" "${out:0:3000}"
        return 1
    fi
}
cid() { pm inspect --format '{{.Id}}' "$1"; }
# runtime_ip NAME NETWORK 4|6: the address podman reports
runtime_ip() {
    local key=IPAddress
    [[ $3 == 6 ]] && key=GlobalIPv6Address
    pm inspect --format '{{json .NetworkSettings.Networks}}' "$1" | e2epy get "$2.$key"
}
# inside_ip NAME 4|6: the global address of eth0 inside the container
inside_ip() { pm exec "$1" ip -o "-$2" addr show dev eth0 scope global | awk '{ split($4, a, "/"); print a[1]; exit }'; }
# store_ips NETWORK CONTAINER_ID: the addresses the lease store holds for it, sorted, space-separated
store_ips() { leases "$1" | awk -v id="$2" '$2 == id { print $1 }' | sort | xargs; }

# check_addr NAME NETWORK FAMILY CIDR FIRST LAST: the container's address of that family is in
# FIRST..LAST and the same for podman, inside the container and in the lease store (with the
# container's name as the pod name). Sets ADDR to podman's view of it.
ADDR=
check_addr() {
    local name=$1 net=$2 fam=$3 cidr=$4 first=$5 last=$6 rt in id st
    rt=$(runtime_ip "$name" "$net" "$fam" 2>&1) || rt="(podman inspect failed: $rt)"
    in=$(inside_ip "$name" "$fam" 2>&1) || in="(ip addr failed: $in)"
    id=$(cid "$name")
    st=$(leases "$net" | awk -v id="$id" -v f="$fam" '$2 == id && (f == 4 ? $1 !~ /:/ : $1 ~ /:/) { print $1, $3, $5 }')
    ADDR=$rt
    if in_subnet "$rt" "$cidr" "$first" "$last" >/dev/null 2>&1 && [[ "$in" == "$rt" && "$st" == "$rt eth0 $name" ]]; then
        pass "$name: IPv$fam $rt in $first-$last; the same inside and in the store (pod name $name)"
    else
        fail "$name: IPv$fam address in $first-$last, the same for podman, inside and in the store" \
            "podman: $rt" "inside: $in" "store (ip ifname podName): ${st:-none}"
    fi
}
ping_from() { # ping_from NAME ADDRESS
    check "$1 pings $2 over the bridge" pm exec "$1" ping -c 1 -W 3 "$2"
}

# ---------------------------------------------------------------------------------------------
section "IPv4 network $NET4 ($FIRST4-$LAST4)"
run_c pa "$NET4" || die "cannot start a container; nothing else can work"
run_c pb "$NET4"
run_c pc "$NET4" --ip "$STATIC4"
check_addr pa "$NET4" 4 "$SUB4" "$FIRST4" "$LAST4"; ip_pa=$ADDR
check_addr pb "$NET4" 4 "$SUB4" "$FIRST4" "$LAST4"; ip_pb=$ADDR
check_addr pc "$NET4" 4 "$SUB4" "$FIRST4" "$LAST4"; ip_pc=$ADDR
distinct "$ip_pa" "$ip_pb" "$ip_pc"
expect_eq "--ip $STATIC4 honoured" "$STATIC4" "$ip_pc"
id_pc=$(cid pc)
check "podman sent IP=$STATIC4 in CNI_ARGS for --ip" grep -q "^ADD 0 $id_pc .*IP=$STATIC4" <<<"$(trace_for "$id_pc")"
check "podman sent K8S_POD_NAME=pa" grep -qE "K8S_POD_NAME=pa(;|$)" <<<"$(trace_for "$(cid pa)")"
expect_eq "the store holds 3 leases" 3 "$(lease_count "$NET4")"
status_text=$("$PODCIDR" status --data-dir "$DATA_DIR" --network "$NET4" 2>&1)
check "podcidr status shows the pod names pa, pb, pc" \
    contains_lines "$status_text" "  $ip_pa (pa)" "  $ip_pb (pb)" "  $ip_pc (pc)"
ping_from pa "$ip_pb"
ping_from pb "$ip_pa"

section "podman network reload keeps the addresses"
check "podman network reload --all" pm network reload --all
check_addr pa "$NET4" 4 "$SUB4" "$FIRST4" "$LAST4"; expect_eq "pa kept its address" "$ip_pa" "$ADDR"
check_addr pb "$NET4" 4 "$SUB4" "$FIRST4" "$LAST4"; expect_eq "pb kept its address" "$ip_pb" "$ADDR"
check_addr pc "$NET4" 4 "$SUB4" "$FIRST4" "$LAST4"; expect_eq "pc kept its address" "$ip_pc" "$ADDR"
for c in pa pb pc; do
    id=$(cid "$c")
    expect_eq "reload sent $c a DEL, then an ADD" "DEL 0 ADD 0" "$(trace_for "$id" | tail -n 2 | awk '{ print $1, $2 }' | xargs)"
    expect_eq "the ADD asked for $c's address" "$(runtime_ip "$c" "$NET4" 4)" "$(e2epy requested "$TRACE_DIR" "$id")"
done
expect_eq "the store still holds 3 leases" 3 "$(lease_count "$NET4")"
ping_from pa "$ip_pb"

section "stop, start, rm, and a container that exits by itself"
id_pa=$(cid pa)
check "podman stop pa" pm stop -t 5 pa
expect_eq "stop released pa's lease" "" "$(store_ips "$NET4" "$id_pa")"
expect_eq "the store holds 2 leases" 2 "$(lease_count "$NET4")"
check "podman start pa" pm start pa
check_addr pa "$NET4" 4 "$SUB4" "$FIRST4" "$LAST4"; ip_pa=$ADDR
expect_eq "the store holds 3 leases" 3 "$(lease_count "$NET4")"
ping_from pb "$ip_pa"
id_pb=$(cid pb)
check "podman rm -f pb" pm rm -f -t 0 pb
expect_eq "rm released pb's lease" "" "$(store_ips "$NET4" "$id_pb")"
expect_eq "the store holds 2 leases" 2 "$(lease_count "$NET4")"
run_c pe "$NET4" -- sh -c 'sleep 1'
id_pe=$(cid pe)
check "pe exits by itself" pm wait pe
# shellcheck disable=SC2016 # expanded by eval, at each try
check "pe's lease is released within 10 s of its exit" wait_until 10 eval '[[ -z $(store_ips "$NET4" "$id_pe") ]]'
check "pe's DEL was sent and exited 0" grep -q "^DEL 0 $id_pe " <<<"$(trace_for "$id_pe")"
check "podman rm pe" pm rm pe
expect_eq "the store holds 2 leases (pa, pc)" 2 "$(lease_count "$NET4")"

section "Dual-stack network $NET6 ($FIRSTD4-$LASTD4, $FIRSTD6-$LASTD6)"
run_c pd1 "$NET6"
run_c pd2 "$NET6"
run_c pd3 "$NET6" --ip "$STATICD4" --ip6 "$STATICD6"
declare -A d4 d6
for c in pd1 pd2 pd3; do
    check_addr "$c" "$NET6" 4 "$SUBD4" "$FIRSTD4" "$LASTD4"; d4[$c]=$ADDR
    check_addr "$c" "$NET6" 6 "$SUBD6" "$FIRSTD6" "$LASTD6"; d6[$c]=$ADDR
done
distinct "${d4[@]}"
distinct "${d6[@]}"
expect_eq "--ip/--ip6 honoured" "$STATICD4 $STATICD6" "${d4[pd3]} ${d6[pd3]}"
id_pd3=$(cid pd3)
check "two static addresses came as runtimeConfig.ips" \
    grep -q '"ips": *\[' <<<"$(e2epy trace-show "$TRACE_DIR" "$id_pd3" | grep '^stdin:.*"runtimeConfig"' | head -n1)"
expect_eq "the store holds 6 leases" 6 "$(lease_count "$NET6")"
ping_from pd1 "${d4[pd2]}"
ping_from pd2 "${d6[pd1]}"

section "Removing every container"
check "podman rm -af" pm rm -af -t 0
expect_eq "the $NET4 store is empty" 0 "$(lease_count "$NET4")"
expect_eq "the $NET6 store is empty" 0 "$(lease_count "$NET6")"
bad=$(e2epy trace "$TRACE_DIR" | awk '$2 != 0')
if [[ -z $bad ]]; then
    pass "all $(e2epy trace "$TRACE_DIR" | wc -l) CNI calls to podcidr exited 0"
else
    fail "every CNI call to podcidr exits 0" "$bad" "(every call in full: $E2E_LOGS/trace.txt)"
fi
warnings=$(grep -v -E '^\S+ +(INFO|DEBUG|TRACE) ' "$PODCIDR_LOG" || true)
expect_eq "podcidr logged no warning or error" "" "$warnings"
