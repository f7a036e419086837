//! The network configuration on stdin, and the `ipam` stanza podcidr reads from it.
//!
//! Parsing is two steps: serde takes the JSON shape (with the failing key's path in the error),
//! then [`crate::ipam::Pool`] turns addresses and ranges into checked values, naming the field
//! that is wrong.

use super::error::{CniError, CniResult, code};
use super::version::SpecVersion;
use serde::Deserialize;
use serde_json::Value;
use std::path::PathBuf;

pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/podcidr";

/// `Deserialize` for a struct of the config, reading its keys as Go's `encoding/json` does
/// (host-local is Go): the exact key, else one equal but for ASCII case (`rangestart`,
/// `DataDir`), the last one winning. The exact match is a `match` on the key as serde's derive
/// makes, so a config written as documented is read at the same cost; only a key matching none
/// exactly is compared again ignoring case. Absent keys keep the `Default`.
macro_rules! go_keys {
    ($ty:ident { $($key:literal => $field:ident),* $(,)? }) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                const KEYS: &[&str] = &[$($key),*];
                struct Key;
                impl<'de> serde::de::DeserializeSeed<'de> for Key {
                    type Value = Option<&'static str>;
                    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                        d.deserialize_identifier(self)
                    }
                }
                impl<'de> serde::de::Visitor<'de> for Key {
                    type Value = Option<&'static str>;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str("a key")
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                        Ok(match v {
                            $($key => Some($key),)*
                            _ => KEYS.iter().copied().find(|k| k.eq_ignore_ascii_case(v)),
                        })
                    }
                }
                struct Fields;
                impl<'de> serde::de::Visitor<'de> for Fields {
                    type Value = $ty;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str(concat!("struct ", stringify!($ty)))
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<$ty, A::Error> {
                        let mut out = <$ty>::default();
                        while let Some(key) = map.next_key_seed(Key)? {
                            match key {
                                $(Some($key) => out.$field = map.next_value()?,)*
                                _ => {
                                    map.next_value::<serde::de::IgnoredAny>()?;
                                }
                            }
                        }
                        Ok(out)
                    }
                }
                d.deserialize_struct(stringify!($ty), KEYS, Fields)
            }
        }
    };
}
/// Longest network name: it names a directory.
pub const MAX_NETWORK_NAME: usize = 200;

#[derive(Debug, Clone, Default)]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    pub ipam: Option<IpamConf>,
    pub runtime_config: RuntimeConfig,
    pub args: Option<ConfArgs>,
    pub prev_result: Option<Value>,
    pub valid_attachments: Option<Vec<GcAttachment>>,
    /// `cni.dev/attachments`: the spelling used by early 1.1 drafts and some runtimes.
    pub attachments_old: Option<Vec<GcAttachment>>,
}

go_keys!(NetConf {
    "cniVersion" => cni_version,
    "name" => name,
    "ipam" => ipam,
    "runtimeConfig" => runtime_config,
    "args" => args,
    "prevResult" => prev_result,
    "cni.dev/valid-attachments" => valid_attachments,
    "cni.dev/attachments" => attachments_old,
});

#[derive(Debug, Clone, Default)]
pub struct RuntimeConfig {
    pub ips: Vec<String>,
}

go_keys!(RuntimeConfig { "ips" => ips });

#[derive(Debug, Clone, Default)]
pub struct ConfArgs {
    pub cni: Option<ConfCniArgs>,
}

go_keys!(ConfArgs { "cni" => cni });

#[derive(Debug, Clone, Default)]
pub struct ConfCniArgs {
    pub ips: Vec<String>,
}

go_keys!(ConfCniArgs { "ips" => ips });

