//! The operator commands: `podcidr gc` and `podcidr import-host-local`, and what the plugin
//! does with their results.

mod common;

use common::*;
use serde_json::{Value, json};
use std::fs;

fn data_dir_arg(sb: &Sandbox) -> String {
    sb.data_dir().to_string_lossy().into_owned()
}

#[test]
fn gc_is_a_dry_run_until_apply_and_releases_earlier_boot_leases() {
    let sb = Sandbox::new();
    let conf = sb.conf_v4("1.1.0", "10.30.0.0/24");
    let old = Call::add("old-boot", &conf).env("PODCIDR_BOOT_ID", "boot-a").run().ok_json();
    let live = Call::add("this-boot", &conf).env("PODCIDR_BOOT_ID", "boot-b").run().ok_json();
    let dd = data_dir_arg(&sb);
    let run = |extra: &[&str]| {
        let mut args = vec!["gc", "--data-dir", &dd];
        args.extend_from_slice(extra);
        Call::bare().env("PODCIDR_BOOT_ID", "boot-b").argv(&args).run()
    };

    let dry = run(&[]);
    assert_eq!(dry.code(), Some(0), "{dry:?}");
    assert!(dry.text().contains(&format!("would release {}", only_ip(&old))), "{}", dry.text());
    assert!(dry.text().contains("earlier boot (boot-a)"), "{}", dry.text());
    assert!(!dry.text().contains(&only_ip(&live)), "{}", dry.text());
    assert_eq!(sb.lease_files("net1").len(), 2, "a dry run released something");

    let applied = run(&["--apply"]);
    assert_eq!(applied.code(), Some(0), "{applied:?}");
    assert_eq!(sb.lease_files("net1"), vec![only_ip(&live)]);
    assert_eq!(sb.owner_files("net1"), vec!["this-boot:eth0".to_string()]);
}

#[test]
fn gc_keep_list_and_netns_gone() {
    let sb = Sandbox::new();
    let conf = sb.conf_v4("1.1.0", "10.31.0.0/24");
    let netns = sb.root().join("netns-a");
    fs::write(&netns, "").unwrap();
    let a = Call::add("ctr-a", &conf).env("CNI_NETNS", netns.to_str().unwrap()).run().ok_json();
    let b = Call::add("ctr-b", &conf).env("CNI_NETNS", sb.root().join("netns-b").to_str().unwrap()).run().ok_json();
    let c = Call::add("ctr-c", &conf).env("CNI_NETNS", netns.to_str().unwrap()).run().ok_json();
    let dd = data_dir_arg(&sb);

    let gone = cli(&["gc", "--data-dir", &dd, "--netns-gone", "--json"]);
    assert_eq!(gone.code(), Some(0), "{gone:?}");
    let report: Value = serde_json::from_str(gone.text()).unwrap();
    let stale: Vec<&str> = report[0]["stale"].as_array().unwrap().iter().map(|s| s["ip"].as_str().unwrap()).collect();
    assert!(stale.contains(&only_ip(&b).as_str()), "{report}");
    assert!(!stale.contains(&only_ip(&a).as_str()), "{report}");

    // Everything not kept goes: here only ctr-a (any ifname) and ctr-c:eth0 stay.
    let keep = sb.root().join("keep");
    fs::write(&keep, "ctr-c:eth0\n").unwrap();
    let out = cli(&["gc", "--data-dir", &dd, "--keep", "ctr-a", "--keep-from", keep.to_str().unwrap(), "--apply"]);
    assert_eq!(out.code(), Some(0), "{out:?}");
    let mut want = vec![only_ip(&a), only_ip(&c)];
    want.sort();
    assert_eq!(sb.lease_files("net1"), want);
}

