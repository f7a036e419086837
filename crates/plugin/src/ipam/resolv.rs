//! `resolvConf`: a resolv.conf-style file whose settings become the result's `dns`.

use crate::cni::error::{CniError, CniResult};
use crate::cni::result::Dns;
use std::path::Path;

pub fn load(path: &Path) -> CniResult<Dns> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CniError::io(format!("ipam.resolvConf: cannot read {}", path.display()), &e))?;
    Ok(parse(&text))
}

pub fn parse(text: &str) -> Dns {
    let mut dns = Dns::default();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let mut words = line.split_whitespace();
        let (Some(key), rest) = (words.next(), words) else {
            continue;
        };
        let rest: Vec<String> = rest.map(String::from).collect();
        match key {
            "nameserver" => dns.nameservers.extend(rest.into_iter().take(1)),
            "domain" => dns.domain = rest.into_iter().next(),
            "search" => dns.search = rest,
            "options" => dns.options.extend(rest),
            _ => {}
        }
    }
    dns
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_what_resolv_conf_holds() {
        let d = super::parse(
            "# c\nnameserver 10.96.0.10\nnameserver fd00::a\nsearch a.svc b.local\noptions ndots:5\ndomain x\n",
        );
        assert_eq!(d.nameservers, ["10.96.0.10", "fd00::a"]);
        assert_eq!(d.search, ["a.svc", "b.local"]);
        assert_eq!(d.options, ["ndots:5"]);
        assert_eq!(d.domain.as_deref(), Some("x"));
    }
}
