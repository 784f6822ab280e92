//! overlayd on EC2-shaped nodes in the strict lab: DHCP default routes on every instance, the
//! VPC's source/destination check, AWS link-local services next to CloudStack's `cloud0`, and
//! CloudStack's own guest VXLAN networks on top of the overlay.

use overlay_tests::*;
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

fn ns_of(lab: &Lab, node: &str) -> String {
    lab.node(node)["ns"].as_str().unwrap().to_string()
}

/// `bash -c SCRIPT` inside a namespace; panics on failure, returns stdout.
fn in_ns(ns: &str, script: &str) -> String {
    sh(&["ip", "netns", "exec", ns, "bash", "-c", script])
}

fn ping(ns: &str, ip: &str) -> bool {
    run(
        std::process::Command::new("ip").args(["netns", "exec", ns, "ping", "-c1", "-W1", ip]),
        Duration::from_secs(5),
    )
    .map(|o| o.status.success())
    .unwrap_or(false)
}

fn ping_soon(ns: &str, ip: &str) -> bool {
    (0..5).any(|_| ping(ns, ip))
}

fn vpc_drops(lab: &Lab) -> Value {
    lab.status()["vpc_drops"].clone()
}

/// overlayd flags of a lab node plus its daemon's control socket (`--daemon` labs).
fn daemon_flags(lab: &Lab, node: &str) -> Vec<String> {
    let mut f = lab.node_flags(node);
    f.push("--control-socket".into());
    f.push(format!(
        "/run/overlay-lab/{}/{node}/overlayd.sock",
        lab.prefix
    ));
    f
}