/// Issue 17, point 8: `--netns-gone` where the netns paths are not visible (another mount or
/// PID namespace) refuses instead of releasing every lease; "cannot tell" counts as alive; a
/// network all of whose leases would go is refused unless --allow-all-netns-gone.
#[test]
fn gc_netns_gone_refuses_when_it_cannot_tell() {
    let run = |netns: &[&str], extra: &[&str]| {
        let sb = Sandbox::new();
        let conf = sb.conf_v4("1.1.0", "10.32.0.0/24");
        let dir = sb.root().join("netns");
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("alive"), "").unwrap();
        let mut ips = Vec::new();
        for (i, path) in netns.iter().enumerate() {
            let path = path.replace("DIR", dir.to_str().unwrap());
            ips.push(only_ip(&Call::add(&format!("c{i}"), &conf).env("CNI_NETNS", &path).run().ok_json()));
        }
        let dd = data_dir_arg(&sb);
        let mut argv = vec!["gc", "--data-dir", dd.as_str(), "--netns-gone", "--apply"];
        argv.extend_from_slice(extra);
        let out = cli(&argv);
        let left = sb.lease_files("net1");
        (out, ips, left)
    };
    // The directory is there: the missing entry is gone, the present one alive.
    let (out, ips, left) = run(&["DIR/alive", "DIR/gone"], &[]);
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert_eq!(left, [ips[0].clone()]);
    // The netns directory itself is missing here (a debug container): refused, nothing released.
    let (out, ips, left) = run(&["DIR/alive", "/nonexistent-netns-dir/x"], &[]);
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(out.stderr.contains("/nonexistent-netns-dir") && out.stderr.contains("Nothing was released"), "{out:?}");
    assert_eq!(left.len(), ips.len());
    // /proc/<pid>/ns/net depends on the PID namespace it is seen from: cannot tell, so alive.
    let (out, ips, left) = run(&["DIR/alive", "/proc/2147483646/ns/net"], &[]);
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert_eq!(left.len(), ips.len(), "{out:?}");
    // Every lease of the network would go: refused unless said explicitly.
    let (out, ips, left) = run(&["DIR/gone-1", "DIR/gone-2"], &[]);
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(out.stderr.contains("--allow-all-netns-gone"), "{out:?}");
    assert_eq!(left.len(), ips.len());
    let (out, _, left) = run(&["DIR/gone-1", "DIR/gone-2"], &["--allow-all-netns-gone"]);
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert!(left.is_empty());
}

/// A host-local store as host-local 1.x writes it, with one lease in the old id-only format.
fn host_local_dir(sb: &Sandbox) -> std::path::PathBuf {
    let dir = sb.root().join("networks").join("net1");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("10.40.0.2"), "pod-a\r\neth0").unwrap();
    fs::write(dir.join("fd00:40::2"), "pod-a\r\neth0").unwrap();
    fs::write(dir.join("10.40.0.3"), "pod-b").unwrap();
    fs::write(dir.join("last_reserved_ip.0"), "10.40.0.3").unwrap();
    fs::write(dir.join("lock"), "").unwrap();
    dir
}

#[test]
fn import_host_local_keeps_running_pods_addresses_and_their_del_works() {
    let sb = Sandbox::new();
    let from = host_local_dir(&sb);
    let conf =
        sb.conf("1.0.0", "net1", json!({ "ranges": [[{ "subnet": "10.40.0.0/24" }], [{ "subnet": "fd00:40::/64" }]] }));
    let conf_file = sb.root().join("net1.conf");
    fs::write(&conf_file, conf.to_string()).unwrap();
    let dd = data_dir_arg(&sb);
    let out = cli(&[
        "import-host-local",
        "--from",
        from.to_str().unwrap(),
        "--network",
        "net1",
        "--data-dir",
        &dd,
        "--conf",
        conf_file.to_str().unwrap(),
    ]);
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert!(out.text().contains("Adopted 3 lease(s) of 2 attachment(s)"), "{}", out.text());
    let rec = sb.lease("net1", "10.40.0.2");
    assert_eq!(rec["containerID"], "pod-a");
    assert_eq!(rec["subnet"], "10.40.0.0/24");
    assert_eq!(rec["gateway"], "10.40.0.1");
    assert_eq!(sb.lease("net1", "10.40.0.3")["ifname"], "eth0", "id-only leases get the default ifname");

    // A retried ADD of a running pod gets its address back; a new pod continues the round robin.
    let again = Call::add("pod-a", &conf).run().ok_json();
    assert_eq!(addresses(&again), vec!["10.40.0.2/24", "fd00:40::2/64"]);
    let new = Call::add("pod-new", &conf).run().ok_json();
    assert_eq!(addresses(&new)[0], "10.40.0.4/24");

    // The new pod's addresses are reserved in host-local's directory too, as host-local would.
    let mut hl = names_in(&from);
    assert_eq!(hl, ["10.40.0.2", "10.40.0.3", "10.40.0.4", "fd00:40::2", "fd00:40::3", "last_reserved_ip.0", "lock"]);
    assert_eq!(fs::read_to_string(from.join("10.40.0.4")).unwrap(), "pod-new\r\neth0");

    // DEL of imported pods releases their addresses, here and in host-local's directory.
    Call::del("pod-a", &conf).run().ok_silent();
    Call::del("pod-b", &conf).run().ok_silent();
    assert_eq!(sb.lease_files("net1"), vec!["10.40.0.4".to_string(), "fd00:40::3".to_string()]);
    hl = names_in(&from);
    assert_eq!(hl, ["10.40.0.4", "fd00:40::3", "last_reserved_ip.0", "lock"]);
    // The link stays until unlink-host-local (issue 17, point 2): a DEL cannot know that no
    // runtime will call host-local again.
    let st = status_network(&status_json(&sb.data_dir()), "net1").clone();
    assert_eq!(st["hostLocalLink"], json!(fs::canonicalize(&from).unwrap()));

    // Importing again adopts nothing twice.
    let again = cli(&["import-host-local", "--from", from.to_str().unwrap(), "--network", "net1", "--data-dir", &dd]);
    assert_eq!(again.code(), Some(0), "{again:?}");
    assert!(again.text().contains("Adopted 0 lease(s)"), "{}", again.text());
    assert!(again.text().contains("same owner: 2 lease(s)"), "{}", again.text());
}

