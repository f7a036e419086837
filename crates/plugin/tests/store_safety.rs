//! The store under a hostile or unlucky node (issue 10, points 4, 5, 7, 8, 9): STATUS tells the
//! truth after a reboot and on a store that cannot be written, and asks without creating
//! anything; a requested address left by an earlier boot is granted; nothing the store or the
//! logger opens can hang a request; no symbolic link under the network directory is followed;
//! a damaged owner index does not make DEL forget leases.

mod common;

use common::{Call, Out, Sandbox, is_root, only_ip, result_ips};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn boot(call: Call, id: &str) -> Call {
    call.env("PODCIDR_BOOT_ID", id)
}

fn status(conf: &Value) -> Call {
    Call::verb("STATUS").conf(conf)
}

/// Runs `call`, killing it if it has not finished by the deadline: `None` then (a hang).
fn run_within(call: &Call, limit: Duration) -> Option<Out> {
    let mut child = call.spawn();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        let _ = stdin.write_all(&call.stdin);
    }
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            let out = child.wait_with_output().expect("output");
            return Some(Out {
                status: out.status,
                stdout: out.stdout,
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo {}", path.display());
}

/// Every file under `dir` with its content (directories as "<dir>"), not following links.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(base).unwrap().to_path_buf();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                out.insert(rel, "<dir>".into());
                walk(base, &path, out);
            } else {
                out.insert(rel, std::fs::read_to_string(&path).unwrap_or_else(|_| "<unreadable>".into()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn dual_conf(sb: &Sandbox, v4: &str, v6: &str) -> Value {
    sb.conf("1.1.0", "net1", json!({ "ranges": [[{ "subnet": v4 }], [{ "subnet": v6 }]] }))
}

// ---------------------------------------------------------------------------------------------
// 4. STATUS
// ---------------------------------------------------------------------------------------------

#[test]
fn status_counts_leases_of_an_earlier_boot_as_free() {
    let sb = Sandbox::new();
    // 10.40.0.2-10.40.0.6: five addresses, all taken before a reboot.
    let conf = sb.conf_v4("1.1.0", "10.40.0.0/29");
    for i in 0..5 {
        boot(Call::add(&format!("old{i}"), &conf), "boot-1").run().ok_json();
    }
    let msg = boot(status(&conf), "boot-1").run().err_msg(50);
    assert!(msg.contains("no IP addresses available"), "{msg}");
    // After the reboot the runtime asks STATUS before it sends any ADD: the answer must be yes,
    // since an ADD reclaims one of those leases.
    boot(status(&conf), "boot-2").run().ok_silent();
    let ip = only_ip(&boot(Call::add("new", &conf), "boot-2").run().ok_json());
    assert_eq!(sb.lease("net1", &ip)["containerID"], "new");
    // Reclaimed leases are gone; STATUS still yes while reclaimable ones remain.
    boot(status(&conf), "boot-2").run().ok_silent();
    // Full of leases of this boot: no.
    for i in 0..4 {
        boot(Call::add(&format!("new{i}"), &conf), "boot-2").run().ok_json();
    }
    let msg = boot(status(&conf), "boot-2").run().err_msg(50);
    assert!(msg.contains("no IP addresses available"), "{msg}");
}

#[test]
fn status_of_dual_stack_counts_reclaimable_leases_per_family() {
    let sb = Sandbox::new();
    // One v4 address and one v6 address in all.
    let conf = sb.conf(
        "1.1.0",
        "net1",
        json!({ "ranges": [[{ "subnet": "10.41.0.0/30" }], [{ "subnet": "fd00:41::/126", "rangeStart": "fd00:41::2" }]] }),
    );
    boot(Call::add("old", &conf), "boot-1").run().ok_json();
    boot(status(&conf), "boot-2").run().ok_silent();
    boot(Call::add("new", &conf), "boot-2").run().ok_json();
    boot(status(&conf), "boot-2").run().err(50);
}

#[test]
fn status_creates_nothing() {
    let sb = Sandbox::new();
    let conf = sb.conf_v4("1.1.0", "10.42.0.0/24");
    // No store yet, not even the data directory: an ADD could create it, so yes, and nothing
    // appears.
    status(&conf).run().ok_silent();
    assert!(sb.tree().is_empty(), "STATUS created {:?}", sb.tree());
    // A store whose subdirectories are missing (an ADD killed right after creating the lock):
    // still created by nobody but ADD.
    std::fs::create_dir_all(sb.net_dir("net1")).unwrap();
    std::fs::write(sb.net_dir("net1").join("lock"), "").unwrap();
    let before = sb.tree();
    status(&conf).run().ok_silent();
    assert_eq!(sb.tree(), before, "STATUS changed the store");
    Call::add("a", &conf).run().ok_json();
    let before = snapshot(&sb.data_dir());
    status(&conf).run().ok_silent();
    assert_eq!(snapshot(&sb.data_dir()), before, "STATUS changed the store");
}

/// A tmpfs mounted on a fresh temporary directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(opts: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let st = Command::new("mount").args(["-t", "tmpfs", "-o", opts, "tmpfs"]).arg(dir.path()).status().unwrap();
        assert!(st.success(), "mount -t tmpfs -o {opts} failed: {st}");
        Tmpfs { dir }
    }

    fn remount(&self, opts: &str) {
        let st = Command::new("mount").args(["-o", &format!("remount,{opts}")]).arg(self.dir.path()).status().unwrap();
        assert!(st.success(), "remount {opts} failed: {st}");
    }

    fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let p = self.dir.path();
        if !Command::new("umount").arg(p).status().is_ok_and(|s| s.success()) {
            let _ = Command::new("umount").arg("-l").arg(p).status();
        }
    }
}

