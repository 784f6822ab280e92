//! flood = evpn: FRR (zebra + bgpd) in every node, spawned by `overlayd run`, the router pair
//! the route reflectors, across two AZ subnets.
//!
//! - `evpn_bench_small`: the evpn benchmark (lab/src/bench/evpn.rs) at CI size — reachability,
//!   every MAC in every FDB from BGP, no unknown-unicast copies on the underlay (and a control
//!   that makes some), joins within 2 s, clean and power-off leaves, reflector failures. The
//!   120-host and 250-host figures are `overlay-lab bench --only evpn` (BENCHMARKS.md).
//! - `evpn_status_doctor_and_reflector_loss`: `overlayd status` and `doctor` report the
//!   sessions, VNI, remote VTEPs and MACs; TCP 179 blocked to one reflector warns, to both
//!   fails, unblocked is ok again.

use overlay_tests::*;
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

fn frr_ready(test: &str) -> bool {
    ready(test)
        && overlay_testkit::gate(test, &["vtysh", "keepalived"], || {
            if std::path::Path::new("/usr/lib/frr/zebra").exists() {
                Ok(())
            } else {
                Err("FRR (Debian package frr) is not installed".into())
            }
        })
}

#[test]
fn evpn_bench_small() {
    if !frr_ready("evpn_bench_small") {
        return;
    }
    let _heavy = heavy_lock();
    let prefix = unique_prefix("evb");
    let o = Command::new(overlay_lab())
        .args(["bench", "--only", "evpn", "--json", "--prefix", &prefix])
        .args([
            "--evpn-hosts",
            "6",
            "--evpn-joins",
            "3",
            "--evpn-power-offs",
            "1",
        ])
        .args(["--evpn-cold", "0"])
        .arg("--overlayd")
        .arg(overlayd())
        .output()
        .unwrap();
    let doc: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|_| panic!("bench output is not JSON:\n{}", text(&o)));
    let verdicts = doc["verdicts"].as_array().unwrap();
    assert!(verdicts.len() >= 9, "{doc:#}");
    let missed: Vec<&Value> = verdicts.iter().filter(|v| v["pass"] != true).collect();
    assert!(missed.is_empty(), "missed: {missed:#?}\n{}", text(&o));
    let lab = &doc["sections"][0]["data"]["lab"];
    assert_eq!(lab["unknown_unicast_copies"], 0, "{lab:#}");
    // the control: 3 echoes to an unknown MAC are copied to every other VTEP (9 nodes)
    assert!(lab["control_copies"].as_u64().unwrap() >= 3 * 8, "{lab:#}");
    assert_eq!(lab["joins_s"].as_array().unwrap().len(), 3, "{lab:#}");
    for j in lab["joins_s"].as_array().unwrap() {
        assert!(j.as_f64().unwrap() < 2.0, "join {j} s: {lab:#}");
    }
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        namespaces_with_prefix(&prefix).is_empty(),
        "bench left namespaces"
    );
}

/// One node's `overlayd <sub>` with its lab flags and daemon socket.
fn node_cmd(lab: &Lab, name: &str, sub: &str, extra: &[&str]) -> std::process::Output {
    let ns = lab.node(name)["ns"].as_str().unwrap().to_string();
    let mut f = lab.node_flags(name);
    f.push("--control-socket".into());
    f.push(format!(
        "/run/overlay-lab/{}/{name}/overlayd.sock",
        lab.prefix
    ));
    f.extend(extra.iter().map(|s| s.to_string()));
    overlayd_in(&ns, sub, &f)
}

fn evpn_check(lab: &Lab, name: &str) -> (String, String) {
    let o = node_cmd(lab, name, "doctor", &["-o", "json"]);
    let v: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|_| panic!("doctor output:\n{}", text(&o)));
    let c = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "evpn.bgp")
        .unwrap_or_else(|| panic!("no evpn.bgp in {v:#}"))
        .clone();
    (
        c["verdict"].as_str().unwrap().to_string(),
        c["summary"].as_str().unwrap().to_string(),
    )
}

fn in_ns(ns: &str, cmd: &str) {
    let o = Command::new("ip")
        .args(["netns", "exec", ns, "sh", "-c", cmd])
        .output()
        .unwrap();
    assert!(o.status.success(), "{cmd}: {}", text(&o));
}

