//! Reading one object from the Kubernetes API, through kube-rs: the kubeconfig (tokens, token
//! files, client certificates, exec plugins), a current-thread runtime and a client, all built
//! per call and only when the cache cannot answer. Everything is bounded by
//! `apiTimeoutSeconds`, and every failure becomes a [`Failure`] whose message a person can act
//! on.

use super::source::{Failure, seconds};
use crate::cni::config::Request;
use crate::cni::error::{CniError, CniResult};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

pub const DEFAULT_KUBECONFIG: &str = "/etc/cni/net.d/podcidr-kubeconfig";
pub const DEFAULT_API_TIMEOUT_SECONDS: f64 = 5.0;

/// How to reach the API server.
#[derive(Debug, Clone)]
pub struct ApiConf {
    pub kubeconfig: PathBuf,
    pub timeout: Duration,
}

impl ApiConf {
    pub fn from_request(req: &Request) -> CniResult<ApiConf> {
        Ok(ApiConf {
            kubeconfig: req.ipam.kubeconfig.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_KUBECONFIG)),
            timeout: seconds(
                "ipam.apiTimeoutSeconds",
                req.ipam.api_timeout_seconds,
                DEFAULT_API_TIMEOUT_SECONDS,
                0.001,
            )?,
        })
    }
}

/// What is read, for messages: `Node node-b`, and the RBAC rule that allows it.
pub struct Target<'a> {
    pub what: &'a str,
    pub rbac: &'a str,
}

/// An object name as the API allows it (RFC 1123 subdomain); it also goes into the URL path.
pub fn check_name(field: &str, origin: &str, name: &str) -> CniResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        return Ok(());
    }
    let rule = "a Kubernetes object name is lowercase letters, digits, '-' and '.', starting and ending with a \
                letter or digit, at most 253 characters";
    Err(match origin {
        "ipam.nodeName" => CniError::config(field, format!("{name:?} is not valid: {rule}")),
        "the hostname" => {
            CniError::config(field, format!("is not set, and the hostname {name:?} is not valid: {rule}"))
        }
        var => CniError::env(var, format!("{name:?} is not a valid node name: {rule}")),
    })
}

pub fn get_node(conf: &ApiConf, target: &Target, name: &str) -> Result<Node, Failure> {
    let name = name.to_string();
    call(conf, target, move |client| async move { Api::<Node>::all(client).get(&name).await })
}

pub fn get_object(
    conf: &ApiConf,
    target: &Target,
    resource: &ApiResource,
    namespace: Option<&str>,
    name: &str,
) -> Result<DynamicObject, Failure> {
    let (resource, namespace, name) = (resource.clone(), namespace.map(String::from), name.to_string());
    call(conf, target, move |client| async move {
        let api = match &namespace {
            Some(ns) => Api::<DynamicObject>::namespaced_with(client, ns, &resource),
            None => Api::<DynamicObject>::all_with(client, &resource),
        };
        api.get(&name).await
    })
}

/// Who podcidr is to the API server, from the kubeconfig's current context: for messages.
struct Identity {
    server: String,
    user: String,
    credential: String,
}

impl Identity {
    fn of(kc: &Kubeconfig) -> Identity {
        let ctx = kc
            .current_context
            .as_deref()
            .and_then(|n| kc.contexts.iter().find(|c| c.name == n))
            .and_then(|c| c.context.as_ref());
        let server = ctx
            .and_then(|c| kc.clusters.iter().find(|k| k.name == c.cluster))
            .and_then(|k| k.cluster.as_ref()?.server.clone())
            .unwrap_or_else(|| "(no server)".into());
        let user = ctx.and_then(|c| c.user.clone()).unwrap_or_default();
        let auth = kc.auth_infos.iter().find(|a| a.name == user).and_then(|a| a.auth_info.as_ref());
        let credential = match auth {
            Some(a) if a.exec.is_some() => {
                let cmd = a.exec.as_ref().and_then(|e| e.command.clone()).unwrap_or_default();
                format!("the token from exec plugin {cmd:?}")
            }
            Some(a) if a.token_file.is_some() => format!("the token in {}", a.token_file.as_deref().unwrap_or("")),
            Some(a) if a.token.is_some() => "its token".into(),
            Some(a) if a.client_certificate.is_some() || a.client_certificate_data.is_some() => {
                "its client certificate".into()
            }
            _ => "no credentials".into(),
        };
        Identity { server, user, credential }
    }
}

/// Reads `tokenFile` (when no `token` overrides it) and trims it, as client-go does: a token
/// written with `echo` ends in a newline, which kube-rs would send and the server refuse.
fn inline_token_file(kc: &mut Kubeconfig, user: &str) -> Result<(), String> {
    let auth = kc.auth_infos.iter_mut().filter(|a| a.name == user).filter_map(|a| a.auth_info.as_mut());
    for a in auth.filter(|a| a.token.is_none()) {
        if let Some(file) = a.token_file.take() {
            let token = std::fs::read_to_string(&file).map_err(|e| format!("{file}: {e}"))?;
            a.token = Some(token.trim().to_string().into());
        }
    }
    Ok(())
}

