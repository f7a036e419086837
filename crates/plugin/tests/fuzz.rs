//! Hostile input never panics and always gets a CNI error object: property tests on the parsing
//! functions, on the executable, hostile names, damaged stores, and the store's permissions.

mod common;

use common::{Call, Disk, Entry, IFNAME, Out, Reply, Sandbox, finish, names, result_ips, status_json, status_network};
use podcidr::cni::config;
use podcidr::cni::env::{CniArgs, CniEnv};
use podcidr::store::{LeaseRecord, OwnerIndex};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Map, Value, json};
use std::collections::{BTreeSet, HashMap};
use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Cases for properties of library functions (each costs microseconds).
const LIB_CASES: u32 = 2000;
/// Cases for properties that exec the binary (each costs milliseconds).
const EXEC_CASES: u32 = 400;

/// `PODCIDR_FUZZ_SCALE=<n>` multiplies every case count, for long runs outside CI.
fn cfg(cases: u32) -> Config {
    let scale: u32 = std::env::var("PODCIDR_FUZZ_SCALE").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    Config {
        cases: cases.saturating_mul(scale.max(1)),
        // No regression files are written next to the tests; a failure prints its input.
        failure_persistence: None,
        ..Config::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Generators.
// ---------------------------------------------------------------------------------------------

/// Address-like strings at the edges: whole address spaces, the tiniest subnets, host bits,
/// bad prefixes, mixed families, white space.
const IPISH: &[&str] = &[
    "0.0.0.0/0",
    "::/0",
    "::/1",
    "8000::/1",
    "128.0.0.0/1",
    "10.1.0.0/24",
    "10.1.0.0/16",
    "10.1.0.0/30",
    "10.1.0.0/31",
    "10.1.0.0/32",
    "10.1.0.5/24",
    "255.255.255.252/30",
    "255.255.255.255/32",
    "fd00::/64",
    "fd00::/120",
    "fd00::/126",
    "fd00::/127",
    "fd00::/128",
    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffc/126",
    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    "::",
    "::1",
    "::2",
    "0.0.0.0",
    "255.255.255.255",
    "10.1.0.0",
    "10.1.0.1",
    "10.1.0.2",
    "10.1.0.255",
    "10.1.0.10",
    "10.1.0.200",
    "fd00::1",
    "fd00::ff",
    "::ffff:10.1.0.1",
    "::ffff:0:0/96",
    " 10.1.0.5 ",
    "10.1.0.5/33",
    "10.1.0.0/-1",
    "10.1.0.0/+8",
    "10.1.0.0/08",
    "::/129",
    "1.2.3",
    "1.2.3.4.5",
    "01.02.03.04",
    "fe80::1%eth0",
    "10.1.0.2,10.1.0.3",
    "",
    "/",
    "/24",
    "10.1.0.0/24/24",
];

fn ipish() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => select(IPISH).prop_map(String::from),
        1 => any::<u32>().prop_map(|v| Ipv4Addr::from(v).to_string()),
        1 => (any::<u32>(), 0u8..=34).prop_map(|(v, p)| format!("{}/{p}", Ipv4Addr::from(v))),
        1 => any::<u128>().prop_map(|v| Ipv6Addr::from(v).to_string()),
        1 => (any::<u128>(), 0u8..=130).prop_map(|(v, p)| format!("{}/{p}", Ipv6Addr::from(v))),
        1 => (0u32..2048).prop_map(|n| format!("10.1.{}.{}", n / 256, n % 256)),
        1 => (0u32..512, 20u8..=32)
            .prop_map(|(n, p)| format!("10.1.{}.{}/{p}", n / 256, n % 256)),
    ]
}

const KEYS: &[&str] = &[
    "subnet",
    "rangeStart",
    "rangeEnd",
    "gateway",
    "ranges",
    "exclude",
    "routes",
    "dst",
    "gw",
    "ips",
    "address",
    "mode",
    "type",
    "cni",
    "containerID",
    "ifname",
    "cniVersion",
    "name",
    "logLevel",
    "x",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::from),
        1 => any::<i64>().prop_map(Value::from),
        1 => any::<u64>().prop_map(Value::from),
        1 => any::<f64>().prop_map(|f| json!(f)),
        4 => ipish().prop_map(Value::from),
        2 => any::<String>().prop_map(Value::from),
        1 => select(&["1.0.0", "1.1.0", "0.3.1", "0.4.0", "0.2.0", "static", "host-local", "podcidr",
                 "debug", "off", "verbose"][..]).prop_map(Value::from),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((select(KEYS), inner), 0..4).prop_map(|kv| {
                Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect::<Map<_, _>>())
            }),
        ]
    })
}

