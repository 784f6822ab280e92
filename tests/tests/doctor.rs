//! `overlayd doctor` on a lone node (a network namespace shaped like an EC2 instance, no
//! router: only gateway.reachable fails) and in a lab of daemons: a converged node passes
//! every check; each induced fault is named by its check with exit 1; doctor changes
//! nothing (the kernel state it reads is the same before and after, netlink stays silent).

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
    // a lone node: everything ok but the gateway, which no router answers for
    assert_eq!(code, Some(1), "a converged node: {out}");
    for c in v["checks"].as_array().unwrap() {
        if c["id"] == "gateway.reachable" {
            assert_eq!(c["verdict"], "fail", "{c}: {out}");
            continue;
        }
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
    assert_eq!(report.status.code(), Some(1), "{}", text(&report));
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
        .filter(|c| c["verdict"] == "fail" && c["id"] != "gateway.reachable")
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

/// One node of a daemon lab: doctor with the node's flags and its daemon's control socket.
struct LabNode<'a> {
    lab: &'a Lab,
    name: &'static str,
    ns: String,
}

impl<'a> LabNode<'a> {
    fn new(lab: &'a Lab, name: &'static str) -> Self {
        let ns = lab.node(name)["ns"].as_str().unwrap().to_string();
        LabNode { lab, name, ns }
    }
    fn flags(&self, extra: &[&str]) -> Vec<String> {
        let mut f = self.lab.node_flags(self.name);
        f.push("--control-socket".into());
        f.push(format!(
            "/run/overlay-lab/{}/{}/overlayd.sock",
            self.lab.prefix, self.name
        ));
        f.extend(extra.iter().map(|s| s.to_string()));
        f
    }
    /// `overlayd doctor -o json` (the short form of --json).
    fn doctor(&self, extra: &[&str]) -> (Option<i32>, Value, String) {
        let mut f = self.flags(extra);
        f.extend(["-o".to_string(), "json".to_string()]);
        let o = overlayd_in(&self.ns, "doctor", &f);
        let v: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
        (o.status.code(), v, text(&o))
    }
    fn daemon(&self, cmd: &str) {
        let o = overlayd_in(&self.ns, cmd, &self.flags(&[]));
        assert!(o.status.success(), "{cmd}: {}", text(&o));
    }
    fn sh(&self, cmd: &str) {
        in_ns(&self.ns, cmd);
    }
    /// Polls doctor until check `id` has `want` (daemon repairs take a moment).
    fn wait_verdict(&self, id: &str, want: &str, extra: &[&str]) -> Value {
        let mut last = Value::Null;
        let ok = wait_for(std::time::Duration::from_secs(15), || {
            last = self.doctor(extra).1;
            last["checks"].is_array() && verdict(&last, id) == want
        });
        assert!(ok, "{}: {id} never became {want}: {last:#}", self.name);
        last
    }
}

/// The checks that fail (ids).
fn failing(v: &Value) -> Vec<String> {
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["verdict"] == "fail")
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect()
}

fn summary<'a>(v: &'a Value, id: &str) -> &'a str {
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap()["summary"]
        .as_str()
        .unwrap()
}