/// An error with its causes, `a: b: c`: kube's own Display often leaves out the useful part
/// ("client error (Connect)" without "Connection refused").
fn chain(e: &dyn std::error::Error) -> String {
    // First lines only: a YAML error comes with a drawn excerpt of the file.
    let first_line = |e: &dyn std::error::Error| e.to_string().lines().next().unwrap_or_default().to_string();
    let mut parts = vec![first_line(e)];
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = first_line(s);
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = s.source();
    }
    parts.join(": ")
}

fn call<T, F, Fut>(conf: &ApiConf, target: &Target, f: F) -> Result<T, Failure>
where
    F: FnOnce(Client) -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let path = conf.kubeconfig.display();
    if let Err(e) = std::fs::metadata(&conf.kubeconfig)
        && e.kind() == std::io::ErrorKind::NotFound
    {
        return Err(Failure::Unavailable(format!(
            "the kubeconfig {path} does not exist (yet?); podcidr-agent writes it (conf/agent/daemonset.yaml), \
             or set ipam.kubeconfig"
        )));
    }
    let mut kubeconfig = Kubeconfig::read_from(&conf.kubeconfig)
        .map_err(|e| Failure::Unavailable(format!("cannot load the kubeconfig {path}: {}", chain(&e))))?;
    let who = Identity::of(&kubeconfig);
    inline_token_file(&mut kubeconfig, &who.user)
        .map_err(|e| Failure::Unavailable(format!("cannot read the token file of the kubeconfig {path}: {e}")))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Unavailable(format!("cannot start the I/O runtime: {e}")))?;
    let timeout = conf.timeout;
    let request = async move {
        let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        // The one timeout around the whole call bounds everything (exec plugin, DNS, connect,
        // TLS, answer); timeouts of its own would only race it with vaguer messages.
        (config.connect_timeout, config.read_timeout, config.write_timeout) = (None, None, None);
        // One exec is one request: no retries behind the caller's back.
        config.default_retry = false;
        f(Client::try_from(config)?).await
    };
    // The timer must be made inside the runtime. kube-rs logs its own view of a failure at
    // ERROR; the one message that matters is ours, so its events are dropped.
    let outcome = tracing::dispatcher::with_default(&tracing::Dispatch::none(), || {
        rt.block_on(async move { tokio::time::timeout(timeout, request).await })
    });
    // An exec credential plugin still running past the timeout is left behind, not waited for.
    rt.shutdown_background();
    match outcome {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(classify(&e, &who, target, conf)),
        Err(_) => Err(Failure::Unavailable(format!(
            "no answer from the API server {} within {}s (apiTimeoutSeconds) while reading {}",
            who.server,
            timeout.as_secs_f64(),
            target.what
        ))),
    }
}

fn classify(e: &kube::Error, who: &Identity, target: &Target, conf: &ApiConf) -> Failure {
    let kubeconfig = conf.kubeconfig.display();
    let kube::Error::Api(status) = e else {
        return Failure::Unavailable(format!(
            "cannot read {} from the API server {}: {}",
            target.what,
            who.server,
            chain(e)
        ));
    };
    let server_says = if status.message.is_empty() { status.reason.clone() } else { status.message.clone() };
    match status.code {
        404 => Failure::Missing(format!("{} does not exist (the API server answered 404: {server_says})", target.what)),
        401 => Failure::Unavailable(format!(
            "the API server {} does not accept podcidr's credentials (401 Unauthorized): user {:?} of {kubeconfig} \
             presents {}, which is invalid, expired or revoked; write a kubeconfig with a valid ServiceAccount token \
             (podcidr-agent does, renewing it) or client certificate",
            who.server, who.user, who.credential
        )),
        403 => Failure::Unavailable(format!(
            "the API server {} lets user {:?} of {kubeconfig} in but forbids reading {} (403 Forbidden: {server_says}); \
             that identity needs a ClusterRole with {} bound to it (conf/rbac.yaml)",
            who.server, who.user, target.what, target.rbac
        )),
        code => Failure::Unavailable(format!(
            "the API server {} answered {code} {} to reading {}: {server_says}",
            who.server, status.reason, target.what
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_are_checked_and_the_fix_is_named() {
        assert!(check_name("ipam.nodeName", "ipam.nodeName", "node-1.example").is_ok());
        for bad in ["", "Node1", "a/b", "../x", "-a", "a-", "a_b", &"a".repeat(254)] {
            assert_eq!(check_name("ipam.nodeName", "ipam.nodeName", bad).unwrap_err().code, 7, "{bad:?}");
        }
        let e = check_name("ipam.nodeName", "the hostname", "My_Host").unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.starts_with("ipam.nodeName: is not set, and the hostname \"My_Host\""), "{}", e.msg);
        let e = check_name("ipam.nodeName", "NODE_NAME", "a/b").unwrap_err();
        assert_eq!(e.code, 4);
        assert!(e.msg.starts_with("NODE_NAME: "), "{}", e.msg);
    }
}
