//! Test harness: starts scripts/aws-emulator (moto + our shim) on a free loopback port, kills it
//! on drop (also when a test panics), runs the real overlayctl binary against it, and seeds a
//! VPC with the real SDK over HTTP.

#![allow(dead_code)]

pub mod cfn;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const REGION: &str = "eu-west-1";
/// Access key overlayctl runs with; the tests' own SDK calls use SEED_KEY.
pub const OVERLAYCTL_KEY: &str = "testing";
pub const SEED_KEY: &str = "seeding";

pub struct Emulator {
    child: Child,
    pub port: u16,
    pub url: String,
    pub dir: tempfile::TempDir,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string())
}

fn python_deps_ok() -> Result<(), String> {
    let out = Command::new(python())
        .args(["-c", "import moto, werkzeug, flask"])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

impl Emulator {
    /// Starts the emulator, or returns None (test skipped) when its Python dependencies are
    /// missing outside CI. Under CI=true missing dependencies fail the test.
    pub fn start() -> Option<Emulator> {
        if let Err(why) = python_deps_ok() {
            if std::env::var("CI")
                .map(|v| v == "true" || v == "1")
                .unwrap_or(false)
            {
                panic!(
                    "CI=true but the emulator's Python dependencies are missing: {why}\n\
                        (pip install -r scripts/requirements-ci.txt)"
                );
            }
            eprintln!("SKIP: emulator dependencies missing ({why}); pip install -r scripts/requirements-ci.txt");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("emulator.log")).unwrap();
        let child = Command::new(python())
            .arg(repo_root().join("scripts/aws-emulator"))
            .arg(port.to_string())
            .arg("--exit-with-parent")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn scripts/aws-emulator");
        let mut emu = Emulator {
            child,
            port,
            url: format!("http://127.0.0.1:{port}"),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = emu.child.try_wait() {
                panic!("aws-emulator exited early ({status}):\n{}", emu.log());
            }
            if let Ok((200, _)) = http(port, "GET", "/_shim/health") {
                return Some(emu);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "aws-emulator did not come up on port {port}:\n{}",
            emu.log()
        );
    }

    pub fn reset_calls(&self) {
        let (s, _) = http(self.port, "POST", "/_shim/reset").unwrap();
        assert_eq!(s, 200);
    }

    /// Clears all AWS state (moto and the shim's multicast domains) and the call log.
    pub fn reset_all(&self) {
        let (s, _) = http(self.port, "POST", "/moto-api/reset").unwrap();
        assert_eq!(s, 200);
        self.reset_calls();
    }

    /// Mutating calls overlayctl made since the last reset: (service, action, failed).
    pub fn mutating_calls(&self) -> Vec<(String, String, bool)> {
        self.calls(false)
    }

    /// Calls overlayctl made (the test's own seeding/verification calls use another access key).
    pub fn calls(&self, all: bool) -> Vec<(String, String, bool)> {
        let path = if all {
            "/_shim/calls?all=1"
        } else {
            "/_shim/calls"
        };
        let (s, body) = http(self.port, "GET", path).unwrap();
        assert_eq!(s, 200);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["calls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["access_key"] == OVERLAYCTL_KEY)
            .map(|c| {
                (
                    c["service"].as_str().unwrap_or("").to_string(),
                    c["action"].as_str().unwrap_or("").to_string(),
                    c["failed"].as_bool().unwrap_or(false),
                )
            })
            .collect()
    }

    pub fn fail_next(&self, action: &str, when: &str) {
        let (s, body) = http(
            self.port,
            "POST",
            &format!("/_shim/fail?action={action}&count=1&when={when}"),
        )
        .unwrap();
        assert_eq!(s, 200, "{body}");
    }

    /// What the transit gateway learns from an IGMPv2 report (`leave`: a leave) of interface
    /// `eni` for `group` in multicast domain `domain` (the shim's `/_shim/igmp`): (HTTP status,
    /// body); 409 when the domain ignores it (IGMPv2 off, subnet not associated).
    pub fn igmp(&self, domain: &str, group: &str, eni: &str, leave: bool) -> (u16, String) {
        http(
            self.port,
            "POST",
            &format!(
                "/_shim/igmp?region={REGION}&domain={domain}&group={group}&eni={eni}&leave={}",
                u8::from(leave)
            ),
        )
        .unwrap()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("emulator.log")).unwrap_or_default()
    }
}

/// Minimal HTTP/1.1 client for the shim's control endpoints (loopback only).
pub fn http(port: u16, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// Runs the real overlayctl binary against the emulator.
pub fn overlayctl(emu: &Emulator, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_overlayctl"))
        .args(args)
        .arg("--endpoint-url")
        .arg(&emu.url)
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .env("AWS_ACCESS_KEY_ID", OVERLAYCTL_KEY)
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", REGION)
        .env("AWS_MAX_ATTEMPTS", "1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", emu.dir.path().join("no-aws-config"))
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            emu.dir.path().join("no-aws-credentials"),
        )
        .env("OVERLAYCTL_POLL_INTERVAL", "0.01")
        .env("OVERLAYCTL_WAIT_TIMEOUT", "30")
        .current_dir(emu.dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("run overlayctl");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    }
}

// ------------------------------------------------------------------------------------------------
// SDK clients for seeding and verification

pub struct Sdk {
    pub ec2: aws_sdk_ec2::Client,
    pub efs: aws_sdk_efs::Client,
    pub rds: aws_sdk_rds::Client,
    pub sm: aws_sdk_secretsmanager::Client,
}

pub async fn sdk(emu: &Emulator) -> Sdk {
    let http = aws_smithy_http_client::Builder::new().build_http();
    let creds = aws_sdk_ec2::config::Credentials::new(SEED_KEY, "testing", None, None, "tests");
    let conf = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
        .endpoint_url(&emu.url)
        .credentials_provider(aws_sdk_ec2::config::SharedCredentialsProvider::new(creds))
        .http_client(http)
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .build();
    Sdk {
        ec2: aws_sdk_ec2::Client::new(&conf),
        efs: aws_sdk_efs::Client::new(&conf),
        rds: aws_sdk_rds::Client::new(&conf),
        sm: aws_sdk_secretsmanager::Client::new(&conf),
    }
}

#[derive(Debug, Clone)]
pub struct Seed {
    pub vpc: String,
    pub subnet: String,
    pub subnet2: String,
    pub router: String,
}

/// The overlay-lab's VPC (10.0.0.0/16) and node subnet (10.0.0.0/22, zone `az`) in moto, for
/// moto instances at the lab nodes' addresses: (VPC id, subnet id).
pub async fn lab_subnet(sdk: &Sdk, az: &str) -> (String, String) {
    let vpc = sdk
        .ec2
        .create_vpc()
        .cidr_block("10.0.0.0/16")
        .send()
        .await
        .unwrap();
    let vpc = vpc.vpc().unwrap().vpc_id().unwrap().to_string();
    let subnet = sdk
        .ec2
        .create_subnet()
        .vpc_id(&vpc)
        .cidr_block("10.0.0.0/22")
        .availability_zone(az)
        .send()
        .await
        .unwrap();
    let subnet = subnet.subnet().unwrap().subnet_id().unwrap().to_string();
    (vpc, subnet)
}

pub async fn seed(sdk: &Sdk) -> Seed {
    let ec2 = &sdk.ec2;
    let vpc = ec2
        .create_vpc()
        .cidr_block("10.0.0.0/16")
        .send()
        .await
        .unwrap();
    let vpc = vpc.vpc().unwrap().vpc_id().unwrap().to_string();
    let mk = |cidr: &'static str, az: &'static str| {
        let vpc = vpc.clone();
        async move {
            ec2.create_subnet()
                .vpc_id(vpc)
                .cidr_block(cidr)
                .availability_zone(az)
                .send()
                .await
                .unwrap()
                .subnet()
                .unwrap()
                .subnet_id()
                .unwrap()
                .to_string()
        }
    };
    let subnet = mk("10.0.1.0/24", "eu-west-1a").await;
    let subnet2 = mk("10.0.2.0/24", "eu-west-1b").await;
    let router = run_instance(sdk, &subnet).await;
    Seed {
        vpc,
        subnet,
        subnet2,
        router,
    }
}

pub async fn run_instance(sdk: &Sdk, subnet: &str) -> String {
    sdk.ec2
        .run_instances()
        .image_id("ami-12c6146b")
        .instance_type(aws_sdk_ec2::types::InstanceType::C5Large)
        .min_count(1)
        .max_count(1)
        .subnet_id(subnet)
        .send()
        .await
        .unwrap()
        .instances()[0]
        .instance_id()
        .unwrap()
        .to_string()
}

pub fn config_text(s: &Seed) -> String {
    format!(
        r#"name = "lab1"
region = "{REGION}"
vpc_id = "{}"
subnet_id = "{}"
second_subnet_id = "{}"
overlay_cidr = "100.64.0.0/16"
multicast_group = "239.1.1.1"
router_instance_id = "{}"
access_cidr = "203.0.113.0/24"
"#,
        s.vpc, s.subnet, s.subnet2, s.router
    )
}

/// A multi-AZ cluster's environment: a VPC, one overlay subnet per AZ (10.0.1.0/24 in
/// eu-west-1a, 10.0.2.0/24 in eu-west-1b) and a router pair, one router in each.
#[derive(Debug, Clone)]
pub struct SeedPair {
    pub vpc: String,
    pub subnets: [String; 2],
    pub routers: [String; 2],
}

pub async fn seed_pair(sdk: &Sdk) -> SeedPair {
    let s = seed(sdk).await;
    let b = run_instance(sdk, &s.subnet2).await;
    SeedPair {
        vpc: s.vpc,
        subnets: [s.subnet, s.subnet2],
        routers: [s.router, b],
    }
}

/// The cluster file of a [`SeedPair`]: `subnet_ids` and `router_instance_ids`, no
/// `second_subnet_id` (the subnets span two AZs).
pub fn config_text_pair(s: &SeedPair) -> String {
    format!(
        r#"name = "lab1"
region = "{REGION}"
vpc_id = "{}"
subnet_ids = ["{}", "{}"]
overlay_cidr = "100.64.0.0/16"
multicast_group = "239.1.1.1"
router_instance_ids = ["{}", "{}"]
access_cidr = "203.0.113.0/24"
"#,
        s.vpc, s.subnets[0], s.subnets[1], s.routers[0], s.routers[1]
    )
}

/// The primary interface of instance `id`.
pub async fn primary_eni(sdk: &Sdk, id: &str) -> String {
    let out = sdk
        .ec2
        .describe_instances()
        .instance_ids(id)
        .send()
        .await
        .unwrap();
    out.reservations()[0].instances()[0].network_interfaces()[0]
        .network_interface_id()
        .unwrap()
        .to_string()
}

pub fn write_config(emu: &Emulator, name: &str, text: &str) -> String {
    let p = emu.dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().to_string()
}

// ------------------------------------------------------------------------------------------------
// verification

use std::collections::BTreeSet;

pub const TAG: &str = "overlay:cluster";

/// The parameter group of cluster lab1's database (its name follows the MySQL major).
pub fn db_parameter_group() -> String {
    format!(
        "overlay-lab1-{}",
        overlay_ctl::model::DB_PARAMETER_GROUP_SUFFIX
    )
}

pub fn tag_filter() -> aws_sdk_ec2::types::Filter {
    aws_sdk_ec2::types::Filter::builder()
        .name(format!("tag:{TAG}"))
        .values("lab1")
        .build()
}

/// After teardown: no live resource tagged for the cluster (TGW chain, security groups, EFS,
/// RDS, secrets).
/// The id of the cluster's (tagged) multicast domain.
pub async fn tagged_domain(sdk: &Sdk) -> String {
    let doms = sdk
        .ec2
        .describe_transit_gateway_multicast_domains()
        .filters(tag_filter())
        .send()
        .await
        .unwrap();
    doms.transit_gateway_multicast_domains()[0]
        .transit_gateway_multicast_domain_id()
        .unwrap()
        .to_string()
}

/// The subnets of cluster lab1's database subnet group.
pub async fn db_subnet_group_subnets(sdk: &Sdk) -> BTreeSet<String> {
    let g = sdk
        .rds
        .describe_db_subnet_groups()
        .db_subnet_group_name("overlay-lab1-db")
        .send()
        .await
        .unwrap();
    g.db_subnet_groups()[0]
        .subnets()
        .iter()
        .map(|s| s.subnet_identifier().unwrap().to_string())
        .collect()
}

pub async fn nothing_tagged_left(sdk: &Sdk) {
    let ec2 = &sdk.ec2;
    let live = |s: Option<&str>| !matches!(s, Some("deleted") | Some("deleting"));
    let t = ec2
        .describe_transit_gateways()
        .filters(tag_filter())
        .send()
        .await
        .unwrap();
    assert!(t
        .transit_gateways()
        .iter()
        .all(|x| !live(x.state().map(|s| s.as_str()))));
    let a = ec2
        .describe_transit_gateway_vpc_attachments()
        .filters(tag_filter())
        .send()
        .await
        .unwrap();
    assert!(a
        .transit_gateway_vpc_attachments()
        .iter()
        .all(|x| !live(x.state().map(|s| s.as_str()))));
    let d = ec2
        .describe_transit_gateway_multicast_domains()
        .filters(tag_filter())
        .send()
        .await
        .unwrap();
    assert!(d
        .transit_gateway_multicast_domains()
        .iter()
        .all(|x| !live(x.state().map(|s| s.as_str()))));
    let g = ec2
        .describe_security_groups()
        .filters(tag_filter())
        .send()
        .await
        .unwrap();
    assert!(g.security_groups().is_empty());
    let f = sdk.efs.describe_file_systems().send().await.unwrap();
    assert!(f.file_systems().is_empty());
    let dbs = sdk.rds.describe_db_instances().send().await.unwrap();
    assert!(dbs.db_instances().is_empty());
    let sgs = sdk.rds.describe_db_subnet_groups().send().await.unwrap();
    assert!(sgs
        .db_subnet_groups()
        .iter()
        .all(|g| g.db_subnet_group_name() != Some("overlay-lab1-db")));
    let pgs = sdk.rds.describe_db_parameter_groups().send().await.unwrap();
    assert!(pgs.db_parameter_groups().iter().all(|g| !g
        .db_parameter_group_name()
        .unwrap_or_default()
        .starts_with("overlay-lab1-mysql")));
    let secrets = sdk.sm.list_secrets().send().await.unwrap();
    assert!(secrets.secret_list().is_empty());
}

/// Verifies every resource and setting of a converged cluster by describe calls.
pub async fn verify_converged(sdk: &Sdk, seed: &Seed) {
    verify_tgw_chain(sdk, seed).await;
    verify_all_but_tgw(sdk, seed, true).await;
}

/// The same for a cluster with flood = "unicast": no transit gateway at all (not even an
/// untagged one), no IGMP rule, everything else as with multicast.
pub async fn verify_converged_unicast(sdk: &Sdk, seed: &Seed) {
    let tgws = sdk.ec2.describe_transit_gateways().send().await.unwrap();
    assert!(
        tgws.transit_gateways().is_empty(),
        "unicast flooding created a transit gateway: {:?}",
        tgws.transit_gateways()
    );
    verify_all_but_tgw(sdk, seed, false).await;
}

/// The transit gateway multicast chain of a converged multicast cluster.
pub async fn verify_tgw_chain(sdk: &Sdk, seed: &Seed) {
    let ec2 = &sdk.ec2;
    // transit gateway
    let tgws = ec2
        .describe_transit_gateways()
        .filters(tag_filter())
        .send()
        .await
        .unwrap();
    let tgws: Vec<_> = tgws
        .transit_gateways()
        .iter()
        .filter(|t| t.state().map(|s| s.as_str()) == Some("available"))
        .collect();
    assert_eq!(tgws.len(), 1, "exactly one tagged TGW");
    let tgw = tgws[0].transit_gateway_id().unwrap();
    assert_eq!(
        tgws[0]
            .options()
            .unwrap()
            .multicast_support()
            .unwrap()
            .as_str(),
        "enable"
    );
    // attachment
    let atts = ec2
        .describe_transit_gateway_vpc_attachments()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("transit-gateway-id")
                .values(tgw)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let atts: Vec<_> = atts
        .transit_gateway_vpc_attachments()
        .iter()
        .filter(|a| a.state().map(|s| s.as_str()) == Some("available"))
        .collect();
    assert_eq!(atts.len(), 1);
    assert_eq!(atts[0].subnet_ids(), std::slice::from_ref(&seed.subnet));
    assert_eq!(atts[0].vpc_id(), Some(seed.vpc.as_str()));
    let att = atts[0].transit_gateway_attachment_id().unwrap();
    // multicast domain
    let doms = ec2
        .describe_transit_gateway_multicast_domains()
        .filters(tag_filter())
        .send()
        .await
        .unwrap();
    let doms = doms.transit_gateway_multicast_domains();
    assert_eq!(doms.len(), 1);
    let d = &doms[0];
    assert_eq!(d.state().unwrap().as_str(), "available");
    assert_eq!(d.transit_gateway_id(), Some(tgw));
    let o = d.options().unwrap();
    assert_eq!(o.igmpv2_support().unwrap().as_str(), "enable");
    assert_eq!(o.static_sources_support().unwrap().as_str(), "disable");
    assert_eq!(
        o.auto_accept_shared_associations().unwrap().as_str(),
        "disable"
    );
    let assoc = ec2
        .get_transit_gateway_multicast_domain_associations()
        .transit_gateway_multicast_domain_id(d.transit_gateway_multicast_domain_id().unwrap())
        .send()
        .await
        .unwrap();
    let a = assoc.multicast_domain_associations();
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].transit_gateway_attachment_id(), Some(att));
    assert_eq!(
        a[0].subnet().unwrap().subnet_id(),
        Some(seed.subnet.as_str())
    );
    assert_eq!(
        a[0].subnet().unwrap().state().unwrap().as_str(),
        "associated"
    );
}