/// Where mutations land: every key podcidr reads, at the depth it reads it.
const PATHS: &[&[&str]] = &[
    &["cniVersion"],
    &["name"],
    &["type"],
    &["ipam"],
    &["ipam", "type"],
    &["ipam", "mode"],
    &["ipam", "ranges"],
    &["ipam", "ranges", "0"],
    &["ipam", "ranges", "0", "0"],
    &["ipam", "ranges", "0", "0", "subnet"],
    &["ipam", "ranges", "0", "0", "rangeStart"],
    &["ipam", "ranges", "0", "0", "rangeEnd"],
    &["ipam", "ranges", "0", "0", "gateway"],
    &["ipam", "ranges", "0", "1"],
    &["ipam", "ranges", "0", "1", "subnet"],
    &["ipam", "ranges", "1"],
    &["ipam", "ranges", "1", "0", "subnet"],
    &["ipam", "ranges", "1", "0", "rangeStart"],
    &["ipam", "ranges", "1", "0", "rangeEnd"],
    &["ipam", "ranges", "2"],
    &["ipam", "subnet"],
    &["ipam", "rangeStart"],
    &["ipam", "rangeEnd"],
    &["ipam", "gateway"],
    &["ipam", "exclude"],
    &["ipam", "exclude", "0"],
    &["ipam", "exclude", "1"],
    &["ipam", "routes"],
    &["ipam", "routes", "0"],
    &["ipam", "routes", "0", "dst"],
    &["ipam", "routes", "1", "dst"],
    &["ipam", "logLevel"],
    &["runtimeConfig"],
    &["runtimeConfig", "ips"],
    &["runtimeConfig", "ips", "0"],
    &["args"],
    &["args", "cni"],
    &["args", "cni", "ips"],
    &["args", "cni", "ips", "0"],
    &["prevResult"],
    &["prevResult", "ips"],
    &["prevResult", "ips", "0", "address"],
    &["cni.dev/valid-attachments"],
    &["cni.dev/valid-attachments", "0"],
    &["cni.dev/valid-attachments", "0", "containerID"],
    &["cni.dev/valid-attachments", "0", "ifname"],
    &["cni.dev/attachments"],
];

fn base_conf() -> Value {
    json!({
        "cniVersion": "1.1.0",
        "name": "fuzz",
        "type": "bridge",
        "ipam": {
            "type": "podcidr",
            "ranges": [
                [{ "subnet": "10.1.0.0/24", "rangeStart": "10.1.0.10", "rangeEnd": "10.1.0.200",
                   "gateway": "10.1.0.1" }],
                [{ "subnet": "fd00::/120" }]
            ],
            "exclude": ["10.1.0.20/30"],
            "routes": [{ "dst": "0.0.0.0/0" }],
            "dataDir": "/nonexistent/podcidr-fuzz"
        }
    })
}

/// Sets (or with `None` removes) the value at `path`, making objects and arrays on the way.
fn set_path(root: &mut Value, path: &[&str], new: Option<Value>) {
    let (last, parents) = path.split_last().unwrap();
    let mut cur = root;
    for step in parents {
        let idx = step.parse::<usize>().ok();
        let fits = matches!((&*cur, idx), (Value::Array(_), Some(_)) | (Value::Object(_), _));
        if !fits {
            *cur = if idx.is_some() { json!([]) } else { json!({}) };
        }
        cur = match cur {
            Value::Array(a) => {
                let i = idx.unwrap();
                if i >= a.len() {
                    a.push(Value::Null);
                }
                let n = a.len();
                &mut a[i.min(n - 1)]
            }
            Value::Object(o) => o.entry(step.to_string()).or_insert(Value::Null),
            _ => unreachable!(),
        };
    }
    match (cur, new) {
        (Value::Object(o), Some(v)) => {
            o.insert(last.to_string(), v);
        }
        (Value::Object(o), None) => {
            o.remove(*last);
        }
        (Value::Array(a), new) if last.parse::<usize>().is_ok() => {
            let i = last.parse::<usize>().unwrap();
            match new {
                Some(v) if i < a.len() => a[i] = v,
                Some(v) => a.push(v),
                None if i < a.len() => {
                    a.remove(i);
                }
                None => {}
            }
        }
        (cur, Some(v)) => *cur = json!({ (*last): v }),
        (_, None) => {}
    }
}

/// A valid config with 1 to 4 values replaced at keys podcidr reads (or removed).
fn mutated_conf() -> impl Strategy<Value = Value> {
    prop::collection::vec((select(PATHS), prop::option::weighted(0.9, value())), 1..5).prop_map(|muts| {
        let mut c = base_conf();
        for (path, v) in muts {
            set_path(&mut c, path, v);
        }
        c
    })
}

/// Names that try to leave a directory, or are merely too long.
fn hostile_strings() -> impl Strategy<Value = String> {
    prop_oneof![
        select(
            &[
                "..",
                ".",
                "/",
                "../x",
                "a/../../x",
                "/etc/passwd",
                "x/",
                "-x",
                ".x",
                "x:y",
                "x y",
                "x\ny",
                "x\ty",
                "é",
                "x\u{a0}y",
                "x\\y",
                "*",
                "$(id)"
            ][..]
        )
        .prop_map(String::from),
        (1usize..4, 0usize..12_000).prop_map(|(k, n)| ["x", "../", "/"][k - 1].repeat(n)),
    ]
}

/// Environment values: arbitrary (NUL cannot be in an environment), typical, hostile.
fn env_value(typical: &'static [&'static str]) -> impl Strategy<Value = Option<String>> {
    prop::option::weighted(
        0.9,
        prop_oneof![
            3 => select(typical).prop_map(String::from),
            2 => any::<String>().prop_map(|s| s.replace('\0', "")),
            1 => "[a-zA-Z0-9_.:/ -]{0,24}",
            1 => hostile_strings(),
        ],
    )
}