#[test]
fn evpn_status_doctor_and_reflector_loss() {
    if !frr_ready("evpn_status_doctor_and_reflector_loss") {
        return;
    }
    let _heavy = heavy_lock();
    let prefix = unique_prefix("evd");
    let lab = Lab::up(
        &prefix,
        &[
            "--flood",
            "evpn",
            "--daemon",
            "--routers",
            "2",
            "--azs",
            "2",
            "--hosts",
            "2",
            "--vms-per-host",
            "1",
            "--timeout",
            "30",
            "--full-matrix",
        ],
    )
    .unwrap();
    assert_eq!(
        lab.up["reachability"]["all_ok"], true,
        "{:#}",
        lab.up["reachability"]
    );
    let nodes = lab.up["nodes"].as_array().unwrap().len();

    // status: the daemon's view, read from FRR
    let mut st = Value::Null;
    let ok = wait_for(Duration::from_secs(30), || {
        let o = node_cmd(&lab, "h1", "status", &["--json"]);
        st = serde_json::from_slice::<Value>(&o.stdout).unwrap_or(Value::Null);
        let e = &st["status"]["evpn"];
        e["sessions_up"] == 2 && e["remote_vteps"] == (nodes - 1) as u64
    });
    assert!(
        ok,
        "status never showed 2 sessions and {} remote VTEPs: {st:#}",
        nodes - 1
    );
    let e = &st["status"]["evpn"];
    assert_eq!(e["vnis"], 1, "{e:#}");
    assert_eq!(e["frr"], "spawn", "{e:#}");
    assert!(
        e["remote_macs"].as_u64().unwrap() >= (nodes - 1) as u64,
        "{e:#}"
    );
    assert_eq!(
        e["frr_pids"].as_array().unwrap().len(),
        2,
        "zebra and bgpd: {e:#}"
    );
    let text_status = text(&node_cmd(&lab, "h1", "status", &[]));
    assert!(
        text_status.contains("bgp:       2/2 sessions up"),
        "{text_status}"
    );
    assert!(
        text_status.contains("evpn:      AS 65000 client"),
        "{text_status}"
    );

    // doctor: ok everywhere (reflectors included)
    for n in ["router", "router2", "mgmt", "h1", "h2"] {
        let (v, s) = evpn_check(&lab, n);
        assert_eq!(v, "ok", "{n}: {s}");
    }
    // one reflector unreachable over BGP: warn, naming it; both: fail; unblocked: ok again
    let h1 = lab.node("h1")["ns"].as_str().unwrap().to_string();
    let r1 = lab.node("router")["underlay_ip"]
        .as_str()
        .unwrap()
        .to_string();
    in_ns(
        &h1,
        &format!(
            "nft add table inet evtest && nft add chain inet evtest o '{{ type filter hook output priority 0; }}' && \
             nft add rule inet evtest o ip daddr {r1} tcp dport 179 drop && \
             nft add rule inet evtest o ip daddr {r1} tcp sport 179 drop"
        ),
    );
    let mut last = (String::new(), String::new());
    let warned = wait_for(Duration::from_secs(30), || {
        last = evpn_check(&lab, "h1");
        last.0 == "warn"
    });
    assert!(warned, "one reflector blocked: {last:?}");
    assert!(last.1.contains(&format!("reflector {r1}")), "{last:?}");
    // traffic keeps flowing through the other reflector's routes
    assert!(
        lab_check_ok(&prefix),
        "one reflector left: not all reachable"
    );
    in_ns(
        &h1,
        "nft add rule inet evtest o tcp dport 179 drop && nft add rule inet evtest o tcp sport 179 drop",
    );
    let failed = wait_for(Duration::from_secs(30), || {
        last = evpn_check(&lab, "h1");
        last.0 == "fail"
    });
    assert!(failed, "both reflectors blocked: {last:?}");
    assert!(last.1.contains("no BGP session Established"), "{last:?}");
    in_ns(&h1, "nft delete table inet evtest");
    let back = wait_for(Duration::from_secs(30), || {
        last = evpn_check(&lab, "h1");
        last.0 == "ok"
    });
    assert!(back, "unblocked: {last:?}");
    drop(lab);
    assert!(namespaces_with_prefix(&prefix).is_empty());
}

fn lab_check_ok(prefix: &str) -> bool {
    let o = lab_cmd(&["check", "--prefix", prefix, "--json", "--timeout", "10"]).unwrap();
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    v["reachability"]["all_ok"] == true
}