#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct GcAttachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// host-local's keys, plus podcidr's own. Unknown keys are ignored, as host-local does.
#[derive(Debug, Clone, Default)]
pub struct IpamConf {
    pub plugin_type: String,
    pub mode: Option<String>,
    pub ranges: Vec<Vec<RangeConf>>,
    /// The legacy single range, as host-local still accepts it.
    pub subnet: Option<String>,
    pub range_start: Option<String>,
    pub range_end: Option<String>,
    pub gateway: Option<String>,
    pub routes: Vec<Value>,
    pub resolv_conf: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub exclude: crate::ipam::exclude::Exclude,
    pub log_file: Option<PathBuf>,
    pub log_level: Option<String>,
    // The keys of the kubernetes, kubelet and crd modes (docs/modes.md); static ignores them.
    pub kubeconfig: Option<PathBuf>,
    pub node_name: Option<String>,
    pub api_timeout_seconds: Option<f64>,
    pub cache_ttl_seconds: Option<f64>,
    pub require_ipv4_pod_cidr: bool,
    pub require_ipv6_pod_cidr: bool,
    pub crd: Option<CrdConf>,
    pub kubelet_config: Option<PathBuf>,
}

go_keys!(IpamConf {
    "type" => plugin_type,
    "mode" => mode,
    "ranges" => ranges,
    "subnet" => subnet,
    "rangeStart" => range_start,
    "rangeEnd" => range_end,
    "gateway" => gateway,
    "routes" => routes,
    "resolvConf" => resolv_conf,
    "dataDir" => data_dir,
    "exclude" => exclude,
    "logFile" => log_file,
    "logLevel" => log_level,
    "kubeconfig" => kubeconfig,
    "nodeName" => node_name,
    "apiTimeoutSeconds" => api_timeout_seconds,
    "cacheTTLSeconds" => cache_ttl_seconds,
    "requireIPv4PodCIDR" => require_ipv4_pod_cidr,
    "requireIPv6PodCIDR" => require_ipv6_pod_cidr,
    "crd" => crd,
    "kubeletConfig" => kubelet_config,
});

/// Which custom resource the `crd` mode reads; the defaults are Cilium's CiliumNode.
#[derive(Debug, Clone, Default)]
pub struct CrdConf {
    pub api_version: Option<String>,
    pub plural: Option<String>,
    /// `podCIDRsPath`: the dot-separated path to the CIDRs inside the object.
    pub pod_cidrs_path: Option<String>,
    /// Unset for a cluster-scoped resource.
    pub namespace: Option<String>,
}

go_keys!(CrdConf {
    "apiVersion" => api_version,
    "plural" => plural,
    "podCIDRsPath" => pod_cidrs_path,
    "namespace" => namespace,
});

/// A range; a missing `subnet` is read as empty, which the pool refuses naming the key.
#[derive(Debug, Clone, Default)]
pub struct RangeConf {
    pub subnet: String,
    pub range_start: Option<String>,
    pub range_end: Option<String>,
    pub gateway: Option<String>,
}

go_keys!(RangeConf {
    "subnet" => subnet,
    "rangeStart" => range_start,
    "rangeEnd" => range_end,
    "gateway" => gateway,
});

/// A parsed config with its spec version checked.
#[derive(Debug, Clone)]
pub struct Request {
    pub version: SpecVersion,
    pub conf: NetConf,
    pub ipam: IpamConf,
}

impl Request {
    /// `dataDir`, or the default when it is absent or empty (as host-local reads it); [`parse`]
    /// has refused a relative one.
    pub fn data_dir(&self) -> PathBuf {
        match &self.ipam.data_dir {
            Some(dir) if !dir.as_os_str().is_empty() => dir.clone(),
            _ => PathBuf::from(DEFAULT_DATA_DIR),
        }
    }

    /// Addresses asked for through `runtimeConfig.ips`, `args.cni.ips` and CNI_ARGS `IP=`.
    pub fn requested_ips<'a>(&'a self, env_ips: &'a [String]) -> impl Iterator<Item = (&'static str, &'a str)> {
        let from_args = self.conf.args.iter().flat_map(|a| a.cni.iter()).flat_map(|c| c.ips.iter());
        env_ips
            .iter()
            .map(|s| ("CNI_ARGS IP", s.as_str()))
            .chain(from_args.map(|s| ("args.cni.ips", s.as_str())))
            .chain(self.conf.runtime_config.ips.iter().map(|s| ("runtimeConfig.ips", s.as_str())))
    }

    pub fn gc_attachments(&self) -> Option<&[GcAttachment]> {
        self.conf.valid_attachments.as_deref().or(self.conf.attachments_old.as_deref())
    }
}

