//! The executor in network namespaces: apply converges, every drift is repaired by the
//! next apply, down removes exactly what overlayd owns. Needs root (fails under CI=true
//! without it).

mod common;
use common::*;

#[test]
fn apply_converges_then_second_apply_changes_nothing() {
    if !require_root("apply_converges") {
        return;
    }
    let ns = Ns::new("cv");
    let mut args = ns.host_args();
    args.extend(["--fqdn", "node1.example.internal", "--dns", "10.77.0.1"].map(String::from));
    let out = ns.overlayd_ok("apply", &args);
    assert!(out.contains("create vxlan ethvxlan0"), "{out}");
    assert_eq!(ns.pending(&args), 0);
    let out = ns.overlayd_ok("apply", &args);
    assert!(out.contains("no changes"), "{out}");
    let link = ns.ip("-d link show ethvxlan0");
    assert!(
        link.contains("vxlan id 100")
            && link.contains("group 239.255.0.1")
            && link.contains("dstport 4789"),
        "{link}"
    );
    assert!(link.contains("master cloudbr0"), "{link}");
    let br = ns.ip("-d link show cloudbr0");
    assert!(
        br.contains("02:0f:0a:65:00:0a") && br.contains("stp_state 0") && br.contains("mtu 1450"),
        "{br}"
    );
    // The DHCP default route stays; overlay-sourced traffic uses table 79.
    assert_eq!(
        ns.ip("route show default").trim(),
        "default via 10.77.0.1 dev eth0 proto dhcp"
    );
    assert!(ns
        .ip("route show table 79")
        .contains("default via 10.101.0.1 dev cloudbr0 proto 79"));
    assert!(ns
        .ip("rule show")
        .contains("from 10.101.0.10 lookup 79 proto 79"));
    assert_eq!(ns.sysctl("net/ipv4/conf/eth0/force_igmp_version"), "2");
    assert_eq!(ns.sysctl("net/ipv6/conf/cloudbr0/disable_ipv6"), "1");
    // status (no daemon: read from the kernel) states the nested guest MTU and warns
    let st = ns.overlayd_ok("status", &args);
    assert!(st.contains("guest mtu: 1400"), "{st}");
    assert!(
        st.contains("warning:   guest networks get MTU 1400 < 1500"),
        "{st}"
    );
    assert!(st.contains("gateway:   mode overlay-sourced"), "{st}");
    let hosts = std::fs::read_to_string(ns.dir.join("hosts")).unwrap();
    assert!(
        hosts.starts_with("10.101.0.10\tnode1.example.internal node1\t# overlayd\n"),
        "{hosts}"
    );
    let resolv = std::fs::read_to_string(ns.dir.join("resolv.conf")).unwrap();
    assert!(resolv.contains("nameserver 10.77.0.1"), "{resolv}");
}

