//! The CloudFormation user-data, run by real cloud-init in the instance lab: the user-data of
//! cfn/cluster.yaml's router, management and host launch templates, rendered by this test with
//! the lab's values (Fn::Sub / Ref resolved by the test's evaluator, never hand-written), set
//! as the user data of moto instances at the lab nodes' addresses, with the tags the template
//! gives them. `overlay-lab up --instances --cloud-init` boots every node with Debian's
//! cloud-init on (Ec2 datasource = the lab's IMDSv2 emulator), and the lab installs nothing:
//! each node downloads the package from the lab's package server, checks its sha256, writes
//! overlayd.toml, starts overlayd and signals the stack through SignalResource (SigV4 with the
//! instance role's IMDS credentials, verified by the AWS emulator). Then: full reachability,
//! one verified SUCCESS per instance; a second lab whose management user-data has a wrong
//! overlay address signals FAILURE, with overlayd's error on the node's console.
//!
//! Needs root, systemd-nspawn, mmdebstrap (the node image), moto (scripts/aws-emulator), the
//! workspace's overlay-lab and the overlayd package (scripts/package).

mod common;

use common::cfn::{self, eval, scalar, Stack, Template};
use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

const REGION: &str = "eu-west-1";
const STACK: &str = "cfn-lab";
const PACKAGE: &str = "overlayd_0.1.0-1_amd64.deb";

/// The package scripts/package builds (revision 1), next to the workspace's binaries.
fn deb() -> PathBuf {
    lab_bin()
        .parent()
        .and_then(|d| d.parent())
        .unwrap()
        .join("package")
        .join(PACKAGE)
}

fn sha256(p: &PathBuf) -> String {
    let o = std::process::Command::new("sha256sum")
        .arg(p)
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// The stack as the lab deploys it: the template's defaults, the lab's VPC (10.0.0.0/16,
/// subnet 10.0.0.0/22), the package on the lab's package server, CloudStack skipped, then
/// `overrides`.
fn lab_stack(t: &Template, cluster: &str, sha: &str, overrides: &[(&str, &str)]) -> Stack {
    let url = format!("http://169.254.169.254:8775/{PACKAGE}");
    let mut s = Stack::of(
        t,
        STACK,
        REGION,
        &[
            ("ClusterName", cluster),
            ("VpcId", "vpc-lab"),
            ("VpcCidr", "10.0.0.0/16"),
            ("SubnetId", "subnet-lab"),
            ("SubnetCidr", "10.0.0.0/22"),
            ("SecondSubnetId", "subnet-lab2"),
            ("AccessCidr", "10.0.0.0/16"),
            ("PackageUrl", &url),
            ("PackageSha256", sha),
            ("InstallCloudStack", "false"),
            ("ImageId", "ami-12c6146b"),
        ],
    );
    s.set_list("RouteTableIds", &["rtb-lab"]);
    for (k, v) in overrides {
        s.set(k, v);
    }
    s.finish(t)
}

/// What a lab node is in the stack: (node, VPC address, the resource whose launch template it
/// runs, that launch template).
fn nodes(hosts: usize) -> Vec<(String, String, &'static str, &'static str)> {
    let mut v = vec![
        (
            "router".into(),
            "10.0.0.4".into(),
            "Router",
            "RouterLaunchTemplate",
        ),
        (
            "mgmt".into(),
            "10.0.0.5".into(),
            "Management",
            "ManagementLaunchTemplate",
        ),
    ];
    for i in 0..hosts {
        v.push((
            format!("h{}", i + 1),
            format!("10.0.0.{}", 10 + i),
            "Hosts",
            "HostLaunchTemplate",
        ));
    }
    v
}

/// The rendered user-data of launch template `lt` and the tags `resource` gives its
/// instances.
fn rendered(t: &Template, s: &Stack, lt: &str, resource: &str) -> (String, Vec<(String, String)>) {
    let p = eval(&t.resource(lt)["Properties"], s);
    let ud = scalar(&p["LaunchTemplateData"]["UserData"]);
    assert!(ud.starts_with("#!/bin/bash\n"), "{lt}: {ud}");
    let r = eval(&t.resource(resource)["Properties"], s);
    let tags = r["Tags"]
        .as_sequence()
        .unwrap_or_else(|| panic!("{resource}: no Tags"))
        .iter()
        .map(|t| (scalar(&t["Key"]), scalar(&t["Value"])))
        .collect();
    (ud, tags)
}

fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A VPC and subnet like the lab's, and one running instance per node with its rendered
/// user-data and tags; node → instance id.
fn launch(
    emu: &Emulator,
    t: &Template,
    stacks: &BTreeMap<String, Stack>,
    hosts: usize,
) -> BTreeMap<String, String> {
    use aws_sdk_ec2::types::{
        HttpTokensState, InstanceMetadataOptionsRequest, InstanceMetadataTagsState, ResourceType,
        Tag, TagSpecification,
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let sdk = sdk(emu).await;
        let (_vpc, subnet) = lab_subnet(&sdk, &format!("{REGION}a")).await;
        let mut ids = BTreeMap::new();
        for (node, ip, resource, lt) in nodes(hosts) {
            let (ud, tags) = rendered(t, &stacks[&node], lt, resource);
            let mut spec = TagSpecification::builder().resource_type(ResourceType::Instance);
            for (k, v) in tags {
                spec = spec.tags(Tag::builder().key(k).value(v).build());
            }
            // as the launch templates say: IMDSv2 required, metadata tags on
            let opts = InstanceMetadataOptionsRequest::builder()
                .http_tokens(HttpTokensState::Required)
                .http_put_response_hop_limit(1)
                .instance_metadata_tags(InstanceMetadataTagsState::Enabled)
                .build();
            let id = sdk
                .ec2
                .run_instances()
                .image_id("ami-12c6146b")
                .instance_type(aws_sdk_ec2::types::InstanceType::C5Metal)
                .min_count(1)
                .max_count(1)
                .subnet_id(&subnet)
                .private_ip_address(&ip)
                .metadata_options(opts)
                .user_data(base64(ud.as_bytes()))
                .tag_specifications(spec.build())
                .send()
                .await
                .unwrap()
                .instances()[0]
                .instance_id()
                .unwrap()
                .to_string();
            ids.insert(node, id);
        }
        ids
    })
}