/// The version to answer in, read leniently so that even a config we reject gets an error in
/// the caller's version where it named one we speak.
pub fn sniff_version(stdin: &[u8]) -> Option<SpecVersion> {
    #[derive(Deserialize)]
    struct V {
        #[serde(default, rename = "cniVersion")]
        v: String,
    }
    let v: V = serde_json::from_slice(stdin).ok()?;
    SpecVersion::parse(&v.v).ok()
}

pub fn parse(stdin: &[u8]) -> CniResult<Request> {
    parse_with(stdin, false)
}

/// For DEL, which must release what an attachment holds whatever else the config says (a node
/// must always be able to tear pods down): an unknown `cniVersion` is read as the newest (DEL
/// prints nothing on success either way), and a config that fails the full reading for a key
/// DEL does not use is read again for `name` and `dataDir` alone. Only what keeps DEL from
/// finding the store is an error.
pub fn parse_any_version(stdin: &[u8]) -> CniResult<Request> {
    match parse_with(stdin, true) {
        Err(e) if e.code == code::INVALID_CONFIG => parse_for_del(stdin),
        other => other,
    }
}

/// The keys DEL reads, nothing else.
fn parse_for_del(stdin: &[u8]) -> CniResult<Request> {
    #[derive(Default)]
    struct DelConf {
        cni_version: String,
        name: String,
        ipam: Option<DelIpam>,
    }
    go_keys!(DelConf { "cniVersion" => cni_version, "name" => name, "ipam" => ipam });
    #[derive(Default)]
    struct DelIpam {
        data_dir: Option<PathBuf>,
        log_file: Option<Value>,
    }
    go_keys!(DelIpam { "dataDir" => data_dir, "logFile" => log_file });
    let mut de = serde_json::Deserializer::from_slice(stdin);
    let conf: DelConf = match serde_path_to_error::deserialize(&mut de) {
        Ok(c) => c,
        Err(e) if e.inner().is_data() => {
            let path = e.path().to_string();
            return Err(CniError::config(&path, e.into_inner()));
        }
        Err(e) => return Err(decoding(e.inner())),
    };
    validate_network_name(&conf.name)?;
    let Some(del) = conf.ipam else {
        return Err(CniError::config("ipam", "is missing; podcidr is an IPAM plugin and reads its settings there"));
    };
    let ipam = IpamConf {
        data_dir: del.data_dir,
        log_file: del.log_file.as_ref().and_then(Value::as_str).map(PathBuf::from),
        ..IpamConf::default()
    };
    check_data_dir(&ipam)?;
    let version = SpecVersion::parse(&conf.cni_version).unwrap_or(SpecVersion::V110);
    let conf = NetConf { cni_version: conf.cni_version, name: conf.name, ..NetConf::default() };
    Ok(Request { version, conf, ipam })
}

fn parse_with(stdin: &[u8], any_version: bool) -> CniResult<Request> {
    // One pass straight into the types (a config may carry 10,000 excludes): syntax errors are
    // code 6, a wrong shape or type is code 7 naming the key.
    if stdin.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(match serde_json::from_slice::<serde::de::IgnoredAny>(stdin) {
            Err(e) => decoding(&e),
            Ok(_) => CniError::new(code::DECODING_FAILURE, "the network config on stdin is not a JSON object"),
        });
    }
    let mut de = serde_json::Deserializer::from_slice(stdin);
    let mut conf: NetConf = match serde_path_to_error::deserialize(&mut de) {
        Ok(c) => c,
        Err(e) if e.inner().is_data() => {
            let path = e.path().to_string();
            return Err(CniError::config(&path, e.into_inner()));
        }
        Err(e) => return Err(decoding(e.inner())),
    };
    de.end().map_err(|e| decoding(&e))?;
    let version = match SpecVersion::parse(&conf.cni_version) {
        Err(_) if any_version => SpecVersion::V110,
        v => v?,
    };
    validate_network_name(&conf.name)?;
    let Some(ipam) = conf.ipam.take() else {
        return Err(CniError::config("ipam", "is missing; podcidr is an IPAM plugin and reads its settings there"));
    };
    check_data_dir(&ipam)?;
    if let Some(level) = &ipam.log_level {
        crate::log::parse_level(level).map_err(|e| CniError::config("ipam.logLevel", e))?;
    }
    Ok(Request { version, conf, ipam })
}