fn cni_args_string() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        select(
            &[
                "K8S_POD_NAMESPACE",
                "K8S_POD_NAME",
                "K8S_POD_UID",
                "K8S_POD_INFRA_CONTAINER_ID",
                "IP",
                "IgnoreUnknown",
                " IP ",
                "ip",
                ""
            ][..]
        )
        .prop_map(String::from),
        any::<String>(),
    ];
    let val = prop_oneof![ipish(), any::<String>(), "[a-z0-9,; =]{0,20}"];
    prop_oneof![
        any::<String>(),
        prop::collection::vec((key, val, select(&["=", "==", " = ", ""][..])), 0..6).prop_map(|pairs| {
            pairs.into_iter().map(|(k, v, eq)| format!("{k}{eq}{v}")).collect::<Vec<_>>().join(";")
        }),
    ]
}

// ---------------------------------------------------------------------------------------------
// Library functions.
// ---------------------------------------------------------------------------------------------

/// After a successful parse, the pool and everything derived from it must not panic either.
fn exercise_request(req: &config::Request, probe: IpAddr) -> Result<(), TestCaseError> {
    let _ = req.data_dir();
    let _ = req.gc_attachments();
    let _: Vec<_> = req.requested_ips(&["10.1.0.5".into()]).collect();
    if let Some(prev) = &req.conf.prev_result {
        let _ = podcidr::cni::result::prev_result_ips(prev);
    }
    match podcidr::modes::pool(req) {
        Ok(pool) => {
            let _ = podcidr::ipam::pool_json(&pool, "static");
            let _ = pool.find(probe);
            for set in 0..pool.range_sets.len() {
                let _ = pool.capacity(set);
                let _ = pool.check_usable(set, probe);
                let ranges = pool.range_sets[set].clone();
                for last in [None, Some(probe)]
                    .into_iter()
                    .chain(ranges.iter().flat_map(|r| [Some(r.range_start), Some(r.range_end), Some(r.gateway)]))
                {
                    for ip in pool.walk(set, last).take(3) {
                        prop_assert!(pool.check_usable(set, ip).is_ok(), "walk yielded {ip}, which is not usable");
                    }
                }
            }
        }
        Err(e) => prop_assert_eq!(e.code, 7, "pool(): {}", e),
    }
    Ok(())
}

fn any_ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<u32>().prop_map(|v| IpAddr::V4(v.into())),
        any::<u128>().prop_map(|v| IpAddr::V6(v.into())),
        (0u32..1024).prop_map(|n| IpAddr::V4(Ipv4Addr::new(10, 1, (n / 256) as u8, n as u8))),
    ]
}

