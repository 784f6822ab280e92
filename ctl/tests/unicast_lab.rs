//! Unicast flooding end to end, with zero-configuration nodes: a 20-host lab whose VPC drops
//! every multicast frame (no Transit Gateway at all), every node's overlayd configured by its
//! instance tags alone (IMDSv2 through the lab's emulator; one host with instance metadata
//! tags off reads them with DescribeTags), and the peers discovered from moto's running
//! instances (DescribeInstances through the lab's EC2 API relay). Then: a new instance gets
//! its flood entry on every node, a terminated one loses it, and an API outage flushes
//! nothing and recovers when the API returns.
//!
//! Needs root, network namespaces, nftables, moto (scripts/aws-emulator) and the workspace's
//! overlay-lab and overlayd binaries (`cargo build --workspace --bins`).

mod common;

use common::*;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const HOSTS: usize = 20;
const INTERVAL_S: u64 = 2;

/// The workspace's overlayd, or UNICAST_LAB_OVERLAYD (e.g. the static release build, to
/// measure its resident memory: BENCHMARKS.md).
fn overlayd_bin() -> PathBuf {
    std::env::var_os("UNICAST_LAB_OVERLAYD")
        .map(PathBuf::from)
        .unwrap_or_else(|| lab_bin().with_file_name("overlayd"))
}

