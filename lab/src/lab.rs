//! The commands: up, down, status, check.

use crate::nl::{self, Nl};
use crate::node_cmd::{
    node_dir, overlayd_cmd, overlayd_cmdline, overlayd_flags, run_dir, RUN_ROOT,
};
use crate::probe;
use crate::sys::{self, ip_batch, par_try, run_ok, run_timeout};
use crate::topo::{self, Endpoint, Node, Role, Topology, Vm};
use crate::{CheckArgs, DownArgs, ExecArgs, ProbeOpts, RebootArgs, StatusArgs, UpArgs};
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const FULL_MATRIX_MAX: usize = 64;
/// AWS quota: members per TGW multicast group (not adjustable).
const TGW_GROUP_MEMBER_LIMIT: usize = 100;

/// A bad command line (exit status 2).
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError(msg.into()))
}

/// What `up` records in /run/overlay-lab/P/lab.json for `status`, `check` and `down`.
#[derive(Serialize, Deserialize)]
struct LabFile {
    overlayd: PathBuf,
    state: String,
    topology: Topology,
}

fn check_prefix(p: &str) -> Result<()> {
    topo::validate_prefix(p).map_err(usage)
}

/// Locate overlayd: explicit path, else next to our own executable, else PATH.
fn check_region(r: &str) -> Result<()> {
    let ok = r.len() <= 32
        && r.split('-').count() >= 3
        && r.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && r.ends_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(usage(format!(
            "--region {r:?}: not an AWS region name (e.g. eu-west-1)"
        )))
    }
}

/// The IMDS emulator reads moto over plain HTTP at an IP address (loopback in practice).
fn check_endpoint(e: &str) -> Result<()> {
    let ok = e
        .strip_prefix("http://")
        .map(|hp| {
            hp.trim_end_matches('/')
                .parse::<std::net::SocketAddr>()
                .is_ok()
        })
        .unwrap_or(false);
    if ok {
        Ok(())
    } else {
        Err(usage(format!(
            "--aws-endpoint {e:?}: want http://IP:PORT of scripts/aws-emulator (e.g. http://127.0.0.1:5000)"
        )))
    }
}

pub(crate) fn find_overlayd(explicit: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        if p.components().count() == 1 && !p.exists() {
            if let Some(found) = search_path(&p.to_string_lossy()) {
                return Ok(found);
            }
        }
        if !p.is_file() {
            return Err(usage(format!(
                "overlayd binary {} does not exist (from --overlayd / OVERLAY_LAB_OVERLAYD)",
                p.display()
            )));
        }
        return Ok(std::fs::canonicalize(&p)?);
    }
    if let Ok(me) = std::env::current_exe() {
        if let Some(dir) = me.parent() {
            let cand = dir.join("overlayd");
            if cand.is_file() {
                return Ok(cand);
            }
        }
    }
    search_path("overlayd").ok_or_else(|| {
        usage(
            "cannot find overlayd: not next to overlay-lab and not on PATH; build it \
             (cargo build -p overlay-agent) or pass --overlayd PATH",
        )
    })
}

fn search_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn write_lab_file(t: &Topology, overlayd: &Path, state: &str) -> Result<()> {
    let f = LabFile {
        overlayd: overlayd.to_path_buf(),
        state: state.into(),
        topology: t.clone(),
    };
    let p = run_dir(&t.prefix).join("lab.json");
    std::fs::write(&p, serde_json::to_vec_pretty(&f)?)
        .with_context(|| format!("writing {}", p.display()))
}

/// The topology of lab `prefix` as `up` recorded it.
pub(crate) fn topology_of(prefix: &str) -> Result<Topology> {
    Ok(read_lab_file(prefix)?.topology)
}

fn read_lab_file(prefix: &str) -> Result<LabFile> {
    let p = run_dir(prefix).join("lab.json");
    let b = std::fs::read(&p).map_err(|_| {
        anyhow!(
            "no lab {prefix:?} here ({} missing); create one with `overlay-lab up --prefix {prefix}`",
            p.display()
        )
    })?;
    serde_json::from_slice(&b).with_context(|| format!("parsing {}", p.display()))
}

struct Phases {
    start: Instant,
    last: Instant,
    list: Vec<(String, f64)>,
    verbose: bool,
}

impl Phases {
    fn new(verbose: bool) -> Phases {
        let now = Instant::now();
        Phases {
            start: now,
            last: now,
            list: Vec::new(),
            verbose,
        }
    }
    fn done(&mut self, what: &str) {
        let now = Instant::now();
        let s = (now - self.last).as_secs_f64();
        self.last = now;
        if self.verbose {
            eprintln!("  {what:<44} {s:6.2} s");
        }
        self.list.push((what.to_string(), s));
    }
    fn total(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }
}

