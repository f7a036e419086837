//! The plugin's kubeconfig: the API server, its CA, and the agent's current token.

use base64::Engine;

/// The kubeconfig text the plugin reads (`kubeconfig` in its conflist).
pub fn render(server: &str, ca_der: &[Vec<u8>], insecure: bool, token: &str) -> String {
    let mut cluster = format!("    server: {server}\n");
    if insecure {
        cluster.push_str("    insecure-skip-tls-verify: true\n");
    } else if !ca_der.is_empty() {
        let pem: String = ca_der.iter().map(|der| pem(der)).collect();
        let b64 = base64::engine::general_purpose::STANDARD.encode(pem);
        cluster.push_str(&format!("    certificate-authority-data: {b64}\n"));
    }
    format!(
        "# Written by podcidr-agent for the plugin; its token is renewed before it expires. Do not edit.\n\
         apiVersion: v1\nkind: Config\nclusters:\n- name: cluster\n  cluster:\n{cluster}\
         users:\n- name: podcidr\n  user:\n    token: {token}\n\
         contexts:\n- name: podcidr\n  context:\n    cluster: cluster\n    user: podcidr\n\
         current-context: podcidr\n"
    )
}

fn pem(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}