#[test]
fn every_drift_is_repaired_by_the_next_apply() {
    if !require_root("every_drift") {
        return;
    }
    let ns = Ns::new("dr");
    let args = ns.host_args();
    ns.overlayd_ok("apply", &args);
    let breaks: &[(&str, &str)] = &[
        ("vtep deleted", "ip link del ethvxlan0"),
        ("bridge deleted", "ip link del cloudbr0"),
        ("vtep down", "ip link set ethvxlan0 down"),
        ("bridge down", "ip link set cloudbr0 down"),
        ("vtep detached", "ip link set ethvxlan0 nomaster"),
        ("vtep wrong vni", "sh -c 'ip link del ethvxlan0 && ip link add ethvxlan0 group 79 type vxlan id 200 dstport 4789 group 239.255.0.1 dev eth0'"),
        ("vtep wrong group", "sh -c 'ip link del ethvxlan0 && ip link add ethvxlan0 group 79 type vxlan id 100 dstport 4789 group 239.255.7.7 dev eth0'"),
        ("vtep wrong port", "sh -c 'ip link del ethvxlan0 && ip link add ethvxlan0 group 79 type vxlan id 100 dstport 8472 group 239.255.0.1 dev eth0'"),
        ("mtu changed", "ip link set ethvxlan0 mtu 1400"),
        ("bridge mtu changed", "ip link set cloudbr0 mtu 1300"),
        ("address removed", "ip addr flush dev cloudbr0"),
        ("overlay-sourced rule removed", "ip rule del priority 1079"),
        ("table 79 default removed", "ip route del default table 79"),
        ("table 79 overlay route removed", "ip route del 10.101.0.0/16 table 79"),
        ("IMDS route removed", "ip route del 169.254.169.254/32"),
        ("IMDS route captured by cloud0", "sh -c 'ip link add cloud0 type bridge && ip addr add 169.254.0.1/16 dev cloud0 && ip link set cloud0 up && ip route replace 169.254.169.254/32 dev cloud0'"),
        ("igmp_max_memberships reset", "sh -c 'echo 20 > /proc/sys/net/ipv4/igmp_max_memberships'"),
        ("snooping on", "ip link set cloudbr0 type bridge mcast_snooping 1"),
        ("DHCP default route lost (fallback via the gateway)", "ip route del default via 10.77.0.1"),
        ("igmp version reset", "sh -c 'echo 0 > /proc/sys/net/ipv4/conf/eth0/force_igmp_version'"),
        ("bridge mac changed", "ip link set cloudbr0 address 02:aa:bb:cc:dd:ee"),
        ("stp on", "ip link set cloudbr0 type bridge stp_state 1"),
    ];
    for (what, cmd) in breaks {
        ns.exec(cmd);
        assert!(ns.pending(&args) > 0, "{what}: drift not seen by plan");
        let out = ns.overlayd_ok("apply", &args);
        assert_eq!(
            ns.pending(&args),
            0,
            "{what}: not repaired by one apply:\n{out}"
        );
        let link = ns.ip("-d link show ethvxlan0");
        assert!(
            link.contains("vxlan id 100")
                && link.contains("master cloudbr0")
                && link.contains("UP"),
            "{what}: {link}"
        );
        assert!(
            ns.ip("-d link show cloudbr0").contains("02:0f:0a:65:00:0a"),
            "{what}"
        );
    }
}

#[test]
fn down_removes_everything_owned_and_leaves_foreign_state() {
    if !require_root("down_removes") {
        return;
    }
    let ns = Ns::new("dn");
    // Foreign state that must survive.
    ns.exec("sh -c 'ip link add brx type bridge && ip addr add 192.168.50.1/24 dev brx && ip link set brx up && ip route add 192.168.60.0/24 via 192.168.50.2 dev brx && echo 1 > /proc/sys/net/ipv4/conf/eth0/rp_filter'");
    let before = (
        ns.ip("-br link show brx"),
        ns.ip("route show"),
        ns.sysctl("net/ipv4/conf/eth0/rp_filter"),
    );
    let mut args = ns.host_args();
    args.extend(["--fqdn", "h1.example"].map(String::from));
    ns.overlayd_ok("apply", &args);
    let out = ns.overlayd_ok("down", &args);
    assert!(
        out.contains("delete link cloudbr0") && out.contains("delete link ethvxlan0"),
        "{out}"
    );
    let links = ns.ip("-br link");
    assert!(
        !links.contains("cloudbr0") && !links.contains("ethvxlan0"),
        "{links}"
    );
    assert_eq!(ns.sysctl("net/ipv4/conf/eth0/force_igmp_version"), "0");
    assert!(!std::fs::read_to_string(ns.dir.join("hosts"))
        .unwrap()
        .contains("overlayd"));
    assert!(!ns.dir.join("state/state.json").exists());
    let after = (
        ns.ip("-br link show brx"),
        ns.ip("route show"),
        ns.sysctl("net/ipv4/conf/eth0/rp_filter"),
    );
    assert_eq!(before, after);
    // Idempotent.
    assert!(ns.overlayd_ok("down", &args).contains("nothing to remove"));
}

