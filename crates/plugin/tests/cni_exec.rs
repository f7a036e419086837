//! The plugin as a container runtime sees it: exec'd with CNI_* variables and a network config
//! on stdin, answering with a result or one error object on stdout.

mod common;

use common::{Call, IFNAME, Sandbox, VERSIONS, addresses, cli, only_ip, with_prev_result};
use serde_json::{Value, json};
use std::collections::HashSet;

const POD_ARGS: &str =
    "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=nginx;K8S_POD_UID=0b5f3d2e-1111-4c1e-9d7a-2f6c8e1a9b00";

fn add_ok(cid: &str, conf: &Value) -> Value {
    Call::add(cid, conf).run().ok_json()
}

fn add_ip(cid: &str, conf: &Value) -> String {
    only_ip(&add_ok(cid, conf))
}

// ---------------------------------------------------------------------------------------------
// Every verb in every spec version.
// ---------------------------------------------------------------------------------------------

#[test]
fn add_result_has_the_shape_of_each_version() {
    for v in VERSIONS {
        let sb = Sandbox::new();
        let routes = json!([
            { "dst": "0.0.0.0/0" },
            { "dst": "192.168.0.0/16", "gw": "10.1.0.254" }
        ]);
        let conf = sb.conf(v, "net1", json!({ "ranges": [[{ "subnet": "10.1.0.0/24" }]], "routes": routes }));
        let res = add_ok("c1", &conf);
        assert_eq!(res["cniVersion"], v, "{v}: {res}");
        let ips = res["ips"].as_array().unwrap();
        assert_eq!(ips.len(), 1, "{v}: {res}");
        assert_eq!(ips[0]["address"], "10.1.0.2/24", "{v}: {res}");
        assert_eq!(ips[0]["gateway"], "10.1.0.1", "{v}: {res}");
        if v.starts_with("0.") {
            assert_eq!(ips[0]["version"], "4", "{v} must carry ips[].version: {res}");
        } else {
            assert!(ips[0].get("version").is_none(), "{v} must not carry ips[].version: {res}");
        }
        assert_eq!(res["routes"], routes, "{v}: routes are passed through");
        assert!(res.get("dns").is_none(), "{v}: no dns without resolvConf: {res}");
        assert!(res.get("interfaces").is_none(), "{v}: IPAM has no interfaces");
    }
}

#[test]
fn add_without_routes_has_no_routes() {
    let sb = Sandbox::new();
    let res = add_ok("c1", &sb.conf_v4("1.0.0", "10.1.0.0/24"));
    assert!(res.get("routes").is_none_or(|r| r == &json!([])), "{res}");
}

#[test]
fn add_with_resolv_conf_reports_dns_in_every_version() {
    for v in VERSIONS {
        let sb = Sandbox::new();
        let resolv = sb.root().join("resolv.conf");
        std::fs::write(
            &resolv,
            "# generated\nnameserver 10.96.0.10\nnameserver fd00::10\nsearch default.svc.cluster.local svc.cluster.local\noptions ndots:5 edns0\n",
        )
        .unwrap();
        let conf = sb.conf(v, "net1", json!({ "ranges": [[{ "subnet": "10.1.0.0/24" }]], "resolvConf": resolv }));
        let res = add_ok("c1", &conf);
        let dns = &res["dns"];
        assert_eq!(dns["nameservers"], json!(["10.96.0.10", "fd00::10"]), "{v}: {res}");
        assert_eq!(dns["search"], json!(["default.svc.cluster.local", "svc.cluster.local"]), "{v}: {res}");
        assert_eq!(dns["options"], json!(["ndots:5", "edns0"]), "{v}: {res}");
    }
}

#[test]
fn add_with_a_missing_resolv_conf_fails_and_takes_nothing() {
    let sb = Sandbox::new();
    let conf = sb.conf(
        "1.0.0",
        "net1",
        json!({ "ranges": [[{ "subnet": "10.1.0.0/24" }]], "resolvConf": sb.root().join("nope") }),
    );
    let out = Call::add("c1", &conf).run();
    let err = out.err(5);
    assert!(err["msg"].as_str().unwrap().contains("resolvConf"), "{err}");
    assert!(sb.lease_files("net1").is_empty());
}

#[test]
fn del_in_every_version_releases_the_lease() {
    for v in VERSIONS {
        let sb = Sandbox::new();
        let conf = sb.conf_v4(v, "10.1.0.0/24");
        let ip = add_ip("c1", &conf);
        assert_eq!(sb.lease_files("net1"), std::slice::from_ref(&ip), "{v}");
        assert_eq!(sb.owner_files("net1"), ["c1:eth0"], "{v}");
        Call::del("c1", &conf).run().ok_silent();
        assert!(sb.lease_files("net1").is_empty(), "{v}: lease left after DEL");
        assert!(sb.owner_files("net1").is_empty(), "{v}: owner left after DEL");
    }
}

#[test]
fn check_is_rejected_before_0_4_0() {
    for v in ["0.3.0", "0.3.1"] {
        let sb = Sandbox::new();
        let conf = sb.conf_v4(v, "10.1.0.0/24");
        let res = add_ok("c1", &conf);
        let err = Call::check("c1", &with_prev_result(&conf, &res)).run().err(1);
        assert_eq!(err["cniVersion"], v, "the error speaks the caller's version");
        assert!(err["msg"].as_str().unwrap().contains("CHECK"), "{err}");
    }
}

#[test]
fn check_in_0_4_0_and_later() {
    for v in ["0.4.0", "1.0.0", "1.1.0"] {
        let sb = Sandbox::new();
        let conf = sb.conf_v4(v, "10.1.0.0/24");
        let res = add_ok("c1", &conf);

        // prevResult as the runtime recorded it from ADD.
        Call::check("c1", &with_prev_result(&conf, &res)).run().ok_silent();

        // A prevResult that names another address than the lease.
        let mut wrong = res.clone();
        wrong["ips"][0]["address"] = json!("10.1.0.77/24");
        let err = Call::check("c1", &with_prev_result(&conf, &wrong)).run().err(102);
        assert_eq!(err["cniVersion"], v);

        // Another container, which holds nothing.
        Call::check("c2", &with_prev_result(&conf, &res)).run().err(102);

        // After DEL the lease is gone.
        Call::del("c1", &conf).run().ok_silent();
        Call::check("c1", &with_prev_result(&conf, &res)).run().err(102);
    }
}

#[test]
fn check_on_a_network_without_a_store_is_check_failed() {
    let sb = Sandbox::new();
    let conf = sb.conf_v4("1.0.0", "10.1.0.0/24");
    let prev = json!({ "cniVersion": "1.0.0", "ips": [{ "address": "10.1.0.2/24" }] });
    Call::check("c1", &with_prev_result(&conf, &prev)).run().err(102);
    assert!(!sb.net_dir("net1").exists(), "CHECK must not create a store");
}