pub fn up(a: UpArgs) -> Result<u8> {
    let prefix = a.common.prefix.clone();
    check_prefix(&prefix)?;
    if a.hosts == 0 || a.hosts > topo::MAX_HOSTS {
        return Err(usage(format!(
            "--hosts {}: must be 1..={} (the /22 underlay holds that many)",
            a.hosts,
            topo::MAX_HOSTS
        )));
    }
    if a.vms_per_host > topo::MAX_VMS_PER_HOST {
        return Err(usage(format!(
            "--vms-per-host {}: must be 0..={}",
            a.vms_per_host,
            topo::MAX_VMS_PER_HOST
        )));
    }
    if !a.group.is_multicast() {
        return Err(usage(format!(
            "--group {}: not an IPv4 multicast address",
            a.group
        )));
    }
    if !(1280..=65535).contains(&a.underlay_mtu) {
        return Err(usage(format!(
            "--underlay-mtu {}: must be 1280..=65535",
            a.underlay_mtu
        )));
    }
    check_region(&a.region)?;
    if let Some(e) = &a.aws_endpoint {
        check_endpoint(e)?;
    }
    if a.routers == 2 && !a.daemon && !a.instances {
        return Err(usage(
            "--routers 2: needs --daemon or --instances (keepalived runs under overlayd run; \
             `overlayd apply` starts no daemon)"
                .to_string(),
        ));
    }
    if a.flood == "multicast" && a.peer_discovery != "static" {
        return Err(usage(format!(
            "--peer-discovery {}: only with --flood unicast (multicast flooding has no peers)",
            a.peer_discovery
        )));
    }
    if a.flood == "evpn" && !a.daemon && !a.instances {
        return Err(usage(
            "--flood evpn: needs --daemon (`overlayd run` spawns each node's FRR) or --instances (overlayd under systemd configures frr.service); `overlayd apply` starts no daemon",
        ));
    }
    let flood = match (a.flood.as_str(), a.peer_discovery.as_str()) {
        ("multicast", _) => topo::Flood::Multicast,
        ("evpn", "static") => topo::Flood::Evpn,
        ("evpn", _) => topo::Flood::EvpnEc2,
        (_, "static") => topo::Flood::UnicastStatic,
        _ => topo::Flood::UnicastEc2,
    };
    if flood.zero_config() && a.aws_endpoint.is_none() {
        return Err(usage(
            "--peer-discovery ec2: needs --aws-endpoint (moto behind scripts/aws-emulator) to discover peers in",
        ));
    }
    if flood.zero_config() && a.routers == 2 {
        return Err(usage(
            "--peer-discovery ec2: one router (zero-configuration nodes have no router pair in the lab yet)",
        ));
    }
    if flood.zero_config() && a.instances {
        return Err(usage(
            "--peer-discovery ec2 is not available with --instances yet (use the namespace or --daemon lab)",
        ));
    }
    if !(1..=3600).contains(&a.peer_interval) {
        return Err(usage(format!(
            "--peer-interval {}: must be 1..=3600 seconds",
            a.peer_interval
        )));
    }
    if a.cloud_init && !a.instances {
        return Err(usage(
            "--cloud-init: only with --instances (cloud-init runs in the nodes' containers)",
        ));
    }
    if a.cloud_init && a.aws_endpoint.is_none() {
        return Err(usage(
            "--cloud-init: needs --aws-endpoint (moto behind scripts/aws-emulator): the nodes' \
             user data comes from their moto instances",
        ));
    }
    if !(1..=3600).contains(&a.cloud_init_timeout) {
        return Err(usage(format!(
            "--cloud-init-timeout {}: must be 1..=3600 seconds",
            a.cloud_init_timeout
        )));
    }
    let overlayd = find_overlayd(a.overlayd.clone())?;
    let deb = if a.instances {
        Some(find_deb(a.deb.clone())?)
    } else {
        None
    };
    sys::require_root()?;

    let existing = sys::lab_namespaces(&prefix);
    if !existing.is_empty() || run_dir(&prefix).exists() {
        if !a.replace {
            return Err(usage(format!(
                "lab {prefix:?} already exists ({} namespaces, run dir {}): run \
                 `overlay-lab down --prefix {prefix}` first, pass --replace, or pick another --prefix",
                existing.len(),
                run_dir(&prefix).display()
            )));
        }
        teardown(&prefix)?;
    }

    let mut t = Topology::new(
        &prefix,
        a.hosts,
        a.vms_per_host,
        a.group,
        a.vni,
        a.underlay_mtu,
    );
    t.flood = flood;
    t.peer_interval = a.peer_interval;
    if a.routers == 2 {
        t.with_router_pair();
    }
    if a.azs == 2 {
        t.with_two_azs();
    }
    let jobs = a.jobs.max(1);
    let mut ph = Phases::new(!a.common.json);
    if !a.common.json {
        eprintln!(
            "overlay-lab up: prefix {prefix}, {} hosts, {} VMs, overlayd {}",
            a.hosts,
            t.vms.len(),
            overlayd.display()
        );
    }
    std::fs::create_dir_all(RUN_ROOT)?;
    // create_dir (not _all) doubles as a lock against a concurrent `up` of the same prefix
    std::fs::create_dir(run_dir(&prefix))
        .with_context(|| format!("creating {}", run_dir(&prefix).display()))?;
    write_lab_file(&t, &overlayd, "building")?;

    // --instances: the package, served to the nodes by the lab's package server
    let package = match &deb {
        Some(d) => Some(serve_package(&prefix, d)?),
        None => None,
    };
    if let (Some(p), false) = (&package, a.common.json) {
        eprintln!(
            "overlay-lab: package {} served at {} (sha256 {})",
            p.file, p.url, p.sha256
        );
    }
    let mode = match &deb {
        Some(d) => NodeMode::Instances {
            deb: d.clone(),
            cloud_init: a.cloud_init.then(|| CloudInit {
                timeout: Duration::from_secs(a.cloud_init_timeout),
                quiet: a.common.json,
            }),
        },
        None if a.daemon => NodeMode::Daemon,
        None => NodeMode::Apply,
    };
    let imds = crate::imds::Options {
        region: a.region.clone(),
        aws_endpoint: a.aws_endpoint.clone(),
        packages_dir: package
            .as_ref()
            .map(|_| run_dir(&prefix).join(crate::imds::PACKAGES_DIR)),
        route_follow: (a.routers == 2 && a.aws_endpoint.is_some()).then(|| {
            crate::imds::catalog::RouteFollow {
                cidr: format!("{}/{}", crate::topo::OVERLAY_NET, crate::topo::OVERLAY_LEN),
                delay_ms: a.vpc_route_delay_ms,
            }
        }),
    };
    let res = build(&t, &overlayd, jobs, !a.accept_igmpv3, &mode, &imds, &mut ph);
    let (applies, cloud_init) = match res {
        Ok(v) => v,
        Err(e) => {
            let _ = write_lab_file(&t, &overlayd, "failed");
            return Err(e.context(format!(
                "building lab {prefix:?} failed; it was left as is for inspection \
                 (`overlay-lab status --prefix {prefix}`), remove it with \
                 `overlay-lab down --prefix {prefix}`"
            )));
        }
    };
    write_lab_file(&t, &overlayd, "up")?;
    let built_s = ph.total();

    let reach = if a.probe.no_check {
        None
    } else {
        let r = reachability(&t, &a.probe);
        ph.done("reachability check");
        Some(r)
    };
    let membership = membership(&t).unwrap_or_else(|e| json!({"error": format!("{e:#}")}));
    let total = ph.total();
    let ok = reach.as_ref().map(|r| r.all_ok()).unwrap_or(true);

    if a.common.json {
        let out = json!({
            "prefix": prefix,
            "state": "up",
            "overlayd": overlayd,
            "hosts": a.hosts,
            "daemon": a.daemon,
            "namespaces": t.namespaces(),
            "nodes": t.nodes.iter().map(|n| {
                let mut v = node_json(n);
                v["overlayd_flags"] = json!(overlayd_flags(&t, n));
                v["apply_output"] = json!(applies.iter().find(|(name, _)| name == &n.name).map(|x| &x.1));
                v
            }).collect::<Vec<_>>(),
            "vms": t.vms,
            "client": {"ns": t.client_ns, "ip": t.client_ip},
            "timings": {
                "phases": ph.list.iter().map(|(k, s)| json!({"phase": k, "seconds": s})).collect::<Vec<_>>(),
                "built_seconds": built_s,
                "total_seconds": total,
                "reachable_seconds": reach.as_ref().and_then(|r| r.full_after).map(|d| built_s + d.as_secs_f64()),
            },
            "reachability": reach.as_ref().map(|r| r.to_json()),
            "membership": membership,
            "package": package,
            "cloud_init": a.cloud_init.then_some(&cloud_init),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        let mut s = String::new();
        writeln!(
            s,
            "lab {prefix:?} built in {built_s:.2} s ({} namespaces)",
            t.namespaces().len()
        )?;
        if let Some(r) = &reach {
            s.push_str(&r.render());
            if let Some(d) = r.full_after {
                writeln!(
                    s,
                    "full reachability {:.2} s after `up` started",
                    built_s + d.as_secs_f64()
                )?;
            }
        }
        s.push_str(&render_membership(&membership));
        if let Some(p) = &package {
            writeln!(s, "package server: {} sha256 {}", p.url, p.sha256)?;
        }
        if deb.is_some() {
            writeln!(
                s,
                "instances (systemd containers, overlayd {}):",
                if a.cloud_init {
                    "installed by cloud-init from the user data"
                } else {
                    "from the package"
                }
            )?;
            for (node, lines) in &applies {
                writeln!(s, "  {node:<8} {}", lines.join("; "))?;
            }
        }
        let bad: Vec<String> = cloud_init
            .iter()
            .filter(|o| !o.ok())
            .map(|o| format!("{} ({})", o.node, o.status))
            .collect();
        if !bad.is_empty() {
            writeln!(
                s,
                "cloud-init FAILED on {}: see `overlay-lab exec --prefix {prefix} NODE -- \
                 cat /var/log/cloud-init-output.log` (and /var/log/cloud-init.log)",
                bad.join(", ")
            )?;
        }
        writeln!(s, "total {total:.2} s")?;
        writeln!(
            s,
            "next: overlay-lab status --prefix {prefix}; overlay-lab down --prefix {prefix}"
        )?;
        print!("{s}");
    }
    Ok(if ok { 0 } else { 1 })
}

fn node_json(n: &Node) -> Value {
    json!({
        "name": n.name, "ns": n.ns, "role": n.role.as_str(),
        "underlay_ip": n.underlay_ip, "overlay_ip": n.overlay_ip, "vpc_port": n.vpc_port, "az": n.az,
    })
}

/// How the nodes run overlayd.
pub(crate) enum NodeMode {
    /// `overlayd apply` once per node (namespaces only).
    Apply,
    /// `overlayd run` daemons started by the lab (namespaces only).
    Daemon,
    /// Booted systemd containers; the lab installs this overlayd package, or (cloud_init)
    /// the nodes' cloud-init does what their user data says.
    Instances {
        deb: PathBuf,
        cloud_init: Option<CloudInit>,
    },
}

/// `up --cloud-init`'s wait.
pub(crate) struct CloudInit {
    timeout: Duration,
    quiet: bool,
}

/// The file the lab's package server serves (`up --instances`).
#[derive(Serialize)]
struct Package {
    file: String,
    url: String,
    sha256: String,
    path: PathBuf,
}

/// Copies the package into the lab's `packages/` (what the package server serves) and
/// checksums the copy.
fn serve_package(prefix: &str, deb: &Path) -> Result<Package> {
    let file = deb
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| anyhow!("{}: not a file", deb.display()))?;
    let url = crate::imds::package_url(&file);
    let dir = run_dir(prefix).join(crate::imds::PACKAGES_DIR);
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(&file);
    std::fs::copy(deb, &path)
        .with_context(|| format!("copying {} to {}", deb.display(), path.display()))?;
    if crate::imds::package_file(&dir, &format!("/{file}")).is_none() {
        bail!("{file}: the package server serves only names of [A-Za-z0-9._+~-]");
    }
    let out = run_ok(Command::new("sha256sum").arg(&path), None)?;
    let sha256 = out
        .split_whitespace()
        .next()
        .filter(|h| h.len() == 64)
        .ok_or_else(|| anyhow!("sha256sum {}: {out:?}", path.display()))?
        .to_string();
    Ok(Package {
        file,
        url,
        sha256,
        path,
    })
}

/// Per node what happened (lines), and the cloud-init outcomes (`--cloud-init` only).
type Built = (Vec<(String, Vec<String>)>, Vec<crate::cloud_init::Outcome>);

/// Everything up to (not including) the reachability check. Returns apply output per node.
fn build(
    t: &Topology,
    overlayd: &Path,
    jobs: usize,
    drop_v3: bool,
    mode: &NodeMode,
    imds: &crate::imds::Options,
    ph: &mut Phases,
) -> Result<Built> {
    let p = &t.prefix;
    let infra: Vec<String> = t
        .namespaces()
        .into_iter()
        .filter(|n| !t.vms.iter().any(|v| &v.ns == n))
        .collect();
    sys::create_namespaces(&infra)?;
    // per-node files
    for n in &t.nodes {
        let d = node_dir(p, &n.name);
        std::fs::create_dir_all(d.join("state"))?;
        std::fs::write(
            d.join("overlayd.toml"),
            "# overlay-lab: every setting is passed as a flag\n",
        )?;
        std::fs::write(
            d.join("hosts"),
            format!("127.0.0.1 localhost\n# overlay-lab node {}\n", n.name),
        )?;
        std::fs::write(d.join("resolv.conf"), "")?;
    }
    nl::in_netns(&t.client_ns, nl::disable_ipv6)?;
    ph.done(&format!("{} namespaces + node files", infra.len()));

    // The VPC: underlay bridge (querier switched on later), client bridge, veths to every node.
    let mtu = t.underlay_mtu;
    let ul = topo::UNDERLAY_BRIDGE;
    let cl = topo::CLIENT_BRIDGE;
    let mut b = String::new();
    writeln!(b, "link set lo up")?;
    for (az, br) in t.bridges().into_iter().enumerate() {
        writeln!(
            b,
            "link add {br} mtu {mtu} type bridge mcast_snooping 1 mcast_querier 0 \
             mcast_igmp_version 2 mcast_query_use_ifaddr 0 \
             mcast_query_response_interval 10"
        )?;
        writeln!(
            b,
            "addr add {}/{} dev {br}",
            topo::subnet_gw(az as u8),
            topo::UNDERLAY_LEN
        )?;
    }
    if t.azs == 2 {
        // the TGW multicast domain across both subnets: the group's traffic crosses this
        // pair (always forwarded to it: a permanent multicast-router port), the VPC's
        // rules (vpc.rs) let nothing else through
        let (la, lb) = topo::AZ_LINK;
        writeln!(
            b,
            "link add {la} mtu {mtu} type veth peer name {lb} mtu {mtu}"
        )?;
        writeln!(b, "link set {la} master {ul}")?;
        writeln!(b, "link set {lb} master {}", topo::UNDERLAY_BRIDGE_B)?;
        for l in [la, lb] {
            writeln!(b, "link set {l} type bridge_slave mcast_router 2")?;
            writeln!(b, "link set {l} up")?;
        }
    }
    writeln!(b, "link add {cl} type bridge")?;
    writeln!(
        b,
        "addr add {}/{} dev {cl}",
        topo::CLIENT_GW,
        topo::CLIENT_LEN
    )?;
    for n in &t.nodes {
        let port = &n.vpc_port;
        writeln!(
            b,
            "link add {port} mtu {mtu} type veth peer name eth0 address {} netns {} mtu {mtu}",
            topo::eth0_mac(n.underlay_ip),
            n.ns
        )?;
        writeln!(b, "link set {port} master {}", n.bridge())?;
        writeln!(b, "link set {port} type bridge_slave mcast_flood off")?;
        writeln!(b, "link set {port} up")?;
    }
    let cp = topo::CLIENT_PORT;
    writeln!(
        b,
        "link add {cp} type veth peer name eth0 address {} netns {}",
        topo::eth0_mac(t.client_ip),
        t.client_ns
    )?;
    writeln!(b, "link set {cp} master {cl}")?;
    writeln!(b, "link set {cp} up")?;
    // AWS link-local services answer on the node subnet (IMDS, DNS resolver, time sync).
    for a in topo::LINK_LOCAL_SERVICES {
        writeln!(b, "addr add {a}/32 dev {ul}")?;
    }
    for br in t.bridges() {
        writeln!(b, "link set {br} up")?;
    }
    writeln!(b, "link set {cl} up")?;
    writeln!(
        b,
        "route add {}/{} via {}",
        topo::OVERLAY_NET,
        topo::OVERLAY_LEN,
        t.router().underlay_ip
    )?;
    ip_batch(Some(&t.vpc_ns), &b)?;
    run_ok(
        Command::new("ip").args([
            "netns",
            "exec",
            &t.vpc_ns,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]),
        None,
    )?;
    if drop_v3 && !t.flood.unicast() {
        let rules = "table bridge tgw {\n  chain pre {\n    type filter hook prerouting priority 0;\n    \
                     igmp type membership-report-v3 counter drop comment \"a TGW ignores IGMPv3\"\n  }\n}\n";
        run_ok(
            Command::new("ip").args(["netns", "exec", &t.vpc_ns, "nft", "-f", "-"]),
            Some(rules),
        )
        .context("installing the IGMPv3 drop rule (nftables); use --accept-igmpv3 to skip")?;
    }
    crate::vpc::install(t)?;
    ph.done("vpc: bridges, veths, route table, source/destination check");
    let pid = crate::imds::start(t, imds)?;
    ph.done(&format!(
        "IMDSv2 emulator on {}:{} (pid {pid})",
        crate::imds::ADDRESS,
        crate::imds::PORT
    ));

    // Underlay addresses of nodes and client (netlink from worker threads, no processes).
    // Every instance boots with a DHCP default route via the VPC router (subnet base + 1).
    let mut cfgs: Vec<(String, Ipv4Addr, u8, Option<Ipv4Addr>)> = t
        .nodes
        .iter()
        .map(|n| {
            (
                n.ns.clone(),
                n.underlay_ip,
                topo::UNDERLAY_LEN,
                Some(n.subnet_gw()),
            )
        })
        .collect();
    cfgs.push((
        t.client_ns.clone(),
        t.client_ip,
        topo::CLIENT_LEN,
        Some(topo::CLIENT_GW),
    ));
    par_try(&cfgs, jobs, |(ns, ip, len, gw)| {
        nl::in_netns(ns, || {
            let mut nl = Nl::new()?;
            nl.link_up("lo")?;
            nl.add_addr("eth0", *ip, *len)?;
            nl.link_up("eth0")?;
            if let Some(gw) = gw {
                nl.add_default_route(*gw, topo::RTPROT_DHCP)?;
            }
            Ok(())
        })
        .with_context(|| format!("underlay of {ns}"))
    })?;
    ph.done("underlay addresses");

    // The real overlayd, concurrently: from the package under systemd (--instances),
    // `overlayd run` daemons (--daemon) or `overlayd apply`.
    if let NodeMode::Instances { deb, cloud_init } = mode {
        let (lines, outcomes) = match cloud_init {
            Some(ci) => {
                let url = crate::imds::aws_api_url();
                start_cloud_init_instances(t, &url, ci, jobs, ph)?
            }
            None => (start_instances(t, deb, jobs, ph)?, Vec::new()),
        };
        let lines = finish_build(t, jobs, ph, lines, cloud_init.is_some())?;
        return Ok((lines, outcomes));
    }
    if matches!(mode, NodeMode::Daemon) {
        let pids = crate::daemons::start_all(overlayd, t, jobs, Duration::from_secs(120))?;
        ph.done(&format!("overlayd run x{} (all converged)", pids.len()));
        let lines = finish_build(
            t,
            jobs,
            ph,
            pids.into_iter()
                .map(|(n, pid)| (n, vec![format!("overlayd run: pid {pid}, converged")]))
                .collect(),
            false,
        )?;
        return Ok((lines, Vec::new()));
    }
    let outs = sys::par_map(&t.nodes, jobs, |n| -> Result<(String, Vec<String>)> {
        let mut c = overlayd_cmd(overlayd, t, n, &["apply"])?;
        let o = run_timeout(&mut c, None, Duration::from_secs(60))
            .with_context(|| format!("overlayd apply on {}", n.name))?;
        let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
        if !o.status.success() {
            bail!(
                "overlayd apply on node {} (namespace {}) failed with {}:\n{}{}\ncommand: {}",
                n.name,
                n.ns,
                o.status,
                String::from_utf8_lossy(&o.stderr),
                stdout,
                overlayd_cmdline(overlayd, t, n, &["apply"])
            );
        }
        Ok((n.name.clone(), stdout.lines().map(str::to_string).collect()))
    });
    let applies: Vec<(String, Vec<String>)> = outs.into_iter().collect::<Result<_>>()?;
    ph.done(&format!("overlayd apply x{}", t.nodes.len()));
    Ok((finish_build(t, jobs, ph, applies, false)?, Vec::new()))
}

/// --instances: the image, one booted container per node and the client, the package
/// installed and enabled on every node. Returns per node what happened.
fn start_instances(
    t: &Topology,
    deb: &Path,
    jobs: usize,
    ph: &mut Phases,
) -> Result<Vec<(String, Vec<String>)>> {
    let image = crate::rootfs::ensure(false)?;
    ph.done(&format!("node image {}", image.display()));
    crate::instances::raise_inotify_limit(t.nodes.len() + 1)?;
    let mut all: Vec<(String, String)> = t
        .nodes
        .iter()
        .map(|n| (n.name.clone(), n.ns.clone()))
        .collect();
    all.push(("client".to_string(), t.client_ns.clone()));
    let booted = sys::par_map(&all, jobs, |(name, ns)| {
        let t0 = Instant::now();
        crate::instances::boot(
            &t.prefix,
            name,
            ns,
            &image,
            None,
            crate::instances::Wait::Booted,
        )
        .map(|c| (c, t0.elapsed()))
    });
    let booted: Vec<(crate::instances::Container, Duration)> =
        booted.into_iter().collect::<Result<_>>()?;
    let slowest = booted
        .iter()
        .map(|(_, d)| d.as_secs_f64())
        .fold(0.0, f64::max);
    ph.done(&format!(
        "{} containers booted (systemd; slowest {slowest:.2} s)",
        booted.len()
    ));
    let outs = sys::par_map(&t.nodes, jobs, |n| -> Result<(String, Vec<String>)> {
        let (c, boot) = booted
            .iter()
            .find(|(c, _)| c.node == n.name)
            .ok_or_else(|| anyhow!("no container for {}", n.name))?;
        let secs = crate::instances::install(c, deb, &crate::node_cmd::overlayd_toml(t, n))?;
        Ok((
            n.name.clone(),
            vec![
                format!("booted in {:.2} s", boot.as_secs_f64()),
                format!("`systemctl enable --now overlayd` {secs:.2} s"),
                format!("is-active: {}", crate::instances::is_active(c)),
            ],
        ))
    });
    let mut lines: Vec<(String, Vec<String>)> = outs.into_iter().collect::<Result<_>>()?;
    ph.done(&format!(
        "overlayd package installed, enabled, started x{}",
        t.nodes.len()
    ));
    let rss: u64 = booted
        .iter()
        .map(|(c, _)| crate::instances::rss_kib(c))
        .sum();
    lines.push((
        "all".to_string(),
        vec![format!(
            "{} containers, resident memory {:.1} MiB in all",
            booted.len(),
            rss as f64 / 1024.0
        )],
    ));
    Ok(lines)
}

/// --instances --cloud-init: the image, one booted container per node with cloud-init on and
/// `AWS_ENDPOINT_URL` = `aws_url` (the client as in --instances), then the wait for every
/// node's cloud-init. The lab installs nothing: the nodes' user data does.
fn start_cloud_init_instances(
    t: &Topology,
    aws_url: &str,
    ci: &CloudInit,
    jobs: usize,
    ph: &mut Phases,
) -> Result<Built> {
    use crate::instances::{self, Wait};
    let image = crate::rootfs::ensure(ci.quiet)?;
    ph.done(&format!("node image {}", image.display()));
    instances::raise_inotify_limit(t.nodes.len() + 1)?;
    let mut all: Vec<(String, String, bool)> = t
        .nodes
        .iter()
        .map(|n| (n.name.clone(), n.ns.clone(), true))
        .collect();
    all.push(("client".to_string(), t.client_ns.clone(), false));
    // Every boot at once (cloud-init waits on the network, not the CPU); the client waits for
    // its boot as in --instances, the nodes only for their systemd.
    let booted = sys::par_map(&all, jobs.max(all.len()), |(name, ns, node)| {
        if *node {
            instances::boot(&t.prefix, name, ns, &image, Some(aws_url), Wait::Manager)
        } else {
            instances::boot(&t.prefix, name, ns, &image, None, Wait::Booted)
        }
    });
    let booted: Vec<instances::Container> = booted.into_iter().collect::<Result<_>>()?;
    ph.done(&format!(
        "{} containers started (cloud-init on in {} nodes)",
        booted.len(),
        t.nodes.len()
    ));
    let waits: Vec<(&instances::Container, f64)> = booted
        .iter()
        .filter(|c| c.node != "client")
        .map(|c| {
            let started = instances::boot_started(&t.prefix, &c.node).unwrap_or(0.0);
            (c, started)
        })
        .collect();
    let outcomes = crate::cloud_init::wait_all(&waits, ci.timeout, ci.quiet);
    let ok = outcomes.iter().filter(|o| o.ok()).count();
    let slowest = outcomes
        .iter()
        .filter_map(|o| o.seconds)
        .fold(0.0, f64::max);
    ph.done(&format!(
        "cloud-init: {ok} of {} done (slowest {slowest:.2} s after boot start)",
        outcomes.len()
    ));
    let mut lines: Vec<(String, Vec<String>)> = outcomes
        .iter()
        .map(|o| (o.node.clone(), vec![o.line()]))
        .collect();
    let rss: u64 = booted.iter().map(instances::rss_kib).sum();
    lines.push((
        "all".to_string(),
        vec![format!(
            "{} containers, resident memory {:.1} MiB in all",
            booted.len(),
            rss as f64 / 1024.0
        )],
    ));
    Ok((lines, outcomes))
}

/// The overlayd package for --instances: the given one, else the newest
/// `target/package/overlayd_*_amd64.deb` of the target directory this executable is in.
fn find_deb(given: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(p) = given {
        if !p.is_file() {
            return Err(usage(format!("--deb {}: no such file", p.display())));
        }
        return Ok(p);
    }
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .map(|t| t.join("package"))
        .ok_or_else(|| anyhow!("cannot place {}", exe.display()))?;
    let newest = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            n.starts_with("overlayd_") && n.ends_with("_amd64.deb")
        })
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok());
    newest.ok_or_else(|| {
        usage(format!(
            "--instances needs the overlayd package: none in {} (run scripts/package, or pass --deb)",
            dir.display()
        ))
    })
}

