//! podcidr-operator: the controller that cuts pools into per-node pod CIDRs. See
//! docs/operator.md.
//!
//! - [`flags`]: the command line, checked before anything starts (a bad pool exits 2).
//! - [`client`]: the kube clients with the client-side rate limit.
//! - [`leader`]: leader election; only the leader runs the [`controller`].
//! - [`controller`]: restore, watch, assign, release: a state machine (one task owns the
//!   [`allocator`]) and its executor. [`record`]: the fenced allocation record.
//! - [`targets`]: the writes to Nodes and CiliumNodes. [`events`]: Warning Events.
//! - [`pools`]: PodCIDRPools (the `default` pool from the flags, statuses, the drain finalizer).
//! - [`rules`]: the pool rules, each stated once (check, message, CEL form).
//! - [`metrics`], [`http`]: /metrics, /healthz, /readyz. [`status`], [`crd`]: subcommands.

pub mod allocator;
pub mod client;
pub mod controller;
pub mod crd;
pub mod events;
pub mod flags;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod pools;
pub mod record;
pub mod rules;
pub mod selector;
pub mod status;
pub mod targets;

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

use flags::{Cli, Command, Settings};

/// Entry point of the `podcidr-operator` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Crd) => crd::print_crd(),
        Some(Command::Status { kubeconfig, json }) => status::run_blocking(kubeconfig, json),
        None => {
            init_tracing(&cli.run.log_level);
            let settings = match cli.run.settings() {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("podcidr-operator: {e}");
                    return ExitCode::from(2);
                }
            };
            let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("podcidr-operator: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let code = rt.block_on(serve(settings));
            // Spawned tasks (writes, watches) are abandoned, not awaited.
            rt.shutdown_background();
            code
        }
    }
}

/// Logs to stderr; RUST_LOG (same syntax) overrides `--log-level`.
fn init_tracing(level: &str) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let spec = std::env::var("RUST_LOG").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| level.to_string());
    let filter: tracing_subscriber::filter::Targets = spec.parse().unwrap_or_else(|e| {
        eprintln!("podcidr-operator: log filter {spec:?}: {e}; using info");
        tracing_subscriber::filter::Targets::new().with_default(tracing::Level::INFO)
    });
    let _ = tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(false))
        .with(filter)
        .try_init();
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: stopping"),
                _ = int.recv() => tracing::info!("SIGINT: stopping"),
            }
        }
        _ => {
            tracing::warn!("cannot listen for SIGTERM; only SIGINT stops gracefully");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn serve(settings: Settings) -> ExitCode {
    let settings = Arc::new(settings);
    let config = match client::config(settings.kubeconfig.as_deref()).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    // Every write of the controller, its pools and its Events goes through the fence: refused at
    // once unless this process leads.
    let (fence_switch, fence) = leader::fence();
    let kube = match client::limited(config.clone(), settings.qps, settings.burst) {
        Ok(c) => leader::fenced(c, fence),
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    // Leader election has a limiter of its own: a burst of writes must not delay a renewal.
    // Events have a limiter of their own too: they never delay a CIDR write.
    let events_client = match client::limited(config.clone(), 5.0, 10) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let lease_client = match client::limited(config, 5.0, 10) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let metrics = metrics::Metrics::new();
    let ready = http::Readiness::new();
    let live = http::Liveness::new();
    let mut servers = Vec::new();
    let routes = match (settings.metrics_addr, settings.health_addr) {
        (Some(m), Some(h)) if m == h => {
            vec![(m, http::Routes::metrics(metrics.clone()).with_health(ready.clone(), live.clone()))]
        }
        (m, h) => m
            .map(|m| (m, http::Routes::metrics(metrics.clone())))
            .into_iter()
            .chain(h.map(|h| (h, http::Routes::health(ready.clone(), live.clone()))))
            .collect(),
    };
    for (addr, r) in routes {
        match http::serve(addr, r).await {
            Ok(s) => servers.push(s),
            Err(e) => {
                tracing::error!("{e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let events = events::Events::start(events_client, &settings.identity, metrics.clone());
    let shared = controller::Shared {
        client: kube.clone(),
        settings: settings.clone(),
        metrics: metrics.clone(),
        ready: ready.clone(),
        events,
    };
    let work = || {
        let sh = shared.clone();
        async move {
            let psh = sh.clone();
            controller::run(sh, move |tx| pools::start(psh, tx)).await;
        }
    };
    let code = if settings.leader_elect {
        let shows = leader::Shows { metrics: metrics.clone(), ready: ready.clone(), live, fence: fence_switch };
        leader::run(lease_client, &settings, shows, work, shutdown_signal()).await
    } else {
        tracing::info!("--leader-elect=false: this process is the only writer");
        let _ = fence_switch.send(true);
        metrics.set_leader(true);
        tokio::select! {
            () = work() => {
                tracing::error!("the controller stopped");
                ExitCode::FAILURE
            }
            () = shutdown_signal() => ExitCode::SUCCESS,
        }
    };
    for s in servers {
        s.abort();
    }
    code
}