#[test]
fn gc_and_status_need_1_1_0() {
    for v in VERSIONS {
        let sb = Sandbox::new();
        let conf = sb.conf_v4(v, "10.1.0.0/24");
        add_ok("c1", &conf);
        for verb in ["GC", "STATUS"] {
            let out = Call::verb(verb).conf(&conf).run();
            if v == "1.1.0" {
                out.ok_silent();
            } else {
                let err = out.err(1);
                assert_eq!(err["cniVersion"], v, "{verb}: {err}");
                assert!(err["msg"].as_str().unwrap().contains(verb), "{verb}: {err}");
            }
        }
        // A GC without valid-attachments (or refused) left this boot's lease alone.
        assert_eq!(sb.lease_files("net1"), ["10.1.0.2"], "{v}");
    }
}

#[test]
fn version_lists_exactly_the_supported_versions() {
    let expected = json!(["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]);
    for v in VERSIONS {
        let res = Call::verb("VERSION").conf(&json!({ "cniVersion": v })).run().ok_json();
        assert_eq!(res["supportedVersions"], expected, "{v}: {res}");
        assert!(VERSIONS.contains(&res["cniVersion"].as_str().unwrap_or("")), "{res}");
    }
    // Runtimes may probe with no config at all.
    let res = Call::verb("VERSION").run().ok_json();
    assert_eq!(res["supportedVersions"], expected, "{res}");
}

// ---------------------------------------------------------------------------------------------
// host-local semantics.
// ---------------------------------------------------------------------------------------------

#[test]
fn round_robin_does_not_reuse_a_just_released_address() {
    let sb = Sandbox::new();
    let conf = sb.conf_v4("1.0.0", "10.1.0.0/24");
    assert_eq!(add_ip("a", &conf), "10.1.0.2");
    assert_eq!(add_ip("b", &conf), "10.1.0.3");
    Call::del("a", &conf).run().ok_silent();
    assert_eq!(add_ip("c", &conf), "10.1.0.4");
    assert_eq!(sb.lease_files("net1"), ["10.1.0.3", "10.1.0.4"]);
}

#[test]
fn round_robin_wraps_to_released_addresses() {
    let sb = Sandbox::new();
    let conf = sb.conf_v4("1.0.0", "10.0.0.0/29");
    for (i, want) in ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"].iter().enumerate() {
        assert_eq!(add_ip(&format!("c{i}"), &conf), *want);
    }
    Call::del("c1", &conf).run().ok_silent();
    assert_eq!(add_ip("c9", &conf), "10.0.0.3");
}

#[test]
fn a_full_subnet_gives_code_100_with_host_locals_message() {
    let sb = Sandbox::new();
    let conf = sb.conf_v4("1.0.0", "10.0.0.0/29");
    let got: Vec<String> = (0..5).map(|i| add_ip(&format!("c{i}"), &conf)).collect();
    assert_eq!(got, ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]);
    let msg = Call::add("c5", &conf).run().err_msg(100);
    assert!(msg.contains("no IP addresses available in range set: 10.0.0.1-10.0.0.6"), "{msg}");
    assert_eq!(sb.lease_files("net1").len(), 5);
    assert_eq!(sb.owner_files("net1").len(), 5, "the failed ADD left an index");
}

#[test]
fn range_start_and_range_end_bound_the_allocation() {
    let sb = Sandbox::new();
    let conf = sb.conf(
        "1.0.0",
        "net1",
        json!({ "ranges": [[{
            "subnet": "10.2.0.0/24", "rangeStart": "10.2.0.10", "rangeEnd": "10.2.0.12"
        }]] }),
    );
    let res = add_ok("a", &conf);
    assert_eq!(addresses(&res), ["10.2.0.10/24"]);
    assert_eq!(res["ips"][0]["gateway"], "10.2.0.1");
    assert_eq!(add_ip("b", &conf), "10.2.0.11");
    assert_eq!(add_ip("c", &conf), "10.2.0.12");
    let msg = Call::add("d", &conf).run().err_msg(100);
    assert!(msg.contains("no IP addresses available in range set: 10.2.0.10-10.2.0.12"), "{msg}");
}

#[test]
fn legacy_subnet_key_is_accepted() {
    let sb = Sandbox::new();
    let conf = sb.conf("0.3.1", "net1", json!({ "subnet": "10.3.0.0/24" }));
    let res = add_ok("a", &conf);
    assert_eq!(addresses(&res), ["10.3.0.2/24"]);
    assert_eq!(res["ips"][0]["gateway"], "10.3.0.1");

    let conf = sb.conf(
        "1.0.0",
        "net2",
        json!({
            "subnet": "10.3.1.0/24", "rangeStart": "10.3.1.100",
            "rangeEnd": "10.3.1.101", "gateway": "10.3.1.254"
        }),
    );
    let res = add_ok("a", &conf);
    assert_eq!(addresses(&res), ["10.3.1.100/24"]);
    assert_eq!(res["ips"][0]["gateway"], "10.3.1.254");
    assert_eq!(add_ip("b", &conf), "10.3.1.101");
    Call::add("c", &conf).run().err(100);
}

#[test]
fn excluded_addresses_and_cidrs_are_skipped() {
    let sb = Sandbox::new();
    let conf = sb.conf(
        "1.0.0",
        "net1",
        json!({
            "ranges": [[{ "subnet": "10.4.0.0/29" }]],
            "exclude": ["10.4.0.2", "10.4.0.4/31"]
        }),
    );
    assert_eq!(add_ip("a", &conf), "10.4.0.3");
    assert_eq!(add_ip("b", &conf), "10.4.0.6");
    let msg = Call::add("c", &conf).run().err_msg(100);
    assert!(msg.contains("no IP addresses available in range set"), "{msg}");

    let sb = Sandbox::new();
    let conf = sb.conf("1.0.0", "net1", json!({ "ranges": [[{ "subnet": "10.4.0.0/24" }]], "exclude": ["10.4.0.5"] }));
    let msg = Call::add("x", &conf).args("IP=10.4.0.5").run().err_msg(101);
    assert!(msg.contains("10.4.0.5"), "{msg}");
}

#[test]
fn a_gateway_inside_the_range_is_never_handed_out() {
    let sb = Sandbox::new();
    let conf = sb.conf("1.0.0", "net1", json!({ "ranges": [[{ "subnet": "10.5.0.0/29", "gateway": "10.5.0.4" }]] }));
    let mut got = Vec::new();
    for i in 0..5 {
        let res = add_ok(&format!("c{i}"), &conf);
        assert_eq!(res["ips"][0]["gateway"], "10.5.0.4");
        got.push(only_ip(&res));
    }
    got.sort();
    assert_eq!(got, ["10.5.0.1", "10.5.0.2", "10.5.0.3", "10.5.0.5", "10.5.0.6"]);
    Call::add("c5", &conf).run().err(100);
}