/// After the nodes are configured: querier on, VMs, start-up window. `lenient`
/// (--cloud-init: the nodes configured themselves, or failed to): a host without cloudbr0
/// gets no VM ports (named on stderr) instead of failing `up`.
fn finish_build(
    t: &Topology,
    jobs: usize,
    ph: &mut Phases,
    applies: Vec<(String, Vec<String>)>,
    lenient: bool,
) -> Result<Vec<(String, Vec<String>)>> {
    // The TGW's periodic general query: only now, so the nodes' first joins are unsolicited
    // (that is what exposes an IGMPv3 first report). No TGW with unicast flooding: no querier.
    if !t.flood.unicast() {
        let mut b = String::new();
        for br in t.bridges() {
            writeln!(b, "link set {br} type bridge mcast_querier 1")?;
        }
        ip_batch(Some(&t.vpc_ns), &b)?;
    }
    let querier_on = Instant::now();

    if !t.vms.is_empty() {
        let all_hosts: Vec<&Node> = t.nodes.iter().filter(|n| n.role == Role::Host).collect();
        let (hosts, without): (Vec<&Node>, Vec<&Node>) = if lenient {
            all_hosts
                .into_iter()
                .partition(|h| cloudbr0_mtu(&h.ns).is_ok())
        } else {
            (all_hosts, Vec::new())
        };
        if !without.is_empty() {
            eprintln!(
                "overlay-lab: no cloudbr0 on {}: their VMs get no port (overlayd did not \
                 converge there)",
                without
                    .iter()
                    .map(|h| h.name.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
        let vm_mtu = match hosts.first() {
            Some(h) => cloudbr0_mtu(&h.ns)?,
            None => t.underlay_mtu.saturating_sub(50),
        };
        let vm_ns: Vec<String> = t.vms.iter().map(|v| v.ns.clone()).collect();
        sys::create_namespaces(&vm_ns)?;
        par_try(&vm_ns, jobs, |ns| nl::in_netns(ns, nl::disable_ipv6))?;
        par_try(&hosts, jobs, |h| {
            let vms: Vec<&Vm> = t.vms.iter().filter(|v| v.host == h.name).collect();
            let files: Vec<std::fs::File> = vms
                .iter()
                .map(|v| {
                    std::fs::File::open(Path::new(sys::NETNS_DIR).join(&v.ns))
                        .with_context(|| format!("namespace {}", v.ns))
                })
                .collect::<Result<_>>()?;
            nl::in_netns(&h.ns, || {
                let mut nl = Nl::new()?;
                let br = nl::ifindex("cloudbr0").context("cloudbr0 (made by overlayd apply)")?;
                for (v, f) in vms.iter().zip(&files) {
                    nl.add_veth(&v.host_port, Some(br), vm_mtu, "eth0", f)?;
                }
                Ok(())
            })
            .with_context(|| format!("VM ports on {}", h.name))
        })?;
        let placed: Vec<&Vm> = t
            .vms
            .iter()
            .filter(|v| hosts.iter().any(|h| h.name == v.host))
            .collect();
        par_try(&placed, jobs, |v| {
            nl::in_netns(&v.ns, || {
                let mut nl = Nl::new()?;
                nl.link_up("lo")?;
                nl.add_addr("eth0", v.ip, topo::OVERLAY_LEN)?;
                nl.link_up("eth0")?;
                nl.add_default_route(topo::OVERLAY_ROUTER, 3)?;
                Ok(())
            })
            .with_context(|| format!("VM {}", v.name))
        })?;
        ph.done(&format!("{} VMs on cloudbr0 (mtu {vm_mtu})", placed.len()));
    }
    if t.flood.unicast() {
        // what each node has behind its VPC port: its bridge and its VMs
        let owned: Vec<(String, Vec<[u8; 6]>)> = t
            .nodes
            .iter()
            .map(|n| {
                let mut macs = vec![nl::in_netns(&n.ns, || nl::mac_of("cloudbr0"))?];
                for v in t.vms.iter().filter(|v| v.host == n.name) {
                    macs.push(nl::in_netns(&v.ns, || nl::mac_of("eth0"))?);
                }
                Ok((n.vpc_port.clone(), macs))
            })
            .collect::<Result<_>>()?;
        crate::vpc::install_unknown_unicast(t, &owned)?;
        ph.done("VPC: unknown-unicast counter");
    }
    // For one query response interval (0.1 s) after the querier starts, the bridge floods
    // nothing (it waits for other queriers); a probe in that window loses its first ARP and
    // waits a 1 s ARP retransmit. Let that window pass.
    let ready = querier_on + Duration::from_millis(150);
    if let Some(d) = ready.checked_duration_since(Instant::now()) {
        std::thread::sleep(d);
    }
    ph.done("querier start-up window");
    Ok(applies)
}

fn cloudbr0_mtu(ns: &str) -> Result<u32> {
    let out = run_ok(
        Command::new("ip").args(["-n", ns, "-j", "link", "show", "dev", "cloudbr0"]),
        None,
    )
    .with_context(|| format!("overlayd apply succeeded but {ns} has no cloudbr0"))?;
    let v: Value = serde_json::from_str(&out)?;
    v[0]["mtu"]
        .as_u64()
        .map(|m| m as u32)
        .ok_or_else(|| anyhow!("no mtu in `ip -j link show cloudbr0` of {ns}"))
}

/// Remove namespaces and run dir of a lab (and its `overlayd run` daemons). Idempotent.
pub(crate) fn teardown(prefix: &str) -> Result<usize> {
    // `up --daemon` / `--instances`: stop the daemons and containers first, so none repairs
    // what we are deleting
    crate::daemons::stop_daemons(prefix);
    crate::instances::stop_all(prefix);
    // its listening socket would keep the vpc namespace alive after `ip netns del`
    crate::imds::stop(prefix);
    let mut names = sys::lab_namespaces(prefix);
    if let Ok(f) = read_lab_file(prefix) {
        for n in f.topology.namespaces() {
            if !names.contains(&n) {
                names.push(n);
            }
        }
    }
    let existing = names
        .iter()
        .filter(|n| Path::new(sys::NETNS_DIR).join(n).exists())
        .count();
    sys::delete_namespaces(&names)?;
    let d = run_dir(prefix);
    // never recurse into a mounted node root (it would delete through the mount)
    for m in mounts_under(&d) {
        crate::instances::unmount(&m);
    }
    if !mounts_under(&d).is_empty() {
        bail!(
            "mounts still present under {}; not removing it",
            d.display()
        );
    }
    if d.exists() {
        std::fs::remove_dir_all(&d).with_context(|| format!("removing {}", d.display()))?;
    }
    let left = sys::lab_namespaces(prefix);
    if !left.is_empty() {
        bail!("namespaces still present after down: {}", left.join(" "));
    }
    Ok(existing)
}

/// The running container of `node` in lab `prefix` (an `up --instances` lab).
fn container_of(prefix: &str, node: &str) -> Result<(Topology, crate::instances::Container)> {
    check_prefix(prefix)?;
    let f = read_lab_file(prefix)?;
    if node != "client" && !f.topology.nodes.iter().any(|n| n.name == node) {
        return Err(usage(format!(
            "no node {node:?} in lab {prefix:?} (nodes: {}, client)",
            f.topology
                .nodes
                .iter()
                .map(|n| n.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let c = crate::instances::find(prefix, node).ok_or_else(|| {
        usage(format!(
            "node {node:?} of lab {prefix:?} has no running container (was it built with \
             `up --instances`?)"
        ))
    })?;
    Ok((f.topology, c))
}

pub fn exec(a: ExecArgs) -> Result<u8> {
    sys::require_root()?;
    let (_, c) = container_of(&a.common.prefix, &a.node)?;
    let args: Vec<&str> = a.command.iter().map(String::as_str).collect();
    let st = c
        .command(&args)
        .status()
        .with_context(|| format!("running {} on {}", a.command.join(" "), a.node))?;
    Ok(st.code().map(|c| c.clamp(0, 255) as u8).unwrap_or(1))
}

pub fn reboot(a: RebootArgs) -> Result<u8> {
    sys::require_root()?;
    let p = a.common.prefix.clone();
    let (t, c) = container_of(&p, &a.node)?;
    let n = t
        .nodes
        .iter()
        .find(|n| n.name == a.node)
        .ok_or_else(|| usage(format!("{}: the client runs no overlayd", a.node)))?;
    let t0 = Instant::now();
    let image = crate::rootfs::ensure(a.common.json)?;
    crate::instances::shutdown(&c)?;
    let down_s = t0.elapsed().as_secs_f64();
    crate::instances::reset_kernel_state(&n.ns)?;
    let t1 = Instant::now();
    let c = crate::instances::boot(
        &p,
        &n.name,
        &n.ns,
        &image,
        None,
        crate::instances::Wait::Booted,
    )?;
    let boot_s = t1.elapsed().as_secs_f64();
    // overlayd is enabled: the boot starts it; wait for its start job (Type=notify).
    let active = crate::instances::wait_active(&c, Duration::from_secs(90))?;
    let active_s = t1.elapsed().as_secs_f64();
    // what libvirt does once the bridge is back: the VMs' ports on cloudbr0 again
    for v in t.vms.iter().filter(|v| v.host == n.name) {
        ip_batch(
            Some(&n.ns),
            &format!("link set {} master cloudbr0\n", v.host_port),
        )?;
    }
    let out = json!({
        "node": n.name, "shutdown_seconds": down_s, "boot_seconds": boot_s,
        "overlayd_active_seconds": active_s, "overlayd": active,
    });
    if a.common.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "{}: shut down in {down_s:.2} s, booted in {boot_s:.2} s, overlayd {active} \
             {active_s:.2} s after boot started",
            n.name
        );
    }
    Ok(if active == "active" { 0 } else { 1 })
}

/// Mount points below `dir` (deepest first).
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let prefix = format!("{}/", dir.display());
    let mut v: Vec<PathBuf> = std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .filter(|m| m.starts_with(&prefix))
        .map(PathBuf::from)
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    v
}

pub fn down(a: DownArgs) -> Result<u8> {
    check_prefix(&a.common.prefix)?;
    sys::require_root()?;
    let t0 = Instant::now();
    let n = teardown(&a.common.prefix)?;
    if a.common.json {
        println!(
            "{}",
            json!({"prefix": a.common.prefix, "removed_namespaces": n, "seconds": t0.elapsed().as_secs_f64()})
        );
    } else if n == 0 {
        println!("lab {:?}: nothing to remove", a.common.prefix);
    } else {
        println!(
            "lab {:?}: removed {n} namespaces and {} in {:.2} s",
            a.common.prefix,
            run_dir(&a.common.prefix).display(),
            t0.elapsed().as_secs_f64()
        );
    }
    Ok(0)
}

pub fn status(a: StatusArgs) -> Result<u8> {
    let prefix = &a.common.prefix;
    check_prefix(prefix)?;
    sys::require_root()?;
    let present = sys::lab_namespaces(prefix);
    let lf = read_lab_file(prefix).ok();
    let Some(lf) = lf else {
        if a.common.json {
            println!(
                "{}",
                json!({"prefix": prefix, "state": if present.is_empty() {"absent"} else {"unknown"}, "namespaces": present})
            );
        } else if present.is_empty() {
            println!("lab {prefix:?}: absent");
        } else {
            println!(
                "lab {prefix:?}: no lab.json, but {} namespaces exist: {}",
                present.len(),
                present.join(" ")
            );
        }
        return Ok(0);
    };
    let t = &lf.topology;
    let overlayd = match a.overlayd {
        Some(p) => Some(find_overlayd(Some(p))?),
        None => Some(lf.overlayd.clone()).filter(|p| p.is_file()),
    };
    let nodes: Vec<Value> = sys::par_map(&t.nodes, 8, |n| {
        let exists = present.contains(&n.ns);
        let addrs = if exists { addresses(&n.ns) } else { vec![] };
        let plan = match (&overlayd, exists, a.no_plan) {
            (Some(od), true, false) => plan_ops(od, t, n),
            _ => Value::Null,
        };
        let mut v = node_json(n);
        v["overlayd_flags"] = json!(overlayd_flags(t, n));
        v["present"] = json!(exists);
        v["addresses"] = json!(addrs);
        v["plan"] = plan;
        v
    });
    let vms_present = t.vms.iter().filter(|v| present.contains(&v.ns)).count();
    let membership = if present.contains(&t.vpc_ns) {
        membership(t).unwrap_or_else(|e| json!({"error": format!("{e:#}")}))
    } else {
        Value::Null
    };
    let vpc_drops = if present.contains(&t.vpc_ns) {
        crate::vpc::counters(&t.vpc_ns).unwrap_or_else(|e| json!({"error": format!("{e:#}")}))
    } else {
        Value::Null
    };
    let imds_pids = crate::imds::servers(prefix);
    let imds = json!({
        "address": format!("{}:{}", crate::imds::ADDRESS, crate::imds::PORT),
        "running": !imds_pids.is_empty(),
        "pids": imds_pids,
        "catalog": crate::imds::catalog_path(prefix),
    });
    let plan_cmd = t.nodes.first().map(|n| {
        overlayd_cmdline(
            overlayd.as_deref().unwrap_or(Path::new("overlayd")),
            t,
            n,
            &["plan"],
        )
    });
    if a.common.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "prefix": prefix, "state": lf.state, "overlayd": lf.overlayd,
                "namespaces": present, "nodes": nodes,
                "vms": {"total": t.vms.len(), "present": vms_present},
                "client": {"ns": t.client_ns, "ip": t.client_ip, "present": present.contains(&t.client_ns)},
                "membership": membership,
                "vpc_drops": vpc_drops,
                "imds": imds,
            }))?
        );
        return Ok(0);
    }
    let mut s = String::new();
    writeln!(
        s,
        "lab {prefix:?}: state {}, {} of {} namespaces present, overlayd {}",
        lf.state,
        present.len(),
        t.namespaces().len(),
        lf.overlayd.display()
    )?;
    writeln!(
        s,
        "{:<8} {:<11} {:<14} {:<38} plan",
        "node", "role", "namespace", "addresses"
    )?;
    for v in &nodes {
        let plan = match &v["plan"] {
            Value::Null => "-".to_string(),
            p if p.get("ops").is_some() => {
                let k = p["ops"].as_array().map(|x| x.len()).unwrap_or(0);
                if k == 0 {
                    "converged".into()
                } else {
                    format!("{k} ops pending")
                }
            }
            p => format!("error: {}", p["error"].as_str().unwrap_or("?")),
        };
        let addrs: Vec<String> = v["addresses"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        writeln!(
            s,
            "{:<8} {:<11} {:<14} {:<38} {}",
            v["name"].as_str().unwrap_or(""),
            v["role"].as_str().unwrap_or(""),
            if v["present"].as_bool() == Some(true) {
                v["ns"].as_str().unwrap_or("").to_string()
            } else {
                "(missing)".into()
            },
            addrs.join(" "),
            plan
        )?;
    }
    writeln!(
        s,
        "VMs: {vms_present} of {} present; client {} ({})",
        t.vms.len(),
        t.client_ip,
        if present.contains(&t.client_ns) {
            "present"
        } else {
            "missing"
        }
    )?;
    writeln!(
        s,
        "IMDSv2 emulator on {}: {} (catalog {})",
        imds["address"].as_str().unwrap_or(""),
        match imds_pids.first() {
            Some(p) => format!("running, pid {p}"),
            None => "NOT RUNNING".to_string(),
        },
        crate::imds::catalog_path(prefix).display()
    )?;
    if !membership.is_null() {
        s.push_str(&render_membership(&membership));
    }
    if vpc_drops.get("error").is_none() && !vpc_drops.is_null() {
        s.push_str(&crate::vpc::render_counters(&vpc_drops));
    }
    if let Some(c) = plan_cmd {
        writeln!(s, "plan of the router by hand: {c}")?;
    }
    print!("{s}");
    Ok(0)
}

fn addresses(ns: &str) -> Vec<String> {
    let Ok(out) = run_ok(
        Command::new("ip").args(["-n", ns, "-j", "-4", "addr", "show"]),
        None,
    ) else {
        return vec![];
    };
    let v: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
    let mut r = Vec::new();
    for l in v.as_array().into_iter().flatten() {
        let dev = l["ifname"].as_str().unwrap_or("?");
        if dev == "lo" {
            continue;
        }
        for ai in l["addr_info"].as_array().into_iter().flatten() {
            if let (Some(ip), Some(len)) = (ai["local"].as_str(), ai["prefixlen"].as_u64()) {
                r.push(format!("{dev}={ip}/{len}"));
            }
        }
    }
    r
}

fn plan_ops(overlayd: &Path, t: &Topology, n: &Node) -> Value {
    let mut c = match overlayd_cmd(overlayd, t, n, &["plan", "--json"]) {
        Ok(c) => c,
        Err(e) => return json!({"error": format!("{e:#}")}),
    };
    match run_timeout(&mut c, None, Duration::from_secs(30)) {
        Ok(o) if o.status.success() => serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| json!({"error": format!("plan output is not JSON: {e}")})),
        Ok(o) => {
            json!({"error": format!("{}: {}", o.status, String::from_utf8_lossy(&o.stderr).trim())})
        }
        Err(e) => json!({"error": format!("{e:#}")}),
    }
}