fn root_only(what: &str) -> bool {
    if is_root() {
        return true;
    }
    assert_ne!(std::env::var("PODCIDR_E2E").as_deref(), Ok("1"), "PODCIDR_E2E=1 but not root: {what} needs root");
    eprintln!("skipped: not root");
    false
}

#[test]
fn status_is_50_on_a_read_only_store() {
    if !root_only("mounting a tmpfs") {
        return;
    }
    let fs = Tmpfs::mount("size=1m");
    let data = fs.path().join("data");
    let conf = common::conf(&data, "1.1.0", "ro", json!({ "ranges": [[{ "subnet": "10.43.0.0/24" }]] }));
    Call::add("a", &conf).run().ok_json();
    status(&conf).run().ok_silent();
    fs.remount("ro");
    let msg = status(&conf).run().err_msg(50);
    assert!(msg.contains("read-only") || msg.contains("Read-only"), "{msg}");
    Call::add("b", &conf).run().err(5);
    // A network without a store on that read-only file system: its first ADD could not create it.
    let other = common::conf(&data, "1.1.0", "other", json!({ "ranges": [[{ "subnet": "10.44.0.0/24" }]] }));
    let msg = status(&other).run().err_msg(50);
    assert!(msg.contains("read-only") || msg.contains("Read-only"), "{msg}");
    fs.remount("rw");
    status(&conf).run().ok_silent();
}

#[test]
fn status_is_50_when_the_file_system_is_full_until_a_del_makes_room() {
    if !root_only("mounting a tmpfs") {
        return;
    }
    // Out of pages and out of inodes, at each parity (as crash.rs fills them).
    for opts in ["size=64k,nr_inodes=64", "size=60k,nr_inodes=64", "size=1m,nr_inodes=13", "size=1m,nr_inodes=14"] {
        let fs = Tmpfs::mount(opts);
        let data = fs.path().join("data");
        let conf = common::conf(&data, "1.1.0", "full", json!({ "ranges": [[{ "subnet": "10.45.0.0/16" }]] }));
        let mut granted = Vec::new();
        // STATUS says yes exactly when the ADD that follows succeeds.
        let failed = loop {
            let id = format!("c{}", granted.len());
            let said = status(&conf).run();
            let out = Call::add(&id, &conf).run();
            assert_eq!(said.code() == Some(0), out.code() == Some(0), "{opts}: STATUS {said:?}\nbut ADD {out:?}");
            if out.code() == Some(0) {
                granted.push(id);
            } else {
                out.err(5);
                break id;
            }
            assert!(granted.len() < 1000, "{opts}: the file system never filled");
        };
        let msg = status(&conf).run().err_msg(50);
        assert!(msg.contains("full"), "{opts}: {msg}");
        Call::del(&failed, &conf).run().ok_silent();
        status(&conf).run().err(50);
        // A DEL makes room (or leaves its record for the next ADD to reuse): STATUS says yes.
        Call::del(&granted[0], &conf).run().ok_silent();
        let said = status(&conf).run();
        assert_eq!(said.code(), Some(0), "{opts}: after a DEL: {said:?}");
        Call::add("after-del", &conf).run().ok_json();
        let said = status(&conf).run();
        let out = Call::add("one-too-many", &conf).run();
        assert_eq!(said.code() == Some(0), out.code() == Some(0), "{opts}: STATUS {said:?}\nbut ADD {out:?}");
    }
}

