#!/usr/bin/env bash
# Exec-level benchmark of podcidr against the reference host-local plugin.
#
#   scripts/bench.sh            full run (a few minutes); writes docs/benchmarks.md (the block
#                               between its bench markers) and docs/bench-latency.svg
#   scripts/bench.sh --smoke    a few iterations, store sizes 0 and 200, 4 concurrent callers,
#                               kubernetes mode against a stand-in API server; writes nothing. Asserts that it ran and that no address was
#                               handed out twice; never a timing. For CI.
#   --no-micro                  (full run) skip the divan micro-benchmarks
#   --no-docs                   (full run) print the figures, leave docs/ alone
#   --data-dir DIR              keep the stores under DIR (default: $TMPDIR or /tmp), e.g. a
#                               tmpfs to take the file system out of the comparison
#   --against REV               only this plugin against the one built from git revision REV
#                               (VERSION, ADD, CHECK, DEL on empty stores, alternating); prints
#                               the table, leaves docs/ alone. The old build is kept under
#                               target/bench-against/ for the next run
#
# Both plugins are exec'd directly by the Rust driver crates/plugin/benches/exec.rs (no shell in the timed
# path), alternately, on identical stores. HOST_LOCAL=/path overrides where host-local is.
# Every data directory lives in one temporary directory, removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

smoke=0
against=
micro=1
docs=1
data_parent=${TMPDIR:-/tmp}
while (($#)); do
    arg=$1
    shift
    case "$arg" in
        --smoke) smoke=1 ;;
        --no-micro) micro=0 ;;
        --no-docs) docs=0 ;;
        --data-dir)
            data_parent=${1:?--data-dir needs a directory}
            shift
            ;;
        --against)
            against=${1:?--against needs a git revision}
            shift
            ;;
        -h | --help)
            sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "bench: unknown argument $arg (try --help)" >&2
            exit 2
            ;;
    esac
done

log() { printf 'bench: %s\n' "$*" >&2; }