pub fn check(a: CheckArgs) -> Result<u8> {
    check_prefix(&a.common.prefix)?;
    sys::require_root()?;
    let lf = read_lab_file(&a.common.prefix)?;
    let r = reachability(&lf.topology, &a.probe);
    let m = membership(&lf.topology).unwrap_or_else(|e| json!({"error": format!("{e:#}")}));
    if a.common.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"prefix": a.common.prefix, "reachability": r.to_json(), "membership": m})
            )?
        );
    } else {
        print!("{}{}", r.render(), render_membership(&m));
    }
    Ok(if r.all_ok() { 0 } else { 1 })
}

// ---------------------------------------------------------------- reachability

struct Reach {
    eps: Vec<Endpoint>,
    pairs: Vec<(usize, usize)>,
    rtt: Vec<Option<Duration>>,
    sampled: bool,
    full_after: Option<Duration>,
    errors: Vec<String>,
    skipped: bool,
}

impl Reach {
    fn all_ok(&self) -> bool {
        self.skipped || self.rtt.iter().all(Option::is_some)
    }

    fn to_json(&self) -> Value {
        let n = self.eps.len();
        let ok = self.rtt.iter().filter(|r| r.is_some()).count();
        json!({
            "mode": if self.sampled {"sampled"} else {"full"},
            "endpoints": self.eps.iter().map(|e| json!({"name": e.name, "ip": e.ip})).collect::<Vec<_>>(),
            "pairs_total": n * n.saturating_sub(1),
            "pairs_probed": self.pairs.len(),
            "ok": ok,
            "all_ok": self.all_ok(),
            "seconds_to_full": self.full_after.map(|d| d.as_secs_f64()),
            "errors": self.errors,
            "results": self.pairs.iter().zip(&self.rtt).map(|(&(s, d), r)| json!({
                "from": self.eps[s].name, "to": self.eps[d].name, "ok": r.is_some(),
                "ms": r.map(|x| x.as_secs_f64() * 1000.0),
            })).collect::<Vec<_>>(),
        })
    }