/// Issue 17, point 5: on a full file system a config change (which changes `pool.json`) does not
/// fail the ADD that STATUS said could succeed: `pool.json` only feeds `podcidr status`.
#[test]
fn a_config_change_on_a_full_file_system_does_not_fail_add_on_pool_json() {
    if !root_only("mounting a tmpfs") {
        return;
    }
    for opts in ["size=64k,nr_inodes=64", "size=1m,nr_inodes=13"] {
        let fs = Tmpfs::mount(opts);
        let data = fs.path().join("data");
        let conf = common::conf(&data, "1.1.0", "full", json!({ "ranges": [[{ "subnet": "10.46.0.0/16" }]] }));
        let mut granted = Vec::new();
        loop {
            let id = format!("c{}", granted.len());
            if Call::add(&id, &conf).run().code() != Some(0) {
                Call::del(&id, &conf).run().ok_silent();
                break;
            }
            granted.push(id);
            assert!(granted.len() < 1000, "{opts}: the file system never filled");
        }
        // A DEL leaves its record for the next ADD to reuse.
        Call::del(&granted[0], &conf).run().ok_silent();
        let mut changed = conf.clone();
        changed["ipam"]["exclude"] = json!(["10.46.255.254"]);
        status(&changed).run().ok_silent();
        let res = Call::add("after-change", &changed).run().ok_json();
        assert!(only_ip(&res).starts_with("10.46."), "{opts}: {res}");
    }
}

// ---------------------------------------------------------------------------------------------
// 5. A requested address left by an earlier boot
// ---------------------------------------------------------------------------------------------

#[test]
fn a_requested_address_held_by_an_earlier_boot_is_reclaimed_and_granted() {
    let sb = Sandbox::new();
    let log = sb.root().join("podcidr.log");
    let mut conf = dual_conf(&sb, "10.62.0.0/24", "fd00:62::/120");
    conf["ipam"]["logFile"] = json!(log);
    let first = boot(Call::add("A", &conf).args("IP=10.62.0.5,fd00:62::5"), "boot-1").run().ok_json();
    assert_eq!(result_ips(&first), ["10.62.0.5", "fd00:62::5"]);
    // Same boot: the address is A's.
    let msg = boot(Call::add("B", &conf).args("IP=10.62.0.5"), "boot-1").run().err_msg(101);
    assert!(msg.contains("already leased to A"), "{msg}");
    // After an unclean reboot the container comes back under a new ID and asks for its address.
    let res = boot(Call::add("B", &conf).args("IP=10.62.0.5"), "boot-2").run().ok_json();
    assert_eq!(result_ips(&res)[0], "10.62.0.5");
    assert_eq!(sb.lease("net1", "10.62.0.5")["containerID"], "B");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("reclaiming") && text.contains("10.62.0.5"), "not logged: {text}");
    // A's other lease is untouched by that (GC or a full range reclaims it), and its index
    // stays while it names a lease of A's.
    assert_eq!(sb.lease("net1", "fd00:62::5")["containerID"], "A");
    // A lease of this boot is still refused.
    boot(Call::add("C", &conf).args("IP=10.62.0.5"), "boot-2").run().err(101);
    // And the stale v6 lease goes to whoever asks for it now.
    let res = boot(Call::add("D", &conf).args("IP=fd00:62::5"), "boot-2").run().ok_json();
    assert_eq!(result_ips(&res)[1], "fd00:62::5");
    assert!(!sb.owner_files("net1").contains(&"A:eth0".to_string()), "{:?}", sb.owner_files("net1"));
}

// ---------------------------------------------------------------------------------------------
// 7. Nothing blocks
// ---------------------------------------------------------------------------------------------

