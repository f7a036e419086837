//! The kubernetes, crd and kubelet modes, exec-level: the real binary asks a stand-in API
//! server (HTTPS on 127.0.0.1, answering with responses recorded from kube-apiserver v1.36.2 and
//! v1.21.2) or a fake /proc, as it would on a node.

use podcidr_testsupport::apiserver;
mod common;

use apiserver::{API_VERSIONS, ApiServer, Reply, TOKEN, fixture, fixture_json, watch_object};
use common::{Call, Sandbox, addresses, cli};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const NODE_MANUAL: &str = "/api/v1/nodes/node-manual";
const CILIUMNODE_MANUAL: &str = "/apis/cilium.io/v2/ciliumnodes/node-manual";
const NET: &str = "podnet";

/// A config of `mode` whose ipam stanza is `ipam` plus the mode, type and dataDir.
fn conf(sb: &Sandbox, mode: &str, ipam: Value) -> Value {
    let mut ipam = ipam;
    ipam["mode"] = json!(mode);
    sb.conf("1.1.0", NET, ipam)
}

/// A kubernetes-mode config for node `node` through `kubeconfig`, the cache never fresh, so
/// every request asks the API server unless a test says otherwise.
fn node_conf(sb: &Sandbox, kubeconfig: &Path, node: &str) -> Value {
    conf(sb, "kubernetes", json!({ "kubeconfig": kubeconfig, "nodeName": node, "cacheTTLSeconds": 0 }))
}

fn with(mut conf: Value, key: &str, value: Value) -> Value {
    conf["ipam"][key] = value;
    conf
}

fn status(conf: &Value) -> common::Out {
    Call::verb("STATUS").conf(conf).run()
}

fn ips(result: &Value) -> Vec<String> {
    addresses(result)
}

/// A server answering with node-manual's dual-stack Node, a sandbox, and a config that reads it
/// with a token.
fn node_manual(version: &str) -> (ApiServer, Sandbox, Value) {
    let server = ApiServer::start(version);
    server.route_fixture(NODE_MANUAL, "node-dualstack-manual.json");
    let sb = Sandbox::new();
    let c = node_conf(&sb, &server.token_kubeconfig(sb.root(), TOKEN), "node-manual");
    (server, sb, c)
}

/// A port on 127.0.0.1 where nothing listens.
fn dead_kubeconfig(sb: &Sandbox) -> PathBuf {
    let mut server = ApiServer::start(API_VERSIONS[0]);
    let path = server.token_kubeconfig(sb.root(), TOKEN);
    server.stop();
    path
}

// ---------------------------------------------------------------------------------------------
// kubernetes: Node.spec.podCIDRs
// ---------------------------------------------------------------------------------------------

#[test]
fn dual_stack_from_a_node_of_both_api_versions_with_token_and_certificate() {
    for version in API_VERSIONS {
        let server = ApiServer::start(version);
        server.route_fixture(NODE_MANUAL, "node-dualstack-manual.json");
        let dir = Sandbox::new();
        for kubeconfig in [server.token_kubeconfig(dir.root(), TOKEN), server.cert_kubeconfig(dir.root())] {
            let sb = Sandbox::new();
            let c = node_conf(&sb, &kubeconfig, "node-manual");
            let c = with(c, "routes", json!([{ "dst": "0.0.0.0/0" }, { "dst": "::/0" }]));
            let c = with(c, "exclude", json!(["10.244.2.2"]));
            let res = Call::add("c1", &c).run().ok_json();
            assert_eq!(ips(&res), ["10.244.2.3/24", "fd00:10:244:2::2/64"], "{version}: {res}");
            assert_eq!(res["ips"][0]["gateway"], "10.244.2.1", "{version}: the gateway is the first host");
            assert_eq!(res["ips"][1]["gateway"], "fd00:10:244:2::1");
            assert_eq!(res["routes"], json!([{ "dst": "0.0.0.0/0" }, { "dst": "::/0" }]));
            status(&c).ok_silent();
        }
        let auths: Vec<&str> = server.seen().iter().map(|s| s.auth).collect();
        assert!(auths.contains(&"token") && auths.contains(&"certificate"), "{version}: {auths:?}");
    }
}

#[test]
fn kcm_assigned_cidrs_and_the_node_name_from_the_environment() {
    for version in API_VERSIONS {
        let server = ApiServer::start(version);
        server.route_fixture("/api/v1/nodes/node-b", "node-kcm-singlestack.json");
        server.route_fixture("/api/v1/nodes/node-c", "node-kcm-dualstack.json");
        let sb = Sandbox::new();
        let kc = server.token_kubeconfig(sb.root(), TOKEN);
        let c = conf(&sb, "kubernetes", json!({ "kubeconfig": kc, "cacheTTLSeconds": 0 }));
        let res = Call::add("c1", &c).env("K8S_NODE_NAME", "node-b").env("NODE_NAME", "node-c").run().ok_json();
        assert_eq!(ips(&res), ["10.244.1.2/24"], "{version}: K8S_NODE_NAME comes first");
        let res = Call::add("c2", &c).env("NODE_NAME", "node-c").run().ok_json();
        assert_eq!(ips(&res), ["10.244.3.2/24", "fd00:10:244::2/64"], "{version}: then NODE_NAME");
    }
}