    fn render(&self) -> String {
        let mut s = String::new();
        if self.skipped {
            return "reachability: skipped (--no-check)\n".into();
        }
        let n = self.eps.len();
        let ok = self.rtt.iter().filter(|r| r.is_some()).count();
        let verdict = match self.full_after {
            Some(d) => format!(
                "all reachable, {:.2} s after the first probe",
                d.as_secs_f64()
            ),
            None => format!("{} UNREACHABLE", self.pairs.len() - ok),
        };
        if !self.sampled {
            let _ = writeln!(
                s,
                "reachability: FULL matrix, {n} endpoints, {} ordered pairs: {ok} ok, {verdict}",
                self.pairs.len()
            );
            let _ = writeln!(
                s,
                "  (row = from, column = to; '.' answered, 'X' no answer, '-' self)"
            );
            let w = self
                .eps
                .iter()
                .map(|e| e.name.len())
                .max()
                .unwrap_or(4)
                .max(6);
            let mut head = format!("  {:>3} {:<w$} {:<15} ", "", "", "");
            for j in 0..n {
                head.push_str(&format!("{:>3}", j + 1));
            }
            let _ = writeln!(s, "{head}");
            let mut grid = vec![vec!['-'; n]; n];
            for (&(a, b), r) in self.pairs.iter().zip(&self.rtt) {
                grid[a][b] = if r.is_some() { '.' } else { 'X' };
            }
            for (i, e) in self.eps.iter().enumerate() {
                let mut line = format!("  {:>3} {:<w$} {:<15} ", i + 1, e.name, e.ip.to_string());
                for c in &grid[i] {
                    line.push_str(&format!("{c:>3}"));
                }
                let _ = writeln!(s, "{line}");
            }
        } else {
            let srcs: std::collections::BTreeSet<usize> = self.pairs.iter().map(|p| p.0).collect();
            let _ = writeln!(
                s,
                "reachability: SAMPLED matrix (not every pair was probed): {} of {n} endpoints as \
                 sources, {} of {} ordered pairs probed: {ok} ok, {verdict}",
                srcs.len(),
                self.pairs.len(),
                n * (n - 1)
            );
            let _ = writeln!(
                s,
                "  (sampled because the kernel's ARP table, shared by all namespaces, holds \
                 net.ipv4.neigh.default.gc_thresh3 entries; raise it and use \
                 `overlay-lab check --full-matrix` to probe every pair)"
            );
            for src in srcs {
                let mine: Vec<usize> = (0..self.pairs.len())
                    .filter(|&k| self.pairs[k].0 == src)
                    .collect();
                let good = mine.iter().filter(|&&k| self.rtt[k].is_some()).count();
                let bad: Vec<&str> = mine
                    .iter()
                    .filter(|&&k| self.rtt[k].is_none())
                    .map(|&k| self.eps[self.pairs[k].1].name.as_str())
                    .collect();
                let targets: Vec<&str> = mine
                    .iter()
                    .map(|&k| self.eps[self.pairs[k].1].name.as_str())
                    .collect();
                let _ = writeln!(
                    s,
                    "  {:<10} -> {good}/{} ok{}   [{}]",
                    self.eps[src].name,
                    mine.len(),
                    if bad.is_empty() {
                        String::new()
                    } else {
                        format!(", NO ANSWER from {}", bad.join(" "))
                    },
                    targets.join(" ")
                );
            }
        }
        for e in &self.errors {
            let _ = writeln!(s, "  probe error: {e}");
        }
        s
    }
}

