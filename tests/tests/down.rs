//! `overlayd down` removes everything overlayd owns: bridge, VTEP, the overlay-sourced rule
//! and table, the link-local /32 routes, the hosts line, and puts back the sysctls it changed
//! (force_igmp_version, ip_forward, igmp_max_memberships). The node's DHCP default route is
//! never touched.

use overlay_tests::*;

fn hosts_has(path: &str, needle: &str) -> bool {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .any(|l| !l.trim_start().starts_with('#') && l.contains(needle))
}

fn default_routes(ns: &str) -> Vec<serde_json::Value> {
    let out = sh(&["ip", "-n", ns, "-j", "-4", "route", "show", "default"]);
    serde_json::from_str::<serde_json::Value>(if out.trim().is_empty() { "[]" } else { &out })
        .unwrap()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn run_case(role: &str, abbrev: &str) {
    let prefix = unique_prefix(abbrev);
    let node = Node::new(&prefix, 9001);
    // CloudStack's cloud0 is up and something routed IMDS into it: overlayd must take the
    // route over (same key) and `down` must put it back exactly.
    ip_batch(
        &node.ns,
        "link add cloud0 type bridge\naddr add 169.254.0.1/16 dev cloud0\nlink set cloud0 up\n\
         route add 169.254.169.254/32 dev cloud0\n",
    );
    let before = settled_snapshot(&node.ns, &[]);
    let fqdn = format!("{abbrev}.overlay.example.internal");
    let mut flags = node.flags(role);
    flags.extend(["--fqdn".into(), fqdn.clone()]);
    let addr = if role == "router" {
        "10.101.0.1"
    } else {
        "10.101.0.10"
    };

    let out = node.overlayd("apply", &flags);
    assert!(out.status.success(), "apply ({role}): {}", text(&out));

    // what apply must have made
    assert!(link_exists(&node.ns, "cloudbr0"));
    assert!(link_exists(&node.ns, "ethvxlan0"));
    let vx = sh(&[
        "ip",
        "-n",
        &node.ns,
        "-j",
        "-d",
        "link",
        "show",
        "dev",
        "ethvxlan0",
    ]);
    let vx: serde_json::Value = serde_json::from_str(&vx).unwrap();
    assert_eq!(vx[0]["master"], "cloudbr0", "{vx}");
    let info = &vx[0]["linkinfo"]["info_data"];
    assert_eq!(info["id"], 100, "{info}");
    assert_eq!(info["group"], "239.255.0.1", "{info}");
    assert_eq!(info["port"], 4789, "{info}");
    assert_eq!(info["link"], "eth0", "{info}");
    let br = sh(&[
        "ip", "-n", &node.ns, "-4", "addr", "show", "dev", "cloudbr0",
    ]);
    assert!(br.contains(&format!("{addr}/16")), "{br}");
    let defaults = default_routes(&node.ns);
    if role == "router" {
        assert!(
            defaults.iter().all(|r| r["dev"] != "cloudbr0"),
            "router must have no default route on the overlay: {defaults:?}"
        );
        assert_eq!(sysctls(&node.ns, &["net.ipv4.ip_forward"])[0].1, "1");
    } else {
        // The instance's own default route stays in charge of the main table.
        assert_eq!(defaults.len(), 1, "{defaults:?}");
        assert_eq!(defaults[0]["gateway"], "10.0.0.1", "{defaults:?}");
        assert_eq!(defaults[0]["dev"], "eth0", "{defaults:?}");
        let t79 = sh(&["ip", "-n", &node.ns, "-4", "route", "show", "table", "79"]);
        assert!(
            t79.contains("default via 10.101.0.1 dev cloudbr0 proto 79"),
            "{t79}"
        );
        let rules = sh(&["ip", "-n", &node.ns, "-4", "rule", "show"]);
        assert!(
            rules.contains("1079:\tfrom 10.101.0.10 lookup 79 proto 79"),
            "{rules}"
        );
        assert_eq!(
            sysctls(&node.ns, &["net.ipv4.igmp_max_memberships"])[0].1,
            "1024"
        );
    }
    let ll = sh(&[
        "ip",
        "-n",
        &node.ns,
        "-4",
        "route",
        "show",
        "169.254.169.254",
    ]);
    assert!(ll.contains("dev eth0 proto 79 scope link"), "{ll}");
    assert_eq!(
        sysctls(&node.ns, &["net.ipv4.conf.eth0.force_igmp_version"])[0].1,
        "2"
    );
    assert!(
        hosts_has(&node.path("hosts"), &fqdn),
        "no hosts line for {fqdn}"
    );

    let out = node.overlayd("down", &flags);
    assert!(out.status.success(), "down ({role}): {}", text(&out));
    assert!(!link_exists(&node.ns, "cloudbr0"), "cloudbr0 left behind");
    assert!(!link_exists(&node.ns, "ethvxlan0"), "ethvxlan0 left behind");
    assert!(
        default_routes(&node.ns)
            .iter()
            .all(|r| r["dev"] != "cloudbr0"),
        "overlay default route left behind"
    );
    assert!(
        !hosts_has(&node.path("hosts"), &fqdn),
        "hosts line left behind"
    );
    let after = snapshot(&node.ns, &[]);
    assert!(
        before == after,
        "down ({role}) did not restore:\n{}",
        diff(&before, &after)
    );

    // down again: nothing to do, still success
    let out = node.overlayd("down", &flags);
    assert!(out.status.success(), "second down ({role}): {}", text(&out));
}

#[test]
fn down_removes_everything_owned_host() {
    if !ready("down_removes_everything_owned_host") {
        return;
    }
    run_case("host", "dh");
}

#[test]
fn down_removes_everything_owned_router() {
    if !ready("down_removes_everything_owned_router") {
        return;
    }
    run_case("router", "dr");
}
