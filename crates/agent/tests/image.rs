//! The node image (conf/Containerfile) under podman: the agent, as the DaemonSet runs it
//! (uid 0, every capability dropped, no privilege escalation, read-only root file system, the
//! host network), against temporary host directories and the stand-in API server on loopback,
//! installs the plugin, the conflist and the kubeconfig, and the plugin it installed works.
//! scripts/image-test.sh builds the image offline and runs this with PODCIDR_IMAGE set.

use podcidr_testsupport::kubeapi;
mod support;

use kubeapi::KubeApi;
use serde_json::{Value, json};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;
use support::*;

/// Removes the container however the test ends.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("podman").args(["rm", "--force", "--time", "0", &self.0]).output();
    }
}

#[test]
#[ignore = "needs the image: scripts/image-test.sh builds it and runs this"]
fn the_agent_image_installs_plugin_conflist_and_kubeconfig() {
    let image = std::env::var("PODCIDR_IMAGE").expect("PODCIDR_IMAGE: the image to run");
    let api = KubeApi::start("v1.36.2");
    let host = Host::new();
    api.create(
        "/api/v1/nodes",
        &json!({"apiVersion":"v1","kind":"Node","metadata":{"name":"node-i"},
            "spec":{"podCIDR":"10.244.9.0/24","taints":[{"key":TAINT,"effect":"NoSchedule"}]}}),
    );
    let uid = api.create_agent_pod("kube-system", "podcidr-agent", "agent-i", "node-i");
    let etc = host.etc();
    api.kubeconfig(&etc, "agent");
    let list = conflist(&host, json!({"mode": "kubernetes", "kubeconfig": host.kubeconfig(), "cacheTTLSeconds": 0}));
    std::fs::write(etc.join("10-podcidr.conflist"), serde_json::to_vec_pretty(&list).unwrap()).unwrap();
    let dirs = [("opt/cni/bin", ""), ("etc/cni/net.d", ""), ("var/lib/cni/podcidr", ":ro")];
    let mut mounts = vec![];
    for (d, opt) in dirs {
        std::fs::create_dir_all(host.root().join(d)).unwrap();
        mounts.push(format!("--volume={}:/host/{d}{opt}", host.root().join(d).display()));
    }
    mounts.push(format!("--volume={}:/etc/podcidr:ro", etc.display()));

    let name = format!("podcidr-agent-image-test-{}", std::process::id());
    let _container = Container(name.clone());
    let mut cmd = Command::new("podman");
    cmd.args(["run", "--rm", "--name", &name, "--pull=never", "--network=host", "--read-only"])
        .args(["--cap-drop=all", "--security-opt=no-new-privileges", "--user=0:0"])
        .args(&mounts)
        .args(["--env=NODE_NAME=node-i", "--env=POD_NAME=agent-i", "--env=POD_NAMESPACE=kube-system"])
        .arg(format!("--env=POD_UID={uid}"))
        .args([&image, "--kubeconfig=/etc/podcidr/kubeconfig-agent", "--bind-address=127.0.0.1:0"]);
    let agent = Agent::spawn(cmd);

    assert!(
        wait_until(Duration::from_secs(30), || host.conflist().exists() && host.kubeconfig().exists()),
        "not installed:\n{}",
        agent.log()
    );
    assert_eq!(std::fs::metadata(host.plugin()).unwrap().permissions().mode() & 0o777, 0o755);
    assert_eq!(std::fs::metadata(host.kubeconfig()).unwrap().permissions().mode() & 0o777, 0o600);
    let installed: Value = serde_json::from_slice(&std::fs::read(host.conflist()).unwrap()).unwrap();
    assert_eq!(installed["plugins"][0]["ipam"]["nodeName"], "node-i");
    assert!(std::fs::read_to_string(host.kubeconfig()).unwrap().contains("token: podcidr-test-podcidr-agent-1\n"));
    assert!(
        wait_until(Duration::from_secs(20), || !api.node("node-i").unwrap()["spec"]["taints"]
            .as_array()
            .is_some_and(|ts| ts.iter().any(|t| t["key"] == TAINT))),
        "the startup taint stays: {}\n{}",
        api.node("node-i").unwrap(),
        agent.log()
    );
    assert!(wait_until(Duration::from_secs(10), || agent.get("/readyz").0 == 200), "{}", agent.log());

    // The plugin the image installed runs on the host and reads the Node with the token.
    let r = exec_plugin(&host.plugin(), &host.conflist(), "ADD", "c1", &[]).unwrap();
    assert_eq!(r["ips"][0]["address"], "10.244.9.2/24", "{r}");
    let labels = r#"{network="podnet",range_set="0",family="ipv4",pool=""}"#;
    assert_eq!(agent.metric(&format!("podcidr_node_addresses_allocated{labels}")), Some(1.0));
}