#[test]
fn a_node_without_a_pod_cidr_is_try_again_later_until_it_has_one() {
    for version in API_VERSIONS {
        let server = ApiServer::start(version);
        let sb = Sandbox::new();
        let kc = server.token_kubeconfig(sb.root(), TOKEN);
        // The cache may be fresh: a missing CIDR is never cached, so the next ADD asks again.
        let c = with(node_conf(&sb, &kc, "node-e"), "cacheTTLSeconds", json!(30));
        server.route("/api/v1/nodes/node-e", Reply::json(200, &watch_object(version, "watch-node-e.jsonl", 0)));
        let msg = Call::add("c1", &c).run().err_msg(11);
        for part in ["node-e", "mode kubernetes", "no pod CIDR", "spec.podCIDRs"] {
            assert!(msg.contains(part), "{version}: {part:?} missing from {msg}");
        }
        assert!(sb.lease_files(NET).is_empty());
        assert!(status(&c).err_msg(50).contains("node-e"), "{version}");

        server.route("/api/v1/nodes/node-e", Reply::json(200, &watch_object(version, "watch-node-e.jsonl", 1)));
        let res = Call::add("c1", &c).run().ok_json();
        assert_eq!(ips(&res), ["10.244.5.2/24", "fd00:10:244:3::2/64"], "{version}");
        status(&c).ok_silent();
    }
}

#[test]
fn a_missing_node_is_try_again_later() {
    for version in API_VERSIONS {
        let server = ApiServer::start(version);
        let sb = Sandbox::new();
        let c = node_conf(&sb, &server.token_kubeconfig(sb.root(), TOKEN), "nope");
        let msg = Call::add("c1", &c).run().err_msg(11);
        assert!(msg.contains("Node nope does not exist") && msg.contains("404"), "{version}: {msg}");
        assert!(msg.contains("mode kubernetes"), "{msg}");
        status(&c).err(50);
    }
}

#[test]
fn unauthorized_names_the_credentials() {
    for version in API_VERSIONS {
        let server = ApiServer::start(version);
        server.route_fixture(NODE_MANUAL, "node-dualstack-manual.json");
        let sb = Sandbox::new();
        let kc = server.token_kubeconfig(sb.root(), "expired-token");
        let msg = Call::add("c1", &node_conf(&sb, &kc, "node-manual")).run().err_msg(11);
        for part in ["401", "user \"podcidr\"", &kc.display().to_string(), "token", "node-manual"] {
            assert!(msg.contains(part), "{version}: {part:?} missing from {msg}");
        }
    }
}

#[test]
fn forbidden_names_the_rbac_needed() {
    for version in API_VERSIONS {
        let server = ApiServer::start(version);
        server.route(NODE_MANUAL, Reply { status: 403, body: fixture(version, "status-403.json") });
        server.route(CILIUMNODE_MANUAL, Reply { status: 403, body: fixture(version, "status-403.json") });
        let sb = Sandbox::new();
        let kc = server.token_kubeconfig(sb.root(), TOKEN);
        let msg = Call::add("c1", &node_conf(&sb, &kc, "node-manual")).run().err_msg(11);
        for part in ["403", "forbids reading Node node-manual", "get on nodes", "ClusterRole", "conf/rbac.yaml"] {
            assert!(msg.contains(part), "{version}: {part:?} missing from {msg}");
        }
        let c = conf(&sb, "crd", json!({ "kubeconfig": kc, "nodeName": "node-manual" }));
        let msg = Call::add("c1", &c).run().err_msg(11);
        assert!(msg.contains("get on ciliumnodes in API group cilium.io"), "{version}: {msg}");
    }
}

#[test]
fn other_credentials_token_file_and_exec_plugin() {
    let server = ApiServer::start(API_VERSIONS[0]);
    server.route_fixture(NODE_MANUAL, "node-dualstack-manual.json");
    let dir = Sandbox::new();
    for kc in [server.token_file_kubeconfig(dir.root()), server.exec_kubeconfig(dir.root())] {
        let sb = Sandbox::new();
        let res = Call::add("c1", &node_conf(&sb, &kc, "node-manual")).run().ok_json();
        assert_eq!(ips(&res), ["10.244.2.2/24", "fd00:10:244:2::2/64"], "{}", kc.display());
    }
    assert!(server.seen().iter().all(|s| s.auth == "token"), "{:?}", server.seen());
}