#[test]
fn router_forwarding_and_nat_then_down_restores() {
    if !require_root("router_nat") {
        return;
    }
    let ns = Ns::new("rt");
    let args = ns.args(&[
        "--role",
        "router",
        "--address",
        "10.101.0.1/16",
        "--group",
        "239.255.0.1",
        "--nat",
        "--nat-exception",
        "10.77.0.0/24",
    ]);
    ns.overlayd_ok("apply", &args);
    assert_eq!(ns.sysctl("net/ipv4/ip_forward"), "1");
    let rules = ns.exec("nft list table ip overlayd");
    assert!(
        rules.contains("masquerade") && rules.contains("10.77.0.0/24"),
        "{rules}"
    );
    assert!(
        !ns.ip("route show").contains("cloudbr0 proto 79"),
        "router must not get an overlay default route"
    );
    assert!(
        !ns.ip("rule show").contains("proto 79"),
        "router has no rule"
    );
    ns.exec("nft flush chain ip overlayd postrouting");
    assert!(ns.pending(&args) > 0);
    ns.overlayd_ok("apply", &args);
    assert_eq!(ns.pending(&args), 0);
    ns.overlayd_ok("down", &args);
    assert_eq!(ns.sysctl("net/ipv4/ip_forward"), "0");
    assert!(!ns.exec("nft list tables").contains("overlayd"));
}

#[test]
fn standalone_uses_dummy_or_veth_fallback() {
    if !require_root("standalone") {
        return;
    }
    let ns = Ns::new("sa");
    let args = ns.args(&["--role", "standalone", "--address", "10.100.0.1/16"]);
    let kernel_has_dummy = std::process::Command::new("ip")
        .args(["-n", &ns.name, "link", "add", "probe0", "type", "dummy"])
        .output()
        .unwrap()
        .status
        .success();
    if kernel_has_dummy {
        ns.ip("link del probe0");
    }
    ns.overlayd_ok("apply", &args);
    let d = ns.ip("-d link show ethdummy0");
    if kernel_has_dummy {
        assert!(d.contains("dummy"), "{d}");
    } else {
        eprintln!("kernel has no dummy driver: checking the veth fallback");
        assert!(d.contains("veth"), "{d}");
        assert!(ns.ip("link show ethdummy0p").contains("UP"));
    }
    assert!(d.contains("master cloudbr0"), "{d}");
    assert_eq!(ns.pending(&args), 0);
    assert!(!ns.ip("-br link").contains("ethvxlan0"));
    ns.overlayd_ok("down", &args);
    assert!(!ns.ip("-br link").contains("ethdummy0"));
}

#[test]
fn bad_input_exits_2_and_changes_nothing() {
    if !require_root("bad_input") {
        return;
    }
    let ns = Ns::new("bi");
    let snap = || {
        (
            ns.ip("-d link"),
            ns.ip("addr"),
            ns.ip("route"),
            ns.sysctl("net/ipv4/conf/eth0/force_igmp_version"),
        )
    };
    let before = snap();
    let cases: &[(&str, &str, &[&str])] = &[
        ("--group", "10.1.1.1", &[]),
        ("--vni", "0", &[]),
        ("--mtu", "1451", &[]),
        ("--underlay", "eth9", &[]),
        ("--address", "10.77.0.9/16", &["--gateway", "10.77.0.1"]),
    ];
    for (flag, val, extra) in cases {
        let mut args = ns.host_args();
        args.extend([flag.to_string(), val.to_string()]);
        args.extend(extra.iter().map(|s| s.to_string()));
        let o = ns.overlayd("apply", &args);
        assert_eq!(
            o.status.code(),
            Some(2),
            "{flag} {val}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(val),
            "{flag}: error must name the value: {err}"
        );
    }
    assert_eq!(before, snap());
    assert!(!ns.dir.join("state").exists());
}

