//! Router HA end to end in the lab: two routers (`overlay-lab up --routers 2 --daemon`), VRRP
//! by keepalived over the overlay, the hosts' gateway 10.101.0.1 the VIP of the active one,
//! and the VPC's `overlay CIDR → router` route in moto, which the lab's VPC router follows
//! (after `--vpc-route-delay-ms`). The active router's VPC link is cut: the other takes the
//! VIP, moves the route with ReplaceRoute (the only mutating call) and VMs reach the VPC
//! client again; the old router, back, stays backup and leaves the route alone. Multi-AZ:
//! router and h1 in the first subnet (eu-west-1a, 10.0.0.0/22), router2 and h2 in the
//! second (eu-west-1b, 10.0.4.0/22). `overlayd doctor` names each state of the pair: the
//! survivor without a standby (warn), the recovered standby (ok), and the double failure
//! (both links cut: the standby and the hosts fail).
//!
//! Needs root, network namespaces, nftables, keepalived, moto (scripts/aws-emulator) and the
//! workspace's overlay-lab and overlayd binaries.

mod common;

use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

fn ns_sh(ns: &str, cmd: &str) -> std::process::Output {
    Command::new("sh")
        .args(["-c", &format!("ip netns exec {ns} {cmd}")])
        .output()
        .unwrap()
}

fn holds_vip(p: &str, router: &str) -> bool {
    let o = ns_sh(&format!("{p}-{router}"), "ip -br addr show cloudbr0");
    String::from_utf8_lossy(&o.stdout).contains("10.101.0.1/")
}

