//! The kustomize package (conf/kustomization.yaml and its overlays in deploy/) as
//! `kubectl kustomize` renders it: the objects docs/install.md applies, with the images
//! scripts/images.sh builds, least-privilege RBAC, probes and hardened security contexts.
//! `KUBECTL` names the kubectl to use (default: the one on PATH).

use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;

/// The repository: the kustomize base is conf/, the overlays deploy/.
const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
const VERSION: &str = env!("CARGO_PKG_VERSION");

fn render(dir: &str) -> Vec<Value> {
    let kubectl = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into());
    let out = Command::new(&kubectl)
        .args(["kustomize", dir])
        .current_dir(ROOT)
        .output()
        .unwrap_or_else(|e| panic!("{kubectl} (scripts/install-deps.sh installs one): {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "kubectl kustomize {dir}: {stderr}");
    serde_saphyr::from_str_multiple(&String::from_utf8(out.stdout).unwrap()).unwrap()
}

fn one<'a>(objs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    let found: Vec<&Value> = objs.iter().filter(|o| o["kind"] == kind && o["metadata"]["name"] == name).collect();
    assert_eq!(found.len(), 1, "one {kind} {name}");
    found[0]
}

fn container(workload: &Value) -> &Value {
    let cs = workload["spec"]["template"]["spec"]["containers"].as_array().unwrap();
    assert_eq!(cs.len(), 1);
    &cs[0]
}

fn env<'a>(c: &'a Value, name: &str) -> &'a Value {
    c["env"].as_array().unwrap().iter().find(|e| e["name"] == name).unwrap_or_else(|| panic!("env {name}"))
}

fn conflist(path: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(Path::new(ROOT).join(path)).unwrap()).unwrap()
}

fn has_rule(role: &Value, group: &str, resource: &str, verbs: &[&str]) -> bool {
    role["rules"].as_array().unwrap().iter().any(|r| {
        r["apiGroups"].as_array().unwrap().contains(&json!(group))
            && r["resources"].as_array().unwrap().contains(&json!(resource))
            && verbs.iter().all(|v| r["verbs"].as_array().unwrap().contains(&json!(v)))
    })
}