/// Everything but the transit gateway chain; `multicast`: the vtep group lets the transit
/// gateway's IGMP queries in (with unicast flooding it has the VXLAN rule only).
pub async fn verify_all_but_tgw(sdk: &Sdk, seed: &Seed, multicast: bool) {
    let ec2 = &sdk.ec2;
    // security groups
    let sgs = ec2
        .describe_security_groups()
        .filters(tag_filter())
        .send()
        .await
        .unwrap();
    let by_role = |role: &str| {
        sgs.security_groups()
            .iter()
            .find(|g| {
                g.tags()
                    .iter()
                    .any(|t| t.key() == Some("overlay:role") && t.value() == Some(role))
            })
            .unwrap_or_else(|| panic!("no {role} group"))
            .clone()
    };
    assert_eq!(sgs.security_groups().len(), 5);
    let vtep = by_role("vtep");
    let perms = vtep.ip_permissions();
    let igmp = perms.iter().find(|p| p.ip_protocol() == Some("2"));
    if multicast {
        let igmp = igmp.expect("IGMP rule");
        assert_eq!(igmp.ip_ranges()[0].cidr_ip(), Some("0.0.0.0/32"));
        assert_eq!(perms.len(), 2, "{perms:?}");
    } else {
        assert!(igmp.is_none(), "IGMP rule without multicast: {perms:?}");
        assert_eq!(perms.len(), 1, "{perms:?}");
    }
    let vx = perms
        .iter()
        .find(|p| p.ip_protocol() == Some("udp"))
        .expect("VXLAN rule");
    assert_eq!((vx.from_port(), vx.to_port()), (Some(4789), Some(4789)));
    assert_eq!(vx.ip_ranges()[0].cidr_ip(), Some("10.0.1.0/24"));
    assert!(
        vx.user_id_group_pairs().is_empty(),
        "VXLAN must not use SG references"
    );
    let router = by_role("router");
    let r8080 = router
        .ip_permissions()
        .iter()
        .find(|p| p.from_port() == Some(8080))
        .expect("8080 rule");
    assert_eq!(r8080.ip_ranges()[0].cidr_ip(), Some("203.0.113.0/24"));
    let mgmt = by_role("mgmt");
    let efs_sg = by_role("efs");
    let nfs = efs_sg
        .ip_permissions()
        .iter()
        .filter(|p| p.from_port() == Some(2049));
    let mut sources = BTreeSet::new();
    for p in nfs {
        for g in p.user_id_group_pairs() {
            sources.insert(g.group_id().unwrap().to_string());
        }
        for r in p.ip_ranges() {
            sources.insert(r.cidr_ip().unwrap().to_string());
        }
    }
    let want: BTreeSet<String> = [
        vtep.group_id().unwrap().to_string(),
        mgmt.group_id().unwrap().to_string(),
        "100.64.0.0/16".to_string(),
    ]
    .into();
    assert_eq!(sources, want);
    let db_sg = by_role("db");
    let mysql = &db_sg.ip_permissions()[0];
    assert_eq!(mysql.from_port(), Some(3306));
    assert_eq!(mysql.user_id_group_pairs()[0].group_id(), mgmt.group_id());

    // router
    let inst = ec2
        .describe_instances()
        .instance_ids(&seed.router)
        .send()
        .await
        .unwrap();
    let inst = &inst.reservations()[0].instances()[0];
    assert_eq!(inst.source_dest_check(), Some(false));
    let eni = inst.network_interfaces()[0].network_interface_id().unwrap();
    let rts = ec2
        .describe_route_tables()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("vpc-id")
                .values(&seed.vpc)
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert!(!rts.route_tables().is_empty());
    for rt in rts.route_tables() {
        let r = rt
            .routes()
            .iter()
            .find(|r| r.destination_cidr_block() == Some("100.64.0.0/16"))
            .expect("overlay route in every route table");
        assert_eq!(r.network_interface_id(), Some(eni));
    }

    // EFS
    let fss = sdk.efs.describe_file_systems().send().await.unwrap();
    let fs: Vec<_> = fss
        .file_systems()
        .iter()
        .filter(|f| {
            f.tags()
                .iter()
                .any(|t| t.key() == TAG && t.value() == "lab1")
        })
        .collect();
    assert_eq!(fs.len(), 1);
    assert_eq!(fs[0].encrypted(), Some(true));
    assert_eq!(fs[0].throughput_mode().unwrap().as_str(), "provisioned");
    assert_eq!(fs[0].provisioned_throughput_in_mibps(), Some(25.0));
    let mts = sdk
        .efs
        .describe_mount_targets()
        .file_system_id(fs[0].file_system_id())
        .send()
        .await
        .unwrap();
    assert_eq!(mts.mount_targets().len(), 1);
    assert_eq!(mts.mount_targets()[0].subnet_id(), seed.subnet);
    let mt_sgs = sdk
        .efs
        .describe_mount_target_security_groups()
        .mount_target_id(mts.mount_targets()[0].mount_target_id())
        .send()
        .await
        .unwrap();
    let efs_group = sdk
        .ec2
        .describe_security_groups()
        .filters(tag_filter())
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("tag:overlay:role")
                .values("efs")
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        mt_sgs.security_groups(),
        [efs_group.security_groups()[0]
            .group_id()
            .unwrap()
            .to_string()]
    );

    // secrets
    for which in ["admin", "service"] {
        let s = sdk
            .sm
            .describe_secret()
            .secret_id(format!("overlay/lab1/db-{which}"))
            .send()
            .await
            .unwrap();
        assert!(s
            .tags()
            .iter()
            .any(|t| t.key() == Some(TAG) && t.value() == Some("lab1")));
    }

    // RDS
    assert_eq!(
        db_subnet_group_subnets(sdk).await,
        [seed.subnet.clone(), seed.subnet2.clone()].into()
    );
    let params = sdk
        .rds
        .describe_db_parameters()
        .db_parameter_group_name(db_parameter_group())
        .send()
        .await
        .unwrap();
    let get = |n: &str| {
        params
            .parameters()
            .iter()
            .find(|p| p.parameter_name() == Some(n))
            .and_then(|p| p.parameter_value())
            .map(str::to_string)
    };
    assert_eq!(get("innodb_rollback_on_timeout").as_deref(), Some("1"));
    assert_eq!(get("innodb_lock_wait_timeout").as_deref(), Some("600"));
    assert_eq!(get("max_connections").as_deref(), Some("350"));
    assert_eq!(get("binlog_format").as_deref(), Some("ROW"));
    let pgs = sdk
        .rds
        .describe_db_parameter_groups()
        .db_parameter_group_name(db_parameter_group())
        .send()
        .await
        .unwrap();
    assert_eq!(
        pgs.db_parameter_groups()[0].db_parameter_group_family(),
        Some(overlay_ctl::model::DB_PARAMETER_GROUP_FAMILY)
    );
    let dbs = sdk
        .rds
        .describe_db_instances()
        .db_instance_identifier("overlay-lab1-db")
        .send()
        .await
        .unwrap();
    let db = &dbs.db_instances()[0];
    assert_eq!(db.engine(), Some("mysql"));
    assert!(db
        .engine_version()
        .unwrap()
        .starts_with(overlay_ctl::model::DB_ENGINE_VERSION));
    assert_eq!(db.db_instance_class(), Some("db.m6g.large"));
    assert_eq!(db.storage_encrypted(), Some(true));
    assert_eq!(db.allocated_storage(), Some(20));
    assert_eq!(db.max_allocated_storage(), Some(100));
    assert_eq!(
        db.availability_zone(),
        Some("eu-west-1a"),
        "in the router's AZ"
    );
    assert_eq!(db.db_instance_status(), Some("available"));
    assert_eq!(
        db.db_parameter_groups()[0].db_parameter_group_name(),
        Some(db_parameter_group().as_str())
    );
    assert_eq!(
        db.vpc_security_groups()[0].vpc_security_group_id(),
        db_sg.group_id()
    );
    assert_eq!(
        db.db_subnet_group().unwrap().db_subnet_group_name(),
        Some("overlay-lab1-db")
    );
}

