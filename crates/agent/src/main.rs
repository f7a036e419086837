//! podcidr-agent: see the library (crates/agent/src/lib.rs).

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let flags = podcidr_agent::flags::Flags::parse();
    podcidr_agent::run::main(flags)
}
