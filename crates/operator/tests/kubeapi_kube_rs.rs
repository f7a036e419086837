//! The libraries the operator is built on work against the stand-in API server as against a
//! real one: kube-runtime's watcher (list, watch, bookmarks, 410 after a restart, relist),
//! and kube-runtime's event Recorder (create, then merge-patched series).

use podcidr_testsupport::kubeapi;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, ObjectReference};
use kube::api::{Api, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kubeapi::KubeApi;
use serde_json::json;
use std::time::Duration;

async fn client(api: &KubeApi, dir: &std::path::Path, who: &str) -> kube::Client {
    let kc = Kubeconfig::read_from(api.kubeconfig(dir, who)).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.unwrap();
    kube::Client::try_from(config).unwrap()
}

/// Waits (with a deadline) for the watcher to yield an object named `name`.
async fn seen(
    stream: &mut (impl futures::Stream<Item = Result<watcher::Event<Node>, watcher::Error>> + Unpin),
    name: &str,
) {
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(watcher::Event::Apply(n) | watcher::Event::InitApply(n))
                    if n.metadata.name.as_deref() == Some(name) =>
                {
                    return;
                }
                _ => {}
            }
        }
    })
    .await;
    assert!(found.is_ok(), "the watcher never saw {name}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_runtime_watcher_lists_watches_and_relists_after_410() {
    let dir = tempfile::tempdir().unwrap();
    let api = KubeApi::start("v1.36.2");
    api.create_node("before", &[]);
    let nodes: Api<Node> = Api::all(client(&api, dir.path(), "watcher").await);
    let mut stream = watcher(nodes.clone(), watcher::Config::default()).boxed();
    seen(&mut stream, "before").await;
    api.create_node("during", &[]);
    seen(&mut stream, "during").await;
    // The apiserver restarts with its history gone: the watch ends, the re-watch from the
    // old resourceVersion gets 410, and the watcher lists again.
    api.create_node("old", &[]);
    seen(&mut stream, "old").await;
    api.compact_and_restart();
    api.create_node("after", &[]);
    seen(&mut stream, "after").await;
    let lists = api.requests().iter().filter(|l| l.path == "/api/v1/nodes" && !l.query.contains("watch")).count();
    assert!(lists >= 1, "listed: {lists}");
    // The patch kube sends for a podCIDR is merged as recorded.
    let pp = PatchParams::default();
    let n = nodes.patch("after", &pp, &Patch::Merge(json!({"spec":{"podCIDRs":["10.244.9.0/24"]}}))).await.unwrap();
    assert_eq!(n.spec.unwrap().pod_cidr.as_deref(), Some("10.244.9.0/24"));
    let err =
        nodes.patch("after", &pp, &Patch::Merge(json!({"spec":{"podCIDRs":["10.244.10.0/24"]}}))).await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(ref s) if s.code == 422), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_runtime_recorder_creates_then_patches_a_series() {
    let dir = tempfile::tempdir().unwrap();
    let api = KubeApi::start("v1.36.2");
    let node = api.create_node("node-r", &[]);
    let recorder = Recorder::new(
        client(&api, dir.path(), "recorder").await,
        Reporter { controller: "podcidr-operator".into(), instance: Some("op-a".into()) },
    );
    let reference = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: Some("node-r".into()),
        uid: node["metadata"]["uid"].as_str().map(str::to_string),
        ..Default::default()
    };
    let ev = Event {
        type_: EventType::Warning,
        reason: "CIDRNotAvailable".into(),
        note: Some("no pool can serve node-r".into()),
        action: "Allocate".into(),
        secondary: None,
    };
    recorder.publish(&ev, &reference).await.unwrap();
    recorder.publish(&ev, &reference).await.unwrap();
    let events = api.events();
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(
        (&e["type"], &e["reason"], &e["involvedObject"]["name"]),
        (&json!("Warning"), &json!("CIDRNotAvailable"), &json!("node-r"))
    );
    assert_eq!(e["series"]["count"], json!(2));
    assert_eq!(api.count("POST", "/apis/events.k8s.io/v1/namespaces/default/events", Some(201)), 1);
    assert_eq!(api.count("PATCH", "/apis/events.k8s.io/v1/namespaces/default/events/", Some(200)), 1);
}