// --- overlay-lab, for the tests that run a lab against the emulator (imds, unicast_lab)

/// The workspace's overlay-lab (next to overlayctl).
/// The gate of a lab test: root, `tools`, and the workspace's overlay-lab and `overlayd`.
pub fn lab_gate(name: &str, tools: &[&str], overlayd: &Path) -> bool {
    let overlayd = overlayd.to_path_buf();
    overlay_testkit::gate(name, tools, move || {
        for b in [lab_bin(), overlayd.clone()] {
            if !b.is_file() {
                return Err(format!(
                    "{} missing: cargo build --workspace --bins",
                    b.display()
                ));
            }
        }
        Ok(())
    })
}

/// RunInstances of one c5.metal at `ip` with `tags`, IMDSv2 required, instance metadata tags
/// on or off; its instance id.
pub async fn run_tagged(
    sdk: &Sdk,
    subnet: &str,
    ip: &str,
    tags: &[(String, String)],
    metadata_tags: bool,
) -> String {
    use aws_sdk_ec2::types::{
        HttpTokensState, InstanceMetadataOptionsRequest, InstanceMetadataTagsState, ResourceType,
        Tag, TagSpecification,
    };
    let mut spec = TagSpecification::builder().resource_type(ResourceType::Instance);
    for (k, v) in tags {
        spec = spec.tags(Tag::builder().key(k).value(v).build());
    }
    let opts = InstanceMetadataOptionsRequest::builder()
        .http_tokens(HttpTokensState::Required)
        .instance_metadata_tags(if metadata_tags {
            InstanceMetadataTagsState::Enabled
        } else {
            InstanceMetadataTagsState::Disabled
        })
        .build();
    sdk.ec2
        .run_instances()
        .image_id("ami-12c6146b")
        .instance_type(aws_sdk_ec2::types::InstanceType::C5Metal)
        .min_count(1)
        .max_count(1)
        .subnet_id(subnet)
        .private_ip_address(ip)
        .metadata_options(opts)
        .tag_specifications(spec.build())
        .send()
        .await
        .unwrap()
        .instances()[0]
        .instance_id()
        .unwrap()
        .to_string()
}

