//! The CNI protocol: one exec is one request, answered on stdout with a result or one error.

pub mod config;
pub mod env;
pub mod error;
pub mod result;
pub mod version;

use config::Request;
use env::{CniEnv, Command};
use error::{CniError, CniResult, code};
use std::io::{Read, Write};
use std::process::ExitCode;
use version::SpecVersion;

/// Runs the request described by the CNI_* environment and stdin.
pub fn run() -> ExitCode {
    let mut stdin = Vec::new();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handle(&mut stdin)))
        .unwrap_or_else(|_| Err(CniError::new(code::INTERNAL, "podcidr hit an internal error (a bug); see stderr")));
    let (text, status) = match outcome {
        Ok(Some(out)) => (out, ExitCode::SUCCESS),
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            let v = config::sniff_version(&stdin).map_or(version::CURRENT, SpecVersion::as_str);
            (e.to_json(v), ExitCode::FAILURE)
        }
    };
    let mut out = std::io::stdout().lock();
    // If stdout is gone there is no one left to tell.
    let _ = writeln!(out, "{text}").and_then(|()| out.flush());
    status
}

fn handle(stdin: &mut Vec<u8>) -> CniResult<Option<String>> {
    let env = CniEnv::from_process();
    if matches!(&env, Ok(e) if e.command == Command::Version) {
        return Ok(Some(version::version_info_json()));
    }
    std::io::stdin().read_to_end(stdin).map_err(|e| CniError::io("cannot read the network config from stdin", &e))?;
    let env = env?;
    let req = if env.command == Command::Del { config::parse_any_version(stdin)? } else { config::parse(stdin)? };
    crate::log::init(req.ipam.log_file.as_deref(), req.ipam.log_level.as_deref());
    dispatch(&env, &req)
}

fn require(req: &Request, verb: &str, min: SpecVersion) -> CniResult<()> {
    if req.version < min {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!(
                "config version {} does not allow {verb}; it needs {} or later",
                req.version.as_str(),
                min.as_str()
            ),
        ));
    }
    Ok(())
}

fn dispatch(env: &CniEnv, req: &Request) -> CniResult<Option<String>> {
    use crate::ipam;
    let att = env.attachment.as_ref();
    let att = || att.ok_or_else(|| CniError::env("CNI_CONTAINERID", "is not set"));
    match env.command {
        Command::Version => Ok(Some(version::version_info_json())),
        Command::Add => ipam::add(req, att()?, &env.args).map(|r| Some(r.to_json(req.version))),
        Command::Del => ipam::del(req, att()?).map(|()| None),
        Command::Check => {
            require(req, "CHECK", SpecVersion::V040)?;
            ipam::check(req, att()?).map(|()| None)
        }
        Command::Gc => {
            require(req, "GC", SpecVersion::V110)?;
            ipam::gc(req).map(|()| None)
        }
        Command::Status => {
            require(req, "STATUS", SpecVersion::V110)?;
            ipam::status(req).map(|()| None)
        }
    }
}