/// Deterministic pseudo-random numbers for sampling (same lab, same sample).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % n.max(1)
    }
}

/// The kernel's ARP table is one table for all namespaces (net.ipv4.neigh.default.gc_thresh3,
/// 1024 by default): every probed pair can add up to ~3 entries (both ends + underlay), and
/// past the limit new neighbours fail ("neighbor table overflow"), which would show up as false
/// unreachability. Returns (entries now, gc_thresh3).
fn arp_table() -> (usize, usize) {
    let out = Command::new("ip")
        .args(["-s", "ntable", "show", "name", "arp_cache"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let field = |k: &str| -> Option<usize> {
        let w: Vec<&str> = out.split_whitespace().collect();
        w.iter()
            .position(|x| *x == k)
            .and_then(|i| w.get(i + 1))
            .and_then(|v| v.parse().ok())
    };
    (
        field("entries").unwrap_or(0),
        field("thresh3").unwrap_or(1024),
    )
}

/// How many pairs fit into what is left of the ARP table.
fn pair_budget() -> usize {
    let (entries, thresh3) = arp_table();
    (thresh3.saturating_sub(entries).saturating_sub(100) / 3).max(16)
}

fn choose_pairs(eps: &[Endpoint], o: &ProbeOpts, budget: usize) -> (Vec<(usize, usize)>, bool) {
    let n = eps.len();
    // Up to FULL_MATRIX_MAX endpoints the matrix is always full: pairs beyond the ARP budget
    // are probed in waves (see `waves`); `budget` sizes the sample of bigger labs.
    if o.full_matrix || n <= FULL_MATRIX_MAX {
        let mut v = Vec::with_capacity(n * n);
        for a in 0..n {
            for b in 0..n {
                if a != b {
                    v.push((a, b));
                }
            }
        }
        return (v, false);
    }
    // Always: router, management, client, first and last host, first and last VM.
    let idx = |name: &str| eps.iter().position(|e| e.name == name);
    let hosts: Vec<usize> = (0..n)
        .filter(|&i| eps[i].name.starts_with('h') && !eps[i].name.contains("-vm"))
        .collect();
    let vms: Vec<usize> = (0..n).filter(|&i| eps[i].name.contains("-vm")).collect();
    let mut key: Vec<usize> = [idx("router"), idx("mgmt"), idx("client")]
        .into_iter()
        .flatten()
        .collect();
    key.extend(hosts.first().into_iter().chain(hosts.last()));
    key.extend(vms.first().into_iter().chain(vms.last()));
    let mut seen = std::collections::HashSet::new();
    key.retain(|k| seen.insert(*k));
    let mut rng = Lcg(0x0005_eed0_f1ab);
    let per_source = 10.min(n - 1).max(key.len().saturating_sub(1));
    let want_sources = o.sample.min(budget / per_source).max(key.len()).min(n);
    let mut sources = key.clone();
    while sources.len() < want_sources {
        let c = rng.next(n);
        if !sources.contains(&c) {
            sources.push(c);
        }
    }
    let mut pairs = Vec::new();
    for &s in &sources {
        let mut targets: Vec<usize> = key.iter().copied().filter(|&k| k != s).collect();
        while targets.len() < per_source {
            let c = rng.next(n);
            if c != s && !targets.contains(&c) {
                targets.push(c);
            }
        }
        pairs.extend(targets.into_iter().map(|d| (s, d)));
    }
    (pairs, true)
}

/// Split `pairs` (indexes) into waves of whole sources whose pairs fit the ARP budget.
fn waves(pairs: &[(usize, usize)], budget: usize) -> Vec<Vec<usize>> {
    let mut by_src: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for (k, &(s, _)) in pairs.iter().enumerate() {
        by_src.entry(s).or_default().push(k);
    }
    let mut out: Vec<Vec<usize>> = vec![];
    let mut cur: Vec<usize> = vec![];
    for (_, ks) in by_src {
        if !cur.is_empty() && cur.len() + ks.len() > budget {
            out.push(std::mem::take(&mut cur));
        }
        cur.extend(ks);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn reachability(t: &Topology, o: &ProbeOpts) -> Reach {
    let eps = t.endpoints();
    if o.no_check {
        return Reach {
            eps,
            pairs: vec![],
            rtt: vec![],
            sampled: false,
            full_after: None,
            errors: vec![],
            skipped: true,
        };
    }
    let budget = pair_budget();
    let (pairs, sampled) = choose_pairs(&eps, o, budget);
    let timeout = Duration::from_secs_f64(o.timeout.clamp(0.1, 600.0));
    let start = Instant::now();
    let mut r = probe::ProbeResult {
        rtt: vec![None; pairs.len()],
        errors: vec![],
    };
    let ws = waves(&pairs, budget);
    let namespaces = t.namespaces();
    for (i, w) in ws.iter().enumerate() {
        if i > 0 {
            // Neighbour entries of all namespaces share one kernel table (gc_thresh3):
            // empty it between waves so every probe gets its ARP entries.
            sys::par_map(&namespaces, 8, |ns| {
                let _ = run_timeout(
                    Command::new("ip").args(["-n", ns, "neigh", "flush", "all"]),
                    None,
                    Duration::from_secs(10),
                );
            });
        }
        let sub: Vec<(usize, usize)> = w.iter().map(|&k| pairs[k]).collect();
        // probe times count from the wave's start; report them from the first wave's
        let offset = start.elapsed();
        let wr = probe::probe(&eps, &sub, timeout);
        for (j, &k) in w.iter().enumerate() {
            r.rtt[k] = wr.rtt[j].map(|d| d + offset);
        }
        r.errors.extend(wr.errors);
    }
    let full_after = if r.rtt.iter().all(Option::is_some) {
        r.rtt
            .iter()
            .flatten()
            .max()
            .copied()
            .or(Some(Duration::ZERO))
    } else {
        None
    };
    Reach {
        eps,
        pairs,
        rtt: r.rtt,
        sampled,
        full_after,
        errors: r.errors,
        skipped: false,
    }
}

// ---------------------------------------------------------------- membership

/// IPv4 groups the underlay bridge (TGW stand-in) learned, with the node behind each port, and
/// the number of IGMPv3 reports the stand-in dropped.
fn membership(t: &Topology) -> Result<Value> {
    if t.flood.unicast() {
        return Ok(json!({ "flood": t.flood.name() }));
    }
    let mut blocks: Vec<Value> = Vec::new();
    for br in t.bridges() {
        let out = run_ok(
            Command::new("bridge").args(["-n", &t.vpc_ns, "-j", "mdb", "show", "dev", br]),
            None,
        )?;
        let v: Value = serde_json::from_str(if out.trim().is_empty() { "[]" } else { &out })?;
        blocks.extend(v.as_array().cloned().unwrap_or_default());
    }
    let mut groups: std::collections::BTreeMap<String, Vec<(String, String)>> = Default::default();
    for blk in &blocks {
        for e in blk["mdb"].as_array().into_iter().flatten() {
            let grp = e["grp"].as_str().unwrap_or("");
            if !grp.contains('.') {
                continue; // IPv6 (MLD) entries are not part of the TGW picture
            }
            let port = e["port"].as_str().unwrap_or("").to_string();
            if port == topo::AZ_LINK.0 || port == topo::AZ_LINK.1 {
                continue; // the link between the AZ subnets, not a member
            }
            let node = t
                .node_by_port(&port)
                .map(|n| n.name.clone())
                .unwrap_or_else(|| format!("({port})"));
            groups
                .entry(grp.to_string())
                .or_default()
                .push((port, node));
        }
    }
    let nft = Command::new("ip")
        .args([
            "netns", "exec", &t.vpc_ns, "nft", "list", "table", "bridge", "tgw",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    let v3 = nft.and_then(|s| {
        let i = s.find("counter packets ")?;
        s[i + 16..].split_whitespace().next()?.parse::<u64>().ok()
    });
    let missing: Vec<&str> = t
        .nodes
        .iter()
        .filter(|n| {
            !groups
                .get(&t.group.to_string())
                .map(|m| m.iter().any(|(p, _)| p == &n.vpc_port))
                .unwrap_or(false)
        })
        .map(|n| n.name.as_str())
        .collect();
    Ok(json!({
        "group": t.group,
        "groups": groups.iter().map(|(g, m)| json!({
            "group": g,
            "ports": m.iter().map(|x| &x.0).collect::<Vec<_>>(),
            "nodes": m.iter().map(|x| &x.1).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "nodes_not_joined": missing,
        "igmpv3_reports_dropped": v3,
    }))
}

fn render_membership(m: &Value) -> String {
    let mut s = String::new();
    if let Some(e) = m.get("error") {
        let _ = writeln!(s, "membership: unavailable: {}", e.as_str().unwrap_or("?"));
        return s;
    }
    if let Some(f) = m.get("flood") {
        let _ = if f.as_str() == Some("evpn") {
            writeln!(
                s,
                "flooding: evpn (no TGW; the VPC drops all multicast; FRR learns MACs and the flood list from the route reflectors)"
            )
        } else {
            writeln!(
                s,
                "flooding: unicast (no TGW; the VPC drops all multicast; each VTEP replicates to its peers)"
            )
        };
        return s;
    }
    let _ = writeln!(
        s,
        "underlay multicast membership (bridge mdb of the TGW stand-in):"
    );
    let groups = m["groups"].as_array().cloned().unwrap_or_default();
    if groups.is_empty() {
        let _ = writeln!(s, "  (no IPv4 group learned)");
    }
    for g in groups {
        let nodes: Vec<String> = g["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect();
        let shown = if nodes.len() > 40 {
            format!("{} ... ({} members)", nodes[..40].join(" "), nodes.len())
        } else {
            nodes.join(" ")
        };
        let _ = writeln!(
            s,
            "  {:<15} {} members: {shown}",
            g["group"].as_str().unwrap_or(""),
            nodes.len()
        );
        if nodes.len() > TGW_GROUP_MEMBER_LIMIT {
            let _ = writeln!(
                s,
                "  WARNING: a real TGW multicast group holds at most {TGW_GROUP_MEMBER_LIMIT} \
                 members (quota, not adjustable); the bridge here does not enforce it"
            );
        }
    }
    if let Some(miss) = m["nodes_not_joined"].as_array().filter(|a| !a.is_empty()) {
        let names: Vec<&str> = miss.iter().filter_map(|x| x.as_str()).collect();
        let _ = writeln!(
            s,
            "  NOT joined to {}: {}",
            m["group"].as_str().unwrap_or(""),
            names.join(" ")
        );
    }
    match m["igmpv3_reports_dropped"].as_u64() {
        Some(0) => {
            let _ = writeln!(s, "  IGMPv3 reports dropped by the TGW stand-in: 0");
        }
        Some(k) => {
            let _ = writeln!(
                s,
                "  IGMPv3 reports dropped by the TGW stand-in: {k} (a node joined with IGMPv3 \
                 before forcing v2: a real TGW would ignore that join until its next query)"
            );
        }
        None => {}
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(full: bool) -> ProbeOpts {
        ProbeOpts {
            timeout: 1.0,
            full_matrix: full,
            sample: 24,
            no_check: false,
        }
    }

    fn topo(hosts: usize) -> Topology {
        Topology::new("t", hosts, 2, Ipv4Addr::new(239, 255, 0, 1), 100, 9001)
    }

    #[test]
    fn small_lab_gets_the_full_matrix() {
        let eps = topo(2).endpoints();
        let (pairs, sampled) = choose_pairs(&eps, &opts(false), 300);
        assert!(!sampled);
        assert_eq!(pairs.len(), 9 * 8);
        assert!(pairs.iter().all(|(a, b)| a != b));
    }

    #[test]
    fn big_lab_is_sampled_within_budget_and_keeps_key_endpoints() {
        let eps = topo(250).endpoints();
        let (pairs, sampled) = choose_pairs(&eps, &opts(false), 200);
        assert!(sampled);
        assert!(pairs.len() <= 200 + 10, "{} pairs", pairs.len());
        let name = |i: usize| eps[i].name.as_str();
        for key in [
            "router", "mgmt", "client", "h1", "h250", "h1-vm1", "h250-vm2",
        ] {
            assert!(
                pairs.iter().any(|&(a, _)| name(a) == key),
                "{key} not a source"
            );
            assert!(
                pairs.iter().any(|&(_, b)| name(b) == key),
                "{key} not a target"
            );
        }
        assert!(pairs
            .iter()
            .any(|&(a, b)| name(a).contains("-vm") && name(b) == "client"));
        let mut uniq = pairs.clone();
        uniq.sort();
        uniq.dedup();
        assert_eq!(uniq.len(), pairs.len(), "duplicate pairs");
        // deterministic
        assert_eq!(pairs, choose_pairs(&eps, &opts(false), 200).0);
    }

    #[test]
    fn twenty_hosts_get_a_full_matrix_probed_in_waves_within_budget() {
        let eps = topo(20).endpoints();
        let (pairs, sampled) = choose_pairs(&eps, &opts(false), 300);
        assert!(!sampled);
        assert_eq!(pairs.len(), 63 * 62);
        let w = waves(&pairs, 300);
        assert!(w.len() > 1);
        assert!(w.iter().all(|x| x.len() <= 300));
        let mut all: Vec<usize> = w.concat();
        all.sort();
        assert_eq!(all, (0..pairs.len()).collect::<Vec<_>>());
    }

    #[test]
    fn full_matrix_flag_wins() {
        let eps = topo(20).endpoints();
        let (pairs, sampled) = choose_pairs(&eps, &opts(true), 16);
        assert!(!sampled);
        assert_eq!(pairs.len(), eps.len() * (eps.len() - 1));
    }

    #[test]
    fn overlayd_flags_per_role() {
        let t = topo(1);
        let r = overlayd_flags(&t, &t.nodes[0]);
        assert!(!r.contains(&"--gateway".to_string()));
        assert!(r.windows(2).any(|w| w[0] == "--role" && w[1] == "router"));
        let h = overlayd_flags(&t, &t.nodes[2]);
        assert!(h
            .windows(2)
            .any(|w| w[0] == "--gateway" && w[1] == "10.101.0.1"));
        assert!(h
            .windows(2)
            .any(|w| w[0] == "--state-dir" && w[1] == "/run/overlay-lab/t/h1/state"));
    }
}
