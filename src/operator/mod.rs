//! podcidr-operator: the controller that cuts pools into per-node pod CIDRs.

pub mod allocator;
pub mod selector;

/// Entry point of the `podcidr-operator` binary.
pub fn main() -> std::process::ExitCode {
    std::process::ExitCode::SUCCESS
}

pub mod crd;
pub mod http;
pub mod metrics;
pub mod status;
