//! The lab as a test bed: `overlay-lab up` (2 hosts, real overlayd) gives full reachability
//! (every node and VM with every other, VMs and nodes with the VPC client through the router),
//! every node joins the group with IGMPv2, plans are empty, and `down` leaves nothing behind.

use overlay_tests::*;
use serde_json::Value;

#[test]
fn lab_up_full_reachability_then_down_leaves_nothing() {
    if !ready("lab_up_full_reachability_then_down_leaves_nothing") {
        return;
    }
    let _heavy = heavy_lock();
    let prefix = unique_prefix("lab");
    let lab = Lab::up(
        &prefix,
        &["--hosts", "2", "--timeout", "20", "--full-matrix"],
    )
    .unwrap();
    let up = &lab.up;

    // topology as documented
    let nodes: Vec<&str> = up["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(nodes, ["router", "mgmt", "h1", "h2"]);
    assert_eq!(up["vms"].as_array().unwrap().len(), 4);

    // full matrix, every pair answered
    let r = &up["reachability"];
    assert_eq!(r["mode"], "full", "{r}");
    let results = r["results"].as_array().unwrap();
    assert_eq!(results.len(), 9 * 8, "9 endpoints, all ordered pairs");
    let failed: Vec<String> = results
        .iter()
        .filter(|x| x["ok"] != Value::Bool(true))
        .map(|x| format!("{} -> {}", x["from"], x["to"]))
        .collect();
    assert!(failed.is_empty(), "unreachable pairs: {failed:?}");
    for vm in ["h1-vm1", "h2-vm2"] {
        for (a, b) in [(vm, "client"), ("client", vm)] {
            assert!(
                results
                    .iter()
                    .any(|x| x["from"] == a && x["to"] == b && x["ok"] == true),
                "{a} -> {b} not probed or failed"
            );
        }
    }

    // the TGW stand-in learned every node as a member of the group, and no IGMPv3 join
    let m = &up["membership"];
    assert_eq!(m["nodes_not_joined"], serde_json::json!([]), "{m}");
    assert_eq!(m["igmpv3_reports_dropped"], 0, "{m}");
    let g = m["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group"] == "239.255.0.1")
        .expect("group 239.255.0.1 learned");
    let mut members: Vec<&str> = g["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    members.sort();
    assert_eq!(members, ["h1", "h2", "mgmt", "router"]);

    // status: everything present, every node converged (plan empty)
    let st = lab.status();
    assert_eq!(st["state"], "up");
    for n in st["nodes"].as_array().unwrap() {
        assert_eq!(n["present"], true, "{n}");
        let ops = n["plan"]["ops"].as_array();
        assert!(
            ops.map(|o| o.is_empty()).unwrap_or(false),
            "plan of {} not empty: {}",
            n["name"],
            n["plan"]
        );
    }

    // a second `up` on the same prefix is refused clearly, changing nothing
    let again = lab_cmd(&["up", "--prefix", &prefix]).unwrap();
    assert_eq!(again.status.code(), Some(2), "{}", text(&again));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));

    // down removes every namespace and the run dir; a second down is fine
    let down = lab_cmd(&["down", "--prefix", &prefix]).unwrap();
    assert!(down.status.success(), "{}", text(&down));
    assert_eq!(namespaces_with_prefix(&prefix), Vec::<String>::new());
    assert!(!std::path::Path::new("/run/overlay-lab")
        .join(&prefix)
        .exists());
    let down2 = lab_cmd(&["down", "--prefix", &prefix]).unwrap();
    assert!(down2.status.success(), "{}", text(&down2));
    drop(lab);
}

