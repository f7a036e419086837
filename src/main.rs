use std::process::ExitCode;

fn main() -> ExitCode {
    // A runtime always sets CNI_COMMAND; without it the binary is the operator's CLI.
    if std::env::var_os("CNI_COMMAND").is_some() { podcidr::cni::run() } else { podcidr::cli::run() }
}
