# shellcheck shell=bash disable=SC2034  # the variables here are used by the sourcing scripts
# Shared by scripts/e2e-podman.sh and scripts/e2e-containerd.sh; sourced, not run.
#
# The caller sets E2E_NAME (e.g. e2e-podman) before sourcing. Everything a run creates lives
# under fixed private paths, so that the leftovers of an interrupted run are found and removed
# when the next run starts:
#   $E2E_STATE  /var/lib/podcidr-e2e/<name>   config, storage, the CNI bin dir, leases, traces
#   $E2E_RUN    /run/podcidr-e2e/<name>       run-time state, sockets
#   $E2E_LOGS   /tmp/podcidr-e2e/<name>       logs, kept after the run for a look (wiped at start)
#   $E2E_CACHE  /var/cache/podcidr-e2e        kept between runs: the Python venv, built images
# The host's forwarding sysctls are saved in /var/lib/podcidr-e2e/<name>.forwarding before
# anything can change them, and put back (by this run's exit trap, or by the next run).

E2E_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
E2E_STATE=/var/lib/podcidr-e2e/$E2E_NAME
E2E_RUN=/run/podcidr-e2e/$E2E_NAME
E2E_LOGS=${PODCIDR_E2E_LOGS:-/tmp/podcidr-e2e/$E2E_NAME}
E2E_CACHE=${PODCIDR_E2E_CACHE:-/var/cache/podcidr-e2e}
E2E_SAVED_SYSCTLS=/var/lib/podcidr-e2e/$E2E_NAME.forwarding
CNI_BIN=$E2E_STATE/cni-bin          # the runtime's only CNI plugin dir: podcidr (traced), bridge, loopback
PODCIDR=$E2E_STATE/bin/podcidr      # the release binary itself, for `podcidr status`
DATA_DIR=$E2E_STATE/leases          # podcidr's dataDir
TRACE_DIR=$E2E_STATE/trace          # one file per CNI call to podcidr
PODCIDR_LOG=$E2E_LOGS/podcidr.log   # podcidr's logFile (logLevel debug)
PY=/usr/bin/python3                 # Debian's, from python3-venv; never a hand-installed one
E2E_PY=$E2E_ROOT/scripts/e2e/e2e.py
FORWARDING_SYSCTLS=(/proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv6/conf/all/forwarding)

PASSED=0
FAILED=0
E2E_T0=$SECONDS

log() { printf '%s: %s\n' "$E2E_NAME" "$*" >&2; }
section() { printf '\n== %s  (%d s)\n' "$*" $((SECONDS - E2E_T0)); }
pass() {
    PASSED=$((PASSED + 1))
    printf '  ok    %3ds  %s\n' $((SECONDS - E2E_T0)) "$1"
}
fail() {
    FAILED=$((FAILED + 1))
    printf '  FAIL  %3ds  %s\n' $((SECONDS - E2E_T0)) "$1"
    shift
    local line
    for line in "$@"; do printf '        %s\n' "$line"; done
}
# check DESCRIPTION COMMAND...: passes when COMMAND succeeds; its output is shown on failure only.
check() {
    local desc=$1 out
    shift
    if out=$("$@" 2>&1); then
        pass "$desc"
    else
        fail "$desc" "\$ $*" "${out:0:3000}"
    fi
}
# expect_eq DESCRIPTION WANT GOT
expect_eq() {
    if [[ "$2" == "$3" ]]; then pass "$1"; else fail "$1" "want: $2" "got:  $3"; fi
}
# A failure that makes the rest pointless: counted, then the exit trap cleans up and reports.
die() {
    fail "$@"
    exit 1
}

# contains_lines TEXT LINE...: TEXT has every LINE, whole
contains_lines() {
    local text=$1 l
    shift
    for l; do grep -qxF -- "$l" <<<"$text" || { echo "no line \"$l\" in:"; echo "$text"; return 1; }; done
}
# wait_until SECONDS COMMAND...: polls every 0.2 s
wait_until() {
    local end=$((SECONDS + $1))
    shift
    until "$@"; do
        ((SECONDS < end)) || return 1
        sleep 0.2
    done
}
distinct() { # distinct ADDRESS...: no address twice
    local dup
    dup=$(printf '%s\n' "$@" | sort | uniq -d)
    if [[ -z $dup ]]; then pass "addresses distinct: $*"; else fail "addresses distinct" "twice: $dup"; fi
}

