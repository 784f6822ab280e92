//! `overlayd doctor` on a node (a network namespace shaped like an EC2 instance): a converged
//! node passes every check it can decide; each induced fault is named by its check with exit
//! 1; doctor changes nothing (the kernel state it reads is the same before and after).

use overlay_tests::*;
use serde_json::Value;

fn doctor(node: &Node, role: &str) -> (Option<i32>, Value, String) {
    let mut flags = node.flags(role);
    flags.push("--json".into());
    let o = node.overlayd("doctor", &flags);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    (o.status.code(), v, text(&o))
}

/// `ip netns exec NS sh -c CMD`, required to succeed.
fn in_ns(ns: &str, cmd: &str) {
    sh(&["ip", "netns", "exec", ns, "sh", "-c", cmd]);
}

fn verdict<'a>(v: &'a Value, id: &str) -> &'a str {
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id} in {v}"))["verdict"]
        .as_str()
        .unwrap()
}

#[test]
fn doctor_passes_a_converged_node_and_names_each_induced_fault_read_only() {
    if !ready("doctor_passes_a_converged_node_and_names_each_induced_fault_read_only") {
        return;
    }
    let node = Node::new(&unique_prefix("dr"), 9001);

    // not converged yet: no bridge, no VTEP, nothing joined
    let (code, v, out) = doctor(&node, "host");
    assert_eq!(code, Some(1), "{out}");
    for id in ["bridge", "vtep", "igmp.membership"] {
        assert_eq!(verdict(&v, id), "fail", "{id}: {out}");
    }

    let a = node.overlayd("apply", &node.flags("host"));
    assert!(a.status.success(), "{}", text(&a));
    let before = settled_snapshot(&node.ns, &[]);
    let (code, v, out) = doctor(&node, "host");
    assert_eq!(code, Some(0), "a converged node: {out}");
    for c in v["checks"].as_array().unwrap() {
        assert!(
            matches!(c["verdict"].as_str(), Some("ok" | "unknown" | "warn")),
            "{c}: {out}"
        );
    }
    for id in [
        "bridge",
        "vtep",
        "mtu",
        "igmp.force-version",
        "igmp.membership",
        "igmp.max-memberships",
        "routes.link-local",
    ] {
        assert_eq!(verdict(&v, id), "ok", "{id}: {out}");
    }
    let report = node.overlayd("doctor", &node.flags("host"));
    assert_eq!(report.status.code(), Some(0), "{}", text(&report));
    println!("{}", String::from_utf8_lossy(&report.stdout));
    // no history without a daemon: unknown, and not a failure
    assert_eq!(verdict(&v, "igmp.queries"), "unknown", "{out}");
    assert_eq!(
        diff(&before, &settled_snapshot(&node.ns, &[])),
        "",
        "doctor changed the node"
    );

    // IGMPv3 allowed again on the underlay: the version check fails (the join already made
    // stays v2 until the next report, so only the sysctl check names it)
    in_ns(
        &node.ns,
        "sysctl -qw net.ipv4.conf.eth0.force_igmp_version=0",
    );
    let (code, v, out) = doctor(&node, "host");
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(verdict(&v, "igmp.force-version"), "fail", "{out}");
    in_ns(
        &node.ns,
        "sysctl -qw net.ipv4.conf.eth0.force_igmp_version=2",
    );

    // the IMDS route gone: the link-local check names it
    in_ns(&node.ns, "ip route del 169.254.169.254/32 dev eth0");
    let (code, v, out) = doctor(&node, "host");
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(verdict(&v, "routes.link-local"), "fail", "{out}");
    let fails: Vec<&Value> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["verdict"] == "fail")
        .collect();
    assert_eq!(fails.len(), 1, "only the induced fault fails: {out}");
    assert!(
        fails[0]["summary"]
            .as_str()
            .unwrap()
            .contains("169.254.169.254"),
        "{out}"
    );

    // the VTEP down
    in_ns(&node.ns, "ip link set ethvxlan0 down");
    let (code, v, out) = doctor(&node, "host");
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(verdict(&v, "vtep"), "fail", "{out}");
}