/// The SignalResource calls the emulator recorded.
fn signals(emu: &Emulator) -> Vec<Value> {
    let (s, body) = http(emu.port, "GET", "/_shim/signals").unwrap();
    assert_eq!(s, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["signals"].as_array().cloned().unwrap_or_default()
}

/// The lab's record of when a node's container booted (seconds since the epoch).
fn boot_started(prefix: &str, node: &str) -> f64 {
    let p = format!("/run/overlay-lab/{prefix}/{node}/boot-started");
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{p}: {e}"))
        .trim()
        .parse()
        .unwrap()
}

fn console(prefix: &str, node: &str) -> String {
    let p = format!("/run/overlay-lab/{prefix}/{node}/container/console.log");
    std::fs::read_to_string(&p).unwrap_or_else(|e| format!("({p}: {e})"))
}

/// `overlay-lab up --instances --cloud-init` for the stack `cluster` (its prefix).
fn up(emu: &Emulator, prefix: &str, hosts: usize, extra: &[&str]) -> (bool, String, Value) {
    let deb = deb();
    let hosts = hosts.to_string();
    let mut args = vec![
        "up",
        "--prefix",
        prefix,
        "--replace",
        "--hosts",
        &hosts,
        "--instances",
        "--deb",
        deb.to_str().unwrap(),
        "--cloud-init",
        "--aws-endpoint",
        &emu.url,
        "--json",
    ];
    args.extend_from_slice(extra);
    let o = lab(&args);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    (o.status.success(), text(&o), v)
}

fn register_stack(emu: &Emulator) {
    let (s, body) = http(
        emu.port,
        "POST",
        &format!("/_shim/stack?name={STACK}&resources=Router,Management,Hosts"),
    )
    .unwrap();
    assert_eq!(s, 200, "{body}");
}

#[test]
fn cfn_user_data_provisions_every_role_under_real_cloud_init_and_signals_the_result() {
    if !overlay_testkit::gate(
        "cfn_user_data_provisions_every_role_under_real_cloud_init_and_signals_the_result",
        &["systemd-nspawn", "mmdebstrap", "nsenter", "ip", "nft"],
        || {
            if !lab_bin().is_file() {
                return Err(format!(
                    "{} missing: cargo build --workspace --bins",
                    lab_bin().display()
                ));
            }
            if !deb().is_file() {
                return Err(format!("{} missing: run scripts/package", deb().display()));
            }
            Ok(())
        },
    ) {
        return;
    }
    let Some(emu) = Emulator::start() else {
        return;
    };
    let t = cfn::load("cluster.yaml");
    let sha = sha256(&deb());

    // 1. every role from its user-data alone
    let hosts = 2;
    let p = format!("ci{}", std::process::id() % 100_000);
    let stack = lab_stack(&t, &p, &sha, &[]);
    let stacks: BTreeMap<String, Stack> = nodes(hosts)
        .into_iter()
        .map(|(n, ..)| (n, stack.clone()))
        .collect();
    register_stack(&emu);
    let ids = launch(&emu, &t, &stacks, hosts);
    let _guard = LabGuard(p.clone());
    let t0 = Instant::now();
    let (ok, out, json) = up(&emu, &p, hosts, &[]);
    let up_s = t0.elapsed().as_secs_f64();
    let mut consoles = String::new();
    for (n, ..) in nodes(hosts) {
        consoles.push_str(&format!(
            "--- {n} console (tail)\n{}\n",
            console(&p, &n)
                .lines()
                .rev()
                .take(15)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        ));
    }
    assert!(ok, "overlay-lab up: {out}\n{consoles}");
    let outcomes = json["cloud_init"].as_array().cloned().unwrap_or_default();
    assert_eq!(outcomes.len(), hosts + 2, "{out}");
    for o in &outcomes {
        assert_eq!(o["status"], "done", "{o}\n{consoles}");
        assert_eq!(o["overlayd"], "active", "{o}");
    }
    let r = &json["reachability"];
    assert_eq!(r["mode"], "full", "{r}");
    assert_eq!(r["all_ok"], true, "{r}");
    assert_eq!(r["ok"], r["pairs_total"], "{r}");
    let sig = signals(&emu);
    assert_eq!(sig.len(), hosts + 2, "one signal per instance: {sig:?}");
    println!("cfn user-data under cloud-init, per node (boot start -> SignalResource):");
    for (n, _, resource, _) in nodes(hosts) {
        let id = &ids[&n];
        let s = sig
            .iter()
            .find(|s| s["unique_id"] == id.as_str())
            .unwrap_or_else(|| panic!("{n} ({id}) did not signal: {sig:?}"));
        assert_eq!(s["status"], "SUCCESS", "{n}: {s}");
        assert_eq!(s["stack"], STACK, "{n}: {s}");
        assert_eq!(s["resource"], resource, "{n}: {s}");
        assert_eq!(
            s["verified"], true,
            "{n}: SigV4 with its role's credentials: {s}"
        );
        let secs = s["time"].as_f64().unwrap() - boot_started(&p, &n);
        println!("  {n:<7} {resource:<11} {id}  {secs:6.2} s");
    }
    println!("  (overlay-lab up, all in: {up_s:.1} s)");
    drop(_guard);

    // 2. a wrong overlay address (the management server outside OverlayCidr): FAILURE, and
    // the reason on the console; the other roles still succeed
    emu.reset_all();
    let p = format!("cf{}", std::process::id() % 100_000);
    let good = lab_stack(&t, &p, &sha, &[]);
    let bad = lab_stack(&t, &p, &sha, &[("ManagementOverlayIp", "10.102.0.2")]);
    let stacks: BTreeMap<String, Stack> = nodes(1)
        .into_iter()
        .map(|(n, ..)| {
            let s = if n == "mgmt" {
                bad.clone()
            } else {
                good.clone()
            };
            (n, s)
        })
        .collect();
    register_stack(&emu);
    let ids = launch(&emu, &t, &stacks, 1);
    let _guard = LabGuard(p.clone());
    let (ok, out, json) = up(&emu, &p, 1, &["--vms-per-host", "0", "--no-check"]);
    assert!(ok, "overlay-lab up --no-check: {out}");
    let outcomes = json["cloud_init"].as_array().cloned().unwrap_or_default();
    let mgmt = outcomes
        .iter()
        .find(|o| o["node"] == "mgmt")
        .unwrap_or_else(|| panic!("{out}"));
    assert_ne!(mgmt["status"], "done", "{mgmt}");
    let sig = signals(&emu);
    assert_eq!(sig.len(), 3, "{sig:?}");
    for (n, _, resource, _) in nodes(1) {
        let s = sig
            .iter()
            .find(|s| s["unique_id"] == ids[&n].as_str())
            .unwrap_or_else(|| panic!("{n} did not signal: {sig:?}"));
        let want = if n == "mgmt" { "FAILURE" } else { "SUCCESS" };
        assert_eq!(s["status"], want, "{n}: {s}");
        assert_eq!(s["resource"], resource, "{n}: {s}");
        assert_eq!(s["verified"], true, "{n}: {s}");
    }
    let c = console(&p, "mgmt");
    let line = c
        .lines()
        .find(|l| l.contains("overlay user-data: FAILURE:"))
        .unwrap_or_else(|| panic!("no FAILURE reason on mgmt's console:\n{c}"));
    assert!(
        line.contains("overlayd validate") && line.contains("10.102.0.0/16"),
        "the reason is overlayd's, naming the overlay subnet of the wrong address: {line}"
    );
    println!("wrong overlay address, mgmt's console: {}", line.trim());
}
