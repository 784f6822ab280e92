//! overlay-lab: the emulated VPC. Builds a VXLAN overlay of CloudStack-style nodes in network
//! namespaces, configures every node with the real `overlayd apply`, and checks reachability.
//! See docs/lab.md.

mod bench;
mod cloud_init;
mod daemons;
mod imds;
mod instances;
mod lab;
mod nl;
mod node_cmd;
mod probe;
mod rootfs;
mod sys;
mod topo;
mod vpc;

use clap::{Args, Parser, Subcommand};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;

const AFTER_HELP: &str = "\
Topology (prefix P, default \"olab\"; full description in docs/lab.md):
  P-vpc      the VPC router: bridge `ul` = node subnet 10.0.0.0/22 and TGW multicast domain
             stand-in (IGMP snooping, IGMPv2 querier from 0.0.0.0 started after the nodes
             joined, unjoined groups not flooded, IGMPv3 reports dropped and counted, as a TGW
             ignores them); bridge `cl` = client subnet 10.0.8.0/24; forwarding on; route
             10.101.0.0/16 -> router 10.0.0.4 (the VPC route table entry)
  P-router   overlayd --role router      eth0 10.0.0.4/22   cloudbr0 10.101.0.1/16
  P-mgmt     overlayd --role management  eth0 10.0.0.5/22   cloudbr0 10.101.0.2/16
  P-hN       overlayd --role host        eth0 10.0.0.(9+N)  cloudbr0 10.101.0.(9+N)/16
  P-hN-vmK   a VM: eth0 10.101.128.10+ (peer vmK on cloudbr0 of hN), default via 10.101.0.1
  P-client   VPC client 10.0.8.10/24, default via 10.0.8.1 (reaches the overlay via router)
  --routers 2  adds P-router2 (eth0 10.0.0.6); routers .3/.4, the VIP 10.101.0.1 the gateway
  --azs 2    second node subnet 10.0.4.0/22 (bridge `ul2`, VPC router 10.0.4.1): hosts of the
             second half (h6.. of 10, same offset: 10.0.4.15) and router2; the multicast
             domain spans both (link tgw-a/tgw-b: the group's UDP only)
  IMDSv2     169.254.169.254:80 on `ul`: every instance's own metadata (token required, hop
             limit 1; ids and tags from the topology or, with --aws-endpoint, from moto)
Every node is configured by the real `overlayd apply` run inside its namespace.
Files: /run/overlay-lab/P/ (lab.json; imds.json = the metadata catalog, edited live; imds.log;
per node: overlayd.toml, state/, hosts, resolv.conf).

Reachability: ICMP echo from every endpoint to every other (full matrix) while the pairs fit
the kernel's ARP table (one table for all namespaces, net.ipv4.neigh.default.gc_thresh3);
bigger labs get a sampled matrix (always router, mgmt, client, first/last host and VM), and
the output says SAMPLED.

Examples:
  overlay-lab up                          # 2 hosts: matrix + multicast membership
  overlay-lab up --hosts 250 --prefix big --json > big.json
  overlay-lab status --prefix big         # addresses, overlayd plan per node, membership
  overlay-lab check --prefix big          # reachability + membership again
  overlay-lab down --prefix big

Exit status: 0 ok; 1 runtime failure or incomplete reachability (the lab stays up for
inspection); 2 bad usage or the prefix already exists (see --replace).";

#[derive(Parser)]
#[command(
    name = "overlay-lab",
    version,
    about = "Emulated AWS VPC + TGW multicast domain in network namespaces, every overlay node \
             configured by the real overlayd",
    after_help = AFTER_HELP
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Run overlayd through `ip netns exec NS` (private mount namespace, /sys of the node)
    /// instead of entering only the node's network namespace (faster; overlayd needs no /sys).
    #[arg(long, global = true, env = "OVERLAY_LAB_IP_NETNS_EXEC", value_parser = clap::builder::BoolishValueParser::new())]
    ip_netns_exec: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build a lab, run `overlayd apply` on every node, add VMs, check reachability.
    Up(UpArgs),
    /// Remove every namespace and file of a lab (idempotent).
    Down(DownArgs),
    /// Show what exists: nodes, addresses, whether overlayd plans are empty, multicast membership.
    Status(StatusArgs),
    /// Re-run the reachability check and membership report on an existing lab.
    Check(CheckArgs),
    /// Benchmarks: cold converge, drift repair, overlay throughput, scale, unicast flood list (BENCHMARKS.md).
    Bench(bench::BenchArgs),
    /// Run a command inside a node's container (`up --instances`), e.g.
    /// `overlay-lab exec h1 -- systemctl status overlayd`. Exit status: the command's.
    Exec(ExecArgs),
    /// Reboot a node's container as an instance reboots (`up --instances`): clean shutdown,
    /// the kernel state a reboot loses is reset (overlayd's links, routes, rule, sysctls, NAT;
    /// eth0 keeps its DHCP address), boot again from the same disk, wait until overlayd is
    /// active. The overlay must come back with no manual step.
    Reboot(RebootArgs),
    /// The lab's IMDSv2 emulator process (started by `up`, stopped by `down`).
    #[command(hide = true)]
    ImdsServe {
        #[arg(long)]
        catalog: PathBuf,
    },
}