fn names_in(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    names
}

#[test]
fn import_refuses_a_hostile_network_name() {
    let sb = Sandbox::new();
    let from = host_local_dir(&sb);
    let dd = data_dir_arg(&sb);
    let out = cli(&["import-host-local", "--from", from.to_str().unwrap(), "--network", "../x", "--data-dir", &dd]);
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(!sb.root().join("x").exists());
}

#[test]
fn after_a_reboot_a_reused_container_id_gets_a_fresh_lease_not_the_stale_one() {
    let sb = Sandbox::new();
    let conf = sb.conf_v4("1.0.0", "10.32.0.0/24");
    let before = Call::add("same-id", &conf).env("PODCIDR_BOOT_ID", "boot-1").run().ok_json();
    let after = Call::add("same-id", &conf).env("PODCIDR_BOOT_ID", "boot-2").run().ok_json();
    assert_ne!(only_ip(&before), only_ip(&after));
    assert_eq!(sb.lease_files("net1"), vec![only_ip(&after)], "the stale lease is released");
    assert_eq!(sb.lease("net1", &only_ip(&after))["bootID"], "boot-2");
}

#[test]
fn a_record_damaged_before_this_boot_is_reclaimed_but_one_damaged_since_is_kept() {
    let sb = Sandbox::new();
    let conf = sb.conf_v4("1.1.0", "10.33.0.0/24");
    Call::add("live", &conf).run().ok_json();
    let leases = sb.net_dir("net1").join("leases");
    let old = leases.join("10.33.0.9");
    fs::write(&old, "{ half a reco").unwrap();
    fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(946_684_800))
        .unwrap();
    fs::write(leases.join("10.33.0.10"), "{ damaged today").unwrap();

    let dry = cli(&["gc", "--data-dir", &data_dir_arg(&sb)]);
    assert!(dry.text().contains("would release 10.33.0.9 (unreadable record"), "{}", dry.text());
    assert!(!dry.text().contains("10.33.0.10"), "{}", dry.text());

    // CNI GC without a list does the same.
    Call::bare().env("CNI_COMMAND", "GC").conf(&conf).run().ok_silent();
    let mut left = sb.lease_files("net1");
    left.sort();
    assert_eq!(left, vec!["10.33.0.10".to_string(), "10.33.0.2".to_string()]);
}

#[test]
fn the_cli_ends_quietly_when_its_reader_goes_away() {
    use std::os::unix::process::ExitStatusExt;
    for args in [&["version"][..], &["status", "--data-dir", "/nonexistent-is-fine-for-this"][..]] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = std::process::Command::new(BIN)
            .args(args)
            .env_clear()
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        if args[0] == "version" {
            assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{args:?}: {:?} {stderr}", out.status);
        }
    }
}

