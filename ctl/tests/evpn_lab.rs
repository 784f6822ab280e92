//! flood = evpn with zero-configuration nodes: a 4-host lab whose VPC drops every multicast
//! frame, every node's overlayd configured by its instance tags alone (`overlay:flood=evpn`,
//! IMDSv2 through the lab's emulator), and the route reflectors found in moto: the running
//! instances of the cluster tagged `overlay:role=router` (DescribeInstances through the lab's
//! EC2 API relay). Then a second router instance appears: every client configures a session
//! to it (down: nobody answers at that address) and reports it; terminated, it goes again, and
//! the fabric stays reachable throughout.
//!
//! Needs root, network namespaces, nftables, FRR (zebra, bgpd), moto (scripts/aws-emulator)
//! and the workspace's overlay-lab and overlayd binaries (`cargo build --workspace --bins`).

mod common;

use common::*;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const HOSTS: usize = 4;
const INTERVAL_S: u64 = 2;
/// A second "router" that exists only in moto.
const GHOST: &str = "10.0.3.250";

fn overlayd_bin() -> PathBuf {
    lab_bin().with_file_name("overlayd")
}

fn lab(args: &[&str]) -> Output {
    lab_with(&overlayd_bin(), args)
}

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

fn tags(p: &str, node: &str) -> Vec<(String, String)> {
    let role = match node {
        "router" | "ghost" => "router",
        "mgmt" => "management",
        _ => "host",
    };
    let mut t = vec![
        ("Name".to_string(), format!("{p}-{node}")),
        ("overlay:cluster".to_string(), p.to_string()),
        ("overlay:role".to_string(), role.to_string()),
        ("overlay:flood".to_string(), "evpn".to_string()),
        (
            "overlay:address".to_string(),
            if node == "mgmt" {
                "10.101.0.2/16".to_string()
            } else {
                "auto".to_string()
            },
        ),
    ];
    if role != "router" {
        t.push(("overlay:gateway".to_string(), "auto".to_string()));
    }
    t
}