#[derive(Args)]
pub struct ExecArgs {
    #[command(flatten)]
    pub common: Common,
    /// router, mgmt, hN or client.
    pub node: String,
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

#[derive(Args)]
pub struct RebootArgs {
    #[command(flatten)]
    pub common: Common,
    /// router, mgmt or hN.
    pub node: String,
}

#[derive(Args, Clone)]
pub struct Common {
    /// Lab name; every namespace is called PREFIX-<node>. [a-z0-9], starts with a letter.
    #[arg(long, short = 'p', default_value = "olab", env = "OVERLAY_LAB_PREFIX")]
    pub prefix: String,
    /// Machine-readable JSON on stdout instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Clone)]
pub struct ProbeOpts {
    /// Seconds to wait for full reachability before reporting failures.
    #[arg(long, default_value_t = 20.0)]
    pub timeout: f64,
    /// Probe every ordered pair even for big labs (default: full matrix while it fits the ARP
    /// table budget and has at most 64 endpoints, else sampled).
    #[arg(long)]
    pub full_matrix: bool,
    /// Number of source endpoints in a sampled matrix.
    #[arg(long, default_value_t = 24)]
    pub sample: usize,
    /// Skip the reachability check.
    #[arg(long)]
    pub no_check: bool,
}

#[derive(Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub common: Common,
    /// Number of KVM hosts (1..=1000).
    #[arg(long, short = 'n', default_value_t = 2)]
    pub hosts: usize,
    /// VMs per host (0..=8).
    #[arg(long, default_value_t = 2)]
    pub vms_per_host: usize,
    /// VXLAN multicast group (IPv4 multicast).
    #[arg(long, default_value = "239.255.0.1")]
    pub group: Ipv4Addr,
    /// VXLAN network identifier.
    #[arg(long, default_value_t = 100)]
    pub vni: u32,
    /// MTU of the underlay links (AWS ENIs: 9001).
    #[arg(long, default_value_t = 9001)]
    pub underlay_mtu: u32,
    /// overlayd binary (default: `overlayd` next to this executable, else from PATH).
    #[arg(long, env = "OVERLAY_LAB_OVERLAYD")]
    pub overlayd: Option<PathBuf>,
    /// Tear down an existing lab with the same prefix first.
    #[arg(long)]
    pub replace: bool,
    /// Parallel workers for namespace setup and overlayd runs.
    #[arg(long, short = 'j', default_value_t = 8)]
    pub jobs: usize,
    /// Let IGMPv3 reports through (a real TGW ignores them; default: dropped and counted).
    #[arg(long)]
    pub accept_igmpv3: bool,
    /// Routers: 1, or 2 for router HA ("router" and "router2" with their own overlay
    /// addresses .3/.4, VRRP by keepalived over the overlay, the hosts' gateway 10.101.0.1
    /// the VIP of the active one; needs --daemon or --instances)
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
    pub routers: u8,
    /// Availability zones: 1, or 2 for a multi-AZ cluster: a second node subnet 10.0.4.0/22
    /// (bridge `ul2`) holding the second half of the hosts and router2; the subnets are
    /// routed by the VPC router, and the TGW multicast domain spans both (only the group's
    /// VXLAN traffic crosses between them)
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
    pub azs: u8,
    /// With --routers 2 and --aws-endpoint: milliseconds between moto's route table changing
    /// (ReplaceRoute by the new active router) and the lab's VPC router following it — AWS
    /// applies a replaced route after a delay the emulator does not have
    #[arg(long, default_value_t = 500, value_name = "MS")]
    pub vpc_route_delay_ms: u64,
    /// Run `overlayd run` daemons (control socket, state and log in /run/overlay-lab/P/NODE/,
    /// metrics off) instead of `overlayd apply`, and wait until every one reports converged;
    /// `down` stops them.
    #[arg(long)]
    pub daemon: bool,
    /// Every node (and the VPC client) a booted systemd container (systemd-nspawn -b) with its
    /// own root filesystem, overlayd installed from the .deb and run by systemd. The node image
    /// is built once per machine (mmdebstrap, ~45 s) and cached under /var/cache/overlay-lab.
    #[arg(long, conflicts_with = "daemon")]
    pub instances: bool,
    /// The overlayd package for --instances (default: the newest target/package/overlayd_*.deb
    /// next to this executable's target directory; build it with scripts/package). Copied to
    /// /run/overlay-lab/P/packages/ and served to the nodes over plain HTTP at
    /// http://169.254.169.254:8775/<file name> (`up` prints the URL and its sha256).
    #[arg(long, env = "OVERLAY_LAB_DEB", requires = "instances")]
    pub deb: Option<PathBuf>,
    /// With --instances and --aws-endpoint: real cloud-init provisions every product node
    /// (router, mgmt, hosts; not the client) from the user data of its moto instance, as on
    /// EC2 — the lab installs and configures nothing. Each node boots with cloud-init on
    /// (Ec2 datasource = the lab's IMDS) and AWS_ENDPOINT_URL=http://169.254.169.254:8773 (the
    /// lab's relay to moto) for every unit; `up` waits for every node's cloud-init (in
    /// parallel), prints per node its status (done/error/failed/disabled/timeout, errors from
    /// result.json), seconds from boot start to the end of cloud-init's final stage and
    /// `systemctl is-active overlayd`, then runs the reachability check. A failed cloud-init
    /// leaves the lab up and is printed; the exit status is 1 only when the check runs and
    /// fails (with --no-check: 0). Boot start times: /run/overlay-lab/P/NODE/boot-started.
    #[arg(long, requires = "instances")]
    pub cloud_init: bool,
    /// Seconds `up --cloud-init` waits for cloud-init to finish on all nodes.
    #[arg(long, default_value_t = 300)]
    pub cloud_init_timeout: u64,
    /// Region the instances are in: IMDS `placement/region` and availability zone REGIONa;
    /// with --aws-endpoint, the region whose moto instances are merged.
    #[arg(long, default_value = "eu-west-1")]
    pub region: String,
    /// moto behind our shim (scripts/aws-emulator), as http://IP:PORT: the IMDS emulator then
    /// takes instance id, type, placement, network ids, tags, metadata options, role and user
    /// data from the running moto instance whose private address is the node's (refreshed
    /// every second; a lost moto keeps the last state).
    #[arg(long, env = "OVERLAY_LAB_AWS_ENDPOINT")]
    pub aws_endpoint: Option<String>,
    /// multicast: the vpc bridge stands in for a Transit Gateway multicast domain. unicast:
    /// no TGW, the VPC drops every multicast frame and overlayd replicates to its peers.
    /// evpn: no TGW either; every node runs FRR (zebra + bgpd, spawned by `overlayd run`, so
    /// --daemon) and the router(s) are its route reflectors.
    #[arg(long, default_value = "multicast", value_parser = ["multicast", "unicast", "evpn"])]
    pub flood: String,
    /// With --flood unicast: static (every node is given every other node as a peer) or ec2
    /// (needs --aws-endpoint: peers from DescribeInstances through the lab's EC2 API relay on
    /// 169.254.169.254:8773, and every node configured by its instance tags alone — the
    /// running moto instances with the nodes' addresses must carry the overlay:* tags).
    #[arg(long, default_value = "static", value_parser = ["static", "ec2"])]
    pub peer_discovery: String,
    /// overlayd's peer_interval (seconds) with --peer-discovery ec2.
    #[arg(long, default_value_t = 10)]
    pub peer_interval: u64,
    #[command(flatten)]
    pub probe: ProbeOpts,
}

#[derive(Args)]
pub struct DownArgs {
    #[command(flatten)]
    pub common: Common,
}

#[derive(Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub common: Common,
    /// overlayd binary used for `plan` (default: the one recorded by `up`).
    #[arg(long, env = "OVERLAY_LAB_OVERLAYD")]
    pub overlayd: Option<PathBuf>,
    /// Do not run `overlayd plan` per node.
    #[arg(long)]
    pub no_plan: bool,
}

#[derive(Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub probe: ProbeOpts,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    node_cmd::IP_NETNS_EXEC.store(cli.ip_netns_exec, std::sync::atomic::Ordering::Relaxed);
    let r = match cli.cmd {
        Cmd::Up(a) => lab::up(a),
        Cmd::Down(a) => lab::down(a),
        Cmd::Status(a) => lab::status(a),
        Cmd::Check(a) => lab::check(a),
        Cmd::Bench(a) => bench::bench(a),
        Cmd::Exec(a) => lab::exec(a),
        Cmd::Reboot(a) => lab::reboot(a),
        Cmd::ImdsServe { catalog } => imds::serve(&catalog),
    };
    match r {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let usage = e.downcast_ref::<lab::UsageError>().is_some();
            eprintln!("overlay-lab: error: {e:#}");
            ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}