/// A lab of daemons (router, management, two hosts with a VM each, the TGW stand-in asking
/// every 2 s): every check of every node is ok, doctor makes no kernel change, and each
/// fault induced on a node is named by its check (exit 1) and by no other; the daemon's
/// repair makes it ok again.
#[test]
fn doctor_in_a_lab_every_check_ok_then_each_fault_named_by_its_check() {
    if !ready("doctor_in_a_lab_every_check_ok_then_each_fault_named_by_its_check") {
        return;
    }
    let _heavy = heavy_lock();
    let prefix = unique_prefix("drl");
    let lab = Lab::up(&prefix, &["--daemon", "-n", "2", "--vms-per-host", "1"]).unwrap();
    let vpc = format!("{prefix}-vpc");
    // the TGW's querier, faster: every 2 s (toggled so the new interval starts now)
    in_ns(
        &vpc,
        "ip link set ul type bridge mcast_query_interval 200 mcast_startup_query_interval 200 \
         mcast_querier 0 && ip link set ul type bridge mcast_querier 1",
    );
    let q = ["--igmp-query-interval", "2"];
    std::thread::sleep(std::time::Duration::from_secs(1));
    let router = LabNode::new(&lab, "router");
    let mgmt = LabNode::new(&lab, "mgmt");
    let h1 = LabNode::new(&lab, "h1");
    let h2 = LabNode::new(&lab, "h2");

    // clean: every check of every node ok; doctor changes nothing in the kernel
    for n in [&router, &mgmt, &h1, &h2] {
        // IPv6 duplicate address detection finishing on eth0 is the kernel's, not doctor's
        wait_ipv6_settled(&n.ns);
        let watch = NetlinkWatch::start(&n.ns).unwrap();
        watch.drain(std::time::Duration::from_millis(300));
        let (code, v, out) = n.doctor(&q);
        assert_eq!(code, Some(0), "{}: {out}", n.name);
        for c in v["checks"].as_array().unwrap() {
            assert_eq!(c["verdict"], "ok", "{}: {c}", n.name);
        }
        let events = watch.drain(std::time::Duration::from_millis(300));
        assert!(
            events.is_empty(),
            "{}: doctor changed the kernel: {events:?}",
            n.name
        );
        println!(
            "{}: {} checks ok",
            n.name,
            v["checks"].as_array().unwrap().len()
        );
    }
    let text_report = overlayd_in(&h1.ns, "doctor", &h1.flags(&q));
    println!("{}", String::from_utf8_lossy(&text_report.stdout));

    // igmp.queries: the TGW stops asking (the subnet's association removed)
    in_ns(&vpc, "ip link set ul type bridge mcast_querier 0");
    std::thread::sleep(std::time::Duration::from_secs(5));
    let (code, v, out) = h1.doctor(&q);
    assert_eq!(
        (code, failing(&v)),
        (Some(1), vec!["igmp.queries".to_string()]),
        "{out}"
    );
    in_ns(&vpc, "ip link set ul type bridge mcast_querier 1");
    h1.wait_verdict("igmp.queries", "ok", &q);

    // gateway.reachable: the router (paused) loses its overlay address
    router.daemon("pause");
    router.sh("ip addr del 10.101.0.1/16 dev cloudbr0");
    let (code, v, out) = h1.doctor(&q);
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(failing(&v), vec!["gateway.reachable"], "{out}");
    // ... and on the router itself the bridge check names it
    let (_, v, out) = router.doctor(&q);
    assert_eq!(failing(&v), vec!["bridge"], "{out}");
    // gateway.return-path on the router: it stops forwarding
    router.sh("sysctl -qw net.ipv4.ip_forward=0");
    let (_, v, out) = router.doctor(&q);
    assert_eq!(failing(&v), vec!["bridge", "gateway.return-path"], "{out}");
    router.daemon("resume");
    router.wait_verdict("gateway.return-path", "ok", &q);
    h1.wait_verdict("gateway.reachable", "ok", &q);

    // gateway.return-path on a host: the overlay-sourced rule gone, replies to the VPC
    // would leave through eth0 (and be dropped by the source/destination check)
    h1.daemon("pause");
    h1.sh("ip rule del from 10.101.0.10 lookup 79");
    let (code, v, out) = h1.doctor(&q);
    assert_eq!(
        (code, failing(&v)),
        (Some(1), vec!["gateway.return-path".to_string()]),
        "{out}"
    );
    assert!(
        summary(&v, "gateway.return-path").contains("leave via eth0"),
        "{out}"
    );

    // igmp.max-memberships: the limit at the groups joined (the daemon would raise it)
    h1.sh("sysctl -qw net.ipv4.igmp_max_memberships=1");
    let (_, v, out) = h1.doctor(&q);
    assert_eq!(
        failing(&v),
        vec!["igmp.max-memberships", "gateway.return-path"],
        "{out}"
    );

    // mtu: the underlay's MTU lowered under the bridge
    h1.sh("ip link set eth0 mtu 1500");
    let (_, v, out) = h1.doctor(&q);
    assert!(failing(&v).contains(&"mtu".to_string()), "{out}");
    h1.daemon("resume");
    // repaired: the bridge follows the underlay (1450) and nested guests get 1400: a warning
    let v = h1.wait_verdict("mtu", "ok", &q);
    let v = if verdict(&v, "mtu.guest") == "warn" {
        v
    } else {
        h1.wait_verdict("mtu.guest", "warn", &q)
    };
    assert!(failing(&v).is_empty(), "{v:#}");
    h1.sh("ip link set eth0 mtu 9001");
    h1.wait_verdict("mtu.guest", "ok", &q);

    // fdb.remotes: h2's VTEP flushed (down/up: the daemon brings it back) while its VPC port
    // is cut: it learns no remote VTEP again, and its gateway is out of reach
    in_ns(&vpc, "ip link set u-h2 down");
    h2.sh("ip link set ethvxlan0 down");
    let v = h2.wait_verdict("vtep", "ok", &q);
    let v = if verdict(&v, "fdb.remotes") == "warn" {
        v
    } else {
        h2.wait_verdict("fdb.remotes", "warn", &q)
    };
    assert!(
        failing(&v).contains(&"gateway.reachable".to_string()),
        "{v:#}"
    );
    in_ns(&vpc, "ip link set u-h2 up");
    h2.wait_verdict("gateway.reachable", "ok", &q);

    // vtep.tx-checksum: configured off while the VTEP offloads; apply switches it off
    let off = ["--igmp-query-interval", "2", "--vtep-tx-checksum", "off"];
    let (code, v, out) = h2.doctor(&off);
    assert_eq!(
        (code, failing(&v)),
        (Some(1), vec!["vtep.tx-checksum".to_string()]),
        "{out}"
    );
    let a = overlayd_in(&h2.ns, "apply", &h2.flags(&["--vtep-tx-checksum", "off"]));
    assert!(a.status.success(), "{}", text(&a));
    assert!(
        String::from_utf8_lossy(&a.stdout).contains("transmit checksum offload off"),
        "{}",
        text(&a)
    );
    let (code, v, out) = h2.doctor(&off);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        summary(&v, "vtep.tx-checksum").contains("in software"),
        "{out}"
    );
}