#[test]
fn invalid_subnet_on_add_names_the_field() {
    let sb = Sandbox::new();
    let conf = sb.conf("1.0.0", "net1", json!({ "ranges": [[{ "subnet": "10.0.0.0/24" }], [{ "subnet": "bogus" }]] }));
    let msg = Call::add("a", &conf).run().err_msg(7);
    assert!(msg.starts_with("ipam.ranges[1][0].subnet"), "{msg}");
    assert!(!sb.net_dir("net1").exists(), "a rejected config created a store");
}

// ---------------------------------------------------------------------------------------------
// Dual stack.
// ---------------------------------------------------------------------------------------------

#[test]
fn dual_stack_gives_one_address_per_range_set() {
    for v in ["0.4.0", "1.0.0"] {
        let sb = Sandbox::new();
        let conf = sb.conf(
            v,
            "net1",
            json!({ "ranges": [
                [{ "subnet": "10.6.0.0/24" }],
                [{ "subnet": "fd00:6::/64" }]
            ] }),
        );
        let res = add_ok("a", &conf);
        assert_eq!(addresses(&res), ["10.6.0.2/24", "fd00:6::2/64"], "{v}");
        assert_eq!(res["ips"][0]["gateway"], "10.6.0.1");
        assert_eq!(res["ips"][1]["gateway"], "fd00:6::1");
        if v == "0.4.0" {
            assert_eq!(res["ips"][0]["version"], "4");
            assert_eq!(res["ips"][1]["version"], "6");
        }
        assert_eq!(sb.lease_files("net1"), ["10.6.0.2", "fd00:6::2"]);
        assert_eq!(sb.owner_files("net1"), ["a:eth0"]);

        let res_b = add_ok("b", &conf);
        assert_eq!(addresses(&res_b), ["10.6.0.3/24", "fd00:6::3/64"]);

        Call::check("a", &with_prev_result(&conf, &res)).run().ok_silent();
        Call::del("a", &conf).run().ok_silent();
        assert_eq!(sb.lease_files("net1"), ["10.6.0.3", "fd00:6::3"]);
    }
}

// ---------------------------------------------------------------------------------------------
// Requested addresses.
// ---------------------------------------------------------------------------------------------

fn req_conf(sb: &Sandbox) -> Value {
    sb.conf_v4("1.0.0", "10.7.0.0/24")
}

#[test]
fn address_requested_through_cni_args() {
    let sb = Sandbox::new();
    let conf = req_conf(&sb);
    let res = Call::add("a", &conf).args("IgnoreUnknown=1;IP=10.7.0.50").run().ok_json();
    assert_eq!(addresses(&res), ["10.7.0.50/24"]);
    assert_eq!(sb.lease_files("net1"), ["10.7.0.50"]);
}

#[test]
fn address_requested_through_args_cni_ips() {
    let sb = Sandbox::new();
    let mut conf = req_conf(&sb);
    conf["args"] = json!({ "cni": { "ips": ["10.7.0.51"] } });
    assert_eq!(addresses(&add_ok("a", &conf)), ["10.7.0.51/24"]);
    conf["args"] = json!({ "cni": { "ips": ["10.7.0.61/24"] } });
    assert_eq!(addresses(&add_ok("b", &conf)), ["10.7.0.61/24"]);
}

#[test]
fn address_requested_through_runtime_config_ips() {
    let sb = Sandbox::new();
    let mut conf = req_conf(&sb);
    conf["runtimeConfig"] = json!({ "ips": ["10.7.0.52"] });
    assert_eq!(addresses(&add_ok("a", &conf)), ["10.7.0.52/24"]);
    conf["runtimeConfig"] = json!({ "ips": ["10.7.0.62/24"] });
    assert_eq!(addresses(&add_ok("b", &conf)), ["10.7.0.62/24"]);
}

#[test]
fn requested_dual_stack_addresses_each_go_to_their_family() {
    let sb = Sandbox::new();
    let mut conf =
        sb.conf("1.0.0", "net1", json!({ "ranges": [[{ "subnet": "10.7.0.0/24" }], [{ "subnet": "fd00:7::/64" }]] }));
    conf["runtimeConfig"] = json!({ "ips": ["fd00:7::99/64", "10.7.0.99/24"] });
    assert_eq!(addresses(&add_ok("a", &conf)), ["10.7.0.99/24", "fd00:7::99/64"]);
}

#[test]
fn a_requested_address_already_leased_is_101_naming_the_holder() {
    let sb = Sandbox::new();
    let conf = req_conf(&sb);
    Call::add("holder-1", &conf).args("IP=10.7.0.50").run().ok_json();
    Call::add("holder-2", &conf).args(&format!("{POD_ARGS};IP=10.7.0.60")).run().ok_json();

    let msg = Call::add("b", &conf).args("IP=10.7.0.50").run().err_msg(101);
    assert!(msg.contains("10.7.0.50") && msg.contains("holder-1"), "{msg}");

    let mut rc = conf.clone();
    rc["runtimeConfig"] = json!({ "ips": ["10.7.0.60/24"] });
    let msg = Call::add("b", &rc).run().err_msg(101);
    assert!(msg.contains("default/nginx"), "{msg}");

    assert_eq!(sb.lease_files("net1"), ["10.7.0.50", "10.7.0.60"]);
    assert_eq!(sb.owner_files("net1"), ["holder-1:eth0", "holder-2:eth0"], "a refused request left an index behind");
}

#[test]
fn a_requested_address_outside_the_ranges_is_101() {
    let sb = Sandbox::new();
    let conf = req_conf(&sb);
    let msg = Call::add("a", &conf).args("IP=10.8.0.1").run().err_msg(101);
    assert!(msg.contains("10.8.0.1"), "{msg}");

    let conf = sb.conf(
        "1.0.0",
        "net2",
        json!({ "ranges": [[{ "subnet": "10.7.0.0/24", "rangeStart": "10.7.0.10", "rangeEnd": "10.7.0.20" }]] }),
    );
    let mut rc = conf.clone();
    rc["runtimeConfig"] = json!({ "ips": ["10.7.0.21"] });
    Call::add("a", &rc).run().err(101);
    assert!(sb.lease_files("net2").is_empty());
}

#[test]
fn requesting_the_gateway_is_101() {
    let sb = Sandbox::new();
    let conf = req_conf(&sb);
    let msg = Call::add("a", &conf).args("IP=10.7.0.1").run().err_msg(101);
    assert!(msg.contains("10.7.0.1"), "{msg}");
    let mut a = conf.clone();
    a["args"] = json!({ "cni": { "ips": ["10.7.0.1/24"] } });
    Call::add("a", &a).run().err(101);
    assert!(sb.lease_files("net1").is_empty());
}

#[test]
fn a_requested_address_that_is_not_an_address_is_rejected() {
    let sb = Sandbox::new();
    let conf = req_conf(&sb);
    let msg = Call::add("a", &conf).args("IP=not-an-ip").run().err_msg(4);
    assert!(msg.contains("CNI_ARGS"), "{msg}");
    let mut rc = conf.clone();
    rc["runtimeConfig"] = json!({ "ips": ["10.7.0.300"] });
    let msg = Call::add("a", &rc).run().err_msg(7);
    assert!(msg.contains("runtimeConfig.ips"), "{msg}");
}