fn overlayd_in_ok(ns: &str, sub: &str, flags: &[String]) -> String {
    let o = overlayd_in(ns, sub, flags);
    assert!(o.status.success(), "overlayd {sub} in {ns}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn pending(ns: &str, flags: &[String]) -> usize {
    let mut f = flags.to_vec();
    f.push("--json".into());
    let v: Value = serde_json::from_str(&overlayd_in_ok(ns, "plan", &f)).unwrap();
    v["ops"].as_array().unwrap().len()
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// Namespaces standing in for guests, deleted on drop.
struct Guests(Vec<String>);

impl Drop for Guests {
    fn drop(&mut self) {
        for g in &self.0 {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", g])
                .status();
        }
    }
}

/// A guest of network `net` on `host_ns`: a namespace whose eth0 (172.31.<net>.<k>/24, MTU
/// of the nested guest network) is the peer of `g<net>` in brvx-<net>.
fn add_guest(guests: &mut Guests, prefix: &str, host_ns: &str, net: u32, k: u32) -> String {
    let g = format!("{prefix}-g{net}x{k}");
    let _ = std::process::Command::new("ip")
        .args(["netns", "del", &g])
        .stderr(std::process::Stdio::null())
        .status();
    sh(&["ip", "netns", "add", &g]);
    guests.0.push(g.clone());
    in_ns(
        host_ns,
        &format!(
            "ip link add g{net} type veth peer name eth0 netns {g} && \
             ip link set g{net} master brvx-{net} up && \
             ip -n {g} link set lo up && \
             ip -n {g} addr add 172.31.{net}.{k}/24 dev eth0 && \
             ip -n {g} link set eth0 mtu $(cat /sys/class/net/vxlan{net}/mtu) up && \
             ip netns exec {g} sysctl -qw net.ipv6.conf.all.disable_ipv6=1"
        ),
    );
    g
}

/// The CloudStack guest-network acceptance: 25 guest VXLAN networks (CloudStack's
/// semantics: vxlanN over cloudbr0, brvx-N, 239.x.y.z/32 routes) on two hosts under
/// `overlayd run`: all 25 devices up, guests on networks 1 and 25 ping across hosts,
/// CloudStack's objects never make a plan, their routes survive resyncs and repairs, and
/// overlay multicast keeps working past shortened bridge timers, with a querier appearing
/// inside the overlay, and across a guest network's device rejoining.
#[test]
fn cloudstack_guest_vxlan_25_networks_up_and_passing() {
    if !ready("cloudstack_guest_vxlan_25_networks_up_and_passing") {
        return;
    }
    let _heavy = heavy_lock();
    let prefix = unique_prefix("cs");
    let lab = Lab::up(
        &prefix,
        &["--hosts", "2", "--vms-per-host", "1", "--daemon"],
    )
    .unwrap();
    let script = fixture("cloudstack-guest-vxlan.sh");
    let script = script.display();
    let (h1, h2) = (ns_of(&lab, "h1"), ns_of(&lab, "h2"));
    for h in [&h1, &h2] {
        in_ns(
            h,
            &format!("for n in $(seq 1 25); do {script} add $n; done"),
        );
    }
    for h in [&h1, &h2] {
        let v: Value =
            serde_json::from_str(&sh(&["ip", "-n", h, "-j", "link", "show", "type", "vxlan"]))
                .unwrap();
        let up: Vec<&str> = v
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| {
                l["ifname"].as_str().unwrap().starts_with("vxlan")
                    && l["flags"].as_array().unwrap().iter().any(|f| f == "UP")
            })
            .map(|l| l["ifname"].as_str().unwrap())
            .collect();
        assert_eq!(up.len(), 25, "{h}: guest VXLAN devices up: {up:?}");
        let routes = sh(&["ip", "-n", h, "-4", "route", "show"]);
        assert_eq!(routes.matches("239.0.0.").count(), 25, "{routes}");
        assert_eq!(sysctls(h, &["net.ipv4.igmp_max_memberships"])[0].1, "1024");
    }
    let mut guests = Guests(vec![]);
    let g1a = add_guest(&mut guests, &prefix, &h1, 1, 1);
    add_guest(&mut guests, &prefix, &h2, 1, 2);
    let g25a = add_guest(&mut guests, &prefix, &h1, 25, 1);
    add_guest(&mut guests, &prefix, &h2, 25, 2);
    let check = |when: &str| {
        for g in &guests.0 {
            let _ = run(
                std::process::Command::new("ip").args(["-n", g, "neigh", "flush", "all"]),
                Duration::from_secs(5),
            );
        }
        assert!(
            ping_soon(&g1a, "172.31.1.2"),
            "{when}: network 1 across hosts"
        );
        assert!(
            ping_soon(&g25a, "172.31.25.2"),
            "{when}: network 25 across hosts"
        );
    };
    check("after creation");

    // CloudStack's objects are foreign: no plan, on both hosts.
    for (h, n) in [(&h1, "h1"), (&h2, "h2")] {
        assert_eq!(pending(h, &daemon_flags(&lab, n)), 0, "{n}");
    }

    // A repair under the daemon (VTEP deleted) leaves CloudStack's routes and devices alone.
    in_ns(&h1, "ip link del ethvxlan0");
    let f1 = daemon_flags(&lab, "h1");
    assert!(
        wait_for(Duration::from_secs(10), || pending(&h1, &f1) == 0),
        "VTEP not repaired"
    );
    let routes = sh(&["ip", "-n", &h1, "-4", "route", "show"]);
    assert_eq!(routes.matches("239.0.0.").count(), 25, "{routes}");
    check("after a repair");

    // Multicast policy (cloudbr0 snooping off): shortened bridge timers (membership 2 s) and
    // a querier appearing inside the overlay (a guest running one, here the lab VM on h1)
    // change nothing: the bridge floods overlay multicast instead of pruning by reports.
    for h in [&h1, &h2] {
        in_ns(
            h,
            "ip link set cloudbr0 type bridge mcast_membership_interval 200 \
             mcast_querier_interval 100 mcast_query_interval 50",
        );
    }
    let vm = ns_of_vm(&lab, "h1-vm1");
    in_ns(
        &vm,
        "ip link add qbr type bridge mcast_snooping 1 mcast_querier 1 mcast_query_interval 50 \
         mcast_igmp_version 2 && ip link set eth0 master qbr && ip link set qbr up",
    );
    std::thread::sleep(Duration::from_millis(3000));
    check("past the membership timeout with a querier in the overlay");

    // A guest network's device rejoining (CloudStack deletes and re-creates it).
    in_ns(
        &h2,
        &format!("{script} delete 25 && {script} add 25 && ip link set g25 master brvx-25"),
    );
    check("after vxlan25 rejoined on h2");

    // Resyncs (30 s in the lab; forced here by SIGHUP-free means: a full plan) keep them.
    for (h, n) in [(&h1, "h1"), (&h2, "h2")] {
        assert_eq!(pending(h, &daemon_flags(&lab, n)), 0, "{n}");
        let routes = sh(&["ip", "-n", h, "-4", "route", "show"]);
        assert_eq!(routes.matches("239.0.0.").count(), 25, "{n}: {routes}");
    }
    drop(guests);
}

fn ns_of_vm(lab: &Lab, vm: &str) -> String {
    lab.up["vms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == vm)
        .unwrap_or_else(|| panic!("no VM {vm}"))["ns"]
        .as_str()
        .unwrap()
        .to_string()
}

/// IMDS, the VPC DNS resolver and Amazon Time Sync stay on the underlay when the KVM agent's
/// `cloud0` (169.254.0.1/16) appears, and the daemon restores a removed /32.
#[test]
fn aws_link_local_services_stay_on_the_underlay_next_to_cloud0() {
    if !ready("aws_link_local_services_stay_on_the_underlay_next_to_cloud0") {
        return;
    }
    let _heavy = heavy_lock();
    let prefix = unique_prefix("ll");
    let lab = Lab::up(
        &prefix,
        &["--hosts", "1", "--vms-per-host", "0", "--daemon"],
    )
    .unwrap();
    for node in ["router", "mgmt", "h1"] {
        let ns = ns_of(&lab, node);
        in_ns(
            &ns,
            "ip link add cloud0 type bridge && ip addr add 169.254.0.1/16 dev cloud0 && \
             ip link set cloud0 up",
        );
        for a in ["169.254.169.254", "169.254.169.253", "169.254.169.123"] {
            let r = sh(&["ip", "-n", &ns, "route", "get", a]);
            assert!(
                r.contains("dev eth0"),
                "{node}: {a} not via the underlay: {r}"
            );
            assert!(ping_soon(&ns, a), "{node}: {a} unreachable with cloud0 up");
        }
        let f = daemon_flags(&lab, node);
        assert_eq!(pending(&ns, &f), 0, "{node}: cloud0 made a plan");
        in_ns(&ns, "ip route del 169.254.169.254/32 dev eth0");
        assert!(
            wait_for(Duration::from_secs(10), || sh(&[
                "ip",
                "-n",
                &ns,
                "route",
                "get",
                "169.254.169.254"
            ])
            .contains("dev eth0")),
            "{node}: IMDS route not restored"
        );
    }
}

/// The strict lab catches the classic fault: without overlayd's overlay-sourced rule, a node
/// answers a VPC client from its overlay address through eth0 and the VPC drops the reply
/// (source/destination check). Node-to-node overlay traffic never hairpins via the router.
#[test]
fn strict_vpc_drops_overlay_sourced_replies_on_the_underlay() {
    if !ready("strict_vpc_drops_overlay_sourced_replies_on_the_underlay") {
        return;
    }
    let _heavy = heavy_lock();
    let prefix = unique_prefix("sd");
    let lab = Lab::up(
        &prefix,
        &["--hosts", "2", "--vms-per-host", "0", "--daemon"],
    )
    .unwrap();
    let (h1, client, router) = (
        ns_of(&lab, "h1"),
        lab.up["client"]["ns"].as_str().unwrap().to_string(),
        ns_of(&lab, "router"),
    );
    assert!(
        ping_soon(&client, "10.101.0.10"),
        "client -> h1 with overlayd"
    );
    let f1 = daemon_flags(&lab, "h1");
    overlayd_in_ok(&h1, "pause", &f1);
    let before = vpc_drops(&lab)["src_check_drops"].as_u64().unwrap();
    in_ns(&h1, "ip rule del priority 1079");
    assert!(
        !ping(&client, "10.101.0.10") && !ping(&client, "10.101.0.10"),
        "reply from the overlay address through eth0 was not dropped"
    );
    let after = vpc_drops(&lab)["src_check_drops"].as_u64().unwrap();
    assert!(after >= before + 2, "drops {before} -> {after}");
    overlayd_in_ok(&h1, "resume", &f1);
    assert!(
        wait_for(Duration::from_secs(10), || pending(&h1, &f1) == 0),
        "rule not restored"
    );
    assert!(
        ping_soon(&client, "10.101.0.10"),
        "client -> h1 after resume"
    );

    // Node to node stays direct: with the router's cloudbr0 down, h1 still reaches h2.
    let r = sh(&[
        "ip",
        "-n",
        &h1,
        "route",
        "get",
        "10.101.0.11",
        "from",
        "10.101.0.10",
    ]);
    assert!(!r.contains("via"), "{r}");
    let fr = daemon_flags(&lab, "router");
    overlayd_in_ok(&router, "pause", &fr);
    in_ns(&router, "ip link set cloudbr0 down");
    assert!(
        ping_soon(&h1, "10.101.0.11"),
        "h1 -> h2 needs the router: hairpin"
    );
    overlayd_in_ok(&router, "resume", &fr);
    assert!(wait_for(Duration::from_secs(10), || pending(&router, &fr) == 0));
    // Every node keeps its DHCP default route untouched.
    for n in ["mgmt", "h1", "h2"] {
        let d = sh(&[
            "ip",
            "-n",
            &ns_of(&lab, n),
            "-4",
            "route",
            "show",
            "default",
        ]);
        assert_eq!(d.trim(), "default via 10.0.0.1 dev eth0 proto dhcp", "{n}");
    }
}

/// The fault the CloudStack test guards against is real here: with the kernel's default
/// `igmp_max_memberships` (20) the 21st and later guest networks never come up although
/// CloudStack's script reports success; at overlayd's 1024 all 25 do.
#[test]
fn guest_networks_past_20_fail_without_raised_igmp_max_memberships() {
    if !ready("guest_networks_past_20_fail_without_raised_igmp_max_memberships") {
        return;
    }
    let ns = format!("{}-g", unique_prefix("gm"));
    let _g = NsGuard::new(&[&ns]);
    ip_batch(
        &ns,
        "link set lo up\nlink add cloudbr0 type bridge\naddr add 10.101.0.10/16 dev cloudbr0\n\
         link set cloudbr0 up\n",
    );
    let script = fixture("cloudstack-guest-vxlan.sh");
    let up_count = || -> usize {
        let v: Value = serde_json::from_str(&sh(&[
            "ip", "-n", &ns, "-j", "link", "show", "type", "vxlan",
        ]))
        .unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .filter(|l| l["flags"].as_array().unwrap().iter().any(|f| f == "UP"))
            .count()
    };
    let create_all = || {
        in_ns(
            &ns,
            &format!(
                "for n in $(seq 1 25); do {s} delete $n; {s} add $n || exit 1; done",
                s = script.display()
            ),
        )
    };
    assert_eq!(sysctls(&ns, &["net.ipv4.igmp_max_memberships"])[0].1, "20");
    create_all();
    assert_eq!(
        up_count(),
        20,
        "the kernel default should stop at 20 groups"
    );
    in_ns(&ns, "echo 1024 > /proc/sys/net/ipv4/igmp_max_memberships");
    create_all();
    assert_eq!(up_count(), 25);
}
