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
    let b = Call::add("ctr-b", &conf).env("CNI_NETNS", "/nonexistent/netns-b").run().ok_json();
    let c = Call::add("ctr-c", &conf).run().ok_json();
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

    // DEL of imported pods releases their addresses.
    Call::del("pod-a", &conf).run().ok_silent();
    Call::del("pod-b", &conf).run().ok_silent();
    assert_eq!(sb.lease_files("net1"), vec!["10.40.0.4".to_string(), "fd00:40::3".to_string()]);

    // Importing again adopts nothing twice.
    let again = cli(&["import-host-local", "--from", from.to_str().unwrap(), "--network", "net1", "--data-dir", &dd]);
    assert_eq!(again.code(), Some(0), "{again:?}");
    assert!(again.text().contains("Adopted 3 lease(s)"), "pod-a and pod-b were released, so they are adopted again");
    let third = cli(&["import-host-local", "--from", from.to_str().unwrap(), "--network", "net1", "--data-dir", &dd]);
    assert!(third.text().contains("Adopted 0 lease(s)"), "{}", third.text());
    assert!(third.text().contains("already has a lease"), "{}", third.text());
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