// ---------------------------------------------------------------------------------------------
// Idempotence.
// ---------------------------------------------------------------------------------------------

#[test]
fn repeated_add_returns_the_same_lease() {
    let sb = Sandbox::new();
    let conf = sb.conf_v4("1.0.0", "10.1.0.0/24");
    let first = add_ok("a", &conf);
    let second = add_ok("a", &conf);
    assert_eq!(first, second);
    assert_eq!(sb.lease_files("net1"), ["10.1.0.2"]);
    // Another interface of the same container is another attachment.
    let other = Call::add("a", &conf).ifname("net1").run().ok_json();
    assert_eq!(only_ip(&other), "10.1.0.3");
    assert_eq!(sb.owner_files("net1"), ["a:eth0", "a:net1"]);
    // The next container is not affected by the repeats.
    assert_eq!(add_ip("b", &conf), "10.1.0.4");
}

#[test]
fn repeated_add_asking_for_its_own_address_succeeds_and_for_another_is_101() {
    let sb = Sandbox::new();
    let conf = sb.conf_v4("1.0.0", "10.1.0.0/24");
    let first = Call::add("a", &conf).args("IP=10.1.0.9").run().ok_json();
    let again = Call::add("a", &conf).args("IP=10.1.0.9").run().ok_json();
    assert_eq!(first, again);
    Call::add("a", &conf).args("IP=10.1.0.10").run().err(101);
    assert_eq!(sb.lease_files("net1"), ["10.1.0.9"]);
}

#[test]
fn repeated_del_and_del_of_unknown_containers_succeed() {
    let sb = Sandbox::new();
    let conf = sb.conf_v4("1.0.0", "10.1.0.0/24");
    // No store at all yet.
    Call::del("ghost", &conf).run().ok_silent();
    assert!(!sb.net_dir("net1").exists(), "DEL must not create a store");

    add_ok("a", &conf);
    add_ok("b", &conf);
    Call::del("ghost", &conf).run().ok_silent();
    Call::del("a", &conf).run().ok_silent();
    Call::del("a", &conf).run().ok_silent();
    assert_eq!(sb.lease_files("net1"), ["10.1.0.3"], "b's lease must survive");
    assert_eq!(sb.owner_files("net1"), ["b:eth0"]);
}

#[test]
fn del_works_with_a_config_whose_ranges_are_invalid() {
    let sb = Sandbox::new();
    let conf = sb.conf_v4("1.0.0", "10.1.0.0/24");
    add_ok("a", &conf);
    for bad in [json!({ "ranges": [[{ "subnet": "bogus" }]] }), json!({ "subnet": "bogus" }), json!({})] {
        let broken = sb.conf("1.0.0", "net1", bad);
        Call::del("a", &broken).run().ok_silent();
    }
    assert!(sb.lease_files("net1").is_empty());
    assert!(sb.owner_files("net1").is_empty());
}

/// Issue 17, point 10: DEL fails only when it cannot find the store; bad values (or types) in
/// keys it does not use do not stop a node from tearing a pod down.
#[test]
fn del_ignores_bad_values_in_keys_it_does_not_use() {
    let sb = Sandbox::new();
    let conf = sb.conf_v4("1.0.0", "10.1.0.0/24");
    let bad = [
        ("logLevel", json!("verbose")),
        ("ranges", json!(5)),
        ("routes", json!("none")),
        ("exclude", json!({ "a": 1 })),
        ("mode", json!(7)),
        ("resolvConf", json!(["x"])),
        ("apiTimeoutSeconds", json!("slow")),
    ];
    for (i, (key, value)) in bad.iter().enumerate() {
        let id = format!("pod{i}");
        add_ok(&id, &conf);
        let mut broken = conf.clone();
        broken["ipam"][*key] = value.clone();
        Call::del(&id, &broken).run().ok_silent();
        assert!(sb.lease_files("net1").is_empty(), "DEL with {key}: {value} left the lease");
    }
    // Without a way to find the store it is still an error: code 7 naming the key.
    let mut relative = conf.clone();
    relative["ipam"]["dataDir"] = json!("relative/dir");
    assert!(Call::del("x", &relative).run().err_msg(7).contains("ipam.dataDir"));
    let mut no_name = conf.clone();
    no_name["name"] = json!(5);
    Call::del("x", &no_name).run().err(7);
}

#[test]
fn del_works_without_a_netns() {
    let sb = Sandbox::new();
    let conf = sb.conf_v4("1.0.0", "10.1.0.0/24");
    add_ok("a", &conf);
    add_ok("b", &conf);
    Call::del("a", &conf).env("CNI_NETNS", "").run().ok_silent();
    Call::del("b", &conf).unset("CNI_NETNS").run().ok_silent();
    assert!(sb.lease_files("net1").is_empty());
}

#[test]
fn add_without_a_netns_is_invalid_environment() {
    let sb = Sandbox::new();
    let conf = sb.conf_v4("1.0.0", "10.1.0.0/24");
    let msg = Call::add("a", &conf).unset("CNI_NETNS").run().err_msg(4);
    assert!(msg.contains("CNI_NETNS"), "{msg}");
}

// ---------------------------------------------------------------------------------------------
// Hostile names: nothing may be created or removed outside dataDir.
// ---------------------------------------------------------------------------------------------

/// A sandbox holding one lease, and a marker file beside dataDir.
fn populated() -> (Sandbox, Value) {
    let sb = Sandbox::new();
    let conf = sb.conf_v4("1.1.0", "10.1.0.0/24");
    add_ok("keep", &conf);
    std::fs::write(sb.root().join("x"), "marker").unwrap();
    std::fs::create_dir(sb.root().join("etc")).unwrap();
    (sb, conf)
}

#[test]
fn hostile_network_names_are_invalid_config() {
    let long = "n".repeat(300);
    for name in ["../x", "a/b", "..", "../../etc", ".hidden", long.as_str()] {
        let (sb, conf) = populated();
        let before = sb.tree();
        let mut bad = conf.clone();
        bad["name"] = json!(name);
        for call in [
            Call::add("c1", &bad),
            Call::del("keep", &bad),
            Call::check("keep", &bad),
            Call::verb("GC").conf(&bad),
            Call::verb("STATUS").conf(&bad),
        ] {
            let msg = call.run().err_msg(7);
            assert!(msg.starts_with("name"), "{name:?}: {msg}");
        }
        assert_eq!(sb.tree(), before, "{name:?} changed the file system");
    }
}

#[test]
fn hostile_container_ids_are_invalid_environment() {
    let long = "c".repeat(10 * 1024);
    for cid in ["../../etc", "../x", "a/b", "/etc/passwd", "..", long.as_str()] {
        let (sb, conf) = populated();
        let before = sb.tree();
        for verb in ["ADD", "DEL", "CHECK"] {
            let msg = Call::attach(verb, cid).conf(&conf).run().err_msg(4);
            assert!(msg.contains("CNI_CONTAINERID"), "{verb} {cid:.20}: {msg}");
        }
        assert_eq!(sb.tree(), before, "{cid:.20} changed the file system");
    }
}

