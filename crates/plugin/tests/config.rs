//! Configuration as host-local reads it (issue 10): `dataDir`, `exclude`, route gateways, the
//! old spec versions 0.1.0 and 0.2.0, CHECK without `prevResult`, and what `podcidr status`
//! counts. Exec-level: the plugin is run as a runtime runs it.

mod common;

use common::{Call, LEGACY_VERSIONS, Sandbox, VERSIONS, addresses, status_json, status_network};
use serde_json::{Value, json};
use std::path::Path;

const NET: &str = "net1";

fn host_local_fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/host-local").join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// dataDir
// ---------------------------------------------------------------------------------------------

/// A network name no other test or run uses, so that looking into the default data directory
/// finds nothing of anyone's.
fn unique_network() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("podcidr-test-{}-{nanos}", std::process::id())
}

#[test]
fn an_empty_data_dir_is_the_default_not_the_working_directory() {
    let sb = Sandbox::new();
    let cwd = sb.root().join("cwd");
    std::fs::create_dir_all(&cwd).unwrap();
    let net = unique_network();
    // A lease in a store under the runtime's working directory, where `"dataDir": ""` used to
    // put it.
    let mut conf = common::conf(&cwd, "1.0.0", &net, json!({ "ranges": [[{ "subnet": "10.1.0.0/24" }]] }));
    Call::add("c1", &conf).cwd(&cwd).run().ok_json();
    assert_eq!(sb.root().join("cwd").join(&net).join("leases").read_dir().unwrap().count(), 1);

    // DEL with `"dataDir": ""` looks in /var/lib/cni/podcidr/<net>, which does not exist:
    // nothing to release there, and the store under the working directory is not touched.
    conf["ipam"]["dataDir"] = json!("");
    Call::del("c1", &conf).cwd(&cwd).run().ok_silent();
    assert_eq!(
        cwd.join(&net).join("leases").read_dir().unwrap().count(),
        1,
        "DEL with an empty dataDir released a lease in the working directory's store"
    );
    assert!(!Path::new("/var/lib/cni/podcidr").join(&net).exists(), "DEL must not create a store");
}

#[test]
fn a_relative_data_dir_is_code_7_naming_the_field() {
    let sb = Sandbox::new();
    let cwd = sb.root().join("cwd");
    std::fs::create_dir_all(&cwd).unwrap();
    for dir in ["data", "./data", "../data"] {
        let mut conf = sb.conf_v4("1.0.0", "10.1.0.0/24");
        conf["ipam"]["dataDir"] = json!(dir);
        for verb in ["ADD", "DEL"] {
            let msg = Call::cni(verb, "c1", &conf).cwd(&cwd).run().err_msg(7);
            assert!(msg.starts_with("ipam.dataDir:") && msg.contains("relative"), "{dir} {verb}: {msg}");
        }
    }
    assert_eq!(std::fs::read_dir(&cwd).unwrap().count(), 0, "nothing may be created in the working directory");
    assert!(!sb.root().join("data").exists());
}

// ---------------------------------------------------------------------------------------------
// exclude
// ---------------------------------------------------------------------------------------------

#[test]
fn an_exclude_entry_with_host_bits_is_code_7_naming_it() {
    let sb = Sandbox::new();
    let conf = sb.conf(
        "1.0.0",
        NET,
        json!({ "ranges": [[{ "subnet": "10.63.0.0/24" }]], "exclude": ["10.63.0.9", "10.63.0.250/24"] }),
    );
    let msg = Call::add("c1", &conf).run().err_msg(7);
    assert!(msg.starts_with("ipam.exclude[1]:"), "{msg}");
    assert!(msg.contains("10.63.0.250/24") && msg.contains("host bits"), "{msg}");
    assert!(!sb.data_dir().exists(), "a rejected config must not create a store");
}

