//! The stand-in API server answers the agent's requests as the recorded kube-apiserver v1.36.2
//! did (tests/fixtures/kube/v1.36.2/agent, see its README): TokenRequest bound to a pod (201,
//! 422 under 10 minutes, 409 for a wrong pod UID) and a JSON patch whose resourceVersion test
//! fails (422).

use podcidr_testsupport::kubeapi;

use kubeapi::KubeApi;
use serde_json::{Value, json};

fn recorded(name: &str) -> Value {
    let p = concat!(env!("CARGO_MANIFEST_DIR"), "/../testsupport/fixtures/kube/v1.36.2/agent/");
    serde_json::from_slice(&std::fs::read(format!("{p}{name}")).unwrap()).unwrap()
}

/// `v` with the values of `keys` (JSON pointers) blanked: what differs per cluster.
fn shape(mut v: Value, keys: &[&str]) -> Value {
    for k in keys {
        if let Some(x) = v.pointer_mut(k) {
            *x = Value::Null;
        }
    }
    v
}

fn token_request(api: &KubeApi, body: &Value) -> (u16, Value) {
    let (s, b) = api.http(
        "POST",
        "/api/v1/namespaces/kube-system/serviceaccounts/podcidr-agent/token",
        "application/json",
        &serde_json::to_vec(body).unwrap(),
    );
    (s, serde_json::from_slice(&b).unwrap())
}

#[test]
fn token_request_answers_as_recorded() {
    let api = KubeApi::start("v1.36.2");
    api.create_node("node-t", &[]);
    let uid = api.create_agent_pod("kube-system", "podcidr-agent", "podcidr-agent-x", "node-t");
    let mut bound = recorded("tokenrequest-bound.request.json");
    bound["spec"]["boundObjectRef"]["uid"] = json!(uid);

    let (s, got) = token_request(&api, &bound);
    assert_eq!(s, 201);
    let mut want = recorded("tokenrequest-bound-201.json");
    // The stand-in renders no managedFields (tests/kubeapi/mod.rs says so).
    want["metadata"].as_object_mut().unwrap().remove("managedFields");
    let vary = [
        "/metadata/uid",
        "/metadata/creationTimestamp",
        "/status/token",
        "/status/expirationTimestamp",
        "/spec/boundObjectRef/uid",
    ];
    assert_eq!(shape(got.clone(), &vary), shape(want, &vary));
    let token = got["status"]["token"].as_str().unwrap();
    // The token authenticates.
    let (s, _) = kubeapi::http_request(api.addr, &api.ca_pem, token, "GET", "/api/v1/nodes/node-t", "", b"");
    assert_eq!(s, 200);

    let (s, got) = token_request(&api, &recorded("tokenrequest-short.request.json"));
    assert_eq!((s, got), (422, recorded("tokenrequest-short-60s.json")));

    let (s, got) = token_request(&api, &recorded("tokenrequest-wrong-uid.request.json"));
    assert_eq!((s, got), (409, recorded("tokenrequest-wrong-uid.json")));
}

#[test]
fn json_patch_with_a_stale_resource_version_is_refused_as_recorded() {
    let api = KubeApi::start("v1.36.2");
    api.create("/api/v1/nodes", &recorded("node-tainted.request.json"));
    let (s, b) = api.http(
        "PATCH",
        "/api/v1/nodes/node-t",
        "application/json-patch+json",
        &std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../testsupport/fixtures/kube/v1.36.2/agent/taint-json-patch-stale.request.json"
        ))
        .unwrap(),
    );
    let got: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!((s, got), (422, recorded("node-patch-json-stale-rv.json")));
    assert_eq!(api.node("node-t").unwrap()["spec"]["taints"].as_array().unwrap().len(), 2, "nothing changed");
}

#[test]
fn json_patch_replacing_the_taints_with_none_leaves_none() {
    let api = KubeApi::start("v1.36.2");
    let node = api.create(
        "/api/v1/nodes",
        &json!({"apiVersion":"v1","kind":"Node","metadata":{"name":"n"},
            "spec":{"taints":[{"key":"podcidr.io/agent-not-ready","effect":"NoSchedule"}]}}),
    );
    let rv = node["metadata"]["resourceVersion"].clone();
    let ops = json!([{"op":"test","path":"/metadata/resourceVersion","value":rv},
        {"op":"replace","path":"/spec/taints","value":[]}]);
    let (s, b) =
        api.http("PATCH", "/api/v1/nodes/n", "application/json-patch+json", &serde_json::to_vec(&ops).unwrap());
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let n = api.node("n").unwrap();
    assert!(n["spec"]["taints"].as_array().is_none_or(|t| t.is_empty()), "{n}");
}