fn check_data_dir(ipam: &IpamConf) -> CniResult<()> {
    if let Some(dir) = &ipam.data_dir
        && !dir.as_os_str().is_empty()
        && !dir.is_absolute()
    {
        // Relative to the runtime's working directory, two callers would keep two stores and
        // hand out the same address twice.
        return Err(CniError::config(
            "ipam.dataDir",
            format!(
                "{} is a relative path; give an absolute one, or leave it out for {DEFAULT_DATA_DIR}",
                dir.display()
            ),
        ));
    }
    Ok(())
}

fn decoding(e: &serde_json::Error) -> CniError {
    CniError::new(code::DECODING_FAILURE, format!("the network config on stdin is not valid JSON: {e}"))
}

/// libcni's rule for network names; they name a directory under dataDir.
pub fn validate_network_name(name: &str) -> CniResult<()> {
    if name.is_empty() {
        return Err(CniError::config("name", "is missing"));
    }
    if name.len() > MAX_NETWORK_NAME {
        return Err(CniError::config("name", format!("is {} bytes long; the limit is {MAX_NETWORK_NAME}", name.len())));
    }
    if !super::env::is_safe_name(name) {
        return Err(CniError::config(
            "name",
            "may hold only letters, digits, '_', '.' and '-', and must start with a letter or digit",
        )
        .with_details(super::env::printable(name)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrong_type_names_the_field() {
        let err = parse(br#"{"cniVersion":"1.0.0","name":"n","ipam":{"type":"podcidr","ranges":[[{"subnet":5}]]}}"#)
            .unwrap_err();
        assert_eq!(err.code, code::INVALID_CONFIG);
        assert!(err.msg.starts_with("ipam.ranges[0][0].subnet:"), "{}", err.msg);
    }

    #[test]
    fn not_json_is_code_6() {
        assert_eq!(parse(b"{nope").unwrap_err().code, code::DECODING_FAILURE);
        assert_eq!(parse(b"[]").unwrap_err().code, code::DECODING_FAILURE);
    }

    #[test]
    fn versions() {
        assert_eq!(parse(br#"{"cniVersion":"0.2.0","name":"n","ipam":{}}"#).unwrap().version, SpecVersion::V020);
        assert_eq!(parse(br#"{"name":"n","ipam":{}}"#).unwrap().version, SpecVersion::V010);
        assert_eq!(parse(br#"{"cniVersion":"0.3.1","name":"n","ipam":{}}"#).unwrap().version, SpecVersion::V031);
        assert_eq!(parse(br#"{"cniVersion":"9.9.9","name":"n","ipam":{}}"#).unwrap_err().code, 1);
        assert!(parse_any_version(br#"{"cniVersion":"9.9.9","name":"n","ipam":{}}"#).is_ok());
        assert_eq!(sniff_version(br#"{"name":"n"}"#), Some(SpecVersion::V010));
    }

    #[test]
    fn hostile_network_names_are_code_7() {
        for name in ["../etc", "a/b", "..", "", "x\u{0}y"] {
            let conf = serde_json::json!({"cniVersion":"1.0.0","name":name,"ipam":{}}).to_string();
            assert_eq!(parse(conf.as_bytes()).unwrap_err().code, 7, "{name:?}");
        }
    }
}
