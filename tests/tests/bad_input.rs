//! Bad input is refused before anything changes: exit status 2, a message naming the key (and
//! the value where there is one), and the namespace, hosts file, resolv.conf and state dir are
//! exactly as before.

use overlay_tests::*;

struct Case {
    name: &'static str,
    /// flags to set (replacing an existing value of the same flag), value None = bare flag
    set: Vec<(&'static str, Option<&'static str>)>,
    /// flags to remove
    remove: Vec<&'static str>,
    /// TOML text for --config
    config: Option<&'static str>,
    /// words the error message must contain (case-insensitive)
    mention: Vec<&'static str>,
}

fn case(name: &'static str, flag: &'static str, value: &'static str) -> Case {
    Case {
        name,
        set: vec![(flag, Some(value))],
        remove: vec![],
        config: None,
        mention: vec![flag.trim_start_matches("--"), value],
    }
}

fn cases() -> Vec<Case> {
    vec![
        case("group not multicast", "--group", "10.1.2.3"),
        case("group not an address", "--group", "239.255.0.300"),
        case("vni 0", "--vni", "0"),
        case("vni 2^24", "--vni", "16777216"),
        case("port 0", "--port", "0"),
        case("address without prefix length", "--address", "10.101.0.10"),
        case(
            "address is the network address",
            "--address",
            "10.101.0.0/16",
        ),
        case(
            "address is the broadcast address",
            "--address",
            "10.101.255.255/16",
        ),
        case("gateway outside the subnet", "--gateway", "10.102.0.1"),
        case("gateway equals the address", "--gateway", "10.101.0.10"),
        case("unknown role", "--role", "hypervisor"),
        case(
            "bridge name longer than 15 bytes",
            "--bridge",
            "cloudbr0cloudbr0",
        ),
        case("vtep name with a slash", "--vtep", "eth/vx0"),
        case(
            "underlay name longer than 15 bytes",
            "--underlay",
            "eth0eth0eth0eth0",
        ),
        case("mtu 67", "--mtu", "67"),
        case("mtu 8951", "--mtu", "8951"),
        case("underlay missing", "--underlay", "eth9"),
        Case {
            name: "overlay overlaps the underlay subnet",
            set: vec![
                ("--address", Some("10.0.1.10/16")),
                ("--gateway", Some("10.0.1.1")),
            ],
            remove: vec![],
            config: None,
            mention: vec!["10.0.1.10"],
        },
        Case {
            name: "gateway given for router",
            set: vec![
                ("--role", Some("router")),
                ("--address", Some("10.101.0.1/16")),
                ("--gateway", Some("10.101.0.254")),
            ],
            remove: vec![],
            config: None,
            mention: vec!["gateway"],
        },
        Case {
            name: "gateway missing for host",
            set: vec![],
            remove: vec!["--gateway"],
            config: None,
            mention: vec!["gateway"],
        },
        Case {
            name: "nat on a host",
            set: vec![("--nat", None)],
            remove: vec![],
            config: None,
            mention: vec!["nat"],
        },
        Case {
            name: "unknown TOML key",
            set: vec![],
            remove: vec![],
            config: Some("vni = 100\nfrobnicate_level = 3\n"),
            mention: vec!["frobnicate_level"],
        },
    ]
}

/// Apply `c` to a valid host flag list.
fn flags_for(node: &Node, c: &Case) -> Vec<String> {
    let base = node.flags("host");
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < base.len() {
        let f = base[i].as_str();
        let takes_value = base
            .get(i + 1)
            .map(|v| !v.starts_with("--"))
            .unwrap_or(false);
        let replaced = c.set.iter().any(|(k, _)| *k == f) || c.remove.contains(&f);
        if !replaced {
            out.push(base[i].clone());
            if takes_value {
                out.push(base[i + 1].clone());
            }
        }
        i += if takes_value { 2 } else { 1 };
    }
    for (k, v) in &c.set {
        out.push(k.to_string());
        if let Some(v) = v {
            out.push(v.to_string());
        }
    }
    out
}

#[test]
fn bad_inputs_exit_2_and_change_nothing() {
    if !ready("bad_inputs_exit_2_and_change_nothing") {
        return;
    }
    let prefix = unique_prefix("bad");
    // underlay MTU 1500: then MTU 8951 is wrong by any rule
    let node = Node::new(&prefix, 1500);
    let files = |n: &Node| {
        (
            std::fs::read_to_string(n.path("hosts")).unwrap(),
            std::fs::read_to_string(n.path("resolv.conf")).unwrap(),
            std::fs::read_dir(n.path("state")).unwrap().count(),
        )
    };

    // the base is valid, so each case fails for its own reason only
    let ok = node.overlayd("validate", &node.flags("host"));
    assert!(
        ok.status.success(),
        "base flags must validate: {}",
        text(&ok)
    );

    let mut failures = Vec::new();
    for c in cases() {
        // compared per case, so one case that does change something is reported once and then
        // cleaned up (overlayd down) instead of failing every later case too
        let before = settled_snapshot(&node.ns, &[]);
        let files_before = files(&node);
        let cfg = node.path("overlayd.toml");
        std::fs::write(&cfg, c.config.unwrap_or("# test\n")).unwrap();
        let flags = flags_for(&node, &c);
        for sub in ["validate", "plan", "apply"] {
            let out = node.overlayd(sub, &flags);
            let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
            if out.status.code() != Some(2) {
                failures.push(format!(
                    "{}: `{sub}` exit {:?}, want 2\n  flags: {}\n{}",
                    c.name,
                    out.status.code(),
                    flags.join(" "),
                    text(&out)
                ));
                continue;
            }
            for m in &c.mention {
                if !err.contains(&m.to_lowercase()) {
                    failures.push(format!(
                        "{}: `{sub}` message does not mention {m:?}: {}",
                        c.name,
                        err.trim()
                    ));
                }
            }
        }
        let now = snapshot(&node.ns, &[]);
        let files_now = files(&node);
        if now != before {
            failures.push(format!(
                "{}: namespace changed:\n{}",
                c.name,
                diff(&before, &now)
            ));
        }
        if files_now != files_before {
            failures.push(format!("{}: hosts/resolv.conf/state dir changed", c.name));
        }
        if now != before || files_now != files_before {
            std::fs::write(&cfg, "# test\n").unwrap();
            let _ = node.overlayd("down", &node.flags("host"));
        }
    }
    std::fs::write(node.path("overlayd.toml"), "# test\n").unwrap();
    assert!(
        failures.is_empty(),
        "{} problems:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
