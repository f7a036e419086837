//! A stand-in kube-apiserver for exec-level tests: HTTPS on 127.0.0.1 with a CA, server and
//! client certificates made at test time, answering with responses recorded from real API
//! servers (`tests/fixtures/kube/<version>/`), counting the requests it gets.
//!
//! It authenticates as the real one does: a bearer token it knows, or a client certificate
//! its CA signed; anything else gets the recorded 401 Status.

#![allow(dead_code)]

use crate::tls;

use serde_json::Value;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/kube");
/// The API server versions the fixtures were recorded from.
pub const API_VERSIONS: [&str; 2] = ["v1.36.2", "v1.21.2-k3s1"];
pub const TOKEN: &str = "podcidr-test-token";

pub fn fixture(version: &str, name: &str) -> Vec<u8> {
    let path = Path::new(FIXTURES).join(version).join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

pub fn fixture_json(version: &str, name: &str) -> Value {
    serde_json::from_slice(&fixture(version, name)).expect("fixture is JSON")
}

/// The object of line `n` of a recorded watch stream.
pub fn watch_object(version: &str, name: &str, n: usize) -> Value {
    let text = String::from_utf8(fixture(version, name)).expect("UTF-8");
    let line = text.lines().nth(n).unwrap_or_else(|| panic!("{name} has no line {n}"));
    let event: Value = serde_json::from_str(line).expect("watch event is JSON");
    event["object"].clone()
}

#[derive(Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn ok(body: Vec<u8>) -> Reply {
        Reply { status: 200, body }
    }

    pub fn json(status: u16, v: &Value) -> Reply {
        Reply { status, body: serde_json::to_vec_pretty(v).unwrap() }
    }
}

/// One request the server got: method and path, and how the client authenticated.
#[derive(Debug, Clone)]
pub struct Seen {
    pub line: String,
    pub auth: &'static str,
}

#[derive(Default)]
struct State {
    routes: HashMap<String, Reply>,
    seen: Vec<Seen>,
}

pub struct ApiServer {
    pub addr: SocketAddr,
    /// The recorded responses this server answers errors with.
    pub version: String,
    pub ca_pem: String,
    client_cert_pem: String,
    client_key_pem: String,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

use tls::b64;

impl ApiServer {
    /// Starts a server that answers with the errors recorded from `version`.
    pub fn start(version: &str) -> ApiServer {
        let certs = tls::make("system:node:node-manual");
        let config = certs.server_config;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop, version) = (state.clone(), stop.clone(), version.to_string());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(stream) = stream {
                        serve(stream, &config, &state, &version);
                    }
                }
            })
        };
        ApiServer {
            addr,
            version: version.to_string(),
            ca_pem: certs.ca_pem,
            client_cert_pem: certs.client_cert_pem,
            client_key_pem: certs.client_key_pem,
            state,
            stop,
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Answers GET `path` with `reply` from now on.
    pub fn route(&self, path: &str, reply: Reply) {
        self.state.lock().unwrap().routes.insert(path.to_string(), reply);
    }

    /// Answers GET `path` with the recorded fixture `name`.
    pub fn route_fixture(&self, path: &str, name: &str) {
        self.route(path, Reply::ok(fixture(&self.version, name)));
    }

    /// How many requests it has answered.
    pub fn requests(&self) -> usize {
        self.state.lock().unwrap().seen.len()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// Closes the listening socket: from now on connections are refused, as with an API
    /// server that is down.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }

    /// A kubeconfig for this server whose user is `user_yaml` (the lines under `user:`,
    /// indented by 4).
    pub fn kubeconfig(&self, dir: &Path, name: &str, user_yaml: &str) -> PathBuf {
        let text = tls::kubeconfig_text(&self.url(), &self.ca_pem, user_yaml);
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    pub fn token_kubeconfig(&self, dir: &Path, token: &str) -> PathBuf {
        self.kubeconfig(dir, "kubeconfig-token", &format!("    token: {token}"))
    }

    pub fn cert_kubeconfig(&self, dir: &Path) -> PathBuf {
        let user = format!(
            "    client-certificate-data: {}\n    client-key-data: {}",
            b64(&self.client_cert_pem),
            b64(&self.client_key_pem)
        );
        self.kubeconfig(dir, "kubeconfig-cert", &user)
    }

    /// A kubeconfig whose token is read from a file, as a projected ServiceAccount token is.
    pub fn token_file_kubeconfig(&self, dir: &Path) -> PathBuf {
        let token = dir.join("token");
        std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
        self.kubeconfig(dir, "kubeconfig-token-file", &format!("    tokenFile: {}", token.display()))
    }

    /// A kubeconfig whose token comes from an exec credential plugin (a shell script).
    pub fn exec_kubeconfig(&self, dir: &Path) -> PathBuf {
        let script = dir.join("credential-plugin.sh");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho '{{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"kind\":\"ExecCredential\",\
                 \"status\":{{\"token\":\"{TOKEN}\"}}}}'\n"
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let user = format!(
            "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: {}\n      \
             interactiveMode: Never",
            script.display()
        );
        self.kubeconfig(dir, "kubeconfig-exec", &user)
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        _ => "Error",
    }
}

/// One connection: one request, one answer, then close (as `Connection: close` says).
fn serve(stream: TcpStream, config: &Arc<rustls::ServerConfig>, state: &Mutex<State>, version: &str) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let Ok(conn) = rustls::ServerConnection::new(config.clone()) else {
        return;
    };
    let mut tls = rustls::StreamOwned::new(conn, stream);
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match tls.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let line = head.lines().next().unwrap_or_default().to_string();
    let path = line.split_whitespace().nth(1).unwrap_or("/").split('?').next().unwrap_or("/").to_string();
    let bearer = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("authorization")).map(|(_, v)| v.trim()))
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let auth = match (&bearer, tls.conn.peer_certificates()) {
        (Some(t), _) if t == TOKEN => "token",
        (None, Some(certs)) if !certs.is_empty() => "certificate",
        _ => "none",
    };
    let reply = {
        let mut st = state.lock().unwrap();
        st.seen.push(Seen { line: line.clone(), auth });
        if auth == "none" {
            Reply { status: 401, body: fixture(version, "status-401.json") }
        } else if let Some(r) = st.routes.get(&path) {
            r.clone()
        } else if path.starts_with("/apis/") {
            Reply { status: 404, body: fixture(version, "status-404-ciliumnode.json") }
        } else {
            Reply { status: 404, body: fixture(version, "status-404-node.json") }
        }
    };
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reply.status,
        reason(reply.status),
        reply.body.len()
    )
    .into_bytes();
    out.extend_from_slice(&reply.body);
    let _ = tls.write_all(&out);
    tls.conn.send_close_notify();
    let _ = tls.flush();
}