/// Two leases of 64-character container IDs, as CRI runtimes make them.
fn two_long_ids(sb: &Sandbox) -> (String, String, String, String) {
    let conf = sb.conf_v4("1.1.0", "10.34.0.0/24");
    let a = format!("{}{}", "a1b2c3d4e5f6", "0".repeat(52));
    let b = format!("{}{}", "a1b2c3ffffff", "1".repeat(52));
    let ip_a = only_ip(&Call::add(&a, &conf).fixed_boot().run().ok_json());
    let ip_b = only_ip(&Call::add(&b, &conf).fixed_boot().run().ok_json());
    (a, ip_a, b, ip_b)
}

fn gc_cli(sb: &Sandbox, extra: &[&str], stdin: &str) -> Out {
    let dd = data_dir_arg(sb);
    let mut args = vec!["gc", "--data-dir", &dd];
    args.extend_from_slice(extra);
    Call::bare().fixed_boot().argv(&args).stdin(stdin.as_bytes()).run()
}

#[test]
fn gc_refuses_an_empty_keep_list_unless_allowed() {
    let sb = Sandbox::new();
    let (_, ip_a, _, ip_b) = two_long_ids(&sb);
    // `crictl pods -q` with the runtime down prints nothing.
    for (extra, stdin) in [(&["--keep-from", "-", "--apply"][..], ""), (&["--keep", "", "--apply"][..], "")] {
        let out = gc_cli(&sb, extra, stdin);
        assert_eq!(out.code(), Some(1), "{extra:?}: {out:?}");
        assert!(out.stderr.contains("empty") && out.stderr.contains("--allow-empty-keep"), "{out:?}");
        assert_eq!(sb.lease_files("net1").len(), 2, "{extra:?} released leases");
    }
    let out = gc_cli(&sb, &["--keep-from", "-", "--allow-empty-keep", "--apply"], "\n");
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert!(out.text().contains(&format!("released {ip_a}")) && out.text().contains(&format!("released {ip_b}")));
    assert!(sb.lease_files("net1").is_empty());
}

#[test]
fn gc_keep_matches_unique_id_prefixes_and_refuses_a_list_matching_nothing() {
    let sb = Sandbox::new();
    let (a, ip_a, _, ip_b) = two_long_ids(&sb);

    // `podman ps -q` prints 12-character IDs.
    let out = gc_cli(&sb, &["--keep-from", "-"], &format!("{}\n", &a[..12]));
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert!(out.text().contains(&format!("would release {ip_b}")), "{}", out.text());
    assert!(!out.text().contains(&ip_a), "the prefix kept {a}: {}", out.text());

    // A prefix of both IDs is ambiguous: an error naming both.
    let out = gc_cli(&sb, &["--keep", "a1b2c3", "--apply"], "");
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(out.stderr.contains("ambiguous") && out.stderr.contains(&a), "{out:?}");
    assert_eq!(sb.lease_files("net1").len(), 2);

    // IDs of another runtime (or another node) match nothing: refused, nothing released.
    let out = gc_cli(&sb, &["--keep-from", "-", "--apply"], "deadbeef0001\ndeadbeef0002\n");
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(out.stderr.contains("none of") && out.stderr.contains("--allow-no-match"), "{out:?}");
    assert_eq!(sb.lease_files("net1").len(), 2);
    let out = gc_cli(&sb, &["--keep-from", "-", "--allow-no-match", "--apply"], "deadbeef0001\n");
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert!(sb.lease_files("net1").is_empty());
}

#[test]
fn status_and_gc_on_a_missing_or_empty_data_dir_say_there_are_no_networks() {
    let sb = Sandbox::new();
    let missing = sb.root().join("missing");
    let out = cli(&["status", "--data-dir", missing.to_str().unwrap()]);
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert!(out.text().contains("No networks in"), "{out:?}");
    let json = cli(&["status", "--data-dir", missing.to_str().unwrap(), "--json"]);
    assert_eq!(json.code(), Some(0), "{json:?}");
    assert_eq!(json.single_json()["networks"], json!([]));
    fs::create_dir_all(sb.data_dir()).unwrap();
    for dir in [missing.to_str().unwrap(), &data_dir_arg(&sb)] {
        let out = cli(&["gc", "--data-dir", dir]);
        assert_eq!(out.code(), Some(0), "{out:?}");
        assert!(out.text().contains("No networks in"), "{out:?}");
    }
}