# Two runs of one script at once would remove each other's containers, so a run records its pid
# in /run/lock/podcidr-<name>.pid and a second run, seeing that pid alive and running this
# script, stops at once. (Not flock: the lock's fd would leak into the daemons a run starts and
# outlive an interrupted run.)
E2E_LOCK=/run/lock/podcidr-$E2E_NAME.pid
take_lock() {
    local pid
    mkdir -p /run/lock
    pid=$(cat "$E2E_LOCK" 2>/dev/null) || true
    if [[ -n $pid && $pid != "$$" ]] && { tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -qF "$E2E_NAME.sh"; then
        echo "$E2E_NAME: another run (pid $pid) is in progress"
        echo "$E2E_NAME: 0 passed, 1 failed"
        exit 1
    fi
    echo "$$" >"$E2E_LOCK"
}
release_lock() { [[ $(cat "$E2E_LOCK" 2>/dev/null) == "$$" ]] && rm -f "$E2E_LOCK"; return 0; }

# ---------------------------------------------------------------------------------------------
# Dependencies

# apt_install PACKAGE...: installs those not installed yet (apt-get update first, only then).
apt_install() {
    local p missing=()
    for p in "$@"; do
        dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null | grep -qx installed || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    log "apt-get install ${missing[*]}"
    local t0=$SECONDS
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$E2E_LOGS/apt.log" 2>&1 || {
        cat "$E2E_LOGS/apt.log" >&2
        return 1
    }
    log "apt-get install took $((SECONDS - t0)) s"
}

# Builds the release binary (or takes $PODCIDR_BIN) and installs it in the private CNI bin dir,
# behind a wrapper that records every call; bridge and loopback are linked from /usr/lib/cni.
install_podcidr() {
    local bin=${PODCIDR_BIN:-}
    if [[ -z "$bin" ]]; then
        local t0=$SECONDS
        bin=$(bash "$E2E_ROOT/scripts/build.sh") || return 1
        log "scripts/build.sh took $((SECONDS - t0)) s"
    fi
    [[ -x "$bin" ]] || {
        log "no podcidr binary at $bin"
        return 1
    }
    mkdir -p "$CNI_BIN" "$(dirname "$PODCIDR")" "$DATA_DIR" "$TRACE_DIR"
    install -m 0755 "$bin" "$PODCIDR"
    local p
    for p in bridge loopback; do ln -sfn "/usr/lib/cni/$p" "$CNI_BIN/$p"; done
    # The wrapper passes stdin, the environment, stdout and the exit status through unchanged.
    cat >"$CNI_BIN/podcidr" <<EOF
#!/bin/bash
# podcidr e2e: records this CNI call in $TRACE_DIR, then answers as podcidr does.
t=$TRACE_DIR/\$(date +%s.%N)-\$\$
stdin=\$(cat; echo .)
stdin=\${stdin%.}
stdout=\$(printf '%s' "\$stdin" | $PODCIDR)
rc=\$?
{ env | grep -E '^CNI_' | sort; printf -- '--- stdin\n%s\n--- exit %d\n--- stdout\n%s\n' "\$stdin" "\$rc" "\$stdout"; } >"\$t.tmp" && mv "\$t.tmp" "\$t"
printf '%s\n' "\$stdout"
exit \$rc
EOF
    chmod 0755 "$CNI_BIN/podcidr"
    local v
    v=$("$PODCIDR" version)
    log "podcidr: ${v%%$'\n'*} from $bin"
}

# ---------------------------------------------------------------------------------------------
# The host's forwarding sysctls (the bridge plugin's isGateway switches them on host-wide)