/// Devices made by hand (as the original scripts made them) are never touched by `apply`
/// or `down` (the device group is the only mark); `overlayd adopt` marks them without
/// re-creating them — a ping across the adoption loses nothing — and refuses, naming the
/// difference and marking nothing, when they do not match the configuration.
#[test]
fn adopt_takes_over_hand_made_devices_without_traffic_loss() {
    if !require_root("adopt") {
        return;
    }
    let ns = Ns::new("ad");
    let d = ns.dir.display();
    // the peer: a second overlay host configured by overlayd
    sh(&format!(
        "ip netns exec {p} {bin} apply --role host --underlay eth0 --address 10.101.0.20/16 \
         --gateway 10.101.0.1 --group 239.255.0.1 --state-dir {d}/peer-state \
         --hosts-file {d}/peer-hosts --resolv-conf {d}/peer-resolv",
        p = ns.peer,
        bin = overlayd().display()
    ));
    let hand_made = |vni: u32| {
        ns.exec(&format!(
            "sh -c 'echo 2 > /proc/sys/net/ipv4/conf/eth0/force_igmp_version && \
             ip link add cloudbr0 type bridge stp_state 0 mcast_snooping 0 && \
             ip link set cloudbr0 address 02:0f:0a:65:00:0a mtu 1450 && \
             ip addr add 10.101.0.10/16 dev cloudbr0 && \
             ip link add ethvxlan0 mtu 1450 type vxlan id {vni} dstport 4789 group 239.255.0.1 dev eth0 && \
             ip link set ethvxlan0 master cloudbr0 && ip link set ethvxlan0 up && ip link set cloudbr0 up'"
        ))
    };
    // 1. A mismatch is refused, naming it, and nothing is marked.
    hand_made(200);
    let args = ns.host_args();
    let o = ns.overlayd("adopt", &args);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("vni 200 != 100"), "{err}");
    assert!(!ns.ip("-d link show cloudbr0").contains("group 79"));
    ns.exec("sh -c 'ip link del ethvxlan0; ip link del cloudbr0'");

    // 2. A matching hand-made overlay: apply refuses, down leaves it, adopt takes it over.
    hand_made(100);
    let index_before = ns.ip("-o link show cloudbr0");
    let o = ns.overlayd("apply", &args);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("overlayd adopt"));
    ns.overlayd_ok("down", &args);
    assert!(
        ns.ip("-br link").contains("cloudbr0"),
        "down deleted a foreign bridge"
    );
    let ping = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            "ping",
            "-q",
            "-i",
            "0.05",
            "-c",
            "60",
            "10.101.0.20",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let out = ns.overlayd_ok("adopt", &args);
    assert!(
        out.contains("mark cloudbr0 as owned") && out.contains("mark ethvxlan0 as owned"),
        "{out}"
    );
    ns.overlayd_ok("apply", &args);
    assert_eq!(ns.pending(&args), 0);
    let ping = ping.wait_with_output().unwrap();
    let summary = String::from_utf8_lossy(&ping.stdout).to_string();
    assert!(
        summary.contains("60 packets transmitted, 60 received"),
        "{summary}"
    );
    // not re-created: same ifindex, now carrying the mark
    let after = ns.ip("-o link show cloudbr0");
    assert_eq!(
        index_before.split(':').next(),
        after.split(':').next(),
        "cloudbr0 was re-created"
    );
    assert!(ns.ip("-d link show cloudbr0").contains("group 79"));
    // now ours: down removes it
    ns.overlayd_ok("down", &args);
    assert!(!ns.ip("-br link").contains("cloudbr0"));
}

