#!/usr/bin/env python3
"""A minimal CRI client (what crictl would do) for scripts/e2e-containerd.sh.

Runs with the venv that scripts/e2e/lib.sh makes (PyPI: container-runtime-interface-api, the
CRI v1 gRPC stubs). Every command takes --sock PATH (containerd's private socket).

  ready [SECONDS]                          waits until RuntimeReady and NetworkReady
  run NAME NAMESPACE UID [CGROUP_PARENT] [LOGDIR]
                                           RunPodSandbox; prints the sandbox ID
  status ID                                PodSandboxStatus as JSON: id, name, namespace, uid,
                                           state, ips (runtime's view), netns (path)
  stop ID | remove ID                      StopPodSandbox | RemovePodSandbox
  list                                     one line per sandbox: id namespace/name state
  remove-all                               stops and removes every sandbox (cleanup)
"""

import argparse
import json
import sys
import time

import grpc
from cri_api.v1 import api_pb2 as api
from cri_api.v1.api_pb2_grpc import RuntimeServiceStub

TIMEOUT = 60


def stub(sock):
    return RuntimeServiceStub(grpc.insecure_channel("unix://" + sock))


def ready(rt, seconds):
    end = time.monotonic() + seconds
    last = "no answer"
    while time.monotonic() < end:
        try:
            conds = {c.type: (c.status, c.reason, c.message) for c in rt.Status(api.StatusRequest(), timeout=5).status.conditions}
            if all(conds.get(t, (False,))[0] for t in ("RuntimeReady", "NetworkReady")):
                return
            last = repr(conds)
        except grpc.RpcError as e:
            last = f"{e.code().name}: {e.details()}"
        time.sleep(0.2)
    sys.exit(f"CRI not ready after {seconds} s: {last}")


def run(rt, name, namespace, uid, cgroup_parent="", log_dir=""):
    config = api.PodSandboxConfig(
        metadata=api.PodSandboxMetadata(name=name, namespace=namespace, uid=uid, attempt=0),
        hostname=name,
        log_directory=log_dir,
        labels={"app": "podcidr-e2e"},
        linux=api.LinuxPodSandboxConfig(
            cgroup_parent=cgroup_parent,
            security_context=api.LinuxSandboxSecurityContext(
                namespace_options=api.NamespaceOption(network=api.POD, pid=api.POD, ipc=api.POD)),
        ),
    )
    resp = rt.RunPodSandbox(api.RunPodSandboxRequest(config=config), timeout=TIMEOUT)
    print(resp.pod_sandbox_id)


def status(rt, pod_id):
    resp = rt.PodSandboxStatus(api.PodSandboxStatusRequest(pod_sandbox_id=pod_id, verbose=True), timeout=TIMEOUT)
    st = resp.status
    ips = [st.network.ip] + [p.ip for p in st.network.additional_ips] if st.network.ip else []
    netns = ""
    try:
        info = json.loads(resp.info.get("info", "{}"))
        for ns in info.get("runtimeSpec", {}).get("linux", {}).get("namespaces", []):
            if ns.get("type") == "network":
                netns = ns.get("path", "")
    except ValueError:
        pass
    print(json.dumps({
        "id": st.id, "name": st.metadata.name, "namespace": st.metadata.namespace, "uid": st.metadata.uid,
        "state": api.PodSandboxState.Name(st.state), "ips": ips, "netns": netns,
    }))


def list_pods(rt):
    for p in rt.ListPodSandbox(api.ListPodSandboxRequest(), timeout=TIMEOUT).items:
        print(p.id, f"{p.metadata.namespace}/{p.metadata.name}", api.PodSandboxState.Name(p.state))


def remove_all(rt):
    for p in rt.ListPodSandbox(api.ListPodSandboxRequest(), timeout=TIMEOUT).items:
        for call, req in ((rt.StopPodSandbox, api.StopPodSandboxRequest),
                          (rt.RemovePodSandbox, api.RemovePodSandboxRequest)):
            try:
                call(req(pod_sandbox_id=p.id), timeout=TIMEOUT)
            except grpc.RpcError as e:
                print(f"{call._method.decode()} {p.id}: {e.code().name}: {e.details()}", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sock", required=True)
    ap.add_argument("cmd")
    ap.add_argument("args", nargs="*")
    a = ap.parse_args()
    rt = stub(a.sock)
    try:
        if a.cmd == "ready":
            ready(rt, float(a.args[0]) if a.args else 30)
        elif a.cmd == "run":
            run(rt, *a.args)
        elif a.cmd == "status":
            status(rt, a.args[0])
        elif a.cmd == "stop":
            rt.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=a.args[0]), timeout=TIMEOUT)
        elif a.cmd == "remove":
            rt.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=a.args[0]), timeout=TIMEOUT)
        elif a.cmd == "list":
            list_pods(rt)
        elif a.cmd == "remove-all":
            remove_all(rt)
        else:
            sys.exit(f"unknown command {a.cmd}\n{__doc__}")
    except grpc.RpcError as e:
        sys.exit(f"{a.cmd}: {e.code().name}: {e.details()}")


if __name__ == "__main__":
    main()