#[test]
fn hostile_ifnames_are_invalid_environment() {
    for ifname in ["../x", "a/b", "..", "sixteen-chars-xx", "a-much-longer-interface-name"] {
        let (sb, conf) = populated();
        let before = sb.tree();
        for verb in ["ADD", "DEL", "CHECK"] {
            let msg = Call::attach(verb, "keep").ifname(ifname).conf(&conf).run().err_msg(4);
            assert!(msg.contains("CNI_IFNAME"), "{verb} {ifname}: {msg}");
        }
        assert_eq!(sb.tree(), before, "{ifname} changed the file system");
    }
}

#[test]
fn fifteen_byte_ifnames_and_long_container_ids_within_limits_work() {
    let sb = Sandbox::new();
    let conf = sb.conf_v4("1.0.0", "10.1.0.0/24");
    let cid = "f".repeat(64);
    let res = Call::add(&cid, &conf).ifname("fifteen-chars-x").run().ok_json();
    assert_eq!(only_ip(&res), "10.1.0.2");
    Call::del(&cid, &conf).ifname("fifteen-chars-x").run().ok_silent();
    assert!(sb.lease_files("net1").is_empty());
}

// ---------------------------------------------------------------------------------------------
// Malformed input.
// ---------------------------------------------------------------------------------------------

#[test]
fn stdin_that_is_not_a_json_object_is_code_6() {
    for stdin in [&b"{nope"[..], b"", b"   ", b"[]", b"\"text\"", b"\xff\xfe"] {
        let sb = Sandbox::new();
        Call::attach("ADD", "a").stdin(stdin).run().err(6);
        assert!(!sb.data_dir().exists());
    }
}

#[test]
fn missing_ipam_is_code_7() {
    let sb = Sandbox::new();
    let mut conf = sb.conf_v4("1.0.0", "10.1.0.0/24");
    conf.as_object_mut().unwrap().remove("ipam");
    let msg = Call::add("a", &conf).run().err_msg(7);
    assert!(msg.starts_with("ipam"), "{msg}");
}

#[test]
fn an_unknown_cni_version_is_code_1() {
    // 0.1.0, 0.2.0 and a missing cniVersion are spoken (tests/config.rs).
    let sb = Sandbox::new();
    let mut conf = sb.conf_v4("1.0.0", "10.1.0.0/24");
    for v in [json!("0.0.9"), json!("9.9.9"), json!("1.1")] {
        conf["cniVersion"] = v;
        Call::add("a", &conf).run().err(1);
    }
    assert!(!sb.data_dir().exists());
}

#[test]
fn a_field_of_the_wrong_type_is_code_7_naming_the_field() {
    let sb = Sandbox::new();
    let cases = [
        (json!({ "ranges": [[{ "subnet": 5 }]] }), "ipam.ranges[0][0].subnet"),
        (json!({ "ranges": "10.0.0.0/24" }), "ipam.ranges"),
        (json!({ "ranges": [[{ "subnet": "10.0.0.0/24" }]], "routes": "0.0.0.0/0" }), "ipam.routes"),
        (json!({ "ranges": [[{ "subnet": "10.0.0.0/24" }]], "exclude": [1] }), "ipam.exclude[0]"),
    ];
    for (ipam, field) in cases {
        let conf = sb.conf("1.0.0", "net1", ipam);
        let msg = Call::add("a", &conf).run().err_msg(7);
        assert!(msg.starts_with(field), "want {field}: {msg}");
    }
    let mut conf = sb.conf_v4("1.0.0", "10.0.0.0/24");
    conf["runtimeConfig"] = json!({ "ips": "10.0.0.5" });
    let msg = Call::add("a", &conf).run().err_msg(7);
    assert!(msg.starts_with("runtimeConfig.ips"), "{msg}");
    assert!(!sb.data_dir().exists());
}

#[test]

fn a_legacy_range_key_of_the_wrong_type_names_the_key() {
    let sb = Sandbox::new();
    for (ipam, field) in [
        (json!({ "subnet": 5 }), "ipam.subnet"),
        (json!({ "subnet": "10.0.0.0/24", "rangeStart": 7 }), "ipam.rangeStart"),
    ] {
        let conf = sb.conf("1.0.0", "net1", ipam);
        let msg = Call::add("a", &conf).run().err_msg(7);
        assert!(msg.starts_with(field), "want {field}: {msg}");
    }
}

#[test]
fn an_unknown_cni_command_is_code_4_in_the_callers_version() {
    let sb = Sandbox::new();
    let conf = sb.conf_v4("0.3.1", "10.1.0.0/24");
    for cmd in ["FROB", "add", ""] {
        let err = Call::attach(cmd, "a").conf(&conf).run().err(4);
        assert!(err["msg"].as_str().unwrap().contains("CNI_COMMAND"), "{cmd}: {err}");
        assert_eq!(err["cniVersion"], "0.3.1", "{cmd}: {err}");
    }
    assert!(!sb.data_dir().exists());
}

#[test]
fn missing_attachment_variables_are_code_4_naming_the_variable() {
    let sb = Sandbox::new();
    let conf = sb.conf_v4("1.0.0", "10.1.0.0/24");
    for verb in ["ADD", "DEL", "CHECK"] {
        for var in ["CNI_CONTAINERID", "CNI_IFNAME"] {
            let msg = Call::attach(verb, "a").unset(var).conf(&conf).run().err_msg(4);
            assert!(msg.contains(var), "{verb} without {var}: {msg}");
            let msg = Call::attach(verb, "a").env(var, "").conf(&conf).run().err_msg(4);
            assert!(msg.contains(var), "{verb} with empty {var}: {msg}");
        }
    }
    assert!(!sb.data_dir().exists());
}

// ---------------------------------------------------------------------------------------------
// How records sit on disk: the owner index is a second name of a lease record, and a DEL keeps
// its records in spare/ for the next ADD to overwrite.
// ---------------------------------------------------------------------------------------------

