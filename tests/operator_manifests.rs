//! The operator's manifests in conf/operator/: the CRD is the one the types generate, and the
//! RBAC, Deployment, example pools and node conflists say what docs/operator.md says.
//!
//! After changing the PodCIDRPool types, regenerate the CRD files with
//! `PODCIDR_UPDATE_MANIFESTS=1 cargo test --test operator_manifests`.

use podcidr::operator::crd::{self, CelRules, PodCIDRPool};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::Command;

fn conf(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("conf/operator").join(name)
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
        rule(&[""], &["nodes"], &["get", "list", "watch", "patch"]),
        rule(&["cilium.io"], &["ciliumnodes"], &["get", "list", "watch", "create", "update", "patch"]),
        rule(&[""], &["events"], &["create", "patch"]),
        rule(&["events.k8s.io"], &["events"], &["create", "patch"]),
        rule(&["podcidr.io"], &["podcidrpools"], &["get", "list", "watch", "create", "update", "patch"]),
        rule(&["podcidr.io"], &["podcidrblocks"], &["get", "list", "watch", "create", "update"]),
        rule(&["podcidr.io"], &["podcidrpools/status"], &["update", "patch"]),
        rule(&["podcidr.io"], &["podcidrpools/finalizers"], &["update"]),
    ];
    want.sort();
    assert_eq!(rules(cluster[0]), want);

    // Leases only in the leader-election namespace.
    let role = by_kind(&docs, "Role");
    assert_eq!(role.len(), 1);
    assert_eq!(role[0]["metadata"]["namespace"], "kube-system");
    assert_eq!(rules(role[0]), [rule(&["coordination.k8s.io"], &["leases"], &["get", "create", "patch"])]);
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
        "--metrics-bind-address=0.0.0.0:9880",
        "--health-probe-bind-address=0.0.0.0:9881",
        "--target=node",
    ] {
        assert!(args.contains(&flag), "{flag} missing from {args:?}");
    }
    assert!(args.iter().any(|a| a.starts_with("--cluster-pool-ipv4-cidr=")), "{args:?}");
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
