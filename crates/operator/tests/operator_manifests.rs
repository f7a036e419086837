//! The operator's manifests in conf/operator/: the CRD is the one the types generate, and the
//! RBAC, Deployment, example pools and node conflists say what docs/operator.md says.
//!
//! After changing the PodCIDRPool types, regenerate the CRD files with
//! `PODCIDR_UPDATE_MANIFESTS=1 cargo test --test operator_manifests`.

mod operator;

use podcidr_operator::crd::{self, CelRules, PodCIDRPool};
use podcidr_testsupport::kubeapi;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::Command;

fn conf(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../conf/operator").join(name)
}

fn read(name: &str) -> String {
    std::fs::read_to_string(conf(name)).unwrap_or_else(|e| panic!("conf/operator/{name}: {e}"))
}

fn docs(name: &str) -> Vec<Value> {
    serde_saphyr::from_str_multiple(&read(name)).unwrap_or_else(|e| panic!("conf/operator/{name}: {e}"))
}

/// Compare a checked-in generated file with what the code generates now (or rewrite it).
fn check_generated(name: &str, generated: &str) {
    if std::env::var_os("PODCIDR_UPDATE_MANIFESTS").is_some() {
        std::fs::write(conf(name), generated).unwrap();
    }
    assert!(
        read(name) == generated,
        "conf/operator/{name} differs from the PodCIDRPool types: regenerate it with \
         PODCIDR_UPDATE_MANIFESTS=1 cargo test --test operator_manifests"
    );
}

#[test]
fn crd_yaml_is_the_generated_crd() {
    check_generated("crd.yaml", &crd::crd_yaml());
    check_generated("crd-pre-1.31.yaml", &crd::crd_yaml_for(CelRules::Portable));
}

#[test]
fn crd_subcommand_prints_crd_yaml() {
    let out = Command::new(env!("CARGO_BIN_EXE_podcidr-operator")).arg("crd").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout) == read("crd.yaml"),
        "`podcidr-operator crd` differs from conf/operator/crd.yaml"
    );
}

fn by_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

/// (apiGroups, resources, verbs) of each rule, sorted, for exact comparison.
fn rules(role: &Value) -> Vec<(Vec<String>, Vec<String>, Vec<String>)> {
    let strings = |v: &Value| -> Vec<String> {
        let mut s: Vec<String> = v.as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_owned()).collect();
        s.sort();
        s
    };
    let mut out: Vec<_> = role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (strings(&r["apiGroups"]), strings(&r["resources"]), strings(&r["verbs"])))
        .collect();
    out.sort();
    out
}

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> (Vec<String>, Vec<String>, Vec<String>) {
    let owned = |s: &[&str]| {
        let mut v: Vec<String> = s.iter().map(|x| x.to_string()).collect();
        v.sort();
        v
    };
    (owned(groups), owned(resources), owned(verbs))
}