/// Unicast flooding: a VTEP without a group and one all-zeros FDB entry per peer; a change of
/// peers is one batch; an entry someone else added is never removed; idempotent.
#[test]
fn unicast_flood_list_follows_the_peers_and_keeps_foreign_entries() {
    if !require_root("unicast_flood_list") {
        return;
    }
    let ns = Ns::new("uf");
    let unicast = |peers: &str| {
        ns.args(&[
            "--role",
            "host",
            "--address",
            "10.101.0.10/16",
            "--gateway",
            "10.101.0.1",
            "--flood",
            "unicast",
            "--peer",
            peers,
        ])
    };
    let zeros = || ns.flood_list();
    let a = unicast("10.77.0.11,10.77.0.12,10.77.0.13");
    let out = ns.overlayd_ok("apply", &a);
    assert!(out.contains("no group: unicast flooding"), "{out}");
    assert!(out.contains("add 3 peer(s)"), "{out}");
    let link = ns.ip("-d link show ethvxlan0");
    assert!(
        link.contains("vxlan id 100 dev eth0") && !link.contains("group 239"),
        "{link}"
    );
    assert_eq!(zeros(), ["10.77.0.11", "10.77.0.12", "10.77.0.13"]);
    assert_eq!(ns.sysctl("net/ipv4/conf/eth0/force_igmp_version"), "0");
    let again = ns.overlayd_ok("apply", &a);
    assert!(again.contains("no changes"), "{again}");
    // someone else's entry, then a peer leaves and one arrives
    ns.exec("bridge fdb append 00:00:00:00:00:00 dev ethvxlan0 dst 10.77.0.99");
    let b = unicast("10.77.0.11,10.77.0.13,10.77.0.14");
    let out = ns.overlayd_ok("apply", &b);
    assert!(
        out.contains("add 1 peer(s) [10.77.0.14] remove 1 peer(s) [10.77.0.12]"),
        "{out}"
    );
    assert_eq!(
        zeros(),
        ["10.77.0.11", "10.77.0.13", "10.77.0.14", "10.77.0.99"]
    );
    assert_eq!(ns.pending(&b), 0);
    // a deleted entry of ours is put back by the next apply
    ns.exec("bridge fdb del 00:00:00:00:00:00 dev ethvxlan0 dst 10.77.0.13");
    assert_eq!(ns.pending(&b), 1);
    ns.overlayd_ok("apply", &b);
    assert_eq!(
        zeros(),
        ["10.77.0.11", "10.77.0.13", "10.77.0.14", "10.77.0.99"]
    );
    // the VTEP re-created (as after a reboot): what was recorded is forgotten, so an entry
    // someone else adds later for a former peer's address is not taken for ours
    ns.exec("ip link del ethvxlan0");
    let c = unicast("10.77.0.11");
    ns.overlayd_ok("apply", &c);
    assert_eq!(zeros(), ["10.77.0.11"]);
    ns.exec("bridge fdb append 00:00:00:00:00:00 dev ethvxlan0 dst 10.77.0.13");
    assert_eq!(
        ns.pending(&c),
        0,
        "a foreign entry with a former peer's address is left alone"
    );
    let st = std::fs::read_to_string(ns.dir.join("state/state.json")).unwrap();
    assert!(
        st.contains("10.77.0.11") && !st.contains("10.77.0.13") && !st.contains("10.77.0.14"),
        "{st}"
    );
    // down removes the VTEP (and with it the flood list)
    ns.overlayd_ok("down", &c);
    assert!(!ns.exec("ip -o link show").contains("ethvxlan0"));
}

/// Off EC2 (nothing answers on 169.254.169.254), `auto` values and keys only a tag could give
/// are refused with a message naming the key and why, exit status 2, and nothing changed.
#[test]
fn auto_values_without_imds_name_what_is_missing_and_change_nothing() {
    if !require_root("auto_values_without_imds") {
        return;
    }
    let ns = Ns::new("na");
    let a = ns.args(&[
        "--role",
        "host",
        "--address",
        "auto",
        "--gateway",
        "auto",
        "--group",
        "239.255.0.1",
    ]);
    let o = ns.overlayd("apply", &a);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("invalid address = \"auto\" (from command line)")
            && err.contains("IMDS")
            && err.contains("nothing was changed"),
        "{err}"
    );
    // no role anywhere: the role is what is missing, and why no tag could give it
    let o = ns.overlayd("apply", &ns.args(&["--address", "10.101.0.10/16"]));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("invalid role") && err.contains("IMDS"),
        "{err}"
    );
    assert!(!ns.exec("ip -o link show").contains("cloudbr0"));
    // gateway = auto needs no IMDS: a complete configuration converges as before
    let a = ns.args(&[
        "--role",
        "host",
        "--address",
        "10.101.0.10/16",
        "--gateway",
        "auto",
        "--group",
        "239.255.0.1",
    ]);
    let out = ns.overlayd_ok("apply", &a);
    assert!(out.contains("create vxlan ethvxlan0"), "{out}");
    let x = ns.overlayd_ok("validate", &[a.clone(), vec!["--explain".into()]].concat());
    assert!(
        x.contains("gateway")
            && x.contains("10.101.0.1")
            && x.contains("(command line: auto: 10.101.0.0/16's first host address"),
        "{x}"
    );
}