tmp=$(mktemp -d "$data_parent/podcidr-bench.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fstype=$(df -T "$tmp" 2>/dev/null | awk 'NR == 2 { print $2 }')
repro=scripts/bench.sh
if [[ "$data_parent" != "${TMPDIR:-/tmp}" ]]; then
    repro+=" --data-dir $data_parent"
fi
log "stores under $tmp (${fstype:-unknown file system})"

# The plugin under test: the release binary, static musl where possible.
# A private copy, so that a rebuild elsewhere during the run cannot pull the binary away; its
# path keeps the target triple, which the driver reports (musl or glibc).
built=$(bash scripts/build.sh)
podcidr="$tmp/bin/$(basename "$(dirname "$(dirname "$built")")")/podcidr"
mkdir -p "$(dirname "$podcidr")"
cp "$built" "$podcidr"
log "podcidr: $built (copied to $podcidr)"

# The reference.
find_host_local() {
    local c
    for c in "${HOST_LOCAL:-}" /usr/lib/cni/host-local /opt/cni/bin/host-local; do
        if [[ -n "$c" && -x "$c" ]]; then
            echo "$c"
            return 0
        fi
    done
    return 1
}
if ! host_local=$(find_host_local); then
    log "host-local not found; installing it (scripts/install-deps.sh)"
    bash scripts/install-deps.sh
    host_local=$(find_host_local) || {
        log "host-local is still missing: install Debian's containernetworking-plugins or set HOST_LOCAL"
        exit 1
    }
fi
host_local_version=$(dpkg-query -W -f='${Version}' containernetworking-plugins 2>/dev/null || echo unknown)
log "host-local: $host_local ($host_local_version)"

# A trivial static binary: what an exec costs at all.
noop_args=()
noop_note="a static musl Rust program whose main is empty, built with rustc -O for x86_64-unknown-linux-musl"
printf 'fn main() {}\n' >"$tmp/noop.rs"
if rustc -O --target x86_64-unknown-linux-musl -C strip=debuginfo -o "$tmp/noop" "$tmp/noop.rs" 2>"$tmp/noop.err"; then
    noop_args=(--noop "$tmp/noop")
else
    log "cannot build a static musl no-op ($(head -n1 "$tmp/noop.err")); podcidr VERSION stands in for it"
    noop_note="none could be built here; podcidr VERSION (which exits before reading stdin) stands in for it"
fi

# The driver, optimised (the bench profile); the smoke run builds it in the test profile, which
# shares what `cargo test` built. Timings come from the plugins' execs, not from the driver.
build_driver=(cargo bench --no-run -p podcidr)
if ((smoke)); then
    build_driver=(cargo build -p podcidr)
fi
driver=$("${build_driver[@]}" --locked --quiet --bench exec --message-format=json |
    grep '"kind":\["bench"\]' | grep '"name":"exec"' |
    sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n1)
[[ -x "$driver" ]] || {
    log "could not find the built crates/plugin/benches/exec.rs driver"
    exit 1
}

# The builds just wrote hundreds of MB; let that writeback finish before anything is timed.
sync
if ((!smoke)); then
    # ext4 without a journal skips inodes freed in the last 30 s when it allocates one, so file
    # creation is slower after a burst of deletions (a build's temporary files); let them age.
    sleep 30
fi
read -r load1 _ </proc/loadavg
if awk -v l="$load1" -v n="$(nproc)" 'BEGIN { exit !(l > n) }'; then
    log "warning: load average $load1 on $(nproc) CPUs; absolute times will be noisy (ratios less so)"
fi

mode_args=()
if ((smoke)); then
    mode_args=(--smoke)
fi
if [[ -n "$against" ]]; then
    # The other build: the same target as this one, from REV's own sources and lock file.
    rev=$(git rev-parse --verify "$against^{commit}") || {
        log "--against: $against is not a commit"
        exit 2
    }
    mkdir -p "$tmp/against-src"
    git archive "$rev" | tar -x -C "$tmp/against-src"
    against_target="$PWD/target/bench-against"
    target_args=()
    other="$against_target/release/podcidr"
    case "$built" in
        */x86_64-unknown-linux-musl/*)
            target_args=(--target x86_64-unknown-linux-musl)
            other="$against_target/x86_64-unknown-linux-musl/release/podcidr"
            ;;
    esac
    log "building podcidr at ${rev:0:12} (the plugin only)"
    (cd "$tmp/against-src" && CARGO_TARGET_DIR="$against_target" \
        cargo build --release --locked --quiet "${target_args[@]}" -p podcidr --bin podcidr)
    mkdir -p "$tmp/bin/against-${rev:0:12}"
    cp "$other" "$tmp/bin/against-${rev:0:12}/podcidr"
    mode_args+=(--against "$tmp/bin/against-${rev:0:12}/podcidr" --against-only)
    docs=0
fi
"$driver" --podcidr "$podcidr" --host-local "$host_local" "${noop_args[@]}" \
    --work "$tmp/work" --out "$tmp/results.json" "${mode_args[@]}" | tee "$tmp/tables.md"

# The driver exits non-zero on any failed request or duplicate address; check that it ran.
grep -Eq '^bench: ok: ran [1-9][0-9]* execs \([1-9][0-9]* ADDs\), 0 duplicate addresses$' "$tmp/tables.md" || {
    log "the driver did not report a complete run"
    exit 1
}
grep -q '"duplicates": 0' "$tmp/results.json" || {
    log "results.json does not record zero duplicates"
    exit 1
}
if ((smoke)); then
    log "smoke: ok (no timing is asserted)"
    exit 0
fi
if [[ -n "$against" ]]; then
    exit 0
fi
if ((!docs)); then
    exit 0
fi

if ((micro)); then
    log "divan micro-benchmarks (crates/plugin/benches/alloc.rs, store.rs)"
    cargo bench -p podcidr --locked --quiet --bench alloc --bench store 2>/dev/null | grep -v '^\s*$' >"$tmp/micro.txt"
fi

python3 - "$tmp" "$host_local" "$host_local_version" "$noop_note" "$repro" "${fstype:-unknown}" "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- src Cargo.toml 2>/dev/null || echo ' with uncommitted changes')" <<'PY'
import datetime, html, json, math, os, sys

tmp, host_local, hl_version, noop_note, repro, fstype, commit = sys.argv[1:8]
r = json.load(open(os.path.join(tmp, "results.json")))
tables = open(os.path.join(tmp, "tables.md")).read()
tables = "\n".join(l for l in tables.splitlines() if not l.startswith("bench: ok:")).strip()
micro_path = os.path.join(tmp, "micro.txt")
micro = open(micro_path).read().rstrip() if os.path.exists(micro_path) else None

now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
block = [
    "<!-- bench:begin (written by scripts/bench.sh; edits inside are overwritten) -->",
    "",
    f"Run on {now}, podcidr at commit {commit}, host-local {hl_version} (`{host_local}`), "
    f"stores on {fstype}.",
    "",
    "Reproduce with (on an otherwise idle machine if you can):",
    "",
    "```sh",
    repro,
    "```",
    "",
    f"The trivial static binary is {noop_note}.",
    "",
    tables,
    "",
    "![median latency vs store size](bench-latency.svg)",
]
if micro:
    block += [
        "",
        "Micro-benchmarks (divan, in process; `cargo bench -p podcidr --bench alloc --bench store`):",
        "",
        "```text",
        micro,
        "```",
    ]
block.append("<!-- bench:end -->")
block = "\n".join(block)

doc_path = "docs/benchmarks.md"
os.makedirs("docs", exist_ok=True)
if os.path.exists(doc_path):
    doc = open(doc_path).read()
else:
    doc = "# Benchmarks\n\n<!-- bench:begin -->\n<!-- bench:end -->\n"
start, end = doc.find("<!-- bench:begin"), doc.find("<!-- bench:end -->")
if start < 0 or end < 0:
    doc = doc.rstrip() + "\n\n" + block + "\n"
else:
    doc = doc[:start] + block + doc[end + len("<!-- bench:end -->"):]
open(doc_path, "w").write(doc)

# The plot: median latency (log scale) against the number of leases, both plugins, each verb.
sizes = [row["size"] for row in r["sizes"]]
W, H = 760, 460
L, R, T, B = 70, 190, 40, 60
pw, ph = W - L - R, H - T - B
vals = [row[p][v]["median_ms"] for row in r["sizes"] for p in ("podcidr", "host-local") for v in ("ADD", "CHECK", "DEL")]
base = [b for b in r.get("baseline", []) if "no-op" in b["name"]]
if base:
    vals.append(base[0]["stats"]["median_ms"])
lo = 10 ** math.floor(math.log10(min(vals)))
hi = 10 ** math.ceil(math.log10(max(vals)))
def y(v):
    return T + ph * (1 - (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)))
def x(i):
    return L + (pw * i / (len(sizes) - 1) if len(sizes) > 1 else pw / 2)
out = [
    f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">',
    f'<rect width="{W}" height="{H}" fill="white"/>',
    f'<text x="{L + pw / 2}" y="22" text-anchor="middle" font-size="14">Median exec latency vs leases in the store (/16), log scale</text>',
]
e = math.log10(lo)
while e <= math.log10(hi) + 1e-9:
    v = 10 ** e
    out.append(f'<line x1="{L}" x2="{L + pw}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#ddd"/>')
    label = f"{v:g} ms"
    out.append(f'<text x="{L - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{label}</text>')
    e += 1
for i, s in enumerate(sizes):
    out.append(f'<line x1="{x(i):.1f}" x2="{x(i):.1f}" y1="{T}" y2="{T + ph}" stroke="#eee"/>')
    out.append(f'<text x="{x(i):.1f}" y="{T + ph + 18}" text-anchor="middle">{s:,}</text>')
out.append(f'<text x="{L + pw / 2}" y="{H - 18}" text-anchor="middle">leases in the store (not to scale)</text>')
out.append(f'<rect x="{L}" y="{T}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>')
colors = {"podcidr": "#1f77b4", "host-local": "#d62728"}
dashes = {"ADD": "", "CHECK": "6,3", "DEL": "2,3"}
legend_y = T + 10
for p in ("podcidr", "host-local"):
    for v in ("ADD", "CHECK", "DEL"):
        pts = " ".join(f"{x(i):.1f},{y(row[p][v]['median_ms']):.1f}" for i, row in enumerate(r["sizes"]))
        dash = f' stroke-dasharray="{dashes[v]}"' if dashes[v] else ""
        out.append(f'<polyline points="{pts}" fill="none" stroke="{colors[p]}" stroke-width="2"{dash}/>')
        for i, row in enumerate(r["sizes"]):
            out.append(f'<circle cx="{x(i):.1f}" cy="{y(row[p][v]["median_ms"]):.1f}" r="2.5" fill="{colors[p]}"/>')
        lx = L + pw + 15
        out.append(f'<line x1="{lx}" x2="{lx + 30}" y1="{legend_y}" y2="{legend_y}" stroke="{colors[p]}" stroke-width="2"{dash}/>')
        out.append(f'<text x="{lx + 36}" y="{legend_y + 4}">{html.escape(p)} {v}</text>')
        legend_y += 18
if base:
    bv = base[0]["stats"]["median_ms"]
    out.append(f'<line x1="{L}" x2="{L + pw}" y1="{y(bv):.1f}" y2="{y(bv):.1f}" stroke="#2ca02c" stroke-dasharray="1,2"/>')
    lx = L + pw + 15
    out.append(f'<line x1="{lx}" x2="{lx + 30}" y1="{legend_y}" y2="{legend_y}" stroke="#2ca02c" stroke-dasharray="1,2"/>')
    out.append(f'<text x="{lx + 36}" y="{legend_y + 4}">static no-op exec</text>')
out.append("</svg>")
open("docs/bench-latency.svg", "w").write("\n".join(out) + "\n")
PY
log "wrote docs/benchmarks.md and docs/bench-latency.svg"