/// Wait until every host's EVPN status satisfies `ok` (FRR is read every 10 s).
fn until_every_host(p: &str, what: &str, ok: impl Fn(&serde_json::Value) -> bool) -> f64 {
    let t0 = Instant::now();
    loop {
        let bad: Vec<(String, serde_json::Value)> = nodes()
            .into_iter()
            .filter(|(n, _)| n.starts_with('h'))
            .map(|(n, _)| {
                let s = daemon_status(&overlayd_bin(), p, &n)["status"]["evpn"].clone();
                (n, s)
            })
            .filter(|(_, s)| !ok(s))
            .collect();
        if bad.is_empty() {
            return t0.elapsed().as_secs_f64();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(45),
            "{what}: not on {} after {:.1} s: {}",
            bad.iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(" "),
            t0.elapsed().as_secs_f64(),
            bad[0].1
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn reflectors(s: &serde_json::Value) -> Vec<String> {
    s["reflectors"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn evpn_lab_zero_config_nodes_find_their_reflectors_by_tag() {
    if !lab_gate(
        "evpn_lab_zero_config_nodes_find_their_reflectors_by_tag",
        &["ip", "nft", "bridge", "ping", "vtysh"],
        &overlayd_bin(),
    ) {
        return;
    }
    let Some(emu) = Emulator::start() else {
        return;
    };
    let p = format!("ev{}", std::process::id() % 100_000);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sdk = rt.block_on(sdk(&emu));
    let subnet = rt.block_on(async {
        let (_vpc, subnet) = lab_subnet(&sdk, "eu-west-1a").await;
        for (n, ip) in nodes() {
            run_tagged(&sdk, &subnet, &ip, &tags(&p, &n), true).await;
        }
        subnet
    });

    let _guard = LabGuard(p.clone());
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
        "evpn",
        "--peer-discovery",
        "ec2",
        "--peer-interval",
        &INTERVAL_S.to_string(),
        "--aws-endpoint",
        &emu.url,
    ]);
    let out = text(&up);
    assert!(up.status.success(), "overlay-lab up: {out}");
    // 6 nodes + 4 VMs + the client: every ordered pair answered
    assert!(
        out.contains("reachability: FULL matrix, 11 endpoints, 110 ordered pairs: 110 ok"),
        "{out}"
    );

    // zero configuration: flood mode from the tag, the reflector from EC2
    let st = daemon_status(&overlayd_bin(), &p, "h1");
    let d = &st["status"]["desired"];
    assert_eq!(d["role"], "host", "{st}");
    assert!(d["vtep"]["group"].is_null(), "{st}");
    assert_eq!(st["status"]["peers"]["discovery"], "ec2", "{st}");
    assert_eq!(st["status"]["peers"]["count"], 1, "one router: {st}");
    until_every_host(&p, "one session, to the router", |s| {
        reflectors(s) == ["10.0.0.4"] && s["sessions_up"] == 1 && s["sessions"] == 1
    });
    // the router is a reflector by default and discovers nothing
    let r = daemon_status(&overlayd_bin(), &p, "router");
    assert_eq!(r["status"]["evpn"]["reflector"], true, "{r}");
    // remote MACs come from BGP
    let fdb = Command::new("ip")
        .args(["netns", "exec", &format!("{p}-h1")])
        .args(["bridge", "fdb", "show", "dev", "ethvxlan0"])
        .output()
        .unwrap();
    let fdb = String::from_utf8_lossy(&fdb.stdout).into_owned();
    assert!(
        fdb.lines().filter(|l| l.contains("extern_learn")).count() >= HOSTS,
        "h1's FDB: {fdb}"
    );

    // a second router instance: every client adds it (down: nobody is there) and says so,
    // without a restart of its bgpd (h1 → h2 pings on throughout)
    let ping = Command::new("ip")
        .args(["netns", "exec", &format!("{p}-h1")])
        .args(["ping", "-n", "-q", "-i", "0.05", "-W", "1", "10.101.0.11"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let ghost = rt.block_on(run_tagged(&sdk, &subnet, GHOST, &tags(&p, "ghost"), true));
    let took = until_every_host(&p, "the second reflector", |s| {
        reflectors(s).contains(&GHOST.to_string())
            && s["sessions"] == 2
            && s["sessions_up"] == 1
            && s["down"].to_string().contains(GHOST)
    });
    eprintln!("second router instance on every client after {took:.1} s");
    let check = lab(&["check", "--prefix", &p, "--timeout", "10"]);
    assert!(
        check.status.success(),
        "with a reflector down: {}",
        text(&check)
    );

    // terminated: its session goes
    rt.block_on(async {
        sdk.ec2
            .terminate_instances()
            .instance_ids(&ghost)
            .send()
            .await
            .unwrap()
    });
    let took = until_every_host(&p, "the second reflector gone", |s| {
        reflectors(s) == ["10.0.0.4"] && s["sessions"] == 1 && s["sessions_up"] == 1
    });
    eprintln!("terminated router instance gone from every client after {took:.1} s");
    // SAFETY: signalling our own child (ping prints its summary on SIGINT)
    unsafe { libc::kill(ping.id() as i32, libc::SIGINT) };
    let out = ping.wait_with_output().unwrap();
    let summary = String::from_utf8_lossy(&out.stdout).into_owned();
    let nums: Vec<u64> = summary
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("ping: {summary}"))
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    let (sent, got) = (nums[0], nums[1]);
    eprintln!("h1 → h2 while a reflector came and went: {got}/{sent} answered");
    assert!(
        sent > 100 && got + 2 >= sent,
        "reflector change disturbed traffic: {summary}"
    );
    let check = lab(&["check", "--prefix", &p, "--timeout", "10"]);
    assert!(check.status.success(), "after: {}", text(&check));
}