/// Resident memory (KiB) of every node's `overlayd run`: (min, median, max).
fn daemon_rss(p: &str) -> (u64, u64, u64) {
    let mut v: Vec<u64> = nodes()
        .iter()
        .filter_map(|(n, _)| {
            let pid =
                std::fs::read_to_string(format!("/run/overlay-lab/{p}/{n}/overlayd.pid")).ok()?;
            let st = std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).ok()?;
            st.lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .collect();
    v.sort();
    assert_eq!(v.len(), nodes().len(), "every daemon's RSS");
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

fn lab(args: &[&str]) -> Output {
    lab_with(&overlayd_bin(), args)
}

fn sh(ns: &str, cmd: &str) -> String {
    let o = Command::new("sh")
        .args(["-c", &format!("ip netns exec {ns} {cmd}")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The VTEP's all-zeros FDB destinations in namespace `ns`.
fn flood_list(ns: &str) -> BTreeSet<String> {
    sh(ns, "bridge fdb show dev ethvxlan0")
        .lines()
        .filter(|l| l.starts_with("00:00:00:00:00:00"))
        .filter_map(|l| {
            l.split_whitespace()
                .skip_while(|w| *w != "dst")
                .nth(1)
                .map(String::from)
        })
        .collect()
}

/// (node name, VPC address) of the lab's topology (overlay-lab's topo.rs).
fn nodes() -> Vec<(String, String)> {
    let mut v = vec![
        ("router".to_string(), "10.0.0.4".to_string()),
        ("mgmt".to_string(), "10.0.0.5".to_string()),
    ];
    for i in 0..HOSTS {
        v.push((format!("h{}", i + 1), format!("10.0.0.{}", 10 + i)));
    }
    v
}

fn zero_config_tags(p: &str, node: &str) -> Vec<(String, String)> {
    let role = match node {
        "router" => "router",
        "mgmt" => "management",
        _ => "host",
    };
    let mut t = vec![
        ("Name".to_string(), format!("{p}-{node}")),
        ("overlay:cluster".to_string(), p.to_string()),
        ("overlay:role".to_string(), role.to_string()),
        ("overlay:flood".to_string(), "unicast".to_string()),
        (
            "overlay:address".to_string(),
            if node == "mgmt" {
                "10.101.0.2/16".to_string()
            } else {
                "auto".to_string()
            },
        ),
    ];
    if node != "router" {
        t.push(("overlay:gateway".to_string(), "auto".to_string()));
    }
    t
}

/// Wait until every node's flood list satisfies `ok`; the seconds it took.
fn until_every_node(
    p: &str,
    what: &str,
    limit: Duration,
    ok: impl Fn(&str, &BTreeSet<String>) -> bool,
) -> f64 {
    let t0 = Instant::now();
    loop {
        let bad: Vec<String> = nodes()
            .into_iter()
            .filter(|(n, ip)| !ok(ip, &flood_list(&format!("{p}-{n}"))))
            .map(|(n, _)| n)
            .collect();
        if bad.is_empty() {
            return t0.elapsed().as_secs_f64();
        }
        assert!(
            t0.elapsed() < limit,
            "{what}: not on {} after {:.1} s (h1 has {:?})",
            bad.join(" "),
            t0.elapsed().as_secs_f64(),
            flood_list(&format!("{p}-h1"))
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn multicast_drops(p: &str) -> u64 {
    let out = sh(
        &format!("{p}-vpc"),
        "nft -j list counter bridge vpc multicast_drops",
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    v["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|i| i["counter"]["packets"].as_u64())
        .unwrap_or(0)
}

#[test]
fn unicast_lab_zero_config_nodes_discover_peers_and_survive_an_api_outage() {
    if !lab_gate(
        "unicast_lab_zero_config_nodes_discover_peers_and_survive_an_api_outage",
        &["ip", "nft", "bridge", "ping"],
        &overlayd_bin(),
    ) {
        return;
    }
    let Some(emu) = Emulator::start() else {
        return;
    };
    let p = format!("uc{}", std::process::id() % 100_000);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sdk = rt.block_on(sdk(&emu));
    let (subnet, ids) = rt.block_on(async {
        let (_vpc, subnet) = lab_subnet(&sdk, "eu-west-1a").await;
        let mut ids = Vec::new();
        for (n, ip) in nodes() {
            // h2 has instance metadata tags off: its overlayd falls back to DescribeTags
            ids.push(run_tagged(&sdk, &subnet, &ip, &zero_config_tags(&p, &n), n != "h2").await);
        }
        (subnet, ids)
    });
    assert_eq!(ids.len(), HOSTS + 2);

    let _guard = LabGuard(p.clone());
    let t0 = Instant::now();
    let up = lab(&[
        "up",
        "--prefix",
        &p,
        "--replace",
        "--hosts",
        &HOSTS.to_string(),
        "--vms-per-host",
        "1",
        "--daemon",
        "--flood",
        "unicast",
        "--peer-discovery",
        "ec2",
        "--peer-interval",
        &INTERVAL_S.to_string(),
        "--aws-endpoint",
        &emu.url,
    ]);
    let up_s = t0.elapsed().as_secs_f64();
    let out = text(&up);
    assert!(up.status.success(), "overlay-lab up: {out}");
    // 22 nodes + 20 VMs + the client: every ordered pair answered
    assert!(
        out.contains("reachability: FULL matrix, 43 endpoints, 1806 ordered pairs: 1806 ok"),
        "{out}"
    );
    eprintln!("20-host unicast lab up and fully reachable in {up_s:.1} s");

    // zero configuration: what the tags and IMDS gave the nodes
    let st = daemon_status(&overlayd_bin(), &p, "h1");
    let d = &st["status"]["desired"];
    assert_eq!(d["role"], "host", "{st}");
    assert_eq!(d["bridge"]["address"], "10.101.0.10/16");
    assert_eq!(d["underlay"], "eth0");
    assert!(d["vtep"]["group"].is_null());
    assert_eq!(st["status"]["peers"]["discovery"], "ec2");
    assert_eq!(
        daemon_status(&overlayd_bin(), &p, "router")["status"]["desired"]["bridge"]["address"],
        "10.101.0.1/16"
    );
    assert_eq!(
        daemon_status(&overlayd_bin(), &p, "h2")["status"]["desired"]["role"],
        "host"
    );
    let explain = Command::new("ip")
        .args(["netns", "exec", &format!("{p}-h2")])
        .arg(overlayd_bin())
        .args(["validate", "--explain", "--underlay", "auto"])
        .args(["--state-dir", &format!("/run/overlay-lab/{p}/h2/state")])
        .args(["--hosts-file", &format!("/run/overlay-lab/{p}/h2/hosts")])
        .args([
            "--resolv-conf",
            &format!("/run/overlay-lab/{p}/h2/resolv.conf"),
        ])
        .env("AWS_ENDPOINT_URL_EC2", "http://169.254.169.254:8773")
        .output()
        .unwrap();
    let ex = text(&explain);
    assert!(explain.status.success(), "{ex}");
    assert!(
        ex.contains("instance tag: overlay:role via DescribeTags"),
        "{ex}"
    );
    assert!(ex.contains("10.0.0.11 in subnet 10.0.0.0/22"), "{ex}");

    // every node floods to every other node, and to nothing else
    let all: BTreeSet<String> = nodes().into_iter().map(|(_, ip)| ip).collect();
    until_every_node(&p, "full flood lists", Duration::from_secs(10), |me, fl| {
        let mut want = all.clone();
        want.remove(me);
        *fl == want
    });
    // the VPC delivers no multicast: a node's multicast ping is dropped and counted
    let before = multicast_drops(&p);
    sh(
        &format!("{p}-h1"),
        "ping -c 2 -i 0.2 -W 1 -I eth0 239.255.0.1",
    );
    assert!(multicast_drops(&p) >= before + 2, "multicast not dropped");

    // a new instance of the cluster: on every node within one interval
    let limit = Duration::from_secs(30);
    let new_id = rt.block_on(run_tagged(
        &sdk,
        &subnet,
        "10.0.3.200",
        &zero_config_tags(&p, "h99"),
        true,
    ));
    let took = until_every_node(&p, "new instance", limit, |_, fl| fl.contains("10.0.3.200"));
    eprintln!("new instance in every flood list after {took:.2} s (peer_interval {INTERVAL_S} s)");
    // terminated: its entry goes
    rt.block_on(async {
        sdk.ec2
            .terminate_instances()
            .instance_ids(&new_id)
            .send()
            .await
            .unwrap()
    });
    let took = until_every_node(&p, "terminated instance", limit, |_, fl| {
        !fl.contains("10.0.3.200")
    });
    eprintln!("terminated instance gone from every flood list after {took:.2} s");

    // the API unreachable (the relay's port dropped in the VPC): nothing is flushed
    let vpc = format!("{p}-vpc");
    sh(
        &vpc,
        "nft -f - <<'EOF'\ntable inet outage {\n  chain input { type filter hook input priority 0; policy accept; tcp dport 8773 drop; }\n}\nEOF",
    );
    let sh_ok = |cmd: &str| {
        let o = Command::new("sh").args(["-c", cmd]).output().unwrap();
        assert!(o.status.success(), "{cmd}: {}", text(&o));
    };
    sh_ok(&format!(
        "ip netns exec {vpc} nft list table inet outage >/dev/null"
    ));
    let late = rt.block_on(run_tagged(
        &sdk,
        &subnet,
        "10.0.3.201",
        &zero_config_tags(&p, "h98"),
        true,
    ));
    let t_out = Instant::now();
    loop {
        let s = daemon_status(&overlayd_bin(), &p, "h1");
        if s["status"]["peers"]["failures"].as_u64().unwrap_or(0) >= 1 {
            assert!(s["status"]["peers"]["last_error"].is_string(), "{s}");
            break;
        }
        assert!(
            t_out.elapsed() < Duration::from_secs(40),
            "no discovery failure reported: {s}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_secs(INTERVAL_S * 2));
    until_every_node(
        &p,
        "flood lists kept through the outage",
        Duration::from_secs(1),
        |me, fl| {
            let mut want = all.clone();
            want.remove(me);
            *fl == want
        },
    );
    let reach = lab(&["check", "--prefix", &p, "--timeout", "10"]);
    assert!(
        reach.status.success(),
        "reachability during the outage: {}",
        text(&reach)
    );
    // the API is back: the instance started during the outage arrives
    sh_ok(&format!("ip netns exec {vpc} nft delete table inet outage"));
    let took = until_every_node(&p, "recovery", Duration::from_secs(30), |_, fl| {
        fl.contains("10.0.3.201")
    });
    eprintln!("after the outage: the late instance in every flood list {took:.2} s after the API returned");
    let s = daemon_status(&overlayd_bin(), &p, "h1");
    assert!(s["status"]["peers"]["last_error"].is_null(), "{s}");
    drop(late);
    let (lo, med, hi) = daemon_rss(&p);
    let pid = std::fs::read_to_string(format!("/run/overlay-lab/{p}/h1/overlayd.pid")).unwrap();
    let st = std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).unwrap();
    eprintln!(
        "h1: {}",
        st.lines()
            .filter(|l| l.starts_with("Rss"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    eprintln!(
        "overlayd run resident memory after {} discoveries: min {lo} KiB, median {med} KiB, max {hi} KiB ({})",
        s["status"]["peers"]["refreshes"],
        overlayd_bin().display()
    );
}