#[test]
fn rbac_is_least_privilege() {
    let docs = docs("rbac.yaml");
    let sa = by_kind(&docs, "ServiceAccount");
    assert_eq!(sa.len(), 1);
    assert_eq!(sa[0]["metadata"], json!({"name": "podcidr-operator", "namespace": "kube-system"}));

    let cluster = by_kind(&docs, "ClusterRole");
    assert_eq!(cluster.len(), 1);
    let mut want = vec![
        rule(&[""], &["nodes"], &["list", "watch", "patch"]),
        rule(&["cilium.io"], &["ciliumnodes"], &["get", "list", "watch", "create", "patch"]),
        rule(&["events.k8s.io"], &["events"], &["create", "patch"]),
        rule(&["podcidr.io"], &["podcidrpools"], &["get", "list", "watch", "create", "patch"]),
        rule(&["podcidr.io"], &["podcidrpools/status"], &["patch"]),
        rule(&["podcidr.io"], &["podcidrblocks"], &["list", "watch", "create", "update"]),
    ];
    want.sort();
    assert_eq!(rules(cluster[0]), want);

    // Leases only in the leader-election namespace.
    let role = by_kind(&docs, "Role");
    assert_eq!(role.len(), 1);
    assert_eq!(role[0]["metadata"]["namespace"], "kube-system");
    // create cannot be limited by name; everything else on Leases is limited to the operator's.
    let mut want = vec![
        rule(&["coordination.k8s.io"], &["leases"], &["create"]),
        rule(&["coordination.k8s.io"], &["leases"], &["get", "list", "watch", "update"]),
    ];
    want.sort();
    assert_eq!(rules(role[0]), want);
    let names: Vec<&Value> = role[0]["rules"].as_array().unwrap().iter().map(|r| &r["resourceNames"]).collect();
    assert!(names.contains(&&json!(["podcidr-operator"])), "{names:?}");
    for r in role[0]["rules"].as_array().unwrap() {
        let create = r["verbs"].as_array().unwrap().iter().any(|v| v == "create");
        assert_eq!(create, r["resourceNames"].is_null(), "only create goes without resourceNames: {r}");
    }
    // Writes are patches, but for the allocation record: a block is replaced whole with the
    // resourceVersion it was read at, the fence against a second writer.
    for r in cluster[0]["rules"].as_array().unwrap() {
        let update = r["verbs"].as_array().unwrap().iter().any(|v| v == "update");
        assert_eq!(update, r["resources"] == json!(["podcidrblocks"]), "update only on the record: {r}");
    }
    for binding in by_kind(&docs, "ClusterRoleBinding").into_iter().chain(by_kind(&docs, "RoleBinding")) {
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": "podcidr-operator", "namespace": "kube-system"}])
        );
    }
}

#[test]
fn deployment_runs_two_hardened_replicas_with_probes() {
    let docs = docs("deployment.yaml");
    let dep = by_kind(&docs, "Deployment");
    assert_eq!(dep.len(), 1);
    let spec = &dep[0]["spec"];
    assert_eq!(spec["replicas"], 2);
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "podcidr-operator");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let c = &pod["containers"][0];
    let args: Vec<&str> = c["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    for flag in [
        "--leader-elect=true",
        "--leader-elect-namespace=kube-system",
        // The pod IP (the node's address on the host network): where the kubelet probes and
        // Prometheus scrapes, and no other interface.
        "--metrics-bind-address=$(POD_IP):9880",
        "--health-probe-bind-address=$(POD_IP):9881",
        "--target=node",
    ] {
        assert!(args.contains(&flag), "{flag} missing from {args:?}");
    }
    assert!(args.iter().any(|a| a.starts_with("--cluster-pool-ipv4-cidr=")), "{args:?}");
    assert!(!args.iter().any(|a| a.contains("0.0.0.0")), "nothing binds every interface: {args:?}");
    assert_eq!(c["env"], json!([{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]));
    assert_eq!(pod["hostNetwork"], true);
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert!(c["resources"]["requests"]["cpu"].is_string() && c["resources"]["requests"]["memory"].is_string());
    assert_eq!(c["livenessProbe"]["httpGet"], json!({"path": "/healthz", "port": "health"}));
    assert_eq!(c["readinessProbe"]["httpGet"], json!({"path": "/readyz", "port": "health"}));
    let ports = c["ports"].as_array().unwrap();
    assert!(ports.contains(&json!({"name": "health", "containerPort": 9881})), "{ports:?}");
    assert!(ports.contains(&json!({"name": "metrics", "containerPort": 9880})), "{ports:?}");
}

#[test]
fn example_pools_are_valid_pools() {
    for file in ["pool-zones.yaml", "pool-per-node.yaml"] {
        let docs = docs(file);
        assert!(!docs.is_empty(), "{file}");
        for doc in docs {
            let pool: PodCIDRPool =
                serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{file}: not a PodCIDRPool: {e}\n{doc}"));
            assert_eq!(doc["apiVersion"], "podcidr.io/v1alpha1", "{file}");
            assert!(pool.spec.problems().is_empty(), "{file}: {:?}", pool.spec.problems());
        }
    }
    // The CiliumNodeConfig mapping of issue 12: node-1 gets exactly 10.0.1.0/24.
    let per_node = docs("pool-per-node.yaml");
    let node1: PodCIDRPool = serde_json::from_value(per_node[0].clone()).unwrap();
    assert_eq!(node1.metadata.name.as_deref(), Some("node-1"));
    let sel = node1.spec.node_selector.unwrap();
    assert_eq!(sel.match_labels.unwrap()["kubernetes.io/hostname"], "node-1");
    let v4 = node1.spec.ipv4.unwrap();
    assert_eq!((v4.cidrs, v4.mask_size), (vec!["10.0.1.0/24".to_owned()], 24));
}