fn vpc_route(p: &str) -> String {
    let o = ns_sh(&format!("{p}-vpc"), "ip route show 10.101.0.0/16");
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

async fn route_target(sdk: &Sdk, table: &str) -> Option<String> {
    let r = sdk
        .ec2
        .describe_route_tables()
        .route_table_ids(table)
        .send()
        .await
        .unwrap();
    r.route_tables()[0]
        .routes()
        .iter()
        .find(|x| x.destination_cidr_block() == Some("10.101.0.0/16"))
        .and_then(|x| x.network_interface_id().map(str::to_string))
}

fn until(limit: Duration, what: &str, mut ok: impl FnMut() -> bool) -> f64 {
    let t0 = Instant::now();
    while !ok() {
        assert!(t0.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    t0.elapsed().as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_pair_fails_over_and_moves_the_vpc_route() {
    if !lab_gate(
        "router_pair_fails_over_and_moves_the_vpc_route",
        &["ip", "nft", "bridge", "ping", "keepalived"],
        &lab_bin().with_file_name("overlayd"),
    ) {
        return;
    }
    let Some(emu) = Emulator::start() else {
        return;
    };
    let p = format!("rha{}", std::process::id() % 10000);
    let sdk = sdk(&emu).await;
    let (vpc, subnet) = lab_subnet(&sdk, "eu-west-1a").await;
    let subnet_b = sdk
        .ec2
        .create_subnet()
        .vpc_id(&vpc)
        .cidr_block("10.0.4.0/22")
        .availability_zone("eu-west-1b")
        .send()
        .await
        .unwrap()
        .subnet()
        .unwrap()
        .subnet_id()
        .unwrap()
        .to_string();
    use aws_sdk_ec2::types::{
        HttpTokensState, InstanceMetadataOptionsRequest, InstanceMetadataTagsState, ResourceType,
        Tag, TagSpecification,
    };
    let mut eni = std::collections::BTreeMap::new();
    for (name, ip, sub) in [
        ("router", "10.0.0.4", &subnet),
        ("router2", "10.0.4.6", &subnet_b),
    ] {
        let spec = TagSpecification::builder()
            .resource_type(ResourceType::Instance)
            .tags(Tag::builder().key("overlay:cluster").value(&p).build())
            .tags(Tag::builder().key("overlay:role").value("router").build())
            .build();
        let r = sdk
            .ec2
            .run_instances()
            .image_id("ami-12c6146b")
            .instance_type(aws_sdk_ec2::types::InstanceType::C5Large)
            .min_count(1)
            .max_count(1)
            .subnet_id(sub)
            .private_ip_address(ip)
            .metadata_options(
                InstanceMetadataOptionsRequest::builder()
                    .http_tokens(HttpTokensState::Required)
                    .instance_metadata_tags(InstanceMetadataTagsState::Enabled)
                    .build(),
            )
            .tag_specifications(spec)
            .send()
            .await
            .unwrap();
        let i = &r.instances()[0];
        eni.insert(
            name,
            i.network_interfaces()[0]
                .network_interface_id()
                .unwrap()
                .to_string(),
        );
    }
    let table = sdk
        .ec2
        .create_route_table()
        .vpc_id(&vpc)
        .send()
        .await
        .unwrap()
        .route_table()
        .unwrap()
        .route_table_id()
        .unwrap()
        .to_string();
    sdk.ec2
        .create_tags()
        .resources(&table)
        .tags(Tag::builder().key("overlay:cluster").value(&p).build())
        .send()
        .await
        .unwrap();
    sdk.ec2
        .create_route()
        .route_table_id(&table)
        .destination_cidr_block("10.101.0.0/16")
        .network_interface_id(&eni["router"])
        .send()
        .await
        .unwrap();

    let _guard = LabGuard(p.clone());
    let up = lab(&[
        "up",
        "--prefix",
        &p,
        "--daemon",
        "--routers",
        "2",
        "--azs",
        "2",
        "-n",
        "2",
        "--json",
        "--vms-per-host",
        "1",
        "--aws-endpoint",
        &emu.url,
        "--vpc-route-delay-ms",
        "300",
        "--replace",
    ]);
    assert!(up.status.success(), "{}", text(&up));
    let upv: serde_json::Value = serde_json::from_slice(&up.stdout).unwrap();
    let doctor = |node: &str| -> serde_json::Value {
        let n = upv["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == node)
            .unwrap();
        let mut c = Command::new("ip");
        c.args(["netns", "exec", n["ns"].as_str().unwrap()])
            .arg(lab_bin().with_file_name("overlayd"))
            .arg("doctor");
        for f in n["overlayd_flags"].as_array().unwrap() {
            c.arg(f.as_str().unwrap());
        }
        c.arg("--control-socket")
            .arg(format!("/run/overlay-lab/{p}/{node}/overlayd.sock"))
            .args(["-o", "json"]);
        let o = c.output().unwrap();
        serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("doctor on {node}: {e}: {}", text(&o)))
    };
    let check = |v: &serde_json::Value, id: &str| -> (String, String) {
        let c = v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .unwrap_or_else(|| panic!("no {id}: {v}"));
        (
            c["verdict"].as_str().unwrap().to_string(),
            c["summary"].as_str().unwrap().to_string(),
        )
    };
    let (a, b) = if holds_vip(&p, "router") {
        ("router", "router2")
    } else {
        ("router2", "router")
    };
    assert!(!holds_vip(&p, b), "exactly one router holds the VIP");
    // the active router's takeover: the route at its ENI (and the lab's VPC router follows)
    let ip = |r: &str| {
        if r == "router" {
            "10.0.0.4"
        } else {
            "10.0.4.6"
        }
    };
    let mut t = route_target(&sdk, &table).await;
    for _ in 0..100 {
        if t.as_deref() == Some(eni[a].as_str()) && vpc_route(&p).contains(ip(a)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        t = route_target(&sdk, &table).await;
    }
    assert_eq!(t.as_deref(), Some(eni[a].as_str()));

    emu.reset_calls();
    let cut = Instant::now();
    let o = ns_sh(&format!("{p}-vpc"), &format!("ip link set u-{a} down"));
    assert!(o.status.success(), "{}", text(&o));
    let vip_s = until(Duration::from_secs(10), "the backup takes the VIP", || {
        holds_vip(&p, b)
    });
    let mut moved = None;
    for _ in 0..100 {
        if route_target(&sdk, &table).await.as_deref() == Some(eni[b].as_str()) {
            moved = Some(cut.elapsed().as_secs_f64());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let moved = moved.expect("the route moved to the new active router's ENI");
    let follow = until(Duration::from_secs(10), "the lab VPC follows", || {
        vpc_route(&p).contains(ip(b))
    });
    println!(
        "link cut of {a}: VIP on {b} after {vip_s:.2} s, ReplaceRoute seen {moved:.2} s, \
         the lab VPC route followed {:.2} s after that",
        follow
    );
    let vm = format!("{p}-h1-vm1");
    let o = ns_sh(&vm, "ping -c 3 -W 1 10.0.8.10");
    assert!(
        o.status.success(),
        "VM → VPC client after failover: {}",
        text(&o)
    );
    let o = ns_sh(&format!("{p}-client"), "ping -c 3 -W 1 10.101.0.2");
    assert!(
        o.status.success(),
        "VPC client → mgmt after failover: {}",
        text(&o)
    );
    // mutating calls since the cut by anyone but the test itself (the routers' role keys)
    let (_, body) = http(emu.port, "GET", "/_shim/calls").unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mutating: Vec<String> = v["calls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["access_key"] != SEED_KEY && c["access_key"] != OVERLAYCTL_KEY)
        .filter_map(|c| c["action"].as_str().map(str::to_string))
        .collect();
    assert_eq!(mutating, vec!["ReplaceRoute"], "the takeover's only change");
    // the survivor: active, but no standby (its peer's link is cut)
    let (v, s) = check(&doctor(b), "router.pair");
    assert_eq!(v, "warn", "{s}");
    assert!(s.contains("no standby"), "{s}");

    // the old router comes back: backup, the route stays with the new active router
    let o = ns_sh(&format!("{p}-vpc"), &format!("ip link set u-{a} up"));
    assert!(o.status.success());
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(holds_vip(&p, b) && !holds_vip(&p, a), "no preemption");
    assert_eq!(
        route_target(&sdk, &table).await.as_deref(),
        Some(eni[b].as_str()),
        "the recovered router left the route alone"
    );
    assert!(vpc_route(&p).contains(ip(b)));
    let (v, s) = check(&doctor(a), "router.pair");
    assert_eq!((v.as_str(), s.starts_with("standby")), ("ok", true), "{s}");
    let (v, s) = check(&doctor(b), "router.pair");
    assert_eq!((v.as_str(), s.starts_with("active")), ("ok", true), "{s}");

    // double failure: both routers' links cut
    for r in [a, b] {
        let o = ns_sh(&format!("{p}-vpc"), &format!("ip link set u-{r} down"));
        assert!(o.status.success());
    }
    until(
        Duration::from_secs(10),
        "both routers give the VIP up",
        || !holds_vip(&p, a) && !holds_vip(&p, b),
    );
    let (v, s) = check(&doctor("h1"), "gateway.reachable");
    assert_eq!(v, "fail", "{s}");
    assert!(s.contains("both down"), "{s}");
    let (v, s) = check(&doctor(a), "router.pair");
    assert_eq!(v, "fail", "{s}");
    assert!(s.contains("both routers"), "{s}");
}