#[test]
fn a_fifo_at_last_reserved_ip_neither_hangs_add_nor_is_written_through() {
    let sb = Sandbox::new();
    let conf = sb.conf_v4("1.0.0", "10.46.0.0/24");
    assert_eq!(only_ip(&Call::add("a", &conf).run().ok_json()), "10.46.0.2");
    let lri = sb.net_dir("net1").join("last_reserved_ip.0");
    std::fs::remove_file(&lri).unwrap();
    mkfifo(&lri);
    let out = run_within(&Call::add("b", &conf), Duration::from_secs(10)).expect("ADD hung on a FIFO");
    // Read as absent: the walk starts over from the range's start.
    assert_eq!(only_ip(&out.ok_json()), "10.46.0.3");
    let meta = std::fs::symlink_metadata(&lri).unwrap();
    assert!(meta.is_file(), "the FIFO was not replaced: {meta:?}");
    assert_eq!(std::fs::read_to_string(&lri).unwrap().trim(), "10.46.0.3");
    assert_eq!(only_ip(&Call::add("c", &conf).run().ok_json()), "10.46.0.4");
}

#[test]
fn a_log_file_that_is_a_fifo_does_not_hang_add() {
    let sb = Sandbox::new();
    let fifo = sb.root().join("podcidr.log");
    mkfifo(&fifo);
    let mut conf = sb.conf_v4("1.0.0", "10.47.0.0/24");
    conf["ipam"]["logFile"] = json!(fifo);
    conf["ipam"]["logLevel"] = json!("info");
    let out = run_within(&Call::add("a", &conf), Duration::from_secs(10)).expect("ADD hung on a FIFO logFile");
    assert_eq!(only_ip(&out.ok_json()), "10.47.0.2");
    assert!(out.stderr.contains("cannot open logFile") && out.stderr.contains("logging to stderr"), "{}", out.stderr);
    // The log lines went to stderr instead.
    assert!(out.stderr.contains("ADD"), "{}", out.stderr);
}

// ---------------------------------------------------------------------------------------------
// 8. Symbolic links under the network directory
// ---------------------------------------------------------------------------------------------

/// Replaces `net/<name>` with a symbolic link to a copy of it at `<root>/outside/<name>`.
fn swap_for_link(sb: &Sandbox, name: &str) -> PathBuf {
    let inside = sb.net_dir("net1").join(name);
    let outside = sb.root().join("outside").join(name);
    std::fs::create_dir_all(outside.parent().unwrap()).unwrap();
    std::fs::rename(&inside, &outside).unwrap();
    std::os::unix::fs::symlink(&outside, &inside).unwrap();
    outside
}

/// A store with leases of a, b and c, and a spare record (a DEL'd d).
fn populated(sb: &Sandbox) -> Value {
    let conf = sb.conf_v4("1.1.0", "10.48.0.0/24");
    for id in ["a", "b", "c", "d"] {
        Call::add(id, &conf).fixed_boot().run().ok_json();
    }
    Call::del("d", &conf).fixed_boot().run().ok_silent();
    assert_eq!(common::names(&sb.net_dir("net1").join("spare")), ["10.48.0.5"]);
    conf
}

/// Every verb and the CLI against the store; nothing outside may change.
fn every_verb(sb: &Sandbox, conf: &Value) -> Vec<(String, Out)> {
    let dd = sb.data_dir();
    let dd = dd.to_str().unwrap();
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{ "containerID": "a", "ifname": "eth0" }]);
    let calls = [
        ("ADD e", Call::add("e", conf)),
        ("ADD a", Call::add("a", conf)),
        ("CHECK a", Call::check("a", &common::with_prev_result(conf, &json!({"ips": [{"address": "10.48.0.2/24"}]})))),
        ("DEL b", Call::del("b", conf)),
        ("GC", Call::verb("GC").conf(&gc)),
        ("STATUS", status(conf)),
        ("status", Call::bare().argv(&["status", "--data-dir", dd])),
        ("gc --apply", Call::bare().argv(&["gc", "--data-dir", dd, "--keep", "a", "--apply"])),
        ("DEL c", Call::del("c", conf)),
    ];
    calls.into_iter().map(|(what, call)| (what.to_string(), call.fixed_boot().run())).collect()
}

#[test]
fn a_symlinked_store_directory_is_refused_and_nothing_outside_changes() {
    for name in ["leases", "owners"] {
        let sb = Sandbox::new();
        let conf = populated(&sb);
        let outside = swap_for_link(&sb, name);
        let before = snapshot(outside.parent().unwrap());
        for (what, out) in every_verb(&sb, &conf) {
            assert_eq!(snapshot(outside.parent().unwrap()), before, "{what} changed the {name}/ outside the store");
            if what.starts_with("ADD") || what.starts_with("DEL") {
                let msg = out.err_msg(5);
                assert!(msg.contains(&format!("net1/{name}")) && msg.contains("symbolic link"), "{what}: {msg}");
            }
        }
    }
}

