//! Command line.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};

use crate::aws::{self, AwsOpts};
use crate::bootstrap;
use crate::config;
use crate::ctx::{Ctx, Mode};
use crate::doctor;
use crate::error::{exit_code, UsageError};
use crate::iam;
use crate::teardown;

const LONG_ABOUT: &str = "\
Provisions the AWS side of a CloudStack-on-KVM overlay cloud: a transit gateway with a
multicast domain (IGMPv2) for the VXLAN overlay, security groups, the router's routes,
EFS for primary/secondary storage, database credentials in Secrets Manager and an RDS for
MySQL 8.4 instance (the newest MySQL major CloudStack 4.22 lists; RDS MySQL 8.0 is in paid
RDS Extended Support since 2026-07-31).

Flooding: with flood = \"multicast\" (the default) the overlay floods through the transit
gateway's multicast domain. With flood = \"unicast\" overlayd replicates flooded frames to
every peer itself (UDP 4789 inside the subnet) and no transit gateway is created, planned or
reported; teardown still deletes one left tagged for the cluster. With flood = \"evpn\" the
same, and each node's BGP speaker (FRR, iBGP) peers with the route reflector(s) on the
router(s): the vtep group also lets TCP 179 in from the overlay subnet(s).

AWS is the state: every resource is tagged overlay:cluster=<name> and found again by that
tag, so every command can be re-run. A bootstrap of a converged cluster changes nothing;
a bootstrap after a failure resumes where it stopped.

Typical use:
  overlayctl plan      --config cluster.toml     # what would be created/kept/changed
  overlayctl bootstrap --config cluster.toml     # create or adopt everything, then print next steps
  overlayctl status    --config cluster.toml -o json
  overlayctl doctor    --config cluster.toml     # name what is wrong (read-only)
  overlayctl teardown  --config cluster.toml --yes
  overlayctl iam-policy --for bootstrap          # least-privilege policy for the above
  overlayctl iam-policy --for host -c cluster.toml    # a KVM host's instance role (also
                                                 # management, router)

Credentials come from the standard AWS chain (environment, --profile / AWS_PROFILE,
SSO cache, instance role). Exit status: 0 ok, 1 AWS or runtime failure, 2 bad input
(nothing was changed).";

