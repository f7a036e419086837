//! CNI error objects: the only thing besides a result that may reach stdout.

use std::fmt;

/// Codes from the CNI spec (1-99) and podcidr's own (100+). The README has the table.
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const INVALID_ENVIRONMENT: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODING_FAILURE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    pub const NOT_AVAILABLE: u32 = 50;
    pub const NO_FREE_ADDRESS: u32 = 100;
    pub const ADDRESS_UNAVAILABLE: u32 = 101;
    pub const CHECK_FAILED: u32 = 102;
    pub const INTERNAL: u32 = 999;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

pub type CniResult<T> = Result<T, CniError>;

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        CniError { code, msg: msg.into(), details: String::new() }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    pub fn env(var: &str, problem: impl fmt::Display) -> Self {
        Self::new(code::INVALID_ENVIRONMENT, format!("{var}: {problem}"))
    }

    /// `field` is the key's path in the network config, e.g. `ipam.ranges[0][1].subnet`.
    pub fn config(field: &str, problem: impl fmt::Display) -> Self {
        Self::new(code::INVALID_CONFIG, format!("{field}: {problem}"))
    }

    pub fn io(what: impl fmt::Display, err: &std::io::Error) -> Self {
        Self::new(code::IO_FAILURE, format!("{what}: {err}"))
    }

    /// The JSON object the spec defines, in the version the caller asked for.
    pub fn to_json(&self, cni_version: &str) -> String {
        let mut obj = serde_json::json!({
            "cniVersion": cni_version,
            "code": self.code,
            "msg": self.msg,
        });
        if !self.details.is_empty() {
            obj["details"] = self.details.clone().into();
        }
        obj.to_string()
    }
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "code {}: {}", self.code, self.msg)?;
        if !self.details.is_empty() {
            write!(f, " ({})", self.details)?;
        }
        Ok(())
    }
}

impl std::error::Error for CniError {}