#[test]
fn config_parse_never_panics_on_arbitrary_bytes() {
    let bytes = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..400),
        "[\\[\\]{}\":,0-9a-zA-Z./ -]{0,200}".prop_map(String::into_bytes),
        // A valid config cut short or with one byte changed.
        (0usize..400, any::<u8>(), any::<bool>()).prop_map(|(at, b, cut)| {
            let mut v = base_conf().to_string().into_bytes();
            let at = at % v.len();
            if cut {
                v.truncate(at);
            } else {
                v[at] = b;
            }
            v
        }),
    ];
    TestRunner::new(cfg(LIB_CASES))
        .run(&(bytes, any_ip()), |(bytes, probe)| {
            match config::parse(&bytes) {
                Ok(req) => exercise_request(&req, probe)?,
                Err(e) => prop_assert!([1, 6, 7].contains(&e.code), "parse(): {}", e),
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn config_parse_and_pool_never_panic_on_mutated_configs() {
    TestRunner::new(cfg(LIB_CASES))
        .run(&(mutated_conf(), any_ip()), |(conf, probe)| {
            match config::parse(conf.to_string().as_bytes()) {
                Ok(req) => exercise_request(&req, probe)?,
                Err(e) => prop_assert!([1, 6, 7].contains(&e.code), "parse(): {}", e),
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn cni_args_parse_never_panics() {
    TestRunner::new(cfg(LIB_CASES))
        .run(&cni_args_string(), |raw| {
            let a = CniArgs::parse(&raw);
            for ip in &a.ips {
                prop_assert!(!ip.is_empty() && ip.trim() == ip && !ip.contains(','), "{ip:?}");
            }
            for v in [&a.pod_namespace, &a.pod_name, &a.pod_uid, &a.infra_container_id].into_iter().flatten() {
                prop_assert!(!v.is_empty() && v.trim() == v, "{v:?}");
            }
            Ok(())
        })
        .unwrap();
}

/// libcni's rule for container IDs, written independently of podcidr's.
fn libcni_container_id(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 200
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c))
}

fn libcni_ifname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s != "."
        && s != ".."
        && !s.chars().any(|c| c == '/' || c == ':' || c.is_whitespace())
}

#[test]
fn cni_env_from_lookup_never_panics_and_admits_only_safe_names() {
    let os = |typical: &'static [&'static str]| {
        prop_oneof![
            9 => env_value(typical).prop_map(|v| v.map(OsString::from)),
            // Not UTF-8.
            1 => prop::collection::vec(any::<u8>(), 0..16)
                .prop_map(|b| Some(OsString::from_vec(b))),
        ]
    };
    let env = (
        os(&["ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION", "add", "ADD "]),
        os(&["c1", "0123456789abcdef", "a.b-c_d"]),
        os(&["eth0", "net1", "-", "..."]),
        os(&["/var/run/netns/x", ""]),
        cni_args_string().prop_map(|s| Some(OsString::from(s))),
    );
    TestRunner::new(cfg(LIB_CASES))
        .run(&env, |(command, cid, ifname, netns, args)| {
            let mut vars: HashMap<&str, OsString> = HashMap::new();
            for (k, v) in [
                ("CNI_COMMAND", command),
                ("CNI_CONTAINERID", cid),
                ("CNI_IFNAME", ifname),
                ("CNI_NETNS", netns),
                ("CNI_ARGS", args),
            ] {
                if let Some(v) = v {
                    vars.insert(k, v);
                }
            }
            match CniEnv::from_lookup(|k| vars.get(k).cloned()) {
                Ok(env) => {
                    if let Some(att) = &env.attachment {
                        prop_assert!(
                            libcni_container_id(&att.container_id),
                            "admitted container ID {:?}",
                            att.container_id
                        );
                        prop_assert!(libcni_ifname(&att.ifname), "admitted ifname {:?}", att.ifname);
                    }
                }
                Err(e) => prop_assert_eq!(e.code, 4, "{}", e),
            }
            Ok(())
        })
        .unwrap();
}

fn lease_record() -> impl Strategy<Value = LeaseRecord> {
    let s = || any::<String>();
    (
        any_ip(),
        0usize..4,
        (any::<u32>(), 0u8..=32),
        prop::option::of(any_ip()),
        (s(), s(), s()),
        (prop::option::of(s()), prop::option::of(s()), prop::option::of(s())),
        (s(), s()),
    )
        .prop_map(
            |(ip, range_set, (net, len), gateway, (cid, ifname, netns), (ns, name, uid), (boot, created))| {
                LeaseRecord {
                    ip,
                    range_set,
                    subnet: ipnet::Ipv4Net::new(net.into(), len).unwrap().into(),
                    gateway,
                    container_id: cid,
                    ifname,
                    netns,
                    pod_namespace: ns,
                    pod_name: name,
                    pod_uid: uid,
                    boot_id: boot,
                    created,
                }
            },
        )
}

#[test]
fn lease_records_and_owner_indexes_reject_damaged_bytes_without_panicking() {
    let owner = (any::<String>(), any::<String>(), prop::collection::vec(any_ip(), 0..3))
        .prop_map(|(container_id, ifname, ips)| OwnerIndex { container_id, ifname, ips });
    let damage = (any::<prop::sample::Index>(), any::<u8>(), 0u8..3);
    TestRunner::new(cfg(LIB_CASES))
        .run(
            &(lease_record(), owner, damage, prop::collection::vec(any::<u8>(), 0..300)),
            |(rec, idx, (at, byte, how), noise)| {
                let _ = serde_json::from_slice::<LeaseRecord>(&noise);
                let _ = serde_json::from_slice::<OwnerIndex>(&noise);
                let rec_bytes = serde_json::to_vec_pretty(&rec).unwrap();
                let idx_bytes = serde_json::to_vec(&idx).unwrap();
                prop_assert_eq!(&serde_json::from_slice::<LeaseRecord>(&rec_bytes).unwrap(), &rec);
                prop_assert_eq!(&serde_json::from_slice::<OwnerIndex>(&idx_bytes).unwrap(), &idx);
                for bytes in [rec_bytes, idx_bytes] {
                    let i = at.index(bytes.len());
                    let mut d = bytes.clone();
                    match how {
                        // Any strict prefix is missing its closing brace: never a record.
                        0 => {
                            d.truncate(i);
                            prop_assert!(serde_json::from_slice::<LeaseRecord>(&d).is_err());
                            prop_assert!(serde_json::from_slice::<OwnerIndex>(&d).is_err());
                        }
                        1 => {
                            d[i] = byte;
                            let _ = serde_json::from_slice::<LeaseRecord>(&d);
                            let _ = serde_json::from_slice::<OwnerIndex>(&d);
                        }
                        _ => {
                            d.insert(i, byte);
                            let _ = serde_json::from_slice::<LeaseRecord>(&d);
                            let _ = serde_json::from_slice::<OwnerIndex>(&d);
                        }
                    }
                }
                Ok(())
            },
        )
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// The executable.
// ---------------------------------------------------------------------------------------------

/// A CNI request as a runtime makes it, from the sandbox's working directory, every exec with
/// the same boot ID.
fn cni(sb: &Sandbox, verb: &str, cid: &str, conf: &Value) -> Call {
    Call::cni(verb, cid, conf).fixed_boot().cwd(&sb.cwd())
}

/// Runs `exec`, killing it if it takes longer than `limit`: `None` then.
fn run_with_timeout(exec: &Call, limit: Duration) -> Option<Out> {
    let child = exec.spawn();
    let slot = Arc::new(Mutex::new(Some(child.id())));
    let (tx, rx) = std::sync::mpsc::channel();
    let (stdin, s2) = (exec.stdin.clone(), slot.clone());
    std::thread::spawn(move || {
        let out = finish(child, &stdin, |_| {
            s2.lock().unwrap().take();
        });
        let _ = tx.send(out);
    });
    match rx.recv_timeout(limit) {
        Ok(out) => Some(out),
        Err(_) => {
            if let Some(pid) = slot.lock().unwrap().take() {
                // SAFETY: the pid is not reaped yet (the slot is emptied before reaping).
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
            let _ = rx.recv();
            None
        }
    }
}

#[derive(Debug, Clone)]
enum Stdin {
    Bytes(Vec<u8>),
    Conf(Value),
}

#[test]
fn the_binary_answers_hostile_requests_with_one_error_object() {
    let sb = Sandbox::nested();
    let stdin = prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..300).prop_map(Stdin::Bytes),
        3 => mutated_conf().prop_map(Stdin::Conf),
        2 => Just(Stdin::Conf(base_conf())),
    ];
    let request = (
        select(&["ADD", "DEL", "CHECK", "GC", "STATUS"][..]),
        stdin,
        env_value(&["c1", "c2", "0123456789abcdef"]),
        env_value(&["eth0", "net1"]),
        prop::option::weighted(0.8, cni_args_string().prop_map(|s| s.replace('\0', ""))),
        env_value(&["/var/run/netns/x"]),
        // Half the requests get a valid attachment, so the config and CNI_ARGS reach the store.
        prop::option::of((0u8..4).prop_map(|n| format!("c{n}"))),
    );
    let tally: Mutex<std::collections::BTreeMap<String, u64>> = Mutex::default();
    let mut runner = TestRunner::new(cfg(EXEC_CASES));
    runner
        .run(&request, |(verb, stdin, cid, ifname, args, netns, valid)| {
            let (cid, ifname, netns) = match valid {
                Some(c) => (Some(c), Some(IFNAME.to_string()), Some("/var/run/netns/x".to_string())),
                None => (cid, ifname, netns),
            };
            let bytes = match stdin {
                Stdin::Bytes(b) => b,
                Stdin::Conf(mut c) => {
                    // Keep the store in the sandbox; never let a config write logs elsewhere.
                    if let Some(ipam) = c.get_mut("ipam").and_then(Value::as_object_mut) {
                        ipam.insert("dataDir".into(), json!(sb.data_dir()));
                        ipam.remove("logFile");
                        ipam.remove("resolvConf");
                    }
                    c.to_string().into_bytes()
                }
            };
            let mut e = Call::verb(verb).fixed_boot().stdin(&bytes).cwd(&sb.cwd());
            for (k, v) in [("CNI_CONTAINERID", cid), ("CNI_IFNAME", ifname), ("CNI_ARGS", args), ("CNI_NETNS", netns)] {
                if let Some(v) = v {
                    e = e.env(k, &v);
                }
            }
            let out = run_with_timeout(&e, Duration::from_secs(20))
                .ok_or_else(|| TestCaseError::fail(format!("hung: {}", e.describe())))?;
            let reply = out.judge().map_err(|v| TestCaseError::fail(format!("{v}\nrequest: {}", e.describe())))?;
            let key = match &reply {
                Reply::Ok(_) => format!("{verb} ok"),
                Reply::Err { code, .. } => format!("{verb} code {code}"),
            };
            *tally.lock().unwrap().entry(key).or_default() += 1;
            if let Reply::Ok(v) = &reply {
                if verb == "ADD" {
                    prop_assert!(
                        // 0.1.0 and 0.2.0 results (and a config without cniVersion) have ip4/ip6.
                        v.as_ref().is_some_and(|v| v["ips"].is_array() || v["ip4"].is_object() || v["ip6"].is_object()),
                        "ADD succeeded without a result: {}",
                        e.describe()
                    );
                } else {
                    prop_assert!(v.is_none(), "{verb} printed {v:?}");
                }
            }
            Ok(())
        })
        .unwrap();
    eprintln!("replies: {:?}", tally.lock().unwrap());
    let outside = sb.outside_data();
    assert_eq!(
        outside,
        BTreeSet::from([PathBuf::from("a"), PathBuf::from("a/b"), PathBuf::from("cwd")]),
        "requests wrote outside dataDir"
    );
}

#[test]
fn hostile_names_are_rejected_and_create_nothing() {
    let sb = Sandbox::nested();
    let token = format!(
        "podcidr-escape-{}",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
    );
    let t = token.as_str();
    let long = "x".repeat(10_000);
    let deep = format!("{}{t}", "../".repeat(3400));
    let escapes = [
        format!("../{t}"),
        format!("../../../{t}"),
        format!("../../../../{t}"),
        format!("a/../../../{t}"),
        format!("/tmp/{t}"),
        format!("{t}/x"),
        deep.clone(),
    ];
    let mut names: Vec<String> = escapes.to_vec();
    names.extend(["..", ".", "/", "", &long, "x\ny", "x y", "é"].iter().map(|s| s.to_string()));
    names.push(format!("-{t}"));
    names.push(format!(".{t}"));
    names.push(format!("{t}:eth0"));
    let ifnames: Vec<String> = vec![
        format!("../{t}"),
        "a/b".into(),
        "..".into(),
        ".".into(),
        "".into(),
        long.clone(),
        deep.clone(),
        "x:y".into(),
        "a b".into(),
        "eth0\n".into(),
        "sixteen-bytes-xx".into(),
    ];
    let good = sb.conf("1.1.0", "good", json!({ "ranges": [[{ "subnet": "10.5.0.0/24" }]] }));
    let before = sb.tree();
    let expect = |e: Call, codes: &[u64]| match e.reply() {
        Reply::Err { code, .. } if codes.contains(&code) => {}
        other => panic!("expected code {codes:?}, got {other:?}\nrequest: {}", e.describe()),
    };
    for name in &names {
        let conf = sb.conf("1.1.0", name, json!({ "ranges": [[{ "subnet": "10.5.0.0/24" }]] }));
        for verb in ["ADD", "DEL", "CHECK", "GC", "STATUS"] {
            expect(cni(&sb, verb, "c1", &conf), &[7]);
        }
        for verb in ["ADD", "DEL", "CHECK"] {
            expect(cni(&sb, verb, name, &good), &[4]);
        }
    }
    for ifname in &ifnames {
        for verb in ["ADD", "DEL", "CHECK"] {
            expect(cni(&sb, verb, "c1", &good).env("CNI_IFNAME", ifname), &[4]);
        }
    }
    assert_eq!(sb.tree(), before, "a rejected request created files");
    let parent = sb.root().parent().unwrap();
    for dir in [parent, Path::new("/tmp"), Path::new("/")] {
        let leaked: Vec<String> = common::names(dir).into_iter().filter(|n| n.contains(t)).collect();
        assert!(leaked.is_empty(), "{} holds {leaked:?}", dir.display());
    }

    // Odd but valid names stay inside dataDir; pod identity of any length is only data.
    let pod = format!("K8S_POD_NAMESPACE=../../{t};K8S_POD_NAME={long}/..");
    for (i, name) in ["a..b", "x.-_", "0", &"n".repeat(200)].iter().enumerate() {
        let conf = sb.conf("1.1.0", name, json!({ "ranges": [[{ "subnet": "10.5.0.0/24" }]] }));
        let cid = format!("c.{i}..-_");
        cni(&sb, "ADD", &cid, &conf).env("CNI_ARGS", &pod).ok();
        cni(&sb, "ADD", &cid, &conf).env("CNI_IFNAME", "...").ok();
        assert_eq!(status_network(&status_json(&sb.data_dir()), name)["leases"].as_array().unwrap().len(), 2);
        cni(&sb, "DEL", &cid, &conf).ok();
        cni(&sb, "DEL", &cid, &conf).env("CNI_IFNAME", "...").ok();
    }
    let outside = sb.outside_data();
    assert_eq!(
        outside,
        BTreeSet::from([PathBuf::from("a"), PathBuf::from("a/b"), PathBuf::from("cwd")]),
        "valid requests wrote outside dataDir"
    );
}

// ---------------------------------------------------------------------------------------------
// Damaged stores.
// ---------------------------------------------------------------------------------------------

fn small_conf(sb: &Sandbox) -> Value {
    sb.conf("1.1.0", "dmg", json!({ "ranges": [[{ "subnet": "10.9.0.0/28" }]] }))
}

fn contents(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn damaged_lease_records_count_as_taken_and_are_reported() {
    let sb = Sandbox::nested();
    let conf = small_conf(&sb);
    let net = sb.data_dir().join("dmg");
    let first = result_ips(&cni(&sb, "ADD", "c1", &conf).ok())[0].clone();
    assert_eq!(first, "10.9.0.2");
    let leases = net.join("leases");
    let good = std::fs::read(leases.join(&first)).unwrap();
    std::fs::write(leases.join("10.9.0.3"), b"\x00\xffnot json{\"ip\":").unwrap();
    std::fs::write(leases.join("10.9.0.4"), b"").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", leases.join("10.9.0.5")).unwrap();
    std::fs::write(leases.join("10.9.0.6"), &good[..good.len() / 2]).unwrap();
    let damaged = ["10.9.0.3", "10.9.0.4", "10.9.0.5", "10.9.0.6"];
    let passwd = contents(Path::new("/etc/passwd"));

    // Asking for a damaged address by name is refused.
    for ip in damaged {
        match cni(&sb, "ADD", "asker", &conf).env("CNI_ARGS", &format!("IP={ip}")).reply() {
            Reply::Err { code: 101, .. } => {}
            other => panic!("ADD asking for damaged {ip}: {other:?}"),
        }
        cni(&sb, "DEL", "asker", &conf).ok();
    }
    // Filling the range never hands one out: 13 usable, c1 and 4 damaged, so 8 more.
    let mut got = BTreeSet::from([first.clone()]);
    let mut i = 2;
    loop {
        match cni(&sb, "ADD", &format!("c{i}"), &conf).reply() {
            Reply::Ok(Some(v)) => {
                let ip = result_ips(&v)[0].clone();
                assert!(!damaged.contains(&ip.as_str()), "ADD c{i} was given damaged {ip}");
                assert!(got.insert(ip.clone()), "{ip} handed out twice");
            }
            Reply::Err { code: 100, .. } => break,
            other => panic!("ADD c{i}: {other:?}"),
        }
        i += 1;
    }
    assert_eq!(got.len(), 9, "{got:?}");
    // CNI STATUS says full; `podcidr status` lists the damaged files as unreadable.
    assert_eq!(cni(&sb, "STATUS", "c1", &conf).reply().code(), Some(50));
    let doc = status_json(&sb.data_dir());
    let st = status_network(&doc, "dmg");
    let unreadable: BTreeSet<&str> =
        st["unreadable"].as_array().unwrap().iter().map(|u| u["file"].as_str().unwrap()).collect();
    assert_eq!(unreadable, BTreeSet::from(damaged), "{st:#}");
    let listed: BTreeSet<String> =
        st["leases"].as_array().unwrap().iter().map(|l| l["ip"].as_str().unwrap().to_string()).collect();
    assert_eq!(listed, got);
    // The human form works too.
    let human = Call::bare().fixed_boot().argv(&["status", "--data-dir", sb.data_dir().to_str().unwrap()]).run();
    assert_eq!(human.code(), Some(0), "{}", human.context());

    // Freeing everything and filling again still skips them.
    for n in 1..i {
        cni(&sb, "DEL", &format!("c{n}"), &conf).ok();
    }
    for n in 0..8 {
        let ip = result_ips(&cni(&sb, "ADD", &format!("d{n}"), &conf).ok())[0].clone();
        assert!(!damaged.contains(&ip.as_str()), "ADD d{n} was given damaged {ip}");
    }
    assert_eq!(contents(Path::new("/etc/passwd")), passwd);
    for ip in damaged {
        assert!(std::fs::symlink_metadata(leases.join(ip)).is_ok(), "{ip} disappeared");
    }
}

#[test]
fn symlinks_in_the_store_are_never_followed() {
    let sb = Sandbox::nested();
    let conf = small_conf(&sb);
    let net = sb.data_dir().join("dmg");
    assert_eq!(result_ips(&cni(&sb, "ADD", "c1", &conf).ok()), ["10.9.0.2"]);
    let c1_record = contents(&net.join("leases/10.9.0.2"));

    // An index entry that is a symlink to an index-shaped file outside, naming c1's address.
    let victim = sb.root().join("victim");
    std::fs::write(&victim, r#"{"containerID":"c9","ifname":"eth0","ips":["10.9.0.2"]}"#).unwrap();
    std::os::unix::fs::symlink(&victim, net.join("owners/c9:eth0")).unwrap();
    // A lease record that is a symlink to a record-shaped file outside, owned by c8 whose
    // (regular) index names it.
    let victim2 = sb.root().join("victim2");
    std::fs::write(&victim2, &c1_record).unwrap();
    std::os::unix::fs::symlink(&victim2, net.join("leases/10.9.0.7")).unwrap();
    std::fs::write(net.join("owners/c8:eth0"), r#"{"containerID":"c8","ifname":"eth0","ips":["10.9.0.7"]}"#).unwrap();
    let (v1, v2) = (contents(&victim), contents(&victim2));

    for verb in ["DEL", "ADD", "CHECK", "DEL"] {
        for cid in ["c9", "c8"] {
            // Success or a clean error; either way nothing outside is touched.
            let _ = cni(&sb, verb, cid, &conf).reply();
            assert_eq!(contents(&victim), v1, "{verb} {cid} changed {}", victim.display());
            assert_eq!(contents(&victim2), v2, "{verb} {cid} changed {}", victim2.display());
            assert_eq!(contents(&net.join("leases/10.9.0.2")), c1_record, "{verb} {cid} touched c1");
        }
    }
    let gc = json!([{ "containerID": "c1", "ifname": "eth0" }]);
    let mut gc_conf = conf.clone();
    gc_conf["cni.dev/valid-attachments"] = gc;
    let _ = cni(&sb, "GC", "c1", &gc_conf).reply();
    let _ = status_json(&sb.data_dir());
    assert_eq!(contents(&victim), v1);
    assert_eq!(contents(&victim2), v2);
    assert_eq!(contents(&net.join("leases/10.9.0.2")), c1_record, "GC touched c1");
}

#[test]
fn del_gets_past_a_symlinked_index_entry() {
    let sb = Sandbox::nested();
    let conf = small_conf(&sb);
    let net = sb.data_dir().join("dmg");
    cni(&sb, "ADD", "c1", &conf).ok();
    let victim = sb.root().join("victim");
    std::fs::write(&victim, r#"{"containerID":"c9","ifname":"eth0","ips":["10.9.0.2"]}"#).unwrap();
    std::os::unix::fs::symlink(&victim, net.join("owners/c9:eth0")).unwrap();
    // A damaged lease record counts as "unreadable"; a damaged index entry should too, so a DEL
    // (which the runtime retries until it succeeds) can complete and the ID can be reused.
    cni(&sb, "DEL", "c9", &conf).ok();
    cni(&sb, "ADD", "c9", &conf).ok();
    assert!(victim.exists());
}

#[test]
fn a_directory_in_leases_is_reported_as_unreadable() {
    let sb = Sandbox::nested();
    let conf = small_conf(&sb);
    let net = sb.data_dir().join("dmg");
    cni(&sb, "ADD", "c1", &conf).ok();
    std::fs::create_dir(net.join("leases/10.9.0.3")).unwrap();
    std::fs::write(net.join("owners/c8:eth0"), r#"{"containerID":"c8","ifname":"eth0","ips":["10.9.0.3"]}"#).unwrap();
    let doc = status_json(&sb.data_dir());
    let st = status_network(&doc, "dmg");
    assert_eq!(st["unreadable"][0]["file"], "10.9.0.3", "{st:#}");
    cni(&sb, "DEL", "c8", &conf).ok();
}

#[test]
fn a_fifo_in_leases_does_not_hang_the_store() {
    let sb = Sandbox::nested();
    let conf = small_conf(&sb);
    let net = sb.data_dir().join("dmg");
    cni(&sb, "ADD", "c1", &conf).ok();
    let fifo = std::ffi::CString::new(net.join("leases/10.9.0.3").to_str().unwrap().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    std::fs::write(net.join("owners/c8:eth0"), r#"{"containerID":"c8","ifname":"eth0","ips":["10.9.0.3"]}"#).unwrap();
    let limit = Duration::from_secs(5);
    let status = Call::bare().fixed_boot().argv(&["status", "--data-dir", sb.data_dir().to_str().unwrap()]);
    assert!(run_with_timeout(&status, limit).is_some(), "podcidr status hung");
    let del = cni(&sb, "DEL", "c8", &conf);
    let out = run_with_timeout(&del, limit).expect("DEL hung");
    out.judge().unwrap();
    let add = cni(&sb, "ADD", "c2", &conf);
    assert!(run_with_timeout(&add, limit).is_some(), "ADD hung");
}

// ---------------------------------------------------------------------------------------------
// Permissions.
// ---------------------------------------------------------------------------------------------

#[test]
fn the_store_is_private_whatever_the_umask() {
    let sb = Sandbox::nested();
    let conf =
        sb.conf("1.1.0", "perm", json!({ "ranges": [[{ "subnet": "10.7.0.0/24" }], [{ "subnet": "fd07::/120" }]] }));
    let run_umask0 = |e: Call| {
        let mut cmd = e.command();
        // SAFETY: umask(2) is async-signal-safe and touches only the child.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::umask(0);
                Ok(())
            });
        }
        let out = finish(cmd.spawn().unwrap(), &e.stdin, |_| {});
        out.judge().unwrap_or_else(|v| panic!("{v}"))
    };
    for cid in ["c1", "c2", "c3"] {
        assert!(matches!(run_umask0(cni(&sb, "ADD", cid, &conf)), Reply::Ok(Some(_))));
    }
    assert!(matches!(run_umask0(cni(&sb, "DEL", "c2", &conf)), Reply::Ok(None)));
    let net = sb.data_dir().join("perm");
    let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777;
    for dir in [net.clone(), net.join("leases"), net.join("owners"), net.join("spare")] {
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    }
    let disk = Disk::read(&net);
    assert_eq!(disk.leases.len(), 4);
    assert_eq!(disk.owners.len(), 2);
    let spares = names(&net.join("spare"));
    assert_eq!(spares.len(), 2, "c2's two records are kept for reuse: {spares:?}");
    let meta = |p: &Path| std::fs::symlink_metadata(p).unwrap();
    for (sub, names) in [
        ("leases", disk.leases.keys().cloned().collect::<Vec<_>>()),
        ("owners", disk.owners.keys().cloned().collect()),
        ("spare", spares),
    ] {
        for n in names {
            let p = net.join(sub).join(n);
            assert_eq!(mode(&p), 0o600, "{}", p.display());
            assert!(meta(&p).is_file(), "{}", p.display());
        }
    }
    // Each owner index is a second name of its first lease record, and nothing else is linked.
    let mut first_leases = Vec::new();
    for (name, e) in &disk.owners {
        let Entry::Ok(idx) = e else { panic!("owners/{name}: {e:?}") };
        let first = net.join("leases").join(idx.ips[0].to_string());
        let (o, l) = (meta(&net.join("owners").join(name)), meta(&first));
        assert_eq!((o.ino(), o.nlink()), (l.ino(), 2), "owners/{name} and {}", first.display());
        first_leases.push(idx.ips[0].to_string());
    }
    for name in disk.leases.keys().filter(|n| !first_leases.contains(n)) {
        assert_eq!(meta(&net.join("leases").join(name)).nlink(), 1, "leases/{name}");
    }
    // Every other file of the store, too.
    for entry in std::fs::read_dir(&net).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() {
            assert_eq!(mode(&p), 0o600, "{}", p.display());
        }
    }
    for (name, e) in &disk.owners {
        assert!(matches!(e, Entry::Ok(_)), "owners/{name}: {e:?}");
        assert!(name.ends_with(&format!(":{IFNAME}")));
    }
}
