//! The cluster half: cuts the cluster's pools into per-node pod CIDRs. See docs/operator.md.
fn main() -> std::process::ExitCode {
    podcidr_operator::main()
}