/// Multi-AZ: 2 subnets × 5 hosts, the router pair one per AZ, the TGW multicast domain
/// spanning both subnets. Every ordered pair answers; the subnets are routed by the VPC
/// router, not bridged (no node has a neighbour in the other subnet); every node of both
/// subnets is a member of the group.
#[test]
fn lab_two_azs_five_hosts_each_full_matrix() {
    if !ready("lab_two_azs_five_hosts_each_full_matrix") {
        return;
    }
    let _heavy = heavy_lock();
    let prefix = unique_prefix("laz");
    let lab = Lab::up(
        &prefix,
        &[
            "--hosts",
            "10",
            "--vms-per-host",
            "1",
            "--azs",
            "2",
            "--routers",
            "2",
            "--daemon",
            "--full-matrix",
            "--timeout",
            "30",
        ],
    )
    .unwrap();
    let up = &lab.up;
    let in_b: Vec<&str> = up["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["az"] == 1)
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(in_b, ["router2", "h6", "h7", "h8", "h9", "h10"]);
    let r = &up["reachability"];
    assert_eq!(r["mode"], "full", "{r}");
    let results = r["results"].as_array().unwrap();
    // 2 routers + mgmt + 10 hosts + 10 VMs + client
    assert_eq!(results.len(), 24 * 23);
    let failed: Vec<String> = results
        .iter()
        .filter(|x| x["ok"] != Value::Bool(true))
        .map(|x| format!("{} -> {}", x["from"], x["to"]))
        .collect();
    assert!(failed.is_empty(), "unreachable pairs: {failed:?}");
    // routed, not bridged: h6 (10.0.4.15) knows no neighbour of the first subnet
    let o = std::process::Command::new("ip")
        .args([
            "-n",
            &format!("{prefix}-h6"),
            "-4",
            "neigh",
            "show",
            "dev",
            "eth0",
        ])
        .output()
        .unwrap();
    let neigh = String::from_utf8_lossy(&o.stdout);
    assert!(neigh.contains("10.0.4.1 "), "{neigh}");
    assert!(
        !neigh.contains("10.0.0."),
        "a neighbour across the AZs: {neigh}"
    );
    let g = up["membership"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group"] == "239.255.0.1")
        .expect("group learned");
    assert_eq!(g["nodes"].as_array().unwrap().len(), 13, "{g}");

    // h6's link flaps: the snooping bridge forgets it; its overlayd announces the membership
    // again when the carrier is back (no waiting for the next query)
    let vpc = format!("{prefix}-vpc");
    let mdb_has_h6 = || {
        let o = std::process::Command::new("bridge")
            .args(["-n", &vpc, "mdb", "show", "dev", "ul2"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).contains("port u-h6 grp 239.255.0.1")
    };
    let ip = |args: &[&str]| {
        let o = std::process::Command::new("ip")
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "ip {args:?}: {}", text(&o));
    };
    ip(&["-n", &vpc, "link", "set", "u-h6", "down"]);
    assert!(wait_for(std::time::Duration::from_secs(5), || !mdb_has_h6()));
    ip(&["-n", &vpc, "link", "set", "u-h6", "up"]);
    assert!(
        wait_for(std::time::Duration::from_secs(5), mdb_has_h6),
        "h6 not a member again after its link came back"
    );
    drop(lab);
}

#[test]
fn lab_rejects_bad_usage_with_exit_2() {
    if !ready("lab_rejects_bad_usage_with_exit_2") {
        return;
    }
    for args in [
        &["up", "--prefix", "bad-prefix"][..],
        &["up", "--prefix", "otbad", "--hosts", "0"][..],
        &["up", "--prefix", "otbad", "--group", "10.0.0.1"][..],
        &[
            "up",
            "--prefix",
            "otbad",
            "--overlayd",
            "/nonexistent/overlayd",
        ][..],
    ] {
        let o = lab_cmd(args).unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(!o.stderr.is_empty());
        assert!(namespaces_with_prefix("otbad").is_empty());
    }
}

#[test]
fn lab_with_20_hosts_gets_the_full_matrix() {
    if !ready("lab_with_20_hosts_gets_the_full_matrix") {
        return;
    }
    let _heavy = heavy_lock();
    let prefix = unique_prefix("l20");
    let lab = Lab::up(&prefix, &["--hosts", "20", "--timeout", "20"]).unwrap();
    let r = &lab.up["reachability"];
    // 63 endpoints: every ordered pair, probed in waves that fit the kernel's ARP table
    assert_eq!(r["mode"], "full", "{}", r["mode"]);
    assert_eq!(r["all_ok"], true, "{r}");
    let results = r["results"].as_array().unwrap();
    assert_eq!(results.len(), 63 * 62);
    for (a, b) in [
        ("client", "h20-vm2"),
        ("h20-vm2", "client"),
        ("h1", "h20"),
        ("mgmt", "client"),
    ] {
        assert!(
            results
                .iter()
                .any(|x| x["from"] == a && x["to"] == b && x["ok"] == true),
            "{a} -> {b}"
        );
    }
    let m = &lab.up["membership"];
    assert_eq!(m["nodes_not_joined"], serde_json::json!([]), "{m}");
    assert_eq!(lab.up["namespaces"].as_array().unwrap().len(), 2 + 22 + 40);

    // `check` re-probes the same lab
    let o = lab_cmd(&["check", "--prefix", &prefix, "--json"]).unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let c: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(c["reachability"]["all_ok"], true);
    drop(lab);
    assert!(namespaces_with_prefix(&prefix).is_empty());
}

#[test]
fn down_removes_stray_namespaces_of_a_crashed_lab() {
    if !ready("down_removes_stray_namespaces_of_a_crashed_lab") {
        return;
    }
    let prefix = unique_prefix("crash");
    // what an `up` killed half-way leaves: namespaces without lab.json
    let names = [format!("{prefix}-vpc"), format!("{prefix}-h7")];
    let _guard = NsGuard::new(&[&names[0], &names[1]]);
    let st = lab_cmd(&["status", "--prefix", &prefix, "--json"]).unwrap();
    assert!(st.status.success(), "{}", text(&st));
    let st: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(st["state"], "unknown");
    let up = lab_cmd(&["up", "--prefix", &prefix]).unwrap();
    assert_eq!(up.status.code(), Some(2), "{}", text(&up));
    let o = lab_cmd(&["down", "--prefix", &prefix]).unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(namespaces_with_prefix(&prefix).is_empty());
    // other labs' namespaces are not touched (prefix + '-' is the boundary)
    let other = format!("{prefix}x-vpc");
    let _g2 = NsGuard::new(&[&other]);
    let o = lab_cmd(&["down", "--prefix", &prefix]).unwrap();
    assert!(o.status.success());
    assert!(ns_exists(&other));
}