#[test]
fn a_released_record_is_reused_and_holds_only_the_new_lease() {
    use std::os::unix::fs::MetadataExt;
    let sb = Sandbox::new();
    let conf = sb.conf_v4("1.0.0", "10.9.0.0/24");
    let spare = sb.net_dir("net1").join("spare");
    // A long record (pod identity) released, then a shorter one written over it.
    let first = only_ip(&Call::add("long-one", &conf).args(POD_ARGS).run().ok_json());
    let inode = std::fs::metadata(sb.net_dir("net1").join("leases").join(&first)).unwrap().ino();
    Call::del("long-one", &conf).run().ok_silent();
    assert_eq!(common::names(&spare), std::slice::from_ref(&first));
    assert!(sb.lease_files("net1").is_empty() && sb.owner_files("net1").is_empty());

    let ip = add_ip("short", &conf);
    assert_ne!(ip, first, "the round robin goes on");
    assert!(common::names(&spare).is_empty(), "the spare was taken");
    let lease = sb.net_dir("net1").join("leases").join(&ip);
    assert_eq!(std::fs::metadata(&lease).unwrap().ino(), inode, "the same file, renamed");
    let rec = sb.lease("net1", &ip);
    assert_eq!(rec["ip"], ip.as_str(), "{rec}");
    assert_eq!(rec["containerID"], "short", "{rec}");
    for stale in ["podName", "podNamespace", "podUID"] {
        assert!(rec.get(stale).is_none(), "{stale} left over from the earlier record: {rec}");
    }
    // The index is the same file; CHECK and DEL read it as such.
    let owner = sb.net_dir("net1").join("owners").join(format!("short:{IFNAME}"));
    assert_eq!(std::fs::metadata(&owner).unwrap().ino(), inode);
    let result = Call::add("short", &conf).run().ok_json();
    Call::check("short", &with_prev_result(&conf, &result)).run().ok_silent();
    Call::del("short", &conf).run().ok_silent();
    assert!(sb.lease_files("net1").is_empty() && sb.owner_files("net1").is_empty());
}

#[test]
fn a_spare_that_is_not_a_lone_regular_file_is_dropped_never_written() {
    let sb = Sandbox::new();
    let conf = sb.conf_v4("1.0.0", "10.9.0.0/24");
    add_ip("first", &conf);
    let net = sb.net_dir("net1");
    let spare = net.join("spare");
    std::fs::create_dir_all(&spare).unwrap();
    // A file with a second name (as a crash between a DEL's two steps can leave), a symbolic
    // link and a FIFO: none may be written through.
    let victim = sb.root().join("victim");
    std::fs::write(&victim, "keep me").unwrap();
    std::fs::hard_link(&victim, spare.join("10.9.0.200")).unwrap();
    std::os::unix::fs::symlink(&victim, spare.join("10.9.0.201")).unwrap();
    let fifo = std::ffi::CString::new(spare.join("10.9.0.202").to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);

    let ip = add_ip("second", &conf);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
    assert_eq!(sb.lease("net1", &ip)["containerID"], "second");
    assert!(common::names(&spare).is_empty(), "{:?}", common::names(&spare));
    Call::del("second", &conf).run().ok_silent();
}

#[test]
fn the_log_file_is_written_when_there_is_something_to_log_and_never_fails_a_request() {
    let sb = Sandbox::new();
    let log = sb.root().join("podcidr.log");
    let with_log = |level: &str, file: &std::path::Path| {
        let mut c = sb.conf_v4("1.0.0", "10.9.0.0/24");
        c["ipam"]["logFile"] = json!(file);
        c["ipam"]["logLevel"] = json!(level);
        c
    };
    // At the default level an ADD has nothing to say, and the file is not even created.
    add_ip("quiet", &with_log("warn", &log));
    assert!(!log.exists());
    let ip = add_ip("told", &with_log("info", &log));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("ADD") && text.contains("told") && text.contains(&ip), "{text}");
    // A log file that cannot be opened: the request still succeeds, and says so on stderr.
    let nowhere = sb.root().join("no-such-dir").join("podcidr.log");
    let out = Call::add("unlogged", &with_log("info", &nowhere)).run();
    out.ok_json();
    let stderr = &out.stderr;
    assert!(stderr.contains("cannot open logFile") && stderr.contains("unlogged"), "{stderr}");
}

#[test]
fn a_request_started_with_stderr_closed_never_writes_its_logs_into_the_store() {
    let sb = Sandbox::new();
    let mut conf = sb.conf_v4("1.0.0", "10.9.0.0/24");
    conf["ipam"]["logLevel"] = json!("debug");
    add_ip("first", &conf);
    for (verb, cid) in [("ADD", "blind"), ("DEL", "first")] {
        let call = Call::attach(verb, cid).conf(&conf);
        let mut cmd = call.command();
        // SAFETY: close(2) is async-signal-safe and touches only the child.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::close(2);
                Ok(())
            });
        }
        let out = common::finish(cmd.spawn().unwrap(), &call.stdin, |_| {});
        assert_eq!(out.code(), Some(0), "{verb}: {out:?}");
    }
    // Had the lock or a record been opened as fd 2, the log lines would be in it.
    assert_eq!(String::from_utf8_lossy(&std::fs::read(sb.net_dir("net1").join("lock")).unwrap()), "");
    let leases = sb.lease_files("net1");
    assert_eq!(leases.len(), 1, "{leases:?}");
    assert_eq!(sb.lease("net1", &leases[0])["containerID"], "blind");
}

// ---------------------------------------------------------------------------------------------
// Pod identity and the status CLI.
// ---------------------------------------------------------------------------------------------

#[test]
fn pod_identity_is_recorded_and_shown_by_status() {
    let sb = Sandbox::new();
    let conf = sb.conf_v4("1.0.0", "10.9.0.0/24");
    let ip = only_ip(&Call::add("abc123", &conf).args(POD_ARGS).run().ok_json());
    assert_eq!(ip, "10.9.0.2");
    add_ok("plain", &conf);

    let rec = sb.lease("net1", &ip);
    assert_eq!(rec["podNamespace"], "default", "{rec}");
    assert_eq!(rec["podName"], "nginx", "{rec}");
    assert_eq!(rec["podUID"], "0b5f3d2e-1111-4c1e-9d7a-2f6c8e1a9b00", "{rec}");
    assert_eq!(rec["containerID"], "abc123", "{rec}");
    assert_eq!(rec["ifname"], IFNAME, "{rec}");
    assert_eq!(rec["netns"], "/var/run/netns/abc123", "{rec}");

    let data_dir = sb.data_dir();
    let dd = data_dir.to_str().unwrap();
    for args in [vec!["status", "--data-dir", dd], vec!["status", "--data-dir", dd, "--network", "net1"]] {
        let out = cli(&args);
        assert_eq!(out.code(), Some(0), "{out:?}");
        let lines: Vec<&str> = out.text().lines().map(str::trim).collect();
        assert!(lines.contains(&"10.9.0.2 (default/nginx)"), "{}", out.text());
        assert!(lines.contains(&"10.9.0.3 (plain)"), "{}", out.text());
        assert!(lines.contains(&"IPv4: 2/253 allocated from 10.9.0.0/24"), "{}", out.text());
    }

    let out = cli(&["status", "--data-dir", dd, "--json"]);
    assert_eq!(out.code(), Some(0), "{out:?}");
    let doc: Value = serde_json::from_str(out.text()).expect("status --json is JSON");
    let net = &doc["networks"][0];
    assert_eq!(net["name"], "net1", "{doc}");
    let leases = net["leases"].as_array().unwrap();
    assert_eq!(leases.len(), 2, "{doc}");
    assert_eq!(leases[0]["ip"], "10.9.0.2");
    assert_eq!(leases[0]["podName"], "nginx");
    assert_eq!(net["rangeSets"][0]["allocated"], 2, "{doc}");
    assert_eq!(net["rangeSets"][0]["capacity"], 253, "{doc}");
}