restore_forwarding() {
    [[ -f "$E2E_SAVED_SYSCTLS" ]] || return 0
    local path value
    while read -r path value; do
        [[ -w "$path" && "$(cat "$path")" != "$value" ]] && echo "$value" >"$path"
    done <"$E2E_SAVED_SYSCTLS"
    rm -f "$E2E_SAVED_SYSCTLS"
}
save_forwarding() {
    restore_forwarding # an interrupted run's saved values are the real ones
    mkdir -p "$(dirname "$E2E_SAVED_SYSCTLS")"
    local path
    for path in "${FORWARDING_SYSCTLS[@]}"; do
        [[ -r "$path" ]] && echo "$path $(cat "$path")"
    done >"$E2E_SAVED_SYSCTLS.tmp"
    mv "$E2E_SAVED_SYSCTLS.tmp" "$E2E_SAVED_SYSCTLS"
    # What the exit trap checks came back.
    for path in "${FORWARDING_SYSCTLS[@]}"; do [[ -r $path ]] && SAVED[$path]=$(cat "$path"); done
    return 0
}

# ---------------------------------------------------------------------------------------------
# Cleaning up what a run (this one or an interrupted one) left behind

# Unmounts everything mounted at or below the given directories, deepest first.
umount_under() {
    local d m
    for d in "$@"; do
        # mountinfo field 5 is the mount point (octal escapes for spaces; our paths have none)
        awk -v d="$d" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r -u |
            while read -r m; do umount -l "$m" 2>/dev/null || true; done
    done
}

