//! A second `overlayd apply` on a converged node changes nothing: it prints "no changes", its
//! plan is empty, and a netlink monitor running for the duration of the apply sees no event.

use overlay_tests::*;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn second_apply_on_converged_nodes_makes_no_netlink_change() {
    if !ready("second_apply_on_converged_nodes_makes_no_netlink_change") {
        return;
    }
    let _heavy = heavy_lock();
    let prefix = unique_prefix("idem");
    let lab = Lab::up(
        &prefix,
        &["--hosts", "1", "--vms-per-host", "1", "--no-check"],
    )
    .unwrap();

    for node in ["router", "mgmt", "h1"] {
        let ns = lab.node(node)["ns"].as_str().unwrap().to_string();
        let flags = lab.node_flags(node);

        let plan = overlayd_in(&ns, "plan", &[&["--json".to_string()][..], &flags].concat());
        assert!(plan.status.success(), "plan on {node}: {}", text(&plan));
        let v: serde_json::Value = serde_json::from_slice(&plan.stdout)
            .unwrap_or_else(|e| panic!("plan --json on {node} is not JSON ({e}): {}", text(&plan)));
        assert_eq!(v["ops"], serde_json::json!([]), "plan on converged {node}");

        wait_ipv6_settled(&ns);
        let _ = settled_snapshot(&ns, &[]);
        // Watch links, addresses, routes and rules (neighbours would be noisy: ARP traffic is
        // not a configuration change) from before apply starts until the socket is quiet, with
        // a netlink socket subscribed before apply (no start-up race) and `ip monitor` as a
        // second, independent witness.
        let watch = NetlinkWatch::start(&ns).unwrap();
        let mut mon = Bg {
            child: Command::new("ip")
                .args([
                    "-n", &ns, "-t", "monitor", "link", "address", "route", "rule",
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        };
        // give the monitor process time to subscribe
        std::thread::sleep(Duration::from_millis(300));
        let before = snapshot(&ns, &[]);
        let out = overlayd_in(&ns, "apply", &flags);
        let nl_events = watch.drain(Duration::from_millis(300));
        let _ = mon.child.kill();
        let _ = mon.child.wait();
        let mut events = String::new();
        mon.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut events)
            .unwrap();
        let after = snapshot(&ns, &[]);

        assert!(
            out.status.success(),
            "second apply on {node}: {}",
            text(&out)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.to_lowercase().contains("no changes"),
            "second apply on {node} should say \"no changes\": {}",
            text(&out)
        );
        assert!(
            nl_events.is_empty() && events.trim().is_empty(),
            "second apply on {node} caused netlink events: {nl_events:?}\nip monitor:\n{events}"
        );
        assert_eq!(before, after, "{}", diff(&before, &after));

        // JSON form agrees
        let j = overlayd_in(
            &ns,
            "apply",
            &[&["--json".to_string()][..], &flags].concat(),
        );
        assert!(j.status.success(), "{}", text(&j));
        let v: serde_json::Value = serde_json::from_slice(&j.stdout)
            .unwrap_or_else(|e| panic!("apply --json on {node} is not JSON ({e}): {}", text(&j)));
        assert_eq!(
            v["changes"],
            serde_json::json!([]),
            "apply --json on {node}"
        );
    }
    drop(lab);
}

/// The watcher is not blind: a change in the namespace (link, address, route, rule) is seen
/// and decoded, so an empty drain above means nothing happened.
#[test]
fn netlink_watch_sees_and_decodes_changes() {
    if !ready("netlink_watch_sees_and_decodes_changes") {
        return;
    }
    let ns = format!("{}-w", unique_prefix("nw"));
    let _g = NsGuard::new(&[&ns]);
    let watch = NetlinkWatch::start(&ns).unwrap();
    ip_batch(
        &ns,
        "link add brw type bridge\naddr add 192.0.2.1/24 dev brw\nlink set brw up\n\
         rule add from 192.0.2.1 lookup 77 priority 77\n",
    );
    let ev = watch.drain(Duration::from_millis(300));
    for want in [
        "RTM_NEWLINK",
        "RTM_NEWADDR (type 20) family 2",
        "RTM_NEWROUTE",
        "RTM_NEWRULE",
    ] {
        assert!(
            ev.iter().any(|e| e.starts_with(want)),
            "{want} not seen: {ev:?}"
        );
    }
}