/// `overlayd status --json` of a lab node's `overlayd run` (through its control socket).
pub fn daemon_status(overlayd: &Path, p: &str, node: &str) -> serde_json::Value {
    let o = Command::new("ip")
        .args(["netns", "exec", &format!("{p}-{node}")])
        .arg(overlayd)
        .args([
            "status",
            "--json",
            "--role",
            "standalone",
            "--address",
            "10.99.0.1/24",
            "--control-socket",
            &format!("/run/overlay-lab/{p}/{node}/overlayd.sock"),
        ])
        .output()
        .unwrap();
    serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("status of {node}: {}", text(&o)))
}

pub fn lab_bin() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_overlayctl")).with_file_name("overlay-lab")
}

/// `overlay-lab ARGS` with the given overlayd.
pub fn lab_with(overlayd: &Path, args: &[&str]) -> std::process::Output {
    Command::new(lab_bin())
        .args(args)
        .env("OVERLAY_LAB_OVERLAYD", overlayd)
        .output()
        .expect("run overlay-lab")
}

/// `overlay-lab ARGS` with the workspace's overlayd.
pub fn lab(args: &[&str]) -> std::process::Output {
    lab_with(&lab_bin().with_file_name("overlayd"), args)
}

/// `overlay-lab down` on drop, also when the test panics.
pub struct LabGuard(pub String);

impl Drop for LabGuard {
    fn drop(&mut self) {
        let _ = lab(&["down", "--prefix", &self.0]);
    }
}

/// Exit status, stdout and stderr of a finished command, for assertion messages.
pub fn text(o: &std::process::Output) -> String {
    format!(
        "status {}\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