# Network namespaces the runtime made for our containers and did not remove: the CNI_NETNS of
# every call recorded in our trace, and every netns named in our lease store. Only names under
# /run/netns (or /var/run/netns) that match the runtime's pattern ($1, a glob) are removed.
remove_leftover_netns() {
    local pattern=$1 ns name
    [[ -d "$TRACE_DIR" || -d "$DATA_DIR" ]] || return 0
    { [[ -d "$TRACE_DIR" ]] && grep -h '^CNI_NETNS=' -r "$TRACE_DIR" 2>/dev/null | cut -d= -f2-
      [[ -d "$DATA_DIR" ]] && grep -ho '"netns": *"[^"]*"' -r "$DATA_DIR" 2>/dev/null | sed 's/.*"\([^"]*\)"$/\1/'
    } | sort -u | while read -r ns; do
        [[ -n "$ns" ]] || continue
        name=${ns##*/}
        case "$ns" in /run/netns/* | /var/run/netns/*) ;; *) continue ;; esac
        # shellcheck disable=SC2254
        case "$name" in $pattern) ;; *) continue ;; esac
        if [[ -e "/run/netns/$name" ]]; then
            log "removing leftover network namespace $name"
            ip netns del "$name" 2>/dev/null || { umount -l "/run/netns/$name" 2>/dev/null; rm -f "/run/netns/$name"; }
        fi
    done
}

remove_links() {
    local l
    for l in "$@"; do
        ip link show "$l" >/dev/null 2>&1 && ip link del "$l"
    done
    return 0
}

# remove_cgroups PARENT: removes /sys/fs/cgroup/<controller>/PARENT (v1) or /sys/fs/cgroup/PARENT
# (v2) and what is below it, deepest first; a cgroup that still has processes stays.
remove_cgroups() {
    local d
    for d in /sys/fs/cgroup/"${1#/}" /sys/fs/cgroup/*/"${1#/}"; do
        [[ -d $d ]] && find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null
    done
    return 0
}

# libcni caches results in /var/lib/cni/results/<network>-<containerID>-<ifname>, whatever the
# runtime; remove those of our networks only.
remove_cni_cache() {
    local net
    for net in "$@"; do rm -f /var/lib/cni/results/"$net"-*; done
}

# Kills (TERM, then KILL) the processes whose command line contains the given string: our own
# daemons and shims, recognised by a private path in their arguments. One pid at a time.
kill_procs_with_arg() {
    local needle=$1 pid pids=()
    for pid in /proc/[0-9]*; do
        pid=${pid#/proc/}
        [[ $pid == "$$" || $pid == "$BASHPID" ]] && continue
        { tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -qF -- "$needle" && pids+=("$pid")
    done
    ((${#pids[@]})) || return 0
    log "stopping leftover processes ${pids[*]} (command line names $needle)"
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for _ in $(seq 50); do
        local alive=0
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        ((alive)) || return 0
        sleep 0.1
    done
    for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null; done
    return 0
}

# ---------------------------------------------------------------------------------------------
# Queries (JSON is read by scripts/e2e/e2e.py, with Debian's python3)

e2epy() { "$PY" "$E2E_PY" "$@"; }
# leases NETWORK: one line per lease: ip containerID ifname podNamespace podName netns
leases() { "$PODCIDR" status --data-dir "$DATA_DIR" --network "$1" --json | e2epy leases; }
lease_count() { leases "$1" | grep -c . || true; }
# trace_for ID: the CNI calls podcidr got for that container, oldest first, one a line:
# command exit containerID ifname netns prevResult(yes/no) CNI_ARGS
trace_for() { e2epy trace "$TRACE_DIR" | awk -v id="$1" '$3 == id'; }
# in_subnet ADDRESS CIDR [FIRST LAST]
in_subnet() { e2epy in-subnet "$@"; }

# Summary and exit status; called last by the caller's exit trap.
finish() {
    local rc=$1
    if ((rc != 0 && FAILED == 0)); then
        fail "the script stopped early (exit status $rc); see the output above and $E2E_LOGS"
    fi
    release_lock
    log "logs: $E2E_LOGS; run time $((SECONDS - E2E_T0)) s"
    echo "$E2E_NAME: $PASSED passed, $FAILED failed"
    ((FAILED == 0)) && exit 0
    exit 1
}

# The start every e2e script shares, once it has defined cleanup(): root check, the run lock,
# the exit trap (clean up, check the forwarding sysctls came back, print the summary), and
# removing what an earlier run may have left.
declare -A SAVED=()
e2e_on_exit() {
    local rc=$?
    trap - EXIT INT TERM
    section "Cleaning up"
    [[ -d $TRACE_DIR ]] && e2epy trace-show "$TRACE_DIR" >"$E2E_LOGS/trace.txt" 2>&1
    cleanup
    local path value ok=1
    for path in "${!SAVED[@]}"; do
        value=$(cat "$path")
        [[ "$value" == "${SAVED[$path]}" ]] || { ok=0; fail "$path restored" "want ${SAVED[$path]}, got $value"; }
    done
    ((ok)) && ((${#SAVED[@]})) && pass "forwarding sysctls restored (${SAVED[*]})"
    finish "$rc"
}

e2e_start() {
    if [[ $(id -u) -ne 0 ]]; then
        echo "$E2E_NAME: must run as root" >&2
        echo "$E2E_NAME: 0 passed, 1 failed"
        exit 1
    fi
    take_lock
    mkdir -p "$E2E_LOGS"
    trap e2e_on_exit EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    section "Setup"
    log "removing what an earlier run may have left"
    cleanup
    rm -rf "$E2E_LOGS"
    mkdir -p "$E2E_LOGS" "$E2E_STATE" "$E2E_RUN" "$E2E_CACHE"
}

# conflist NAME BRIDGE RANGESETS_JSON ROUTE_DST [EXTRA_BRIDGE_KEY]: bridge + podcidr, logging to
# $PODCIDR_LOG, leases in $DATA_DIR.
conflist() {
    local extra=${5:+
      $5,}
    cat <<EOF
{
  "cniVersion": "1.0.0",
  "name": "$1",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$2",
      "isGateway": true,
      "ipMasq": false,$extra
      "ipam": {
        "type": "podcidr",
        "mode": "static",
        "ranges": $3,
        "routes": [{ "dst": "$4" }],
        "dataDir": "$DATA_DIR",
        "logFile": "$PODCIDR_LOG",
        "logLevel": "debug"
      }
    }
  ]
}
EOF
}