/// What every rendering holds, whatever the overlay.
fn check_common(dir: &str, objs: &[Value]) -> (Value, Value) {
    one(objs, "CustomResourceDefinition", "podcidrpools.podcidr.io");
    // The allocation record: without its CRD the operator assigns nothing (docs/operator.md).
    one(objs, "CustomResourceDefinition", "podcidrblocks.podcidr.io");

    // The operator: its image, its ServiceAccount, probes, non-root.
    let dep = one(objs, "Deployment", "podcidr-operator").clone();
    let op = container(&dep);
    assert_eq!(op["image"], format!("localhost/podcidr-operator:{VERSION}"), "{dir}");
    assert_eq!(dep["spec"]["template"]["spec"]["serviceAccountName"], "podcidr-operator");
    one(objs, "ServiceAccount", "podcidr-operator");
    assert_eq!(op["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(op["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(dep["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"], true);
    assert_eq!(op["securityContext"]["capabilities"]["drop"], json!(["ALL"]));

    // The agent: on every node, before the pod network, its image, probes, and the least
    // privilege that writes the host's CNI directories.
    let ds = one(objs, "DaemonSet", "podcidr-agent").clone();
    let pod = &ds["spec"]["template"]["spec"];
    let agent = container(&ds);
    assert_eq!(agent["image"], format!("localhost/podcidr:{VERSION}"), "{dir}");
    assert_eq!(agent["command"], json!(["/podcidr-agent"]));
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert_eq!(pod["tolerations"], json!([{"operator": "Exists"}]), "tolerates every taint");
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        assert_eq!(agent[probe]["httpGet"], json!({"path": path, "port": 9964}));
    }
    let sc = &agent["securityContext"];
    assert_eq!(sc["runAsUser"], 0);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert!(sc["capabilities"].get("add").is_none(), "no capability added");
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert!(sc.get("privileged").is_none_or(|p| p == false));
    assert_eq!(env(agent, "POD_UID")["valueFrom"]["fieldRef"]["fieldPath"], "metadata.uid");
    assert_eq!(env(agent, "NODE_NAME")["valueFrom"]["fieldRef"]["fieldPath"], "spec.nodeName");
    let volumes = pod["volumes"].as_array().unwrap();
    let mounts = agent["volumeMounts"].as_array().unwrap();
    let mount_of = |host: &str| {
        let v = volumes.iter().find(|v| v["hostPath"]["path"] == host).unwrap_or_else(|| panic!("{host}"));
        mounts.iter().find(|m| m["name"] == v["name"]).unwrap().clone()
    };
    // The agent's --host-root default is /host.
    assert_eq!(mount_of("/opt/cni/bin")["mountPath"], "/host/opt/cni/bin");
    assert_eq!(mount_of("/etc/cni/net.d")["mountPath"], "/host/etc/cni/net.d");
    let data = mount_of("/var/lib/cni/podcidr");
    assert_eq!(
        (data["mountPath"].clone(), data["readOnly"].clone()),
        (json!("/host/var/lib/cni/podcidr"), json!(true))
    );
    // The conflist where the agent's --conflist default looks: /etc/podcidr/10-podcidr.conflist.
    let cm_vol = volumes.iter().find(|v| v["configMap"]["name"] == "podcidr-conflist").unwrap();
    assert_eq!(mounts.iter().find(|m| m["name"] == cm_vol["name"]).unwrap()["mountPath"], "/etc/podcidr");
    let cm = one(objs, "ConfigMap", "podcidr-conflist");
    let installed: Value = serde_json::from_str(cm["data"]["10-podcidr.conflist"].as_str().unwrap()).unwrap();

    // RBAC: what the agent (and the plugin, with the agent's token) does, on its own account.
    let sa = pod["serviceAccountName"].as_str().unwrap();
    assert_eq!(sa, "podcidr-agent");
    one(objs, "ServiceAccount", sa);
    let cr = one(objs, "ClusterRole", "podcidr-agent");
    assert!(has_rule(cr, "", "nodes", &["get", "list", "watch", "patch"]));
    assert!(has_rule(cr, "cilium.io", "ciliumnodes", &["get", "list", "watch"]));
    assert!(has_rule(cr, "events.k8s.io", "events", &["create"]));
    assert!(!has_rule(cr, "", "nodes", &["update"]) && !has_rule(cr, "", "nodes", &["delete"]));
    let role = one(objs, "Role", "podcidr-agent-token");
    assert_eq!(
        role["rules"],
        json!([{"apiGroups": [""], "resources": ["serviceaccounts/token"], "resourceNames": [sa], "verbs": ["create"]}]),
        "a token for its own ServiceAccount only"
    );
    for (kind, name) in [("ClusterRoleBinding", "podcidr-agent"), ("RoleBinding", "podcidr-agent-token")] {
        assert_eq!(
            one(objs, kind, name)["subjects"],
            json!([{"kind": "ServiceAccount", "name": sa, "namespace": "kube-system"}])
        );
    }
    (dep, installed)
}

fn args(dep: &Value) -> Vec<String> {
    container(dep)["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect()
}

#[test]
fn target_node_is_the_base() {
    let base = render("conf");
    assert_eq!(render("deploy/target-node"), base);
    let (dep, installed) = check_common("conf", &base);
    assert!(args(&dep).contains(&"--target=node".to_string()));
    assert_eq!(installed, conflist("conf/10-podcidr-kubernetes.conflist"));
    assert_eq!(env(container(one(&base, "DaemonSet", "podcidr-agent")), "PODCIDR_TARGET")["value"], "node");
}

#[test]
fn target_ciliumnode_switches_operator_agent_and_conflist() {
    let base_args = args(one(&render("conf"), "Deployment", "podcidr-operator"));
    let objs = render("deploy/target-ciliumnode");
    let (dep, installed) = check_common("deploy/target-ciliumnode", &objs);
    let want: Vec<String> = base_args.iter().map(|a| a.replace("--target=node", "--target=ciliumnode")).collect();
    assert_eq!(args(&dep), want, "only --target differs from the base's flags");
    assert_eq!(installed, conflist("conf/operator/10-podcidr-crd.conflist"));
    assert_eq!(installed["plugins"][0]["ipam"]["mode"], "crd");
    assert_eq!(env(container(one(&objs, "DaemonSet", "podcidr-agent")), "PODCIDR_TARGET")["value"], "ciliumnode");
}

#[test]
fn dual_stack_adds_an_ipv6_pool() {
    let base_args = args(one(&render("conf"), "Deployment", "podcidr-operator"));
    let objs = render("deploy/dual-stack");
    let (dep, installed) = check_common("deploy/dual-stack", &objs);
    let got = args(&dep);
    let extra: Vec<&String> = got.iter().filter(|a| !base_args.contains(a)).collect();
    assert_eq!(extra, ["--cluster-pool-ipv6-cidr=fd00:10:244::/56", "--cluster-pool-ipv6-mask-size=64"]);
    assert!(base_args.iter().all(|a| got.contains(a)), "the base's flags kept");
    let routes = &installed["plugins"][0]["ipam"]["routes"];
    assert_eq!(routes, &json!([{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]), "both families routed");
}
