#!/usr/bin/env python3
"""JSON and address helpers for the e2e scripts (standard library only).

  e2e.py leases < STATUS_JSON      one line per lease: ip containerID ifname podNamespace podName netns
                                   ('-' for a missing field), from `podcidr status --json`
  e2e.py labels < STATUS_JSON      one line per lease: ip and the label `podcidr status` shows
  e2e.py in-subnet ADDR CIDR [FIRST LAST]
                                   exit 0 when ADDR is a host address of CIDR (and FIRST <= ADDR <= LAST)
  e2e.py family ADDR               prints 4 or 6
  e2e.py trace DIR                 one line per recorded CNI call, oldest first:
                                   command exit containerID ifname netns(or -) prevResult(yes/no) CNI_ARGS
  e2e.py trace-show DIR [ID]       every recorded call in full (for a report), optionally one container's
  e2e.py requested DIR ID          the addresses the container's last ADD asked for (CNI_ARGS IP=,
                                   runtimeConfig.ips, args.cni.ips), without prefix length, deduplicated
  e2e.py get PATH < JSON           prints the value at PATH (dot-separated keys and list indexes)
"""

import ipaddress
import json
import os
import sys


def read_trace(d):
    calls = []
    for name in sorted(os.listdir(d), key=lambda n: float(n.split("-")[0]) if not n.endswith(".tmp") else 0):
        if name.endswith(".tmp"):
            continue
        with open(os.path.join(d, name)) as f:
            text = f.read()
        head, _, rest = text.partition("--- stdin\n")
        stdin, _, rest = rest.partition("\n--- exit ")
        code, _, stdout = rest.partition("\n--- stdout\n")
        env = dict(line.split("=", 1) for line in head.splitlines() if "=" in line)
        try:
            conf = json.loads(stdin)
        except ValueError:
            conf = None
        calls.append({"file": name, "env": env, "stdin": stdin, "conf": conf, "exit": int(code or -1),
                      "stdout": stdout.rstrip("\n")})
    return calls


def main(argv):
    cmd = argv[0] if argv else ""
    if cmd == "leases":
        doc = json.load(sys.stdin)
        for net in doc.get("networks", []):
            for lease in net.get("leases", []):
                print(" ".join(str(lease.get(k) or "-") for k in
                               ("ip", "containerID", "ifname", "podNamespace", "podName", "netns")))
    elif cmd == "labels":
        doc = json.load(sys.stdin)
        for net in doc.get("networks", []):
            for lease in net.get("leases", []):
                ns, name = lease.get("podNamespace"), lease.get("podName")
                label = f"{ns}/{name}" if ns and name else name or lease["containerID"]
                print(lease["ip"], label)
    elif cmd == "in-subnet":
        ip = ipaddress.ip_address(argv[1])
        net = ipaddress.ip_network(argv[2])
        ok = ip in net and ip != net.network_address and (net.version == 6 or ip != net.broadcast_address)
        if len(argv) > 4:
            ok = ok and ipaddress.ip_address(argv[3]) <= ip <= ipaddress.ip_address(argv[4])
        if not ok:
            sys.exit(f"{ip} is not in {net}" + (f" {argv[3]}-{argv[4]}" if len(argv) > 4 else ""))
    elif cmd == "family":
        print(ipaddress.ip_address(argv[1]).version)
    elif cmd == "trace":
        for c in read_trace(argv[1]):
            e = c["env"]
            prev = "yes" if isinstance(c["conf"], dict) and "prevResult" in c["conf"] else "no"
            print(e.get("CNI_COMMAND", "-"), c["exit"], e.get("CNI_CONTAINERID") or "-", e.get("CNI_IFNAME") or "-",
                  e.get("CNI_NETNS") or "-", prev, e.get("CNI_ARGS") or "-")
    elif cmd == "trace-show":
        for c in read_trace(argv[1]):
            if len(argv) > 2 and c["env"].get("CNI_CONTAINERID") != argv[2]:
                continue
            print(f"### {c['file']}")
            for k, v in sorted(c["env"].items()):
                print(f"{k}={v}")
            print("stdin:", c["stdin"].strip())
            print(f"exit {c['exit']}, stdout:", c["stdout"])
    elif cmd == "requested":
        adds = [c for c in read_trace(argv[1]) if c["env"].get("CNI_CONTAINERID") == argv[2]
                and c["env"].get("CNI_COMMAND") == "ADD"]
        if not adds:
            sys.exit(f"no ADD for {argv[2]}")
        last, want = adds[-1], []
        for kv in (last["env"].get("CNI_ARGS") or "").split(";"):
            if kv.startswith("IP="):
                want += kv[3:].split(",")
        conf = last["conf"] if isinstance(last["conf"], dict) else {}
        want += (conf.get("runtimeConfig") or {}).get("ips") or []
        want += ((conf.get("args") or {}).get("cni") or {}).get("ips") or []
        print(" ".join(sorted({w.split("/")[0] for w in want if w})))
    elif cmd == "get":
        v = json.load(sys.stdin)
        for k in argv[1].split(".") if argv[1] else []:
            v = v[int(k)] if isinstance(v, list) else v.get(k) if isinstance(v, dict) else None
        print(json.dumps(v) if isinstance(v, (dict, list)) else ("" if v is None else v))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