// ---------------------------------------------------------------------------------------------
// The cache: TTL, fallback, UID change
// ---------------------------------------------------------------------------------------------

#[test]
fn within_the_ttl_no_request_reaches_the_api_server() {
    let (server, sb, c) = node_manual(API_VERSIONS[0]);
    let c = with(c, "cacheTTLSeconds", json!(30));
    Call::add("c1", &c).run().ok_json();
    assert_eq!(server.requests(), 1);
    Call::add("c2", &c).run().ok_json();
    status(&c).ok_silent();
    Call::del("c1", &c).run().ok_silent();
    assert_eq!(server.requests(), 1, "within the TTL nothing asks the API server");

    let cache: Value = serde_json::from_slice(&std::fs::read(sb.net_dir(NET).join("source.json")).unwrap()).unwrap();
    assert_eq!(cache["uid"], "00c68e64-f834-4678-9ec1-b5a85bbff3c2");
    assert_eq!(cache["resourceVersion"], "285");
    assert_eq!(cache["cidrs"], json!(["10.244.2.0/24", "fd00:10:244:2::/64"]));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(sb.net_dir(NET).join("source.json")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    // Another question (another node) is not answered from this cache.
    server.route_fixture("/api/v1/nodes/node-c", "node-kcm-dualstack.json");
    let other = with(c.clone(), "nodeName", json!("node-c"));
    assert_eq!(ips(&Call::add("c3", &other).run().ok_json()), ["10.244.3.2/24", "fd00:10:244::2/64"]);
    assert_eq!(server.requests(), 2);

    // An expired cache is read again.
    std::thread::sleep(Duration::from_millis(1100));
    let short = with(other, "cacheTTLSeconds", json!(1));
    Call::add("c4", &short).run().ok_json();
    assert_eq!(server.requests(), 3);
}

#[test]
fn api_down_with_a_warm_cache_uses_it_and_warns() {
    let (mut server, _sb, c) = node_manual(API_VERSIONS[1]);
    Call::add("c1", &c).run().ok_json();
    server.stop();
    let out = Call::add("c2", &c).run();
    assert_eq!(ips(&out.ok_json()), ["10.244.2.3/24", "fd00:10:244:2::3/64"]);
    assert!(out.stderr.contains("WARN") && out.stderr.contains("using the pod CIDRs"), "{}", out.stderr);
    assert!(out.stderr.contains("cached") && out.stderr.contains("(uid fd3d6ed1"), "{}", out.stderr);
    status(&c).ok_silent();
}

#[test]
fn an_error_answer_with_a_warm_cache_uses_it_too() {
    let (server, _sb, c) = node_manual(API_VERSIONS[0]);
    Call::add("c1", &c).run().ok_json();
    server.route(NODE_MANUAL, Reply { status: 403, body: fixture(API_VERSIONS[0], "status-403.json") });
    let out = Call::add("c2", &c).run();
    out.ok_json();
    assert!(out.stderr.contains("403") && out.stderr.contains("using the pod CIDRs"), "{}", out.stderr);
}

#[test]
fn api_down_with_a_cold_cache_is_try_again_later() {
    let sb = Sandbox::new();
    let c = node_conf(&sb, &dead_kubeconfig(&sb), "node-manual");
    let msg = Call::add("c1", &c).run().err_msg(11);
    for part in ["node-manual", "mode kubernetes", "cannot read Node node-manual", "no earlier read is cached"] {
        assert!(msg.contains(part), "{part:?} missing from {msg}");
    }
    assert!(status(&c).err_msg(50).contains("no earlier read is cached"));

    let missing = with(c, "kubeconfig", json!(sb.root().join("absent")));
    let msg = Call::add("c1", &missing).run().err_msg(11);
    assert!(msg.contains("absent does not exist"), "{msg}");
    std::fs::write(sb.root().join("absent"), "clusters: [").unwrap();
    let msg = Call::add("c1", &missing).run().err_msg(11);
    assert!(msg.contains("cannot load the kubeconfig") && !msg.contains('\n'), "{msg}");
}

#[test]
fn a_silent_api_server_costs_at_most_the_timeout() {
    // Accepts connections (the kernel does) but never answers the TLS handshake.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut server = ApiServer::start(API_VERSIONS[0]);
    let sb = Sandbox::new();
    let kc = server.token_kubeconfig(sb.root(), TOKEN);
    server.stop();
    let text = std::fs::read_to_string(&kc)
        .unwrap()
        .replace(&server.url(), &format!("https://{}", silent.local_addr().unwrap()));
    std::fs::write(&kc, text).unwrap();
    let c = with(node_conf(&sb, &kc, "node-manual"), "apiTimeoutSeconds", json!(1));
    let start = Instant::now();
    let msg = Call::add("c1", &c).run().err_msg(11);
    let took = start.elapsed();
    assert!(took < Duration::from_millis(2500), "took {took:?}");
    assert!(msg.contains("within 1s"), "{msg}");
}

#[test]
fn del_never_asks_the_api_server() {
    let (mut server, sb, c) = node_manual(API_VERSIONS[0]);
    Call::add("c1", &c).run().ok_json();
    let asked = server.requests();
    Call::del("c1", &c).run().ok_silent();
    assert_eq!(server.requests(), asked);
    Call::add("c2", &c).run().ok_json();
    server.stop();
    Call::del("c2", &c).run().ok_silent();
    assert!(sb.lease_files(NET).is_empty());
    // Nor does a DEL of a network that never had a store.
    let never = Sandbox::new();
    Call::del("c9", &node_conf(&never, &dead_kubeconfig(&never), "node-manual")).run().ok_silent();
}

#[test]
fn a_new_uid_brings_new_cidrs_and_old_leases_stay_until_their_del() {
    let server = ApiServer::start(API_VERSIONS[0]);
    let node = fixture_json(API_VERSIONS[0], "node-kcm-dualstack.json");
    server.route("/api/v1/nodes/node-c", Reply::json(200, &node));
    let sb = Sandbox::new();
    let c = node_conf(&sb, &server.token_kubeconfig(sb.root(), TOKEN), "node-c");
    assert_eq!(ips(&Call::add("c1", &c).run().ok_json()), ["10.244.3.2/24", "fd00:10:244::2/64"]);

    // node-c deleted and registered again: a new UID and other CIDRs.
    let mut again = node.clone();
    again["metadata"]["uid"] = json!("11111111-2222-4333-8444-555555555555");
    again["metadata"]["resourceVersion"] = json!("900");
    again["spec"]["podCIDR"] = json!("10.244.9.0/24");
    again["spec"]["podCIDRs"] = json!(["10.244.9.0/24", "fd00:10:244:9::/64"]);
    server.route("/api/v1/nodes/node-c", Reply::json(200, &again));
    let out = Call::add("c2", &c).run();
    assert_eq!(ips(&out.ok_json()), ["10.244.9.2/24", "fd00:10:244:9::2/64"]);
    assert!(out.stderr.contains("new UID 11111111-2222-4333-8444-555555555555"), "{}", out.stderr);

    assert!(sb.lease_files(NET).contains(&"10.244.3.2".to_string()), "the old lease stays");
    let st = cli(&["status", "--data-dir", sb.data_dir().to_str().unwrap()]);
    assert_eq!(st.code(), Some(0), "{}", st.stderr);
    assert!(st.text().contains("10.244.3.2 (c1) [outside the configured ranges]"), "{}", st.text());
    assert!(st.text().contains("fd00:10:244::2 (c1) [outside the configured ranges]"), "{}", st.text());
    assert!(!st.text().contains("10.244.9.2 (c2) [outside"), "{}", st.text());
    assert!(st.text().contains("uid 11111111-2222-4333-8444-555555555555"), "{}", st.text());
    Call::del("c1", &c).run().ok_silent();
    assert!(!sb.lease_files(NET).contains(&"10.244.3.2".to_string()));
}

#[test]
fn status_shows_where_the_cidrs_came_from() {
    let (_server, sb, c) = node_manual(API_VERSIONS[0]);
    Call::add("c1", &c).run().ok_json();
    let data = sb.data_dir();
    let st = cli(&["status", "--data-dir", data.to_str().unwrap()]);
    let text = st.text();
    assert!(text.contains("Network podnet (mode kubernetes,"), "{text}");
    assert!(
        text.contains(
            "Source: Node node-manual, uid 00c68e64-f834-4678-9ec1-b5a85bbff3c2, resourceVersion 285 (node node-manual)"
        ),
        "{text}"
    );
    assert!(text.contains("Pod CIDRs: 10.244.2.0/24, fd00:10:244:2::/64, read "), "{text}");
    let st = cli(&["status", "--data-dir", data.to_str().unwrap(), "--json"]);
    let doc: Value = serde_json::from_str(st.text()).unwrap();
    let src = &doc["networks"][0]["source"];
    assert_eq!(src["node"], "node-manual");
    assert_eq!(src["uid"], "00c68e64-f834-4678-9ec1-b5a85bbff3c2");
    assert_eq!(src["cidrs"], json!(["10.244.2.0/24", "fd00:10:244:2::/64"]));
    assert!(src["ageSeconds"].as_u64().is_some_and(|a| a < 60), "{src}");
}

/// A v1.26 API server accepts an IPv4-mapped podCIDR; the kubelet and kube-proxy (Go's
/// net.ParseCIDR) read it as the IPv4 CIDR it maps, and so do the plugin and the operator.
#[test]
fn an_ipv4_mapped_pod_cidr_is_the_ipv4_cidr_it_maps() {
    let server = ApiServer::start(API_VERSIONS[0]);
    let mut node = fixture_json(API_VERSIONS[0], "node-dualstack-manual.json");
    node["spec"]["podCIDR"] = json!("::ffff:10.244.9.0/120");
    node["spec"]["podCIDRs"] = json!(["::ffff:10.244.9.0/120"]);
    server.route(NODE_MANUAL, Reply::json(200, &node));
    let sb = Sandbox::new();
    let c = node_conf(&sb, &server.token_kubeconfig(sb.root(), TOKEN), "node-manual");
    let res = Call::add("c1", &c).run().ok_json();
    assert_eq!(ips(&res), ["10.244.9.2/24"], "{res}");
    assert_eq!(res["ips"][0]["gateway"], "10.244.9.1");
}

#[test]
fn status_shows_the_pool_podcidr_operator_recorded_on_the_node() {
    let server = ApiServer::start(API_VERSIONS[0]);
    let mut node = fixture_json(API_VERSIONS[0], "node-dualstack-manual.json");
    node["metadata"]["annotations"] = json!({ "podcidr.io/pool": "zone-a" });
    server.route(NODE_MANUAL, Reply::json(200, &node));
    let sb = Sandbox::new();
    let c = node_conf(&sb, &server.token_kubeconfig(sb.root(), TOKEN), "node-manual");
    Call::add("c1", &c).run().ok_json();
    let data = sb.data_dir();
    let text = cli(&["status", "--data-dir", data.to_str().unwrap()]).text().to_owned();
    assert!(text.contains("resourceVersion 285 (node node-manual, pool zone-a)"), "{text}");
    let doc: Value =
        serde_json::from_str(cli(&["status", "--data-dir", data.to_str().unwrap(), "--json"]).text()).unwrap();
    assert_eq!(doc["networks"][0]["source"]["pool"], "zone-a");

    // The annotation is free text: a terminal escape in it is printed escaped.
    node["metadata"]["annotations"] = json!({ "podcidr.io/pool": "evil\u{1b}[2J" });
    server.route(NODE_MANUAL, Reply::json(200, &node));
    Call::add("c2", &c).run().ok_json();
    let text = cli(&["status", "--data-dir", data.to_str().unwrap()]).text().to_owned();
    assert!(text.contains("pool evil\\u{1b}[2J)"), "{text}");
    assert!(!text.contains('\u{1b}'), "{text:?}");
}

#[test]
fn required_families() {
    let server = ApiServer::start(API_VERSIONS[0]);
    server.route_fixture("/api/v1/nodes/node-b", "node-kcm-singlestack.json");
    let sb = Sandbox::new();
    let c = node_conf(&sb, &server.token_kubeconfig(sb.root(), TOKEN), "node-b");
    assert_eq!(
        ips(&Call::add("c1", &with(c.clone(), "requireIPv4PodCIDR", json!(true))).run().ok_json()),
        ["10.244.1.2/24"]
    );
    let msg = Call::add("c2", &with(c.clone(), "requireIPv6PodCIDR", json!(true))).run().err_msg(11);
    assert!(msg.contains("no IPv6 pod CIDR") && msg.contains("requireIPv6PodCIDR") && msg.contains("node-b"), "{msg}");
}

#[test]
fn config_mistakes_are_code_7_and_static_never_reads_the_cluster() {
    let sb = Sandbox::new();
    let kc = sb.root().join("kubeconfig");
    let base = node_conf(&sb, &kc, "node-manual");
    let cases = [
        ("ranges", json!([[{ "subnet": "10.0.0.0/24" }]]), "ipam.ranges"),
        ("apiTimeoutSeconds", json!(-1), "ipam.apiTimeoutSeconds"),
        ("cacheTTLSeconds", json!("soon"), "ipam.cacheTTLSeconds"),
        ("nodeName", json!("Node_B"), "ipam.nodeName"),
        ("crd", json!({ "podCIDRsPath": "spec..x" }), "ipam.crd.podCIDRsPath"),
    ];
    for (key, value, field) in cases {
        let mut c = with(base.clone(), key, value);
        if key == "crd" {
            c["ipam"]["mode"] = json!("crd");
        }
        let msg = Call::add("c1", &c).run().err_msg(7);
        assert!(msg.starts_with(field), "{key}: {msg}");
    }
    let c = with(with(base.clone(), "crd", json!({ "apiVersion": "Cilium.io/v2" })), "mode", json!("crd"));
    assert!(Call::add("c1", &c).run().err_msg(7).starts_with("ipam.crd.apiVersion"));
    assert!(
        Call::add("c1", &with(base.clone(), "mode", json!("kube")))
            .run()
            .err_msg(7)
            .contains("kubernetes, kubelet, crd")
    );
    let msg = Call::add("c1", &base).env("K8S_NODE_NAME", "x").run();
    msg.err(11);
    let bad_env = with(base.clone(), "nodeName", json!(""));
    assert!(Call::add("c1", &bad_env).env("K8S_NODE_NAME", "a/b").run().err_msg(4).starts_with("K8S_NODE_NAME"));

    // static ignores every key of the other modes and writes no cache.
    let st = sb.conf(
        "1.1.0",
        "static",
        json!({ "ranges": [[{ "subnet": "10.0.0.0/24" }]], "kubeconfig": kc, "nodeName": "NOT VALID" }),
    );
    Call::add("c1", &st).run().ok_json();
    assert!(!sb.net_dir("static").join("source.json").exists());
}

// ---------------------------------------------------------------------------------------------
// crd: a custom resource named after the node
// ---------------------------------------------------------------------------------------------

#[test]
fn ciliumnode_by_default_from_both_api_versions() {
    for version in API_VERSIONS {
        let server = ApiServer::start(version);
        server.route_fixture(CILIUMNODE_MANUAL, "ciliumnode.json");
        let sb = Sandbox::new();
        let c = conf(&sb, "crd", json!({ "kubeconfig": server.cert_kubeconfig(sb.root()), "nodeName": "node-manual" }));
        let res = Call::add("c1", &c).run().ok_json();
        assert_eq!(ips(&res), ["10.244.2.2/24", "fd00:10:244:2::2/64"], "{version}");
        let cache: Value =
            serde_json::from_slice(&std::fs::read(sb.net_dir(NET).join("source.json")).unwrap()).unwrap();
        assert_eq!(cache["object"], "ciliumnodes.cilium.io/v2 node-manual", "{version}");

        let absent = with(c.clone(), "nodeName", json!("nope"));
        let msg = Call::add("c2", &absent).run().err_msg(11);
        assert!(msg.contains("ciliumnodes.cilium.io/v2 nope does not exist") && msg.contains("mode crd"), "{msg}");
    }
}

#[test]
fn custom_resources_and_field_paths() {
    let server = ApiServer::start(API_VERSIONS[0]);
    let base = fixture_json(API_VERSIONS[0], "ciliumnode.json");
    // Another operator's namespaced resource, CIDRs as one comma-separated string in status.
    let mut custom = base.clone();
    custom["apiVersion"] = json!("ipam.example.com/v1alpha1");
    custom["kind"] = json!("NodeAllocation");
    custom["status"] = json!({ "allocation": { "cidrs": "10.50.0.0/24,fd00:50::/64" } });
    server.route(
        "/apis/ipam.example.com/v1alpha1/namespaces/ipam/nodeallocations/node-manual",
        Reply::json(200, &custom),
    );
    // An annotation whose key holds dots and a slash.
    let mut annotated = base.clone();
    annotated["metadata"]["annotations"]["ipam.example.com/pod-cidrs"] = json!("10.60.0.0/24");
    server.route("/apis/cilium.io/v2/ciliumnodes/node-annotated", Reply::json(200, &annotated));

    let sb = Sandbox::new();
    let kc = server.token_kubeconfig(sb.root(), TOKEN);
    let crd = json!({
        "apiVersion": "ipam.example.com/v1alpha1",
        "plural": "nodeallocations",
        "namespace": "ipam",
        "podCIDRsPath": "status.allocation.cidrs"
    });
    let c = conf(&sb, "crd", json!({ "kubeconfig": kc, "nodeName": "node-manual", "cacheTTLSeconds": 0, "crd": crd }));
    assert_eq!(ips(&Call::add("c1", &c).run().ok_json()), ["10.50.0.2/24", "fd00:50::2/64"]);

    let c = conf(
        &sb,
        "crd",
        json!({
            "kubeconfig": kc, "nodeName": "node-annotated", "cacheTTLSeconds": 0,
            "crd": { "podCIDRsPath": "metadata.annotations.ipam\\.example\\.com/pod-cidrs" }
        }),
    );
    assert_eq!(ips(&Call::add("c2", &c).run().ok_json()), ["10.60.0.2/24"]);

    let c = with(c, "crd", json!({ "podCIDRsPath": "spec.ipam.v4PodCIDRs" }));
    let msg = Call::add("c3", &c).run().err_msg(11);
    assert!(msg.contains("has no field spec.ipam.v4PodCIDRs") && msg.contains("node-annotated"), "{msg}");
    status(&c).err(50);
}

// ---------------------------------------------------------------------------------------------
// kubelet: --pod-cidr of the running kubelet, else podCIDR in its config file
// ---------------------------------------------------------------------------------------------

/// A fake /proc with a kubelet (pid 4242) started with `args`, and an unrelated process.
fn fake_proc(sb: &Sandbox, args: &[&str]) -> PathBuf {
    let root = sb.root().join("proc");
    for (pid, argv) in [("1", vec!["/sbin/init"]), ("4242", [&["/usr/bin/kubelet"], args].concat())] {
        std::fs::create_dir_all(root.join(pid)).unwrap();
        let mut cmdline = argv.join("\0");
        cmdline.push('\0');
        std::fs::write(root.join(pid).join("cmdline"), cmdline).unwrap();
    }
    std::fs::create_dir_all(root.join("self")).unwrap();
    root
}

fn kubelet_add(sb: &Sandbox, proc_root: &Path, ipam: Value, cid: &str) -> common::Out {
    Call::add(cid, &conf(sb, "kubelet", ipam)).env("PODCIDR_PROC_ROOT", proc_root.to_str().unwrap()).run()
}

#[test]
fn kubelet_flag_wins_over_the_config_file() {
    let sb = Sandbox::new();
    let file = sb.root().join("kubelet.yaml");
    std::fs::write(&file, "kind: KubeletConfiguration\npodCIDR: 10.9.0.0/24\n").unwrap();
    let cfg = format!("--config={}", file.display());
    let proc_root = fake_proc(&sb, &["--pod-cidr", "10.8.0.0/24", &cfg, "--v=2"]);
    let res = kubelet_add(&sb, &proc_root, json!({}), "c1").ok_json();
    assert_eq!(ips(&res), ["10.8.0.2/24"]);
    let cache: Value = serde_json::from_slice(&std::fs::read(sb.net_dir(NET).join("source.json")).unwrap()).unwrap();
    assert_eq!(cache["object"], "kubelet --pod-cidr (pid 4242)");
}

#[test]
fn kubelet_config_file_from_its_flag_or_the_key() {
    let sb = Sandbox::new();
    let file = sb.root().join("kubelet.yaml");
    std::fs::write(
        &file,
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\npodCIDR: \"10.9.0.0/24\"\n",
    )
    .unwrap();
    let proc_root = fake_proc(&sb, &["--config", file.to_str().unwrap()]);
    assert_eq!(ips(&kubelet_add(&sb, &proc_root, json!({ "cacheTTLSeconds": 0 }), "c1").ok_json()), ["10.9.0.2/24"]);

    let other = sb.root().join("other.yaml");
    std::fs::write(&other, "podCIDR: 10.7.0.0/24\n").unwrap();
    let ipam = json!({ "cacheTTLSeconds": 0, "kubeletConfig": other });
    assert_eq!(ips(&kubelet_add(&sb, &proc_root, ipam.clone(), "c2").ok_json()), ["10.7.0.2/24"], "the key wins");

    // No kubelet running: the key's file still answers.
    let empty = sb.root().join("empty-proc");
    std::fs::create_dir_all(&empty).unwrap();
    assert_eq!(ips(&kubelet_add(&sb, &empty, ipam, "c3").ok_json()), ["10.7.0.3/24"]);
}

#[test]
fn kubelet_dual_stack_values() {
    let sb = Sandbox::new();
    let proc_root = fake_proc(&sb, &["--pod-cidr=10.8.0.0/24,fd00:8::/64"]);
    let res = kubelet_add(&sb, &proc_root, json!({ "cacheTTLSeconds": 0 }), "c1").ok_json();
    assert_eq!(ips(&res), ["10.8.0.2/24", "fd00:8::2/64"]);

    let file = sb.root().join("kubelet.yaml");
    std::fs::write(&file, "podCIDR: fd00:9::/64, 10.9.0.0/24\n").unwrap();
    let proc_root = fake_proc(&Sandbox::new(), &[]);
    let res = kubelet_add(&sb, &proc_root, json!({ "cacheTTLSeconds": 0, "kubeletConfig": file }), "c2").ok_json();
    assert_eq!(ips(&res), ["fd00:9::2/64", "10.9.0.2/24"], "families in the order given");
}

#[test]
fn kubelet_without_a_pod_cidr_is_try_again_later() {
    let sb = Sandbox::new();
    let file = sb.root().join("kubelet.yaml");
    std::fs::write(&file, "kind: KubeletConfiguration\nclusterDNS: [10.96.0.10]\n").unwrap();
    let proc_root = fake_proc(&sb, &["--config", file.to_str().unwrap()]);
    let c = conf(&sb, "kubelet", json!({ "nodeName": "edge-1" }));
    let env = proc_root.to_str().unwrap();
    let msg = Call::add("c1", &c).env("PODCIDR_PROC_ROOT", env).run().err_msg(11);
    for part in ["edge-1", "mode kubelet", "pid 4242", "without --pod-cidr", "sets no podCIDR"] {
        assert!(msg.contains(part), "{part:?} missing from {msg}");
    }
    assert!(Call::verb("STATUS").conf(&c).env("PODCIDR_PROC_ROOT", env).run().err_msg(50).contains("sets no podCIDR"));

    let none = conf(&sb, "kubelet", json!({ "kubeletConfig": sb.root().join("absent.yaml") }));
    let msg =
        Call::add("c1", &none).env("PODCIDR_PROC_ROOT", sb.root().join("nothing").to_str().unwrap()).run().err_msg(11);
    assert!(msg.contains("no kubelet process runs") && msg.contains("does not exist"), "{msg}");
}

// ---------------------------------------------------------------------------------------------
// conf/: the example conflists and the plugin's RBAC
// ---------------------------------------------------------------------------------------------

const CONF_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../conf");

fn conf_file(name: &str) -> String {
    std::fs::read_to_string(Path::new(CONF_DIR).join(name)).unwrap_or_else(|e| panic!("conf/{name}: {e}"))
}

/// The request a runtime builds from a conflist for its plugin with an ipam stanza, with
/// `ipam` keys overridden (dataDir and the like, to stay inside the sandbox).
fn plugin_request(conflist: &Value, ipam: Value) -> Value {
    let mut plugin =
        conflist["plugins"].as_array().unwrap().iter().find(|p| p.get("ipam").is_some()).expect("ipam plugin").clone();
    plugin["cniVersion"] = conflist["cniVersion"].clone();
    plugin["name"] = conflist["name"].clone();
    for (k, v) in ipam.as_object().unwrap() {
        plugin["ipam"][k] = v.clone();
    }
    plugin
}

#[test]
fn every_example_conflist_works() {
    let server = ApiServer::start(API_VERSIONS[0]);
    server.route_fixture(NODE_MANUAL, "node-dualstack-manual.json");
    server.route_fixture(CILIUMNODE_MANUAL, "ciliumnode.json");
    let sb = Sandbox::new();
    let kc = server.token_kubeconfig(sb.root(), TOKEN);
    let kubelet_yaml = sb.root().join("kubelet.yaml");
    std::fs::write(&kubelet_yaml, "podCIDR: 10.8.0.0/24,fd00:8::/64\n").unwrap();
    let cases = [
        ("10-podcidr-kubernetes.conflist", json!({ "kubeconfig": kc, "nodeName": "node-manual" }), "10.244.2.2/24"),
        ("10-podcidr-crd.conflist", json!({ "kubeconfig": kc, "nodeName": "node-manual" }), "10.244.2.2/24"),
        ("10-podcidr-kubelet.conflist", json!({ "kubeletConfig": kubelet_yaml }), "10.8.0.2/24"),
        ("10-podcidr-static.conflist", json!({}), "10.244.1.2/24"),
        // The node side of podcidr-operator, at cniVersion 1.0.0.
        (
            "operator/10-podcidr-kubernetes.conflist",
            json!({ "kubeconfig": kc, "nodeName": "node-manual" }),
            "10.244.2.2/24",
        ),
        ("operator/10-podcidr-crd.conflist", json!({ "kubeconfig": kc, "nodeName": "node-manual" }), "10.244.2.2/24"),
    ];
    for (name, ipam, first) in cases {
        let sb = Sandbox::new();
        let conflist: Value = serde_json::from_str(&conf_file(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut ipam = ipam;
        ipam["dataDir"] = json!(sb.data_dir());
        ipam["logFile"] = json!(sb.root().join("podcidr.log"));
        let req = plugin_request(&conflist, ipam);
        let out = Call::add("c1", &req).env("PODCIDR_PROC_ROOT", sb.root().to_str().unwrap()).run();
        let res = out.ok_json();
        assert_eq!(ips(&res).len(), 2, "{name}: dual stack: {res}");
        assert_eq!(ips(&res)[0], first, "{name}: {res}");
        // STATUS is 1.1.0; the examples say 1.0.0 for the reference plugins Debian ships
        // (conf/README.md), and a runtime that sends STATUS speaks 1.1.0.
        let mut req = req;
        req["cniVersion"] = json!("1.1.0");
        Call::verb("STATUS").conf(&req).env("PODCIDR_PROC_ROOT", sb.root().to_str().unwrap()).run().ok_silent();
    }
}

#[test]
fn the_manifests_hold_what_the_plugin_needs() {
    let docs = |name: &str| -> Vec<Value> {
        serde_saphyr::from_multiple(&conf_file(name)).unwrap_or_else(|e| panic!("conf/{name}: {e}"))
    };
    let rbac = docs("rbac.yaml");
    let kinds: Vec<&str> = rbac.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["ServiceAccount", "ClusterRole", "ClusterRoleBinding"]);
    let rules = rbac[1]["rules"].as_array().unwrap();
    for (group, resource) in [("", "nodes"), ("cilium.io", "ciliumnodes")] {
        assert!(
            rules.iter().any(|r| r["apiGroups"] == json!([group])
                && r["resources"] == json!([resource])
                && r["verbs"] == json!(["get"])),
            "get on {resource}: {rules:?}"
        );
    }
    assert_eq!(rbac[2]["subjects"][0]["name"], rbac[0]["metadata"]["name"]);
    // podcidr-agent installs the plugin and its kubeconfig: crates/agent/tests, tests/kustomize_package.rs.
}