const CONFIG_HELP: &str = "\
Cluster file (TOML). Keys: name, region, vpc_id, subnet_id (the overlay nodes' dedicated
subnet) or subnet_ids (one subnet per AZ for a multi-AZ cluster: the transit gateway
attachment, multicast associations, EFS mount targets and subnet rules cover each),
second_subnet_id (another AZ, for the RDS subnet group; optional when subnet_ids already
spans two AZs), overlay_cidr,
flood (\"multicast\": a transit gateway multicast domain, the default; \"unicast\": head-end
replication by overlayd, no transit gateway; \"evpn\": BGP EVPN, route reflectors on the
routers, BGP (TCP 179) between the nodes, no transit gateway), multicast_group (required with
multicast; unused with unicast and evpn), peer_discovery (unicast and evpn: \"ec2\", the
default, finds the peers with DescribeInstances by the cluster tag; \"static\": overlayd's own
peer list; refused with multicast), router_instance_id or router_instance_ids (an HA pair [a, b], one per AZ:
source/dest check off on both, new routes point at a, a route already pointing at either is
left alone so a failover is not undone), route_table_ids (default: every route table of the
VPC; bootstrap tags each overlay:cluster=<name>, which scopes the routers' takeover), access_cidr (who may reach the UI/services), efs_throughput_mibps (25),
db_instance_class (db.m6g.large), db_allocated_storage_gib (20), db_max_storage_gib (100),
zones ([\"zone1\"]).";

const IAM_LONG_ABOUT: &str = "\
Print a least-privilege IAM policy (JSON) for overlayctl itself or for the instance roles of
the cloud's nodes. Every statement has a stable Sid.

--for bootstrap (Sids OverlayBootstrap, OverlayTeardownOnlyTagged): every call of plan,
bootstrap, status, doctor and teardown, in every flood mode (teardown deletes a transit gateway left
from flood = multicast).

--for host (alias: agent), a KVM host: overlayd's statement OverlayAgent, which depends on the
cluster's flooding:
  always                      ec2:DescribeNetworkInterfaces, ec2:DescribeTags (instance tags
                              when instance metadata tags are off)
  flood = multicast           + the multicast domain reads (diagnostics)
  flood = unicast or evpn, peer_discovery = ec2
                              + ec2:DescribeInstances (finding the peers)
  flood = unicast or evpn, peer_discovery = static
                              nothing more
--for management, the management server: OverlayAgent + OverlaySecrets
  (secretsmanager:GetSecretValue, secretsmanager:DescribeSecret on the cluster's database
  secrets, arn:aws:secretsmanager:<region>:*:secret:overlay/<cluster>/*).
--for router: OverlayAgent + OverlayRouteRead (ec2:DescribeRouteTables) + OverlayRouteTakeover
  (ec2:ReplaceRoute only, for router HA: the standby moves the overlay route to itself; only
  in route tables tagged overlay:cluster=<cluster>, which bootstrap does for every route
  table it manages).

Take flood, peer_discovery, the cluster name and the region from the cluster file with
--config, or give them with --flood / --peer-discovery / --cluster (and --region); without
--flood the policy is for multicast, without --cluster it covers every cluster (secrets
overlay/*/*, any route table tagged overlay:cluster), without a region any region.

Instances created by CloudFormation also need cloudformation:SignalResource (cfn-signal) on
their stack: the template adds that as its own statement, Sid OverlayStackSignal; it is not
part of this output.";

const DOCTOR_LONG_ABOUT: &str = "\
Check the AWS side of a running cluster and name what is wrong, with the evidence (values as
read) and the fix. Read-only: Describe/Get/Search calls only, never a change. The node side
is `overlayd doctor` on each node; both print the same shape.

Checks (stable ids; every id is always reported, in this order):
  router.source-dest-check  every router has source/destination check off (one router: and
                            is running; a pair's running state is router.pair's)
  routes.overlay            every selected route table (route_table_ids, default all of the
                            VPC) and each overlay subnet's own routes overlay_cidr to a
                            router's interface; names each table and subnet that lacks it
  router.pair               with router_instance_ids: both routers running and every overlay
                            route on one of them; warns with one down (no standby), fails
                            with both down (double failure)
  sg.vtep.igmp              the vtep group lets IGMP in from 0.0.0.0/32 (the transit gateway's
                            queries); a security group as source fails (AWS does not honour it
                            for multicast), 0.0.0.0/0 warns (too wide)
  sg.vtep.vxlan             the vtep group lets UDP 4789 in from the subnet CIDR; a security
                            group as source fails with multicast (warns with unicast/evpn),
                            0.0.0.0/0 warns (too wide)
  sg.vtep.bgp               flood = evpn: the vtep group lets TCP 179 (BGP to the route
                            reflectors) in from every overlay subnet CIDR; a security group as
                            source warns, 0.0.0.0/0 warns (too wide)
  nacl                      each overlay subnet's network ACL allows IGMP from 0.0.0.0, UDP
                            4789 from and to the subnets (and IGMP / UDP 4789 to the group)
  tgw.domain                transit gateway (multicast on), attachment on every subnet,
                            domain with IGMPv2 on, every subnet associated
  tgw.members               every running cluster instance (tagged overlay:cluster=<name>, and
                            the router) is a member of multicast_group; names those that are
                            not; warns from 80 of the 100-member cap
  subnet.strangers          no instance outside the cluster in an overlay subnet (the
                            asymmetric-path fault)
  instances.nitro           every cluster instance is a Nitro instance (others cannot send
                            multicast)
  rds.parameters            the DB instance uses overlay-<name>-mysql84 with CloudStack's values
                            (and has applied it)
  efs.mount-target          the file system has an available mount target in every overlay
                            subnet with the efs group

With flood = \"unicast\" or \"evpn\" sg.vtep.igmp, tgw.domain, tgw.members and instances.nitro
are ok with \"not used (flood = unicast)\" (or evpn); sg.vtep.bgp is ok with \"not used (flood =
multicast)\" (or unicast) unless flood = \"evpn\". A check that cannot read what it needs (access denied, a call
failing) says unknown and why; the others still decide.