#[test]
fn status_cli_counts_dual_stack_and_rejects_unknown_networks() {
    let sb = Sandbox::new();
    let conf =
        sb.conf("1.0.0", "ds", json!({ "ranges": [[{ "subnet": "10.6.0.0/28" }], [{ "subnet": "fd00:6::/120" }]] }));
    add_ok("a", &conf);
    let dd = sb.data_dir();
    let out = cli(&["status", "--data-dir", dd.to_str().unwrap()]);
    assert_eq!(out.code(), Some(0), "{out:?}");
    let lines: Vec<&str> = out.text().lines().map(str::trim).collect();
    assert!(lines.contains(&"IPv4: 1/13 allocated from 10.6.0.0/28"), "{}", out.text());
    assert!(lines.contains(&"IPv6: 1/254 allocated from fd00:6::/120"), "{}", out.text());
    let out = cli(&["status", "--data-dir", dd.to_str().unwrap(), "--network", "nope"]);
    assert_ne!(out.code(), Some(0), "{out:?}");
}

#[test]
fn cli_version_names_the_spec_versions() {
    let out = cli(&["version"]);
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert!(out.text().contains("0.1.0, 0.2.0, 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0"), "{}", out.text());
}

// ---------------------------------------------------------------------------------------------
// Concurrency.
// ---------------------------------------------------------------------------------------------

#[test]
fn concurrent_adds_get_distinct_addresses() {
    const N: usize = 40;
    let sb = Sandbox::new();
    let conf =
        sb.conf("1.0.0", "net1", json!({ "ranges": [[{ "subnet": "10.10.0.0/24" }], [{ "subnet": "fd00:10::/64" }]] }));
    let results: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..N)
            .map(|i| {
                let conf = &conf;
                s.spawn(move || Call::add(&format!("pod-{i}"), conf).run())
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap().ok_json()).collect()
    });
    let mut seen = HashSet::new();
    for res in &results {
        let addrs = addresses(res);
        assert_eq!(addrs.len(), 2, "{res}");
        for a in addrs {
            assert!(seen.insert(a.clone()), "{a} handed out twice");
        }
    }
    assert_eq!(seen.len(), 2 * N);
    assert_eq!(sb.lease_files("net1").len(), 2 * N);
    assert_eq!(sb.owner_files("net1").len(), N);

    // Concurrent DELs release them all.
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..N)
            .map(|i| {
                let conf = &conf;
                s.spawn(move || Call::del(&format!("pod-{i}"), conf).run())
            })
            .collect();
        for h in handles {
            h.join().unwrap().ok_silent();
        }
    });
    assert!(sb.lease_files("net1").is_empty());
    assert!(sb.owner_files("net1").is_empty());
}

// ---------------------------------------------------------------------------------------------
// GC and STATUS.
// ---------------------------------------------------------------------------------------------

#[test]
fn gc_releases_attachments_not_listed() {
    let sb = Sandbox::new();
    let conf = sb.conf_v4("1.1.0", "10.11.0.0/24");
    let a = add_ok("a", &conf);
    let b = add_ok("b", &conf);
    let c = Call::add("c", &conf).ifname("net1").run().ok_json();
    assert_eq!(sb.lease_files("net1").len(), 3);

    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([
        { "containerID": "a", "ifname": "eth0" },
        { "containerID": "c", "ifname": "net1" },
        { "containerID": "gone", "ifname": "eth0" }
    ]);
    Call::verb("GC").conf(&gc).run().ok_silent();
    assert_eq!(sb.lease_files("net1"), [only_ip(&a), only_ip(&c)]);
    assert_eq!(sb.owner_files("net1"), ["a:eth0", "c:net1"]);

    Call::check("a", &with_prev_result(&conf, &a)).run().ok_silent();
    Call::check("b", &with_prev_result(&conf, &b)).run().err(102);

    // An empty list releases everything.
    gc["cni.dev/valid-attachments"] = json!([]);
    Call::verb("GC").conf(&gc).run().ok_silent();
    assert!(sb.lease_files("net1").is_empty());
    assert!(sb.owner_files("net1").is_empty());
}

/// Issue 17, point 11: as the CNI spec says, GC never releases a listed attachment, not even
/// one whose lease is from an earlier boot (an ADD reclaims such a lease when the range needs it).
#[test]
fn gc_never_releases_a_listed_attachment_even_of_an_earlier_boot() {
    let sb = Sandbox::new();
    let conf = sb.conf_v4("1.1.0", "10.11.1.0/24");
    let a = Call::add("a", &conf).env("PODCIDR_BOOT_ID", "boot-1").run().ok_json();
    Call::add("b", &conf).env("PODCIDR_BOOT_ID", "boot-1").run().ok_json();
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{ "containerID": "a", "ifname": "eth0" }]);
    Call::verb("GC").conf(&gc).env("PODCIDR_BOOT_ID", "boot-2").run().ok_silent();
    assert_eq!(sb.lease_files("net1"), [only_ip(&a)]);
    assert_eq!(sb.owner_files("net1"), ["a:eth0"]);
    // Without a list, earlier-boot leases go.
    Call::verb("GC").conf(&conf).env("PODCIDR_BOOT_ID", "boot-2").run().ok_silent();
    assert!(sb.lease_files("net1").is_empty());
}

#[test]
fn gc_matches_container_and_ifname_together() {
    let sb = Sandbox::new();
    let conf = sb.conf_v4("1.1.0", "10.11.0.0/24");
    add_ok("a", &conf);
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{ "containerID": "a", "ifname": "net1" }]);
    Call::verb("GC").conf(&gc).run().ok_silent();
    assert!(sb.lease_files("net1").is_empty());
}

#[test]
fn gc_on_a_network_without_a_store_succeeds_and_creates_nothing() {
    let sb = Sandbox::new();
    let mut gc = sb.conf_v4("1.1.0", "10.11.0.0/24");
    gc["cni.dev/valid-attachments"] = json!([]);
    Call::verb("GC").conf(&gc).run().ok_silent();
    assert!(!sb.net_dir("net1").exists());
}

#[test]
fn status_reports_50_when_a_range_is_exhausted() {
    let sb = Sandbox::new();
    // A /30: gateway .1 and one address, .2.
    let conf = sb.conf_v4("1.1.0", "10.12.0.0/30");
    Call::verb("STATUS").conf(&conf).run().ok_silent();
    assert_eq!(add_ip("a", &conf), "10.12.0.2");
    let msg = Call::verb("STATUS").conf(&conf).run().err_msg(50);
    assert!(msg.contains("no IP addresses available"), "{msg}");
    Call::add("b", &conf).run().err(100);
    Call::del("a", &conf).run().ok_silent();
    Call::verb("STATUS").conf(&conf).run().ok_silent();
}