#[test]
fn network_names_from_the_command_line_follow_the_cni_rules() {
    let sb = Sandbox::nested();
    let conf = sb.conf_v4("1.1.0", "10.35.0.0/24");
    Call::add("victim", &conf).env("PODCIDR_BOOT_ID", "boot-old").run().ok_json();
    // A look-alike store outside the data directory, reachable with `..`.
    let outside = sb.root().join("a/b/outside");
    fs::create_dir_all(outside.parent().unwrap()).unwrap();
    let copy = std::process::Command::new("cp").arg("-a").arg(sb.net_dir("net1")).arg(&outside).status().unwrap();
    assert!(copy.success());
    let dd = data_dir_arg(&sb);
    let before = sb.tree();
    for name in ["../outside", outside.to_str().unwrap(), "a/b", ".hidden", ""] {
        for args in [
            vec!["status", "--data-dir", &dd, "--network", name],
            vec!["gc", "--data-dir", &dd, "--network", name, "--apply"],
        ] {
            let out = Call::bare().env("PODCIDR_BOOT_ID", "boot-new").argv(&args).run();
            assert_eq!(out.code(), Some(1), "{args:?}: {out:?}");
            assert!(out.stderr.contains("network name"), "{args:?}: {out:?}");
        }
    }
    assert_eq!(sb.tree(), before, "a refused command changed files");
}

#[test]
fn gc_help_explains_every_option() {
    let out = cli(&["gc", "--help"]);
    assert_eq!(out.code(), Some(0), "{out:?}");
    for opt in ["--data-dir", "--network", "--json", "--keep", "--apply", "--allow-empty-keep", "--allow-no-match"] {
        let line = out.text().lines().find(|l| l.trim_start().starts_with(opt)).unwrap_or_else(|| panic!("{opt}"));
        let described = line.trim_start().len() > opt.len() + 10
            || out.text().lines().skip_while(|l| !l.trim_start().starts_with(opt)).nth(1).is_some_and(|n| {
                let n = n.trim_start();
                !n.is_empty() && !n.starts_with('-')
            });
        assert!(described, "{opt} has no help text:\n{}", out.text());
    }
}

#[test]
fn status_names_the_interface_when_a_container_has_several() {
    let sb = Sandbox::new();
    let conf = sb.conf_v4("1.1.0", "10.36.0.0/24");
    let args = "K8S_POD_NAMESPACE=default;K8S_POD_NAME=multi";
    let eth0 = only_ip(&Call::add("multi", &conf).args(args).run().ok_json());
    let net1 = only_ip(&Call::add("multi", &conf).args(args).ifname("net1").run().ok_json());
    let single =
        only_ip(&Call::add("single", &conf).args("K8S_POD_NAMESPACE=default;K8S_POD_NAME=one").run().ok_json());
    let out = cli(&["status", "--data-dir", &data_dir_arg(&sb)]);
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert!(out.text().contains(&format!("{eth0} (default/multi, eth0)")), "{}", out.text());
    assert!(out.text().contains(&format!("{net1} (default/multi, net1)")), "{}", out.text());
    assert!(out.text().contains(&format!("{single} (default/one)\n")), "{}", out.text());
}

#[test]
fn status_and_gc_escape_control_characters_from_outside() {
    let sb = Sandbox::new();
    let conf = sb.conf_v4("1.1.0", "10.37.0.0/24");
    let evil = "K8S_POD_NAMESPACE=default;K8S_POD_NAME=x\u{1b}]0;pwned\u{7}\u{1b}[2J";
    let netns = sb.root().join("\u{1b}[31mred");
    Call::add("evil", &conf).args(evil).env("CNI_NETNS", netns.to_str().unwrap()).run().ok_json();
    fs::write(sb.net_dir("net1").join("leases").join("junk\u{1b}[5m"), "{").unwrap();
    let dd = data_dir_arg(&sb);
    for args in
        [vec!["status", "--data-dir", &dd], vec!["gc", "--data-dir", &dd, "--netns-gone", "--allow-all-netns-gone"]]
    {
        let out = cli(&args);
        assert_eq!(out.code(), Some(0), "{out:?}");
        assert!(!out.stdout.iter().any(|&b| b == 0x1b || b == 0x07), "{args:?} printed a control character: {out:?}");
        assert!(out.text().contains("\\u{1b}"), "{args:?}: {}", out.text());
    }
}

