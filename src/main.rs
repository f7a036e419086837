use std::process::ExitCode;

/// A request allocates little and exits; see src/arena.rs.
#[global_allocator]
static ALLOCATOR: podcidr::arena::Arena<{ 2 << 20 }> = podcidr::arena::Arena::new();

fn main() -> ExitCode {
    // A runtime always sets CNI_COMMAND; without it the binary is the operator's CLI.
    if std::env::var_os("CNI_COMMAND").is_some() { podcidr::cni::run() } else { podcidr::cli::run() }
}
