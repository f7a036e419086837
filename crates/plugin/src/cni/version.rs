//! The CNI spec versions podcidr speaks.

use super::error::{CniError, code};

/// Newest first is not required by the spec; this order is the one VERSION prints. 0.1.0 and
/// 0.2.0 are served as host-local serves them, for nodes with old conflists.
pub const SUPPORTED: [&str; 7] = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
pub const CURRENT: &str = "1.1.0";

/// A supported spec version, ordered by age.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SpecVersion {
    V010,
    V020,
    V030,
    V031,
    V040,
    V100,
    V110,
}

impl SpecVersion {
    /// A missing `cniVersion` is 0.1.0, as libcni and host-local read it.
    pub fn parse(s: &str) -> Result<Self, CniError> {
        Ok(match s {
            "" | "0.1.0" => Self::V010,
            "0.2.0" => Self::V020,
            "0.3.0" => Self::V030,
            "0.3.1" => Self::V031,
            "0.4.0" => Self::V040,
            "1.0.0" => Self::V100,
            "1.1.0" => Self::V110,
            other => {
                return Err(CniError::new(code::INCOMPATIBLE_VERSION, format!("incompatible CNI version {other:?}"))
                    .with_details(supported_list()));
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::V010 => "0.1.0",
            Self::V020 => "0.2.0",
            Self::V030 => "0.3.0",
            Self::V031 => "0.3.1",
            Self::V040 => "0.4.0",
            Self::V100 => "1.0.0",
            Self::V110 => "1.1.0",
        }
    }

    /// 0.1.0 and 0.2.0 results have one `ip4` and one `ip6` object instead of `ips`.
    pub fn legacy_result(self) -> bool {
        self < Self::V030
    }

    /// Results from 0.3.0 to 0.4.0 carry `ips[].version`.
    pub fn ips_carry_version(self) -> bool {
        self < Self::V100
    }
}

fn supported_list() -> String {
    format!("podcidr supports {}", SUPPORTED.join(", "))
}

/// The VERSION verb's answer.
pub fn version_info_json() -> String {
    serde_json::json!({ "cniVersion": CURRENT, "supportedVersions": SUPPORTED }).to_string()
}
