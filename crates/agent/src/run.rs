//! The executor: observes the files and the node, asks [`controller::decide`] what to do, does
//! it, and sleeps until the next check, the token's next renewal or a change of the node,
//! whichever comes first.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Node, ObjectReference, ServiceAccount, Taint};
use kube::api::{Api, DynamicObject, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Client, Config};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::controller::{self, Action, Observed, TokenClock, TokenState};
use crate::files::Guarded;
use crate::flags::{Flags, Target};
use crate::http;
use crate::kubeconfig;
use crate::metrics::Metrics;
use podcidr_contract::{CILIUM_NODE, node_pod_cidrs, node_pool};

/// Event reasons on the Node.
pub const TOKEN_RENEWAL_FAILED: &str = "TokenRenewalFailed";
pub const STARTUP_TAINT_REMOVED: &str = "StartupTaintRemoved";
/// What one pass may spend on API calls: a check every 5 s plus this stays under the 10 s in
/// which a deleted file is put back, even when the API server does not answer at all.
const API_BUDGET: Duration = Duration::from_secs(4);
/// Tries of the taint's JSON patch when the Node changed between read and write.
const TAINT_TRIES: usize = 5;

/// What the agent needs of the node, from its watches.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeView {
    pub node: Option<Node>,
    pub pod_cidrs: Vec<String>,
    pub pool: String,
}

pub fn main(flags: Flags) -> ExitCode {
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_target(false).init();
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("podcidr-agent: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(flags)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn kube_config(flags: &Flags) -> Result<Config, String> {
    let mut config = match &flags.kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path).map_err(|e| format!("--kubeconfig {}: {e}", path.display()))?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|e| format!("--kubeconfig {}: {e}", path.display()))?
        }
        None => Config::infer().await.map_err(|e| format!("no Kubernetes configuration: {e}"))?,
    };
    if let Some(url) = &flags.api_server {
        config.cluster_url = url.parse().map_err(|e| format!("--api-server {url}: {e}"))?;
    }
    Ok(config)
}

/// Run until SIGTERM/SIGINT. Nothing installed is removed on the way out: a node must keep
/// tearing pods down with the plugin and conflist in place.
pub async fn run(flags: Flags) -> Result<(), String> {
    let config = kube_config(&flags).await?;
    let server = config.cluster_url.to_string().trim_end_matches('/').to_string();
    let ca = config.root_cert.clone().unwrap_or_default();
    let insecure = config.accept_invalid_certs;
    let client = Client::try_from(config).map_err(|e| format!("cannot build the Kubernetes client: {e}"))?;

    let plugin_bytes = std::fs::read(&flags.plugin).map_err(|e| format!("{}: {e}", flags.plugin.display()))?;
    let metrics = Metrics::new();
    let ready = Arc::new(AtomicBool::new(false));
    http::serve(
        flags.bind_address,
        http::State { metrics: metrics.clone(), ready: ready.clone(), data_dir: flags.host(&flags.data_dir) },
    )
    .await
    .map_err(|e| e.to_string())?;

    let (tx, rx) = watch::channel(NodeView::default());
    tokio::spawn(watch_node(client.clone(), flags.clone(), tx));

    let mut agent = Agent::new(flags, client, plugin_bytes, server, ca, insecure, metrics, ready);
    let mut rx = rx;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("cannot handle SIGTERM: {e}"))?;
    loop {
        let view = rx.borrow_and_update().clone();
        let wake = agent.pass(&view).await;
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {}
            changed = rx.changed() => if changed.is_err() { return Err("the node watch ended".into()) },
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    tracing::info!("stopping; the plugin, its conflist and kubeconfig stay in place");
    Ok(())
}

fn ciliumnode_resource() -> kube::api::ApiResource {
    let gvk = kube::api::GroupVersionKind::gvk(CILIUM_NODE.group, CILIUM_NODE.version, CILIUM_NODE.kind);
    kube::api::ApiResource::from_gvk_with_plural(&gvk, CILIUM_NODE.plural)
}