Verdicts: ok, warn, fail, unknown. Exit status: 0 when no check fails (warnings and unknowns
alone: 0), 1 when one does (or the environment could not be read), 2 bad input (the cluster
file or the VPC, subnets, router it names; the error names the field and value).

Examples:
  overlayctl doctor --config cluster.toml
  overlayctl doctor --config cluster.toml -o json | jq '.checks[] | select(.verdict != \"ok\")'";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, Parser)]
#[command(name = "overlayctl", version, about = "Provision the AWS side of the overlay cloud", long_about = LONG_ABOUT)]
pub struct Cli {
    /// AWS region (default: the cluster file's region, then AWS_REGION / the profile).
    #[arg(long, global = true, value_name = "REGION")]
    pub region: Option<String>,
    /// AWS shared-config profile to take credentials and region from.
    #[arg(long, global = true, value_name = "NAME")]
    pub profile: Option<String>,
    /// Send every AWS call to this endpoint (an emulator such as scripts/aws-emulator).
    #[arg(long, global = true, value_name = "URL")]
    pub endpoint_url: Option<String>,
    /// Output format of read commands.
    #[arg(short = 'o', long, global = true, value_enum, default_value = "text")]
    pub output: Output,
    /// Seconds between polls while waiting for AWS (fractions allowed).
    #[arg(
        long,
        global = true,
        env = "OVERLAYCTL_POLL_INTERVAL",
        default_value = "10",
        value_name = "SECS"
    )]
    pub poll_interval: f64,
    /// Give up waiting for one resource after this many seconds (a re-run resumes).
    #[arg(
        long,
        global = true,
        env = "OVERLAYCTL_WAIT_TIMEOUT",
        default_value = "3600",
        value_name = "SECS"
    )]
    pub wait_timeout: f64,
    /// No progress lines on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or adopt every resource, wait until ready, then print what to do next.
    Bootstrap {
        #[arg(long, short = 'c', value_name = "FILE", help = CONFIG_HELP)]
        config: PathBuf,
    },
    /// Show, per resource, whether bootstrap would create, keep or change it. Changes nothing.
    Plan {
        #[arg(long, short = 'c', value_name = "FILE", help = CONFIG_HELP)]
        config: PathBuf,
    },
    /// List each resource of the cluster and its state.
    Status {
        #[arg(long, short = 'c', value_name = "FILE", help = CONFIG_HELP)]
        config: PathBuf,
    },
    /// Check the AWS side of the cluster and name what is wrong (read-only; exit 1 on a failing check).
    #[command(long_about = DOCTOR_LONG_ABOUT)]
    Doctor {
        #[arg(long, short = 'c', value_name = "FILE", help = CONFIG_HELP)]
        config: PathBuf,
    },
    /// Delete, in reverse order, every resource tagged with the cluster (asks unless --yes).
    Teardown {
        #[arg(long, short = 'c', value_name = "FILE", help = CONFIG_HELP)]
        config: PathBuf,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Print a least-privilege IAM policy (JSON) for overlayctl itself or for overlayd on nodes.
    #[command(long_about = IAM_LONG_ABOUT)]
    IamPolicy {
        /// Who the policy is for (agent = host).
        #[arg(long = "for", value_parser = iam::POLICY_ROLES.to_vec(), value_name = "bootstrap|host|management|router")]
        for_: String,
        /// Cluster file to take flood, peer_discovery, the cluster name and region from (its
        /// checks that need no AWS call apply).
        #[arg(long, short = 'c', value_name = "FILE", conflicts_with_all = ["flood", "peer_discovery", "cluster"])]
        config: Option<PathBuf>,
        /// The cluster's name, without --config: limits the management server's secrets to
        /// overlay/<NAME>/* and the router's route takeover to route tables tagged
        /// overlay:cluster=<NAME> [default: every cluster].
        #[arg(long, value_name = "NAME")]
        cluster: Option<String>,
        /// The cluster's flood mode, without --config [default: multicast].
        #[arg(long, value_parser = config::FLOOD_MODES.to_vec(), value_name = "multicast|unicast|evpn")]
        flood: Option<String>,
        /// With --flood unicast or evpn: how overlayd finds its peers [default: ec2].
        #[arg(long, value_parser = ["ec2", "static"], value_name = "ec2|static")]
        peer_discovery: Option<String>,
    },
}

pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("overlayctl: cannot start runtime: {e}");
            return 1;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            if let Some(u) = e.downcast_ref::<UsageError>() {
                eprintln!("overlayctl: bad input: {u}");
            } else {
                eprintln!("overlayctl: error: {e:#}");
            }
            exit_code(&e)
        }
    }
}

fn check_durations(cli: &Cli) -> Result<(Duration, Duration), UsageError> {
    let ok = |v: f64| v.is_finite() && v >= 0.0;
    if !ok(cli.poll_interval) || cli.poll_interval > 3600.0 {
        return Err(UsageError::new(
            "--poll-interval",
            &cli.poll_interval.to_string(),
            "must be 0..3600 seconds",
        ));
    }
    if !ok(cli.wait_timeout) || cli.wait_timeout < 1.0 {
        return Err(UsageError::new(
            "--wait-timeout",
            &cli.wait_timeout.to_string(),
            "must be at least 1 second",
        ));
    }
    Ok((
        Duration::from_secs_f64(cli.poll_interval),
        Duration::from_secs_f64(cli.wait_timeout),
    ))
}

/// The cluster's region; --region, when given, must be the same.
fn check_region(cli: &Cli, cluster: &config::Cluster) -> Result<String, UsageError> {
    if let Some(r) = &cli.region {
        if r != &cluster.cfg.region {
            return Err(UsageError::new(
                "--region",
                r,
                &format!(
                    "differs from the cluster file's region {}",
                    cluster.cfg.region
                ),
            ));
        }
    }
    Ok(cluster.cfg.region.clone())
}

async fn make_ctx(cli: &Cli, config: &Path, mode: Mode) -> Result<Ctx> {
    let (poll, timeout) = check_durations(cli)?;
    let cluster = config::load(config)?;
    check_region(cli, &cluster)?;
    let opts = AwsOpts {
        region: cli.region.clone(),
        profile: cli.profile.clone(),
        endpoint_url: cli.endpoint_url.clone(),
    };
    let clients = aws::clients(&opts, Some(&cluster.cfg.region)).await?;
    Ok(Ctx {
        clients,
        cluster,
        mode,
        poll,
        timeout,
        items: Mutex::new(Vec::new()),
        quiet: cli.quiet,
    })
}

fn print_json<T: serde::Serialize>(v: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| "{}".into())
    );
}