/// Runs `podcidr <args>` with `dir` bind-mounted read-only in a private mount namespace; `None`
/// (with a message) where that is not possible (not root, no unshare).
fn on_read_only(dir: &std::path::Path, args: &[&str]) -> Option<Out> {
    let d = dir.to_str().unwrap();
    let script = format!("mount --bind '{d}' '{d}' && mount -o remount,ro,bind '{d}' && exec \"$0\" \"$@\"");
    let probe = std::process::Command::new("unshare").args(["-m", "sh", "-c", &script, "true"]).output();
    if !probe.as_ref().is_ok_and(|o| o.status.success()) {
        eprintln!("SKIPPED: cannot bind-mount read-only here (needs root and unshare -m): {probe:?}");
        return None;
    }
    let mut argv = vec!["-m", "sh", "-c", &script, BIN];
    argv.extend_from_slice(args);
    let out = std::process::Command::new("unshare")
        .args(&argv)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("PODCIDR_BOOT_ID", BOOT_ID)
        .output()
        .unwrap();
    Some(Out { status: out.status, stdout: out.stdout, stderr: String::from_utf8_lossy(&out.stderr).into_owned() })
}

#[test]
fn status_and_a_gc_dry_run_work_on_a_read_only_store() {
    let sb = Sandbox::new();
    let conf = sb.conf_v4("1.1.0", "10.38.0.0/24");
    let live = only_ip(&Call::add("live", &conf).fixed_boot().run().ok_json());
    let old = only_ip(&Call::add("old", &conf).env("PODCIDR_BOOT_ID", "boot-old").run().ok_json());
    let dd = data_dir_arg(&sb);
    let before = sb.tree();
    let Some(status) = on_read_only(&sb.data_dir(), &["status", "--data-dir", &dd]) else { return };
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(status.text().contains(&format!("  {live} (live)")), "{status:?}");
    let gc = on_read_only(&sb.data_dir(), &["gc", "--data-dir", &dd]).unwrap();
    assert_eq!(gc.code(), Some(0), "{gc:?}");
    assert!(gc.text().contains(&format!("would release {old}")), "{gc:?}");
    // --apply needs to write: it fails and says why.
    let apply = on_read_only(&sb.data_dir(), &["gc", "--data-dir", &dd, "--apply"]).unwrap();
    assert_eq!(apply.code(), Some(1), "{apply:?}");
    assert!(apply.stderr.contains("Read-only file system"), "{apply:?}");
    assert_eq!(sb.tree(), before);
}

#[test]
fn import_prints_its_report_after_unlocking_so_a_slow_reader_blocks_no_add() {
    let sb = Sandbox::new();
    // Enough leases that the report overflows a pipe's buffer (64 KiB).
    let from = sb.root().join("networks").join("net1");
    fs::create_dir_all(&from).unwrap();
    fs::write(from.join("lock"), "").unwrap();
    for i in 0..1500u32 {
        let ip = format!("10.39.{}.{}", 1 + i / 200, 1 + i % 200);
        fs::write(from.join(&ip), format!("{:064x}\r\neth0", i + 1)).unwrap();
    }
    let dd = data_dir_arg(&sb);
    let (reader, writer) = std::io::pipe().unwrap();
    let mut import = std::process::Command::new(BIN)
        .args(["import-host-local", "--from", from.to_str().unwrap(), "--network", "net1", "--data-dir", &dd])
        .env_clear()
        .stdout(writer)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Once the import has written what the pipe holds, it is blocked on the reader.
    let pipe_full = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while sb.lease_files("net1").len() < 1500 && std::time::Instant::now() < pipe_full {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(sb.lease_files("net1").len(), 1500, "the import did not finish adopting");

    let conf = sb.conf("1.0.0", "net1", json!({ "ranges": [[{ "subnet": "10.39.0.0/16" }]] }));
    let mut add = Call::add("new-pod", &conf).spawn();
    {
        use std::io::Write;
        add.stdin.take().unwrap().write_all(conf.to_string().as_bytes()).unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let finished = loop {
        if let Some(status) = add.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    // Let the import finish either way before judging.
    let drained = std::io::read_to_string(reader).unwrap();
    assert!(import.wait().unwrap().success());
    let _ = add.kill();
    let status = finished.expect("ADD blocked while the import's reader was not reading");
    assert!(status.success(), "{status:?}");
    assert!(drained.contains("Adopted 1500 lease(s)"), "{}", &drained[..200.min(drained.len())]);
}