/// Watch the Node (and the CiliumNode for --target ciliumnode), sending each new view.
async fn watch_node(client: Client, flags: Flags, tx: watch::Sender<NodeView>) {
    let by_name = watcher::Config::default().fields(&format!("metadata.name={}", flags.node_name));
    let nodes = watcher(Api::<Node>::all(client.clone()), by_name.clone()).boxed();
    let cns = match flags.target {
        Target::Node => futures::stream::pending().boxed(),
        Target::Ciliumnode => {
            let api = Api::<DynamicObject>::all_with(client, &ciliumnode_resource());
            watcher(api, by_name).boxed()
        }
    };
    // One item of the merged stream at a time: its size does not matter.
    #[allow(clippy::large_enum_variant)]
    enum Ev {
        Node(Result<watcher::Event<Node>, watcher::Error>),
        Cn(Result<watcher::Event<DynamicObject>, watcher::Error>),
    }
    let mut merged = futures::stream::select(nodes.map(Ev::Node), cns.map(Ev::Cn));
    let mut node: Option<Node> = None;
    let mut cn_cidrs: Vec<String> = vec![];
    let mut backoff = Duration::from_millis(500);
    while let Some(ev) = merged.next().await {
        match ev {
            Ev::Node(Ok(watcher::Event::Apply(n) | watcher::Event::InitApply(n))) => node = Some(n),
            Ev::Node(Ok(watcher::Event::Delete(_))) => node = None,
            Ev::Cn(Ok(watcher::Event::Apply(c) | watcher::Event::InitApply(c))) => {
                cn_cidrs = CILIUM_NODE.pod_cidrs(&c.data)
            }
            Ev::Cn(Ok(watcher::Event::Delete(_))) => cn_cidrs.clear(),
            Ev::Node(Ok(_)) | Ev::Cn(Ok(_)) => {
                backoff = Duration::from_millis(500);
                continue;
            }
            Ev::Node(Err(e)) | Ev::Cn(Err(e)) => {
                tracing::warn!("watching node {}: {e}; retrying in {backoff:?}", flags.node_name);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        }
        backoff = Duration::from_millis(500);
        let pod_cidrs = match flags.target {
            Target::Node => node_pod_cidrs(node.as_ref().and_then(|n| n.spec.as_ref())),
            Target::Ciliumnode => cn_cidrs.clone(),
        };
        let pool =
            node_pool(node.as_ref().and_then(|n| n.metadata.annotations.as_ref())).unwrap_or_default().to_string();
        tx.send_replace(NodeView { node: node.clone(), pod_cidrs, pool });
    }
}

pub struct Agent {
    flags: Flags,
    client: Client,
    plugin: Guarded,
    conflist: Guarded,
    kubeconfig: Guarded,
    server: String,
    ca: Vec<Vec<u8>>,
    insecure: bool,
    token: TokenClock,
    metrics: Metrics,
    ready: Arc<AtomicBool>,
    recorder: Recorder,
    was_ready: bool,
}

impl Agent {
    #[allow(clippy::too_many_arguments)]
    fn new(
        flags: Flags,
        client: Client,
        plugin_bytes: Vec<u8>,
        server: String,
        ca: Vec<Vec<u8>>,
        insecure: bool,
        metrics: Metrics,
        ready: Arc<AtomicBool>,
    ) -> Self {
        let bin = flags.host(&flags.cni_bin_dir).join("podcidr");
        let conf_dir = flags.host(&flags.cni_conf_dir);
        let reporter = Reporter { controller: "podcidr-agent".into(), instance: Some(flags.node_name.clone()) };
        Agent {
            plugin: Guarded::new(bin, plugin_bytes, 0o755),
            conflist: Guarded::new(conf_dir.join(&flags.conflist_name), vec![], 0o644),
            kubeconfig: Guarded::new(conf_dir.join(&flags.kubeconfig_name), vec![], 0o600),
            recorder: Recorder::new(client.clone(), reporter),
            flags,
            client,
            server,
            ca,
            insecure,
            token: TokenClock::new(Instant::now()),
            metrics,
            ready,
            was_ready: false,
        }
    }

    fn conflist_source(&self) -> Option<Vec<u8>> {
        match std::fs::read(&self.flags.conflist) {
            Ok(b) => Some(String::from_utf8_lossy(&b).replace("__NODE_NAME__", &self.flags.node_name).into_bytes()),
            Err(e) => {
                tracing::warn!("cannot read the conflist {}: {e}", self.flags.conflist.display());
                None
            }
        }
    }

    fn observe(&mut self, view: &NodeView) -> Observed {
        let source = self.conflist_source();
        let has_source = source.is_some();
        if let Some(b) = source {
            self.conflist.want(b);
        }
        let taint = &self.flags.startup_taint;
        Observed {
            plugin: self.plugin.in_place(),
            conflist: has_source && self.conflist.in_place(),
            kubeconfig: self.token.held().is_some() && self.kubeconfig.in_place(),
            pod_cidrs: !view.pod_cidrs.is_empty(),
            tainted: view.node.as_ref().is_some_and(|n| has_taint(n, taint)),
        }
    }

    /// One pass; returns when the next one is due at the latest.
    pub async fn pass(&mut self, view: &NodeView) -> Instant {
        self.metrics.set_pool(&view.pool);
        let obs = self.observe(view);
        let actions = controller::decide(Instant::now(), &obs, &self.token);
        // Files first: a hanging API server must not hold up a repair.
        for action in actions.iter().filter(|a| !a.calls_the_api()) {
            self.execute(*action, view).await;
        }
        let remote = async {
            for action in actions.iter().filter(|a| a.calls_the_api()) {
                self.execute(*action, view).await;
            }
        };
        if tokio::time::timeout(API_BUDGET, remote).await.is_err() {
            if self.token.due(Instant::now()) {
                self.token_failed(format!("no answer from the API server within {API_BUDGET:?}"));
            } else {
                tracing::warn!("no answer from the API server within {API_BUDGET:?}; trying again on the next pass");
            }
        }
        // A token got just now goes into the kubeconfig, and the conflist can follow, at once.
        let obs = self.observe(view);
        for action in controller::decide(Instant::now(), &obs, &self.token) {
            if !action.calls_the_api() {
                self.execute(action, view).await;
            }
        }
        let obs = self.observe(view);
        let is_ready = controller::ready(&obs);
        self.ready.store(is_ready, Ordering::Release);
        self.metrics.ready.set(is_ready as i64);
        let stale = !matches!(self.token.state(Instant::now()), TokenState::Fresh);
        self.metrics.token_stale.set(stale as i64);
        if is_ready != self.was_ready {
            tracing::info!(
                "node {}: {}",
                self.flags.node_name,
                if is_ready { "ready for pods" } else { "not ready for pods" }
            );
            self.was_ready = is_ready;
        }
        (Instant::now() + self.flags.check_interval).min(self.token.next_try())
    }

    async fn execute(&mut self, action: Action, view: &NodeView) {
        match action {
            Action::InstallPlugin => self.put(Which::Plugin),
            Action::InstallConflist => self.put(Which::Conflist),
            Action::WriteKubeconfig => self.put(Which::Kubeconfig),
            Action::RequestToken => self.request_token().await,
            Action::ReportTokenStale => {
                let note = match self.token.held() {
                    Some(h) => format!(
                        "cannot renew the plugin's API token; the kubeconfig keeps the old one, which expires in {}s",
                        h.expires().saturating_duration_since(Instant::now()).as_secs()
                    ),
                    None => "cannot get an API token for the plugin; no kubeconfig written".into(),
                };
                if self.event(view, EventType::Warning, TOKEN_RENEWAL_FAILED, "RenewToken", note).await {
                    self.token.reported();
                }
            }
            Action::RemoveTaint => self.remove_taint(view).await,
        }
    }

    fn put(&mut self, which: Which) {
        let (g, name) = match which {
            Which::Plugin => (&mut self.plugin, "plugin"),
            Which::Conflist => (&mut self.conflist, "conflist"),
            Which::Kubeconfig => (&mut self.kubeconfig, "kubeconfig"),
        };
        // No conflist source read yet (or no token for a kubeconfig): nothing to install.
        if g.wanted().is_empty() {
            return;
        }
        match g.put() {
            Ok(false) => tracing::info!("installed {}", g.dest.display()),
            Ok(true) => {
                tracing::warn!("{} was deleted or changed: put back", g.dest.display());
                self.metrics.repaired(name);
            }
            Err(e) => tracing::error!("cannot install {}: {e}", g.dest.display()),
        }
    }

    async fn request_token(&mut self) {
        let f = &self.flags;
        let bound = (!f.pod_name.is_empty() && !f.pod_uid.is_empty()).then(|| BoundObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(f.pod_name.clone()),
            uid: Some(f.pod_uid.clone()),
        });
        let req = TokenRequest {
            spec: TokenRequestSpec {
                audiences: vec![],
                bound_object_ref: bound,
                expiration_seconds: Some(f.token_seconds),
            },
            ..Default::default()
        };
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &f.pod_namespace);
        match api.create_token_request(&f.service_account, &PostParams::default(), &req).await {
            Ok(tr) => {
                let Some(status) = tr.status.filter(|s| !s.token.is_empty()) else {
                    self.token_failed("the TokenRequest answer has no token".into());
                    return;
                };
                // The API server may cap the lifetime (--service-account-max-token-expiration);
                // its answer says what it granted. Timed from now, on the monotonic clock.
                let secs = tr.spec.expiration_seconds.unwrap_or(f.token_seconds).max(1);
                self.token.issued(Instant::now(), status.token.clone(), Duration::from_secs(secs as u64));
                self.kubeconfig
                    .want(kubeconfig::render(&self.server, &self.ca, self.insecure, &status.token).into_bytes());
                tracing::info!("got the plugin's token for {}s; renewing at half", secs);
            }
            Err(e) => self.token_failed(e.to_string()),
        }
    }

    fn token_failed(&mut self, why: String) {
        let now = Instant::now();
        self.token.failed(now);
        self.metrics.token_failures.inc();
        match self.token.held() {
            Some(h) => tracing::warn!(
                "cannot renew the plugin's token: {why}; keeping the old one (expires in {}s), retrying in {}s",
                h.expires().saturating_duration_since(now).as_secs(),
                self.token.next_try().saturating_duration_since(now).as_secs()
            ),
            None => tracing::warn!(
                "cannot get a token for the plugin: {why}; retrying in {}s",
                self.token.next_try().saturating_duration_since(now).as_secs()
            ),
        }
    }

    /// Record an Event on the Node; whether it was recorded.
    async fn event(&self, view: &NodeView, type_: EventType, reason: &str, action: &str, note: String) -> bool {
        let uid = view.node.as_ref().and_then(|n| n.metadata.uid.clone());
        let regarding = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(self.flags.node_name.clone()),
            uid,
            ..Default::default()
        };
        let ev = Event { type_, reason: reason.into(), note: Some(note), action: action.into(), secondary: None };
        match self.recorder.publish(&ev, &regarding).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(reason, "cannot record the event: {e}");
                false
            }
        }
    }

    /// Remove the startup taint: the Node read afresh, its taints written back without it by a
    /// JSON patch that first tests the resourceVersion read (a strategic merge cannot remove
    /// one taint: `spec.taints` has no merge key). Another writer in between: read and retry.
    async fn remove_taint(&mut self, view: &NodeView) {
        let api: Api<Node> = Api::all(self.client.clone());
        let name = self.flags.node_name.clone();
        for _ in 0..TAINT_TRIES {
            let node = match api.get(&name).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!("cannot read node {name} to remove its startup taint: {e}");
                    return;
                }
            };
            if !has_taint(&node, &self.flags.startup_taint) {
                return;
            }
            let rv = node.metadata.resource_version.clone().unwrap_or_default();
            let kept: Vec<&Taint> = node
                .spec
                .iter()
                .flat_map(|s| s.taints.iter().flatten())
                .filter(|t| t.key != self.flags.startup_taint)
                .collect();
            let ops = serde_json::json!([
                {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
                {"op": "replace", "path": "/spec/taints", "value": kept},
            ]);
            let req = ::http::Request::patch(format!("/api/v1/nodes/{name}?fieldManager=podcidr-agent"))
                .header(::http::header::CONTENT_TYPE, "application/json-patch+json")
                .body(serde_json::to_vec(&ops).unwrap_or_default());
            let Ok(req) = req else { return };
            match self.client.request::<Node>(req).await {
                Ok(_) => {
                    tracing::info!("removed the startup taint {} from node {name}", self.flags.startup_taint);
                    let note = format!("plugin, conflist, kubeconfig and pod CIDRs {:?} in place", view.pod_cidrs);
                    self.event(view, EventType::Normal, STARTUP_TAINT_REMOVED, "RemoveTaint", note).await;
                    return;
                }
                // The test failed (422) or a conflict (409): the Node changed since the read.
                Err(kube::Error::Api(s)) if s.code == 422 || s.code == 409 => {
                    tracing::info!("node {name} changed while removing its startup taint; again");
                }
                Err(e) => {
                    tracing::warn!("cannot remove the startup taint from node {name}: {e}");
                    return;
                }
            }
        }
    }
}

enum Which {
    Plugin,
    Conflist,
    Kubeconfig,
}

fn has_taint(node: &Node, key: &str) -> bool {
    node.spec.as_ref().and_then(|s| s.taints.as_ref()).is_some_and(|ts| ts.iter().any(|t| t.key == key))
}

/// The host path of the plugin for a flag set (tests).
pub fn plugin_path(flags: &Flags) -> PathBuf {
    flags.host(&flags.cni_bin_dir).join("podcidr")
}