async fn run(cli: Cli) -> Result<i32> {
    if let Some(u) = &cli.endpoint_url {
        if !(u.starts_with("http://") || u.starts_with("https://")) {
            return Err(UsageError::new(
                "--endpoint-url",
                u,
                "must start with http:// or https://",
            )
            .into());
        }
    }
    match &cli.command {
        Command::IamPolicy {
            for_,
            config,
            flood,
            peer_discovery,
            cluster,
        } => {
            let role = iam::PolicyRole::parse(for_).ok_or_else(|| {
                UsageError::new(
                    "--for",
                    for_,
                    "must be bootstrap, host, management or router",
                )
            })?;
            let (flood, region, cluster) = match config {
                Some(path) => {
                    let c = config::load(path)?;
                    let region = check_region(&cli, &c)?;
                    (c.flood, Some(region), Some(c.cfg.name.clone()))
                }
                None => {
                    let flood = config::parse_flood(
                        flood.as_deref().unwrap_or("multicast"),
                        peer_discovery.as_deref(),
                    )
                    .map_err(|e| {
                        let flag = format!("--{}", e.field.replace('_', "-"));
                        if flag == "--peer-discovery" {
                            UsageError::new(
                                &flag,
                                &e.value,
                                "only used with --flood unicast or evpn (multicast flooding needs no peer list)",
                            )
                        } else {
                            UsageError::new(&flag, &e.value, &e.message)
                        }
                    })?;
                    if let Some(name) = cluster {
                        config::check_name(name)
                            .map_err(|e| UsageError::new("--cluster", &e.value, &e.message))?;
                    }
                    (flood, cli.region.clone(), cluster.clone())
                }
            };
            let p = iam::role_policy(role, region.as_deref(), flood, cluster.as_deref());
            print_json(&p);
            Ok(0)
        }
        Command::Bootstrap { config } => {
            let ctx = make_ctx(&cli, config, Mode::Apply).await?;
            let report = bootstrap::run(&ctx).await?;
            if cli.output == Output::Json {
                print_json(&report);
            } else {
                bootstrap::print_summary("bootstrap", &report.items);
                bootstrap::print_notes(&report.notes);
                if report.errors.is_empty() {
                    bootstrap::print_outputs(&report.outputs);
                }
            }
            if report.errors.is_empty() {
                Ok(0)
            } else {
                for e in &report.errors {
                    eprintln!("overlayctl: error: {e}");
                }
                eprintln!("overlayctl: bootstrap incomplete; fix the cause and re-run to resume");
                Ok(1)
            }
        }
        Command::Plan { config } | Command::Status { config } => {
            let status = matches!(cli.command, Command::Status { .. });
            let ctx = make_ctx(&cli, config, Mode::Plan).await?;
            let report = bootstrap::run(&ctx).await?;
            if cli.output == Output::Json {
                if status {
                    print_json(
                        &serde_json::json!({"resources": report.items, "outputs": report.outputs, "errors": report.errors, "notes": report.notes}),
                    );
                } else {
                    print_json(
                        &serde_json::json!({"plan": report.items, "errors": report.errors, "notes": report.notes}),
                    );
                }
            } else {
                bootstrap::print_items(&report.items, status);
                bootstrap::print_notes(&report.notes);
            }
            for e in &report.errors {
                eprintln!("overlayctl: error: {e}");
            }
            Ok(if report.errors.is_empty() { 0 } else { 1 })
        }
        Command::Doctor { config } => {
            // Plan mode: nothing is ever carried out.
            let ctx = make_ctx(&cli, config, Mode::Plan).await?;
            let checks = doctor::run(&ctx).await?;
            let code = doctor::exit_code(&checks);
            if cli.output == Output::Json {
                print_json(&serde_json::json!({"checks": checks, "exit": code}));
            } else {
                print!("{}", doctor::render(&checks));
            }
            Ok(code)
        }
        Command::Teardown { config, yes } => {
            let ctx = make_ctx(&cli, config, Mode::Apply).await?;
            if !yes {
                if !std::io::stdin().is_terminal() {
                    return Err(UsageError::new(
                        "--yes",
                        "",
                        "teardown without a terminal needs --yes",
                    )
                    .into());
                }
                eprint!(
                    "Delete every resource tagged overlay:cluster={} in {}? Type the cluster name to confirm: ",
                    ctx.name(),
                    ctx.clients.region
                );
                let _ = std::io::stderr().flush();
                let mut line = String::new();
                std::io::stdin().lock().read_line(&mut line)?;
                if line.trim() != ctx.name() {
                    eprintln!("overlayctl: teardown cancelled");
                    return Ok(1);
                }
            }
            let errors = teardown::run(&ctx).await;
            let items = ctx.take_items();
            if cli.output == Output::Json {
                print_json(&serde_json::json!({"deleted": items, "errors": errors}));
            } else if items.is_empty() && errors.is_empty() {
                println!("nothing tagged overlay:cluster={} left", ctx.name());
            } else {
                bootstrap::print_summary("teardown", &items);
            }
            for e in &errors {
                eprintln!("overlayctl: error: {e}");
            }
            Ok(if errors.is_empty() { 0 } else { 1 })
        }
    }
}