#[test]
fn status_of_dual_stack_fails_when_either_family_is_full() {
    let sb = Sandbox::new();
    let conf = sb.conf(
        "1.1.0",
        "net1",
        json!({ "ranges": [
            [{ "subnet": "10.12.0.0/24" }],
            [{ "subnet": "fd00:12::/64", "rangeStart": "fd00:12::10", "rangeEnd": "fd00:12::10" }]
        ] }),
    );
    Call::verb("STATUS").conf(&conf).run().ok_silent();
    add_ok("a", &conf);
    let msg = Call::verb("STATUS").conf(&conf).run().err_msg(50);
    assert!(msg.contains("fd00:12::10"), "{msg}");
}

#[test]
fn status_with_an_invalid_config_is_code_7() {
    let sb = Sandbox::new();
    let conf = sb.conf("1.1.0", "net1", json!({ "ranges": [[{ "subnet": "bogus" }]] }));
    Call::verb("STATUS").conf(&conf).run().err(7);
}

// ---------------------------------------------------------------------------------------------
// Further host-local compatibility and store behaviour.
// ---------------------------------------------------------------------------------------------

#[test]

fn the_same_address_requested_through_two_sources_is_one_request() {
    let sb = Sandbox::new();
    let mut conf = req_conf(&sb);
    conf["runtimeConfig"] = json!({ "ips": ["10.7.0.5/24"] });
    let res = Call::add("a", &conf).args("IP=10.7.0.5").run().ok_json();
    assert_eq!(addresses(&res), ["10.7.0.5/24"]);
}

#[test]
fn two_different_addresses_for_one_range_set_are_refused() {
    let sb = Sandbox::new();
    let mut conf = req_conf(&sb);
    conf["runtimeConfig"] = json!({ "ips": ["10.7.0.6", "10.7.0.7"] });
    Call::add("a", &conf).run().err(101);
    assert!(sb.lease_files("net1").is_empty());
}

#[test]
fn a_dual_stack_add_that_fails_in_one_family_takes_nothing() {
    let sb = Sandbox::new();
    let conf = sb.conf(
        "1.0.0",
        "net1",
        json!({ "ranges": [
            [{ "subnet": "10.13.0.0/24" }],
            [{ "subnet": "fd00:13::/64", "rangeStart": "fd00:13::10", "rangeEnd": "fd00:13::10" }]
        ] }),
    );
    add_ok("a", &conf);
    let msg = Call::add("b", &conf).run().err_msg(100);
    assert!(msg.contains("no IP addresses available in range set: fd00:13::10-fd00:13::10"), "{msg}");
    assert_eq!(sb.lease_files("net1"), ["10.13.0.2", "fd00:13::10"]);
    assert_eq!(sb.owner_files("net1"), ["a:eth0"]);
}

#[test]
fn a_long_walk_through_taken_addresses_finds_the_next_free_one() {
    let sb = Sandbox::new();
    let conf = sb.conf_v4("1.0.0", "10.14.0.0/24");
    for i in 0..80 {
        add_ok(&format!("c{i}"), &conf);
    }
    // .2 through .81 are taken. Free .2 and take it back by request, so the round robin
    // continues after .2 and has to pass 79 taken addresses.
    Call::del("c0", &conf).run().ok_silent();
    Call::add("r", &conf).args("IP=10.14.0.2").run().ok_json();
    assert_eq!(add_ip("next", &conf), "10.14.0.82");
    assert_eq!(sb.lease_files("net1").len(), 81);
}

#[test]
fn leases_of_an_earlier_boot_are_reclaimed_when_the_range_is_full() {
    let sb = Sandbox::new();
    let conf = sb.conf_v4("1.0.0", "10.15.0.0/30");
    Call::add("old", &conf).env("PODCIDR_BOOT_ID", "boot-1").run().ok_json();
    Call::add("b", &conf).env("PODCIDR_BOOT_ID", "boot-1").run().err(100);
    let res = Call::add("b", &conf).env("PODCIDR_BOOT_ID", "boot-2").run().ok_json();
    assert_eq!(only_ip(&res), "10.15.0.2");
    assert_eq!(sb.lease("net1", "10.15.0.2")["containerID"], "b");
    assert_eq!(sb.owner_files("net1"), ["b:eth0"]);
}

#[test]
fn gc_without_a_list_releases_only_leases_of_earlier_boots() {
    let sb = Sandbox::new();
    let conf = sb.conf_v4("1.1.0", "10.16.0.0/24");
    Call::add("old", &conf).env("PODCIDR_BOOT_ID", "boot-1").run().ok_json();
    Call::add("new", &conf).env("PODCIDR_BOOT_ID", "boot-2").run().ok_json();
    Call::verb("GC").env("PODCIDR_BOOT_ID", "boot-2").conf(&conf).run().ok_silent();
    assert_eq!(sb.lease_files("net1"), ["10.16.0.3"]);
    assert_eq!(sb.owner_files("net1"), ["new:eth0"]);
}

#[test]
fn gc_accepts_the_older_attachments_key() {
    let sb = Sandbox::new();
    let conf = sb.conf_v4("1.1.0", "10.17.0.0/24");
    add_ok("a", &conf);
    add_ok("b", &conf);
    let mut gc = conf.clone();
    gc["cni.dev/attachments"] = json!([{ "containerID": "b", "ifname": "eth0" }]);
    Call::verb("GC").conf(&gc).run().ok_silent();
    assert_eq!(sb.lease_files("net1"), ["10.17.0.3"]);
}

#[test]
fn a_requested_address_moves_the_round_robin() {
    let sb = Sandbox::new();
    let conf = sb.conf_v4("1.0.0", "10.18.0.0/24");
    Call::add("a", &conf).args("IP=10.18.0.100").run().ok_json();
    assert_eq!(add_ip("b", &conf), "10.18.0.101");
}

#[test]
fn an_unusable_data_dir_is_an_io_error() {
    let sb = Sandbox::new();
    // dataDir is a regular file: no store can be made inside it.
    std::fs::write(sb.data_dir(), "not a directory").unwrap();
    let conf = sb.conf_v4("1.1.0", "10.19.0.0/24");
    Call::add("a", &conf).run().err(5);
    Call::verb("STATUS").conf(&conf).run().err(50);
    assert_eq!(std::fs::read_to_string(sb.data_dir()).unwrap(), "not a directory");
}

#[test]
fn a_route_without_a_cidr_dst_is_code_7() {
    let sb = Sandbox::new();
    let conf = sb.conf(
        "1.0.0",
        "net1",
        json!({
            "ranges": [[{ "subnet": "10.20.0.0/24" }]],
            "routes": [{ "dst": "0.0.0.0/0" }, { "gw": "10.20.0.1" }]
        }),
    );
    let msg = Call::add("a", &conf).run().err_msg(7);
    assert!(msg.starts_with("ipam.routes[1].dst"), "{msg}");
    assert!(sb.lease_files("net1").is_empty());
}
