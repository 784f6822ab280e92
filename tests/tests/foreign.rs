//! overlayd owns only what it created: `apply` then `down` in a namespace full of foreign
//! links, addresses, routes, rules, sysctls and hosts/resolv.conf lines leaves all of them as
//! they were (normalised `ip -j -d` dumps compared before and after).

use overlay_tests::*;

const FOREIGN_LINKS: &[&str] = &["brfx", "fxa", "fxb"];
const FOREIGN_SYSCTLS: &[&str] = &[
    "net.ipv4.conf.brfx.rp_filter",
    "net.ipv4.conf.brfx.forwarding",
    "net.ipv4.conf.fxa.rp_filter",
    "net.ipv4.conf.fxa.accept_redirects",
];

fn add_foreign_state(ns: &str) {
    ip_batch(
        ns,
        "link add brfx type bridge\n\
         addr add 192.168.77.1/24 dev brfx\n\
         link set brfx up\n\
         link add fxa type veth peer name fxb\n\
         link set fxb master brfx\n\
         link set fxb up\n\
         link set fxa up\n\
         addr add 192.168.78.1/24 dev fxa\n\
         route add 192.168.99.0/24 via 192.168.77.2\n\
         route add 198.51.100.0/24 dev brfx metric 50\n\
         route add 203.0.113.0/24 via 192.168.78.2 table 100\n\
         rule add from 192.168.78.0/24 table 100 priority 1000\n",
    );
    sh(&[
        "ip",
        "netns",
        "exec",
        ns,
        "sysctl",
        "-qw",
        "net.ipv4.conf.brfx.rp_filter=2",
        "net.ipv4.conf.fxa.rp_filter=1",
        "net.ipv4.conf.fxa.accept_redirects=0",
        "net.ipv4.conf.eth0.rp_filter=1",
        "net.ipv4.icmp_echo_ignore_broadcasts=0",
    ]);
}

type Parts = (
    Vec<serde_json::Value>,
    Vec<serde_json::Value>,
    Vec<serde_json::Value>,
);

fn foreign_part(s: &Snapshot) -> Parts {
    let routes: Vec<serde_json::Value> = s
        .routes
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["dev"]
                .as_str()
                .map(|d| FOREIGN_LINKS.contains(&d))
                .unwrap_or(false)
        })
        .cloned()
        .collect();
    (
        only(&s.links, "ifname", FOREIGN_LINKS),
        only(&s.addrs, "ifname", FOREIGN_LINKS),
        routes,
    )
}

fn diff_values(a: &Parts, b: &Parts) -> String {
    let mut s = String::new();
    for (x, y) in [(&a.0, &b.0), (&a.1, &b.1), (&a.2, &b.2)] {
        for e in x.iter().filter(|e| !y.contains(e)) {
            s.push_str(&format!("before only: {e}\n"));
        }
        for e in y.iter().filter(|e| !x.contains(e)) {
            s.push_str(&format!("after only:  {e}\n"));
        }
    }
    s
}

fn run_case(role: &str, abbrev: &str) {
    let prefix = unique_prefix(abbrev);
    let node = Node::new(&prefix, 9001);
    add_foreign_state(&node.ns);
    let hosts_before = std::fs::read_to_string(node.path("hosts")).unwrap();
    let resolv_before = std::fs::read_to_string(node.path("resolv.conf")).unwrap();
    let before = settled_snapshot(&node.ns, FOREIGN_SYSCTLS);

    let mut flags = node.flags(role);
    if role != "router" {
        flags.extend(["--fqdn".into(), "node.example.internal".into()]);
    }
    let out = node.overlayd("apply", &flags);
    assert!(out.status.success(), "apply ({role}): {}", text(&out));
    assert!(link_exists(&node.ns, "cloudbr0"), "apply made no cloudbr0");

    // while applied: the foreign parts are untouched
    let mid = snapshot(&node.ns, FOREIGN_SYSCTLS);
    let (fb, fm) = (foreign_part(&before), foreign_part(&mid));
    assert!(
        fb == fm,
        "apply ({role}) changed foreign links/addresses/routes:\n{}",
        diff_values(&fb, &fm)
    );
    // overlayd adds its own rule (proto 79) on host/management; every other rule is untouched
    let foreign_rules = |v: &serde_json::Value| -> Vec<serde_json::Value> {
        v.as_array()
            .unwrap()
            .iter()
            .filter(|r| r["protocol"] != "79")
            .cloned()
            .collect()
    };
    assert_eq!(
        foreign_rules(&before.rules),
        foreign_rules(&mid.rules),
        "apply ({role}) changed foreign ip rules"
    );
    // and the instance's DHCP default route stays exactly as it was
    let dhcp_default = |s: &Snapshot| -> Vec<serde_json::Value> {
        s.routes
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["dst"] == "default" && r["protocol"] == "dhcp")
            .cloned()
            .collect()
    };
    assert_eq!(dhcp_default(&before).len(), 1, "fixture has a DHCP default");
    assert_eq!(
        dhcp_default(&before),
        dhcp_default(&mid),
        "apply ({role}) touched the DHCP default route"
    );
    for (b, m) in before.sysctls.iter().zip(&mid.sysctls) {
        if FOREIGN_SYSCTLS.contains(&b.0.as_str())
            && !(role == "router" && b.0.ends_with("forwarding"))
        {
            assert_eq!(b, m, "apply ({role}) changed a foreign sysctl");
        }
    }
    let hosts_mid = std::fs::read_to_string(node.path("hosts")).unwrap();
    for l in hosts_before.lines() {
        assert!(
            hosts_mid.lines().any(|m| m == l),
            "apply dropped hosts line {l:?}"
        );
    }

    let out = node.overlayd("down", &node.flags(role));
    assert!(out.status.success(), "down ({role}): {}", text(&out));
    let after = snapshot(&node.ns, FOREIGN_SYSCTLS);
    assert!(
        before == after,
        "apply+down ({role}) left changes:\n{}",
        diff(&before, &after)
    );
    assert_eq!(
        std::fs::read_to_string(node.path("hosts")).unwrap(),
        hosts_before
    );
    assert_eq!(
        std::fs::read_to_string(node.path("resolv.conf")).unwrap(),
        resolv_before,
        "resolv.conf changed although no --dns was given"
    );
}

#[test]
fn host_apply_and_down_leave_foreign_state_identical() {
    if !ready("host_apply_and_down_leave_foreign_state_identical") {
        return;
    }
    run_case("host", "fh");
}

#[test]
fn management_apply_and_down_leave_foreign_state_identical() {
    if !ready("management_apply_and_down_leave_foreign_state_identical") {
        return;
    }
    run_case("management", "fm");
}

/// The router turns on ip_forward; writing ip_forward rewrites every interface's `forwarding`,
/// so `down` must put back the per-interface values it found, not only the global one.
#[test]
fn router_apply_and_down_leave_foreign_state_identical() {
    if !ready("router_apply_and_down_leave_foreign_state_identical") {
        return;
    }
    run_case("router", "fr");
}
