//! The CNI_* environment of one request, validated before anything touches the store.

use super::error::{CniError, CniResult};
use std::ffi::OsString;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Gc,
    Status,
}

impl Command {
    pub fn parse(s: &str) -> CniResult<Self> {
        Ok(match s {
            "ADD" => Self::Add,
            "DEL" => Self::Del,
            "CHECK" => Self::Check,
            "VERSION" => Self::Version,
            "GC" => Self::Gc,
            "STATUS" => Self::Status,
            other => {
                return Err(CniError::env(
                    "CNI_COMMAND",
                    format!("unknown command {other:?}; expected ADD, DEL, CHECK, VERSION, GC or STATUS"),
                ));
            }
        })
    }

    /// Verbs that act on one attachment and so need CNI_CONTAINERID and CNI_IFNAME.
    pub fn has_attachment(self) -> bool {
        matches!(self, Self::Add | Self::Del | Self::Check)
    }
}

/// Longest container ID accepted: it becomes part of a file name (255 bytes) beside the ifname.
pub const MAX_CONTAINER_ID: usize = 200;
/// IFNAMSIZ - 1, as the kernel and libcni enforce.
pub const MAX_IFNAME: usize = 15;

#[derive(Debug, Clone, Default)]
pub struct Attachment {
    pub container_id: String,
    pub ifname: String,
    pub netns: String,
}

/// Pod identity and requests that runtimes pass in CNI_ARGS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    pub pod_namespace: Option<String>,
    pub pod_name: Option<String>,
    pub pod_uid: Option<String>,
    pub infra_container_id: Option<String>,
    /// `IP=` (comma-separated), as host-local reads it.
    pub ips: Vec<String>,
}

impl CniArgs {
    /// Tolerant: unknown keys and malformed pairs are ignored, as runtimes mix in keys of their own.
    pub fn parse(raw: &str) -> Self {
        let mut args = CniArgs::default();
        for pair in raw.split(';') {
            let Some((key, value)) = pair.split_once('=') else {
                continue;
            };
            let value = value.trim();
            let keep = || (!value.is_empty()).then(|| value.to_string());
            match key.trim() {
                "K8S_POD_NAMESPACE" => args.pod_namespace = keep(),
                "K8S_POD_NAME" => args.pod_name = keep(),
                "K8S_POD_UID" => args.pod_uid = keep(),
                "K8S_POD_INFRA_CONTAINER_ID" => args.infra_container_id = keep(),
                "IP" => args.ips.extend(value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from)),
                _ => {}
            }
        }
        args
    }
}

#[derive(Debug, Clone)]
pub struct CniEnv {
    pub command: Command,
    /// Present for ADD, DEL and CHECK.
    pub attachment: Option<Attachment>,
    pub args: CniArgs,
}

impl CniEnv {
    pub fn from_process() -> CniResult<Self> {
        Self::from_lookup(|k| std::env::var_os(k))
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<OsString>) -> CniResult<Self> {
        let var = |name: &str| -> CniResult<String> {
            match get(name) {
                None => Ok(String::new()),
                Some(v) => v.into_string().map_err(|_| CniError::env(name, "is not valid UTF-8")),
            }
        };
        let command = var("CNI_COMMAND")?;
        if command.is_empty() {
            return Err(CniError::env("CNI_COMMAND", "is not set"));
        }
        let command = Command::parse(&command)?;
        let args = CniArgs::parse(&var("CNI_ARGS")?);
        let attachment = if command.has_attachment() {
            let container_id = var("CNI_CONTAINERID")?;
            validate_container_id(&container_id)?;
            let ifname = var("CNI_IFNAME")?;
            validate_ifname(&ifname)?;
            let netns = var("CNI_NETNS")?;
            if netns.is_empty() && command != Command::Del {
                return Err(CniError::env("CNI_NETNS", "is not set"));
            }
            if netns.contains('\0') || netns.len() > 4096 {
                return Err(CniError::env("CNI_NETNS", "is not a usable path"));
            }
            Some(Attachment { container_id, ifname, netns })
        } else {
            None
        };
        Ok(CniEnv { command, attachment, args })
    }
}

/// libcni's rule (`^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`), plus a length limit: the ID names a file.
pub fn validate_container_id(id: &str) -> CniResult<()> {
    const VAR: &str = "CNI_CONTAINERID";
    if id.is_empty() {
        return Err(CniError::env(VAR, "is not set"));
    }
    if id.len() > MAX_CONTAINER_ID {
        return Err(CniError::env(VAR, format!("is {} bytes long; the limit is {MAX_CONTAINER_ID}", id.len())));
    }
    if !is_safe_name(id) {
        return Err(CniError::env(
            VAR,
            "may hold only letters, digits, '_', '.' and '-', and must start with a letter or digit",
        )
        .with_details(printable(id)));
    }
    Ok(())
}

/// libcni's rule: 1 to 15 bytes, not `.` or `..`, no `/`, `:` or white space.
pub fn validate_ifname(name: &str) -> CniResult<()> {
    const VAR: &str = "CNI_IFNAME";
    if name.is_empty() {
        return Err(CniError::env(VAR, "is not set"));
    }
    if name.len() > MAX_IFNAME {
        return Err(CniError::env(VAR, format!("is {} bytes long; the limit is {MAX_IFNAME}", name.len())));
    }
    if name == "." || name == ".." || name.chars().any(|c| c == '/' || c == ':' || c == '\0' || c.is_whitespace()) {
        return Err(CniError::env(VAR, "must not be '.', '..' or contain '/', ':', NUL or white space")
            .with_details(printable(name)));
    }
    Ok(())
}

/// `[a-zA-Z0-9][a-zA-Z0-9_.\-]*`: cannot be `..`, hold a `/` or a NUL, so it is safe as a file name.
pub fn is_safe_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Echo a rejected value back without flooding the error object.
pub fn printable(s: &str) -> String {
    let mut out: String = s.chars().take(64).flat_map(char::escape_debug).collect();
    if s.chars().count() > 64 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cni_args_keeps_pod_identity_and_ignores_the_rest() {
        let a = CniArgs::parse(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=nginx;K8S_POD_UID=u-1;junk;K8S_POD_INFRA_CONTAINER_ID=abc;Other=x=y",
        );
        assert_eq!(a.pod_namespace.as_deref(), Some("default"));
        assert_eq!(a.pod_name.as_deref(), Some("nginx"));
        assert_eq!(a.pod_uid.as_deref(), Some("u-1"));
        assert_eq!(a.infra_container_id.as_deref(), Some("abc"));
        assert!(a.ips.is_empty());
    }

    #[test]
    fn cni_args_ip_list() {
        assert_eq!(CniArgs::parse("IP=10.0.0.5, fd00::5").ips, vec!["10.0.0.5", "fd00::5"]);
    }

    #[test]
    fn names_that_could_escape_a_directory_are_rejected() {
        for bad in ["../x", "a/b", "..", ".", "", "a\0b", "-a", &"a".repeat(201)] {
            assert!(validate_container_id(bad).is_err(), "{bad:?}");
        }
        for bad in ["../x", "a/b", "..", ".", "", "a:b", "a b", "a\0b", "sixteen-chars-xx"] {
            assert!(validate_ifname(bad).is_err(), "{bad:?}");
        }
        assert!(validate_container_id(&"f".repeat(64)).is_ok());
        assert!(validate_ifname("eth0").is_ok());
    }
}