#[test]
fn a_symlinked_spare_directory_is_never_written_through() {
    let sb = Sandbox::new();
    let conf = populated(&sb);
    let outside = swap_for_link(&sb, "spare");
    let before = snapshot(outside.parent().unwrap());
    for (what, out) in every_verb(&sb, &conf) {
        assert_eq!(snapshot(outside.parent().unwrap()), before, "{what} wrote through spare/");
        // The requests themselves go on without spares.
        if what.chars().next().is_some_and(|c| c.is_ascii_uppercase()) {
            assert!(matches!(out.judge().unwrap(), common::Reply::Ok(_)), "{what}: {out:?}");
        }
    }
}

#[test]
fn symlinked_files_in_the_network_directory_are_replaced_or_refused_never_followed() {
    for name in ["last_reserved_ip.0", "pool.json", "lock"] {
        let sb = Sandbox::new();
        let conf = populated(&sb);
        let outside = swap_for_link(&sb, name);
        let before = snapshot(outside.parent().unwrap());
        for (what, out) in every_verb(&sb, &conf) {
            assert_eq!(snapshot(outside.parent().unwrap()), before, "{what} wrote through {name}");
            if what.chars().next().is_some_and(|c| c.is_ascii_uppercase()) {
                out.judge().unwrap();
            }
        }
    }
}

#[test]
fn a_symlinked_network_directory_is_refused_but_a_symlinked_data_dir_is_the_admins_choice() {
    let sb = Sandbox::new();
    let conf = populated(&sb);
    let real = sb.root().join("outside").join("net1");
    std::fs::create_dir_all(real.parent().unwrap()).unwrap();
    std::fs::rename(sb.net_dir("net1"), &real).unwrap();
    std::os::unix::fs::symlink(&real, sb.net_dir("net1")).unwrap();
    let before = snapshot(&real);
    for (what, out) in every_verb(&sb, &conf) {
        assert_eq!(snapshot(&real), before, "{what} went through the symlinked network directory");
        if what.starts_with("ADD") || what.starts_with("DEL") {
            let msg = out.err_msg(5);
            assert!(msg.contains("net1") && msg.contains("symbolic link"), "{what}: {msg}");
        }
    }
    // dataDir itself may be reached through a symbolic link.
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.root().join("real-data")).unwrap();
    std::os::unix::fs::symlink(sb.root().join("real-data"), sb.data_dir()).unwrap();
    let conf = sb.conf_v4("1.1.0", "10.49.0.0/24");
    assert_eq!(only_ip(&Call::add("a", &conf).run().ok_json()), "10.49.0.2");
    assert!(sb.root().join("real-data/net1/leases/10.49.0.2").is_file());
    Call::del("a", &conf).run().ok_silent();
}

// ---------------------------------------------------------------------------------------------
// 9. A damaged owner index
// ---------------------------------------------------------------------------------------------

#[test]
fn del_releases_every_lease_of_an_attachment_whose_index_is_damaged() {
    let sb = Sandbox::new();
    let conf = dual_conf(&sb, "10.63.0.0/24", "fd00:63::/120");
    Call::add("keep", &conf).fixed_boot().run().ok_json();
    let ips = result_ips(&Call::add("A", &conf).fixed_boot().run().ok_json());
    assert_eq!(ips, ["10.63.0.3", "fd00:63::3"]);
    // Damage the index in place: it is the same file as A's IPv4 record.
    let index = sb.net_dir("net1").join("owners/A:eth0");
    std::fs::write(&index, "{\"containerID\": \"A\", garbage").unwrap();
    assert!(std::fs::read_to_string(sb.net_dir("net1").join("leases/10.63.0.3")).unwrap().contains("garbage"));
    Call::del("A", &conf).fixed_boot().run().ok_silent();
    assert_eq!(sb.lease_files("net1"), ["10.63.0.2", "fd00:63::2"], "DEL left A's leases");
    assert_eq!(sb.owner_files("net1"), ["keep:eth0"]);
    // A's addresses are handed out again once the round robin wraps: ask for them.
    let res = Call::add("B", &conf).fixed_boot().args("IP=10.63.0.3,fd00:63::3").run().ok_json();
    assert_eq!(result_ips(&res), ["10.63.0.3", "fd00:63::3"]);
}