#[test]
fn node_conflists_use_cni_1_0_0_and_the_modes() {
    for (file, mode) in [("10-podcidr-kubernetes.conflist", "kubernetes"), ("10-podcidr-crd.conflist", "crd")] {
        let v: Value = serde_json::from_str(&read(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(v["cniVersion"], "1.0.0", "{file}");
        let ipam = &v["plugins"][0]["ipam"];
        assert_eq!(ipam["type"], "podcidr", "{file}");
        assert_eq!(ipam["mode"], mode, "{file}");
    }
}

/// What RBAC sees of a request: namespace, API group, resource (with its subresource), name and
/// verb, as kube-apiserver's RequestInfo; None for non-resource URLs (discovery).
fn rbac_attributes(l: &kubeapi::Logged) -> Option<(String, String, String, String, String)> {
    let parts: Vec<&str> = l.path.trim_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", "v1", rest @ ..] => (String::new(), rest),
        ["apis", g, _v, rest @ ..] => (g.to_string(), rest),
        _ => return None,
    };
    if rest.is_empty() {
        return None;
    }
    let (ns, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (ns.to_string(), rest),
        _ => (String::new(), rest),
    };
    let resource = match rest.get(2) {
        Some(sub) => format!("{}/{sub}", rest[0]),
        None => rest[0].to_string(),
    };
    let query: Vec<(&str, &str)> = l.query.split('&').filter_map(|kv| kv.split_once('=')).collect();
    let watch = query.iter().any(|(k, v)| *k == "watch" && (*v == "true" || *v == "1"));
    let mut name = rest.get(1).map(|s| s.to_string()).unwrap_or_default();
    if name.is_empty()
        && let Some((_, v)) = query.iter().find(|(k, _)| *k == "fieldSelector")
        && let Some(n) = v.replace("%3D", "=").strip_prefix("metadata.name=")
    {
        name = n.to_string();
    }
    let verb = match (l.method.as_str(), rest.len() > 1) {
        ("GET", _) if watch => "watch",
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        (m, _) => panic!("unexpected method {m}"),
    };
    Some((ns, group, resource, name, verb.to_string()))
}

/// One RBAC rule with where it applies: `Some(ns)` for a Role, None for a ClusterRole.
struct Rule {
    namespace: Option<String>,
    groups: Vec<String>,
    resources: Vec<String>,
    names: Vec<String>,
    verbs: Vec<String>,
}

impl Rule {
    fn allows(&self, (ns, group, resource, name, verb): &(String, String, String, String, String)) -> bool {
        let has = |list: &[String], x: &str| list.iter().any(|v| v == x || v == "*");
        self.namespace.as_ref().is_none_or(|n| n == ns)
            && has(&self.groups, group)
            && has(&self.resources, resource)
            && has(&self.verbs, verb)
            && (self.names.is_empty() || (!name.is_empty() && has(&self.names, name)))
    }

    fn describe(&self) -> String {
        format!("{:?} {:?} names {:?} in {:?}", self.groups, self.resources, self.names, self.namespace)
    }
}

fn rbac_rules() -> Vec<Rule> {
    let docs = docs("rbac.yaml");
    let strings = |v: &Value| -> Vec<String> {
        v.as_array().map(|a| a.iter().map(|x| x.as_str().unwrap().to_owned()).collect()).unwrap_or_default()
    };
    let mut out = vec![];
    for (kind, namespaced) in [("ClusterRole", false), ("Role", true)] {
        for role in by_kind(&docs, kind) {
            let namespace = namespaced.then(|| role["metadata"]["namespace"].as_str().unwrap().to_owned());
            for r in role["rules"].as_array().unwrap() {
                out.push(Rule {
                    namespace: namespace.clone(),
                    groups: strings(&r["apiGroups"]),
                    resources: strings(&r["resources"]),
                    names: strings(&r["resourceNames"]),
                    verbs: strings(&r["verbs"]),
                });
            }
        }
    }
    out
}

/// The operator's requests, every kind of them: two replicas electing a leader, both targets,
/// a pool that runs out (Events, repeated), a CiliumNode that exists without CIDRs, a conflict
/// on a CiliumNode create, a release, and a SIGTERM handover. Every request must be allowed by
/// conf/operator/rbac.yaml, and every verb of every rule must be used by one.
#[test]
fn rbac_allows_every_request_the_operator_makes_and_each_granted_verb_is_used() {
    use operator::{Operator, SOON, events_for, lease_holder};
    let dir = tempfile::tempdir().unwrap();
    let api = kubeapi::KubeApi::start("v1.36.2");
    let args = [
        "--cluster-pool-ipv4-cidr",
        "10.244.0.0/23",
        "--cluster-pool-ipv4-mask-size",
        "24",
        "--target",
        "node",
        "--target",
        "ciliumnode",
    ];
    let node = api.create_node("n-1", &[]);
    let owner = json!([{"apiVersion": "v1", "kind": "Node", "name": "n-1", "uid": node["metadata"]["uid"]}]);
    api.create(
        "/apis/cilium.io/v2/ciliumnodes",
        &json!({"apiVersion": "cilium.io/v2", "kind": "CiliumNode",
                "metadata": {"name": "n-1", "ownerReferences": owner}, "spec": {}}),
    );
    // The first CiliumNode create meets one that someone else made meanwhile: re-read.
    api.fail_next(Some("POST"), "/apis/cilium.io/v2/ciliumnodes", 1, 409);
    let mut a = Operator::start(&api, dir.path(), "op-a", &args);
    assert!(api.wait_for(SOON, |api| lease_holder(api).as_deref() == Some("op-a")));
    api.create_node("n-2", &[]);
    api.create_node("n-3", &[]);
    let repeated = |api: &kubeapi::KubeApi| api.count("PATCH", "/apis/events.k8s.io/", Some(200)) > 0;
    assert!(
        api.wait_for(SOON, |api| !events_for(api, "n-3", "CIDRNotAvailable").is_empty() && repeated(api)),
        "n-3 waits for room, and its Event repeats as a series"
    );
    api.delete_node("n-1");
    assert!(api.wait_for(SOON, |api| api.node_cidrs().get("n-3").is_some_and(|l| !l.is_empty())));
    let b = Operator::start(&api, dir.path(), "op-b", &args);
    assert!(api.wait_for(SOON, |_| b.ready()));
    assert!(a.terminate().success());
    assert!(api.wait_for(SOON, |api| lease_holder(api).as_deref() == Some("op-b")));

    let rules = rbac_rules();
    let mut used = vec![std::collections::BTreeSet::new(); rules.len()];
    let mut denied = std::collections::BTreeSet::new();
    for l in api.requests().iter().filter(|l| l.who.starts_with("op-")) {
        let Some(attrs) = rbac_attributes(l) else { continue };
        let mut allowed = false;
        for (r, used) in rules.iter().zip(used.iter_mut()).filter(|(r, _)| r.allows(&attrs)) {
            used.insert(attrs.4.clone());
            allowed |= r.verbs.contains(&attrs.4);
        }
        if !allowed {
            denied.insert(attrs);
        }
    }
    assert!(denied.is_empty(), "requests conf/operator/rbac.yaml does not allow: {denied:#?}");
    for (r, used) in rules.iter().zip(&used) {
        let unused: Vec<&String> = r.verbs.iter().filter(|v| !used.contains(*v)).collect();
        assert!(unused.is_empty(), "{}: verbs {unused:?} are granted but never used", r.describe());
    }
}