/// Entries are read from the JSON bytes without an owned string each: JSON escapes, surrounding
/// spaces and non-ASCII text still mean what they did.
#[test]
fn exclude_entries_are_read_as_the_json_strings_they_are() {
    let sb = Sandbox::new();
    // 10.63.0.0/29: .1 is the gateway; .2 (written with an escape), .3 (with spaces) and .4/31
    // are excluded, so .6 is the first address left.
    let stdin = format!(
        r#"{{"cniVersion":"1.0.0","name":"{NET}","ipam":{{"type":"podcidr","dataDir":{},"subnet":"10.63.0.0/29",
           "exclude":["10.63.0.\u0032"," 10.63.0.3 ","10.63.0.4/31"]}}}}"#,
        json!(sb.data_dir())
    );
    let res = Call::add("c1", &json!({})).stdin(stdin.as_bytes()).run().ok_json();
    assert_eq!(addresses(&res), ["10.63.0.6/29"]);
    let msg =
        Call::add("c2", &sb.conf("1.0.0", NET, json!({ "subnet": "10.63.0.0/29", "exclude": ["10.63.0.5", "адрес"] })))
            .run()
            .err_msg(7);
    assert!(msg.starts_with(r#"ipam.exclude[1]: "адрес" is neither an address nor a CIDR"#), "{msg}");
}

/// A DEL needs no pool: an exclude entry an ADD would refuse must not keep it from releasing.
#[test]
fn a_bad_exclude_entry_does_not_stop_a_del() {
    let sb = Sandbox::new();
    let good = sb.conf("1.0.0", NET, json!({ "subnet": "10.63.0.0/24", "exclude": ["10.63.0.2"] }));
    Call::add("c1", &good).run().ok_json();
    let bad = sb.conf("1.0.0", NET, json!({ "subnet": "10.63.0.0/24", "exclude": ["10.63.0.2", "10.63.0.250/24"] }));
    Call::add("c2", &bad).run().err_msg(7);
    Call::del("c1", &bad).run().ok_silent();
    assert!(sb.lease_files(NET).is_empty(), "DEL left the lease");
}

#[test]
fn an_exclude_list_that_leaves_a_range_set_empty_is_code_7() {
    let sb = Sandbox::new();
    let conf = sb.conf(
        "1.1.0",
        NET,
        json!({
            "ranges": [[{ "subnet": "10.63.0.0/24" }], [{ "subnet": "fd00:63::/120" }]],
            "exclude": ["10.63.0.0/25", "10.63.0.128/25"]
        }),
    );
    let msg = Call::add("c1", &conf).run().err_msg(7);
    assert!(msg.starts_with("ipam.exclude:"), "{msg}");
    assert!(msg.contains("range set 0") && msg.contains("no address"), "{msg}");
    let msg = Call::verb("STATUS").conf(&conf).run().err_msg(7);
    assert!(msg.starts_with("ipam.exclude:"), "{msg}");
}

// ---------------------------------------------------------------------------------------------
// routes
// ---------------------------------------------------------------------------------------------

#[test]
fn a_route_gateway_that_is_not_an_address_is_code_7_naming_it() {
    let sb = Sandbox::new();
    for gw in [json!("10.1.0.999"), json!("nope"), json!(5), json!(["10.1.0.1"])] {
        let routes = json!([{ "dst": "0.0.0.0/0" }, { "dst": "192.168.0.0/16", "gw": gw }]);
        let conf = sb.conf("1.0.0", NET, json!({ "ranges": [[{ "subnet": "10.1.0.0/24" }]], "routes": routes }));
        let msg = Call::add("c1", &conf).run().err_msg(7);
        assert!(msg.starts_with("ipam.routes[1].gw:"), "{gw}: {msg}");
        assert!(sb.lease_files(NET).is_empty(), "{gw}: a failed ADD left a lease");
    }
    // As host-local: an address of either family, or empty or null for none.
    for gw in [json!("10.1.0.254"), json!("fd00::1"), json!(""), Value::Null] {
        let routes = json!([{ "dst": "192.168.0.0/16", "gw": gw }]);
        let conf = sb.conf("1.0.0", NET, json!({ "ranges": [[{ "subnet": "10.1.0.0/24" }]], "routes": routes }));
        let res = Call::add("c1", &conf).run().ok_json();
        assert_eq!(res["routes"], routes, "{gw}");
        Call::del("c1", &conf).run().ok_silent();
    }
}

// ---------------------------------------------------------------------------------------------
// podcidr status: capacity and allocated
// ---------------------------------------------------------------------------------------------

fn range_set(doc: &Value, i: usize) -> (u64, u64) {
    let rs = &status_network(doc, NET)["rangeSets"][i];
    (rs["allocated"].as_u64().unwrap(), rs["capacity"].as_u64().unwrap())
}

#[test]
fn status_capacity_counts_what_add_hands_out_when_the_gateway_is_the_last_address() {
    let sb = Sandbox::new();
    // 10.0.0.0/29 with rangeEnd and gateway at the broadcast address: .1 to .6 are handed out.
    let conf = sb.conf(
        "1.0.0",
        NET,
        json!({ "ranges": [[{ "subnet": "10.0.0.0/29", "rangeEnd": "10.0.0.7", "gateway": "10.0.0.7" }]] }),
    );
    let mut got = Vec::new();
    for i in 0..6 {
        got.extend(addresses(&Call::add(&format!("c{i}"), &conf).run().ok_json()));
    }
    assert_eq!(got, ["10.0.0.1/29", "10.0.0.2/29", "10.0.0.3/29", "10.0.0.4/29", "10.0.0.5/29", "10.0.0.6/29"]);
    Call::add("c6", &conf).run().err(100);
    assert_eq!(range_set(&status_json(&sb.data_dir()), 0), (6, 6));
    for i in 0..3 {
        Call::del(&format!("c{i}"), &conf).run().ok_silent();
    }
    assert_eq!(range_set(&status_json(&sb.data_dir()), 0), (3, 6));
}

#[test]
fn status_counts_as_allocated_only_leases_on_addresses_add_hands_out() {
    let sb = Sandbox::new();
    let ipam = json!({ "ranges": [[{ "subnet": "10.0.0.0/29" }]] });
    let conf = sb.conf("1.0.0", NET, ipam.clone());
    for i in 0..5 {
        Call::add(&format!("c{i}"), &conf).run().ok_json();
    }
    assert_eq!(range_set(&status_json(&sb.data_dir()), 0), (5, 5));
    // The operator excludes two leased addresses and moves the gateway onto a third; the
    // leases stay until their pods go, but ADD hands out none of these addresses any more.
    let mut ipam2 = ipam;
    ipam2["exclude"] = json!(["10.0.0.2/31"]);
    ipam2["ranges"][0][0]["gateway"] = json!("10.0.0.4");
    let conf2 = sb.conf("1.0.0", NET, ipam2);
    // Usable now: .1 (the old gateway), .5 and .6; only .1 is free.
    assert_eq!(addresses(&Call::add("c9", &conf2).run().ok_json()), ["10.0.0.1/29"]);
    Call::add("c10", &conf2).run().err(100);
    let doc = status_json(&sb.data_dir());
    let (allocated, capacity) = range_set(&doc, 0);
    assert_eq!((allocated, capacity), (3, 3), "{doc:#}");
    let human = Call::bare().argv(&["status", "--data-dir", sb.data_dir().to_str().unwrap()]).run();
    let text = human.text();
    assert!(text.contains("IPv4: 3/3 allocated"), "{text}");
    for ip in ["10.0.0.2", "10.0.0.3", "10.0.0.4"] {
        assert!(
            text.lines().any(|l| l.trim_start().starts_with(&format!("{ip} (")) && l.contains("[reserved or excluded")),
            "{ip} is not marked: {text}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Spec versions 0.1.0 and 0.2.0, and no cniVersion
// ---------------------------------------------------------------------------------------------

/// The config host-local's fixtures were recorded with, for podcidr.
fn legacy_conf(sb: &Sandbox, version: Option<&str>) -> Value {
    let resolv = sb.root().join("resolv.conf");
    std::fs::write(&resolv, "nameserver 10.96.0.10\nsearch svc.cluster.local\noptions ndots:5\n").unwrap();
    let mut conf = sb.conf(
        "",
        "legacy",
        json!({
            "resolvConf": resolv,
            "ranges": [[{ "subnet": "10.1.0.0/24" }], [{ "subnet": "fd00:1::/64" }]],
            "routes": [
                { "dst": "0.0.0.0/0" },
                { "dst": "192.168.0.0/16", "gw": "10.1.0.254" },
                { "dst": "::/0", "gw": "fd00:1::1" }
            ]
        }),
    );
    match version {
        Some(v) => conf["cniVersion"] = json!(v),
        None => {
            conf.as_object_mut().unwrap().remove("cniVersion");
        }
    }
    conf
}

#[test]
fn add_in_0_1_0_0_2_0_and_without_a_version_gives_host_locals_result() {
    for (version, fixture) in
        [(Some("0.1.0"), "add-0.1.0.json"), (Some("0.2.0"), "add-0.2.0.json"), (None, "add-none.json")]
    {
        let sb = Sandbox::new();
        let conf = legacy_conf(&sb, version);
        let res = Call::add("c1", &conf).run().ok_json();
        assert_eq!(res, host_local_fixture(fixture), "{version:?}");
        // A repeated ADD answers the same.
        assert_eq!(Call::add("c1", &conf).run().ok_json(), res, "{version:?}");
    }
    let sb = Sandbox::new();
    let res = Call::add("c1", &sb.conf_v4("0.2.0", "10.1.0.0/24")).run().ok_json();
    assert_eq!(res, host_local_fixture("add-0.2.0-v4-only.json"));
}

#[test]
fn errors_in_0_1_0_and_0_2_0_speak_the_callers_version() {
    let sb = Sandbox::new();
    for v in LEGACY_VERSIONS {
        let conf = sb.conf(v, NET, json!({ "ranges": [[{ "subnet": "10.1.0.0/24" }]], "exclude": ["x"] }));
        let err = Call::add("c1", &conf).run().err(7);
        assert_eq!(err["cniVersion"], v);
    }
    let mut conf = sb.conf("", NET, json!({ "ranges": "nope" }));
    conf.as_object_mut().unwrap().remove("cniVersion");
    assert_eq!(Call::add("c1", &conf).run().err(7)["cniVersion"], "0.1.0");
}

#[test]
fn del_releases_the_lease_whatever_the_version() {
    for v in ["0.1.0", "0.2.0", "", "9.9.9", "banana", "1.1.0"] {
        let sb = Sandbox::new();
        let added = sb.conf_v4("1.0.0", "10.1.0.0/24");
        Call::add("c1", &added).run().ok_json();
        let mut conf = added.clone();
        if v.is_empty() {
            conf.as_object_mut().unwrap().remove("cniVersion");
        } else {
            conf["cniVersion"] = json!(v);
        }
        Call::del("c1", &conf).run().ok_silent();
        assert!(sb.lease_files(NET).is_empty(), "{v:?}: DEL left the lease");
        assert!(sb.owner_files(NET).is_empty(), "{v:?}: DEL left the owner index");
    }
    // ADD still refuses a version it does not speak.
    let sb = Sandbox::new();
    let mut conf = sb.conf_v4("1.0.0", "10.1.0.0/24");
    conf["cniVersion"] = json!("9.9.9");
    Call::add("c1", &conf).run().err(1);
}

#[test]
fn version_lists_0_1_0_and_0_2_0_as_host_local_does() {
    let res = Call::verb("VERSION").run().ok_json();
    let ours: Vec<&str> = res["supportedVersions"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    let expected: Vec<&str> = LEGACY_VERSIONS.iter().chain(VERSIONS.iter()).copied().collect();
    assert_eq!(ours, expected);
    let hl = host_local_fixture("version.json");
    for v in hl["supportedVersions"].as_array().unwrap() {
        assert!(ours.contains(&v.as_str().unwrap()), "host-local speaks {v}, podcidr does not");
    }
}

#[test]
fn check_gc_and_status_keep_their_minimum_versions_in_0_1_0_and_0_2_0() {
    for v in LEGACY_VERSIONS {
        let sb = Sandbox::new();
        let conf = sb.conf_v4(v, "10.1.0.0/24");
        Call::add("c1", &conf).run().ok_json();
        assert_eq!(Call::check("c1", &conf).run().err(1)["cniVersion"], v);
        for verb in ["GC", "STATUS"] {
            assert_eq!(Call::verb(verb).conf(&conf).run().err(1)["cniVersion"], v, "{verb}");
        }
        assert_eq!(sb.lease_files(NET), ["10.1.0.2"]);
    }
}

// ---------------------------------------------------------------------------------------------
// CHECK without prevResult
// ---------------------------------------------------------------------------------------------

#[test]
fn check_without_prev_result_passes_when_the_attachment_holds_a_lease() {
    for v in ["0.4.0", "1.0.0", "1.1.0"] {
        let sb = Sandbox::new();
        let conf = sb.conf(v, NET, json!({ "ranges": [[{ "subnet": "10.1.0.0/24" }], [{ "subnet": "fd00:1::/64" }]] }));
        // No store yet, then a store without this attachment: 102, as host-local fails.
        Call::check("c1", &conf).run().err(102);
        Call::add("c2", &conf).run().ok_json();
        Call::check("c1", &conf).run().err(102);
        Call::add("c1", &conf).run().ok_json();
        Call::check("c1", &conf).run().ok_silent();
        Call::del("c1", &conf).run().ok_silent();
        Call::check("c1", &conf).run().err(102);
    }
}

/// Issue 17, point 7: an exclude entry that cannot be read (a number beyond f64, a lone
/// surrogate escape, nesting deeper than 128) is code 7 naming `ipam.exclude` and the entry;
/// the rest of the list is never dropped with it.
#[test]
fn an_unreadable_exclude_entry_is_code_7_naming_it_never_an_empty_list() {
    let sb = Sandbox::new();
    let conf = sb.conf("1.1.0", NET, json!({ "subnet": "10.64.0.0/24", "exclude": "LIST" }));
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let digits = "9".repeat(400);
    for (entry, named) in [
        ("1e400", "ipam.exclude[1]: 1e400"),
        (r#""\ud800""#, r#"ipam.exclude[1]: "\ud800""#),
        (digits.as_str(), "ipam.exclude[1]: 999"),
        (deep.as_str(), "ipam.exclude"),
    ] {
        let text = conf.to_string().replace(r#""LIST""#, &format!(r#"["10.64.0.2", {entry}]"#));
        for verb in ["ADD", "STATUS"] {
            let out = Call::cni(verb, "c1", &Value::Null).stdin(text.as_bytes()).run();
            let msg = out.err_msg(7);
            assert!(msg.starts_with(named), "{verb} with {}: {msg}", &entry[..entry.len().min(20)]);
        }
        assert!(!sb.net_dir(NET).join("leases").join("10.64.0.2").exists());
    }
}

/// Issue 17, point 14: an IPv4-mapped exclude entry excludes the IPv4 address it maps.
#[test]
fn an_ipv4_mapped_exclude_entry_excludes_the_ipv4_address() {
    let sb = Sandbox::new();
    let conf = sb.conf(
        "1.0.0",
        NET,
        json!({ "subnet": "10.65.0.0/24", "exclude": ["::ffff:10.65.0.2", "::ffff:10.65.0.4/127"] }),
    );
    let got = addresses(&Call::add("c1", &conf).run().ok_json());
    assert_eq!(got, ["10.65.0.3/24"]);
    assert_eq!(addresses(&Call::add("c2", &conf).run().ok_json()), ["10.65.0.6/24"]);
    let mut wide = conf.clone();
    wide["ipam"]["exclude"] = json!(["::ffff:0.0.0.0/64"]);
    assert!(Call::add("c3", &wide).run().err_msg(7).starts_with("ipam.exclude[0]"));
}

/// Issue 17, point 13: as host-local (Go's address parsers), an address with a leading-zero
/// octet or surrounding spaces is refused wherever the config or the runtime gives one: code 7
/// naming the field (4 for CNI_ARGS), before anything is leased.
#[test]
fn leading_zeros_and_spaces_in_addresses_are_refused_naming_the_field() {
    let sb = Sandbox::new();
    let base = json!({ "ranges": [[{ "subnet": "10.84.0.0/24" }]] });
    let cases: Vec<(&str, Value, Value)> = vec![
        ("ipam.ranges[0][0].subnet", json!({ "ranges": [[{ "subnet": "010.84.0.0/24" }]] }), json!({})),
        ("ipam.ranges[0][0].subnet", json!({ "ranges": [[{ "subnet": " 10.84.0.0/24" }]] }), json!({})),
        ("ipam.subnet", json!({ "subnet": "10.84.0.0/024 " }), json!({})),
        (
            "ipam.ranges[0][0].rangeStart",
            json!({ "ranges": [[{ "subnet": "10.84.0.0/24", "rangeStart": "10.84.0.05" }]] }),
            json!({}),
        ),
        (
            "ipam.ranges[0][0].gateway",
            json!({ "ranges": [[{ "subnet": "10.84.0.0/24", "gateway": "10.84.0.1 " }]] }),
            json!({}),
        ),
        ("ipam.routes[0].dst", json!({ "ranges": base["ranges"], "routes": [{ "dst": "010.0.0.0/8" }] }), json!({})),
        (
            "ipam.routes[0].gw",
            json!({ "ranges": base["ranges"], "routes": [{ "dst": "0.0.0.0/0", "gw": "10.84.0.01" }] }),
            json!({}),
        ),
        ("ipam.exclude[0]", json!({ "ranges": base["ranges"], "exclude": ["010.84.0.2/32"] }), json!({})),
        ("runtimeConfig.ips", base.clone(), json!({ "runtimeConfig": { "ips": ["010.84.0.5/24"] } })),
        ("args.cni.ips", base.clone(), json!({ "args": { "cni": { "ips": [" 10.84.0.5"] } } })),
    ];
    for (field, ipam, top) in cases {
        let mut conf = sb.conf("1.0.0", NET, ipam);
        for (k, v) in top.as_object().unwrap() {
            conf[k] = v.clone();
        }
        let msg = Call::add("c", &conf).run().err_msg(7);
        assert!(msg.starts_with(field), "{field}: {msg}");
    }
    let conf = sb.conf("1.0.0", NET, base);
    for ip in ["010.84.0.5", "010.84.0.5/24"] {
        let msg = Call::add("c", &conf).args(&format!("IP={ip}")).run().err_msg(4);
        assert!(msg.contains("CNI_ARGS"), "{ip}: {msg}");
    }
    assert!(sb.lease_files(NET).is_empty());
}

/// Issue 17, point 12: keys are matched as Go's encoding/json (host-local) matches them: the
/// exact key, else one equal but for case.
#[test]
fn keys_are_read_whatever_their_case_as_host_local_reads_them() {
    let sb = Sandbox::new();
    let dd = sb.root().join("Elsewhere");
    let conf = json!({
        "CNIVersion": "1.0.0", "Name": NET, "type": "bridge",
        "IPAM": {
            "Type": "podcidr", "DataDir": dd,
            "Ranges": [[{ "Subnet": "10.85.0.0/24", "rangestart": "10.85.0.10", "RangeEnd": "10.85.0.11", "GATEWAY": "10.85.0.254" }]],
            "routes": [{ "Dst": "0.0.0.0/0", "GW": "10.85.0.254" }]
        },
        "runtimeconfig": { "IPs": ["10.85.0.11"] }
    });
    let res = Call::add("c1", &conf).run().ok_json();
    assert_eq!(addresses(&res), ["10.85.0.11/24"]);
    assert_eq!(res["ips"][0]["gateway"], "10.85.0.254");
    assert_eq!(res["routes"], json!([{ "dst": "0.0.0.0/0", "gw": "10.85.0.254" }]), "routes as host-local answers");
    assert!(dd.join(NET).join("leases").join("10.85.0.11").exists(), "DataDir was not honoured");
    let mut plain = conf.clone();
    plain.as_object_mut().unwrap().remove("runtimeconfig");
    let next = Call::add("c2", &plain).run().ok_json();
    assert_eq!(addresses(&next), ["10.85.0.10/24"]);
    Call::add("c3", &plain).run().err(100);
    // DEL reads them so too.
    Call::del("c1", &plain).run().ok_silent();
    assert!(!dd.join(NET).join("leases").join("10.85.0.11").exists());
}

/// Issue 17, point 15, decided: a gateway outside its subnet stays refused (code 7 naming the
/// field and why), a deliberate difference from host-local listed in the README.
#[test]
fn a_gateway_outside_its_subnet_is_refused_as_the_readme_says() {
    let sb = Sandbox::new();
    let conf = sb.conf("1.0.0", NET, json!({ "ranges": [[{ "subnet": "10.86.0.0/24", "gateway": "10.86.1.1" }]] }));
    let msg = Call::add("c", &conf).run().err_msg(7);
    assert!(msg.starts_with("ipam.ranges[0][0].gateway: 10.86.1.1 is not in subnet 10.86.0.0/24"), "{msg}");
    assert!(msg.contains("on-link"), "{msg}");
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md")).unwrap();
    assert!(readme.contains("| a `gateway` outside its range's `subnet` |"), "the README's table lost the row");
}