#[test]
fn gc_lists_and_releases_leases_that_no_owner_index_names() {
    let sb = Sandbox::new();
    let conf = dual_conf(&sb, "10.64.0.0/24", "fd00:64::/120");
    Call::add("keep", &conf).fixed_boot().run().ok_json();
    Call::add("A", &conf).fixed_boot().run().ok_json();
    // What a DEL of an earlier version left of A after meeting its damaged index: the index
    // gone and the IPv6 lease still there, which no DEL can find any more.
    std::fs::remove_file(sb.net_dir("net1").join("owners/A:eth0")).unwrap();
    std::fs::remove_file(sb.net_dir("net1").join("leases/10.64.0.3")).unwrap();
    let dd = sb.data_dir();
    let dd = dd.to_str().unwrap();
    let out = Call::bare().fixed_boot().argv(&["gc", "--data-dir", dd]).run();
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert!(out.text().contains("fd00:64::3") && out.text().contains("no owner index"), "{}", out.text());
    assert!(!out.text().contains("fd00:64::2"), "{}", out.text());
    let out = Call::bare().fixed_boot().argv(&["gc", "--data-dir", dd, "--apply"]).run();
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert_eq!(sb.lease_files("net1"), ["10.64.0.2", "fd00:64::2"]);
    // CNI GC without a list releases them too; with a list naming the attachment it does not.
    Call::add("B", &conf).fixed_boot().run().ok_json();
    std::fs::remove_file(sb.net_dir("net1").join("owners/B:eth0")).unwrap();
    let mut listed = conf.clone();
    listed["cni.dev/valid-attachments"] =
        json!([{ "containerID": "keep", "ifname": "eth0" }, { "containerID": "B", "ifname": "eth0" }]);
    Call::verb("GC").fixed_boot().conf(&listed).run().ok_silent();
    assert_eq!(sb.lease_files("net1").len(), 4, "{:?}", sb.lease_files("net1"));
    Call::verb("GC").fixed_boot().conf(&conf).run().ok_silent();
    assert_eq!(sb.lease_files("net1"), ["10.64.0.2", "fd00:64::2"]);
}

/// Issue 17, point 9: `podcidr gc` lists the leases of an attachment whose owner index is
/// unreadable (overwritten in place, or replaced by a new file) and says what releases them;
/// it does not release them without a keep list, as the pod may be alive.
#[test]
fn gc_lists_leases_whose_owner_index_is_unreadable() {
    let sb = Sandbox::new();
    let conf = dual_conf(&sb, "10.66.0.0/24", "fd00:66::/120");
    Call::add("keep", &conf).fixed_boot().run().ok_json();
    Call::add("A", &conf).fixed_boot().run().ok_json();
    Call::add("B", &conf).fixed_boot().run().ok_json();
    let owners = sb.net_dir("net1").join("owners");
    // A's index overwritten in place (its IPv4 record with it); B's replaced by a new file.
    std::fs::write(owners.join("A:eth0"), "garbage").unwrap();
    std::fs::remove_file(owners.join("B:eth0")).unwrap();
    std::fs::write(owners.join("B:eth0"), "{").unwrap();
    let dd = sb.data_dir();
    let dd = dd.to_str().unwrap();
    let out = Call::bare().fixed_boot().argv(&["gc", "--data-dir", dd]).run();
    assert_eq!(out.code(), Some(0), "{out:?}");
    let text = out.text();
    for (ips, who) in [("10.66.0.3, fd00:66::3", "A:eth0"), ("10.66.0.4, fd00:66::4", "B:eth0")] {
        assert!(text.contains(&format!("kept {ips} ({who}): its owner index is unreadable")), "{text}");
    }
    let out = Call::bare().fixed_boot().argv(&["gc", "--data-dir", dd, "--json"]).run();
    let doc: Value = serde_json::from_str(out.text()).unwrap();
    assert_eq!(doc[0]["unreadableIndexes"].as_array().map(Vec::len), Some(2), "{doc}");
    // Without a keep list nothing of theirs is released; a keep list without them releases them.
    Call::bare().fixed_boot().argv(&["gc", "--data-dir", dd, "--apply"]).run();
    assert_eq!(sb.lease_files("net1").len(), 6);
    let out = Call::bare().fixed_boot().argv(&["gc", "--data-dir", dd, "--keep", "keep", "--apply"]).run();
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert_eq!(sb.lease_files("net1"), ["10.66.0.2", "fd00:66::2"]);
}
