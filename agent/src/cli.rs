//! The `overlayd` command line, declared once with clap: the binary parses it, the packaging
//! generates its man pages and shell completions from it (`overlay-gen`).

use clap::{Args, Parser, Subcommand};

use crate::config::Settings as NodeArgs;

pub const LONG_ABOUT: &str = "\
overlayd turns a declared overlay node into kernel state over netlink and keeps it so.

Every node of the overlay (KVM hosts, the management server, the router) gets a bridge
(cloudbr0) holding its overlay address and a VXLAN tunnel endpoint (ethvxlan0) enslaved to it;
IGMPv2 is forced on the underlay so an AWS Transit Gateway multicast domain floods the
overlay's broadcast traffic to every member — or, with --flood unicast, no TGW at all: one
copy per peer from an all-zeros FDB entry per peer (static --peer list, or EC2 discovery by
the overlay:cluster tag). The router also forwards (and may NAT) between overlay and VPC.
The single-instance 'standalone' role uses a dummy port instead of VXLAN.

Configuration comes from the EC2 instance (IMDSv2 facts, overlay:* tags; consulted only when
a key says auto or a required key is missing), a TOML file (--config), OVERLAYD_* environment
variables and flags; flags win over the environment, the environment over the file, the file
over tags. `overlayd validate --explain` shows where each value came from. Bad input exits
with status 2 and changes nothing.

Examples:
  overlayd plan  --role host --address 10.101.0.10/16 --gateway 10.101.0.1 --group 239.255.0.1
  overlayd apply --config /etc/overlayd/overlayd.toml
  OVERLAYD_ROLE=router overlayd apply --address 10.101.0.1/16 --group 239.255.0.1 --nat
  overlayd plan  --role host --address auto --gateway auto --flood unicast --peer-discovery ec2
  overlayd validate --explain
  overlayd down  --config /etc/overlayd/overlayd.toml";

#[derive(Parser)]
#[command(name = "overlayd", version, args_override_self = true, about = "Converge and keep a VXLAN overlay node (CloudStack on AWS)", long_about = LONG_ABOUT)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Converge this node once; print what changed.
    Apply(CmdArgs),
    /// Print the ordered operations `apply` would perform; change nothing.
    Plan(CmdArgs),
    /// Remove what overlayd owns and restore the sysctls it changed; leave everything else.
    Down(CmdArgs),
    /// Check the configuration (and the host facts it depends on); change nothing.
    ///
    /// With --explain, every key is printed first with its value and where it came from
    /// (command line, environment, config file, instance tag, instance metadata, default).
    Validate(ValidateArgs),
    /// Run as a daemon: converge, then repair drift on every netlink event and every
    /// resync interval. SIGTERM stops and leaves the network up; SIGUSR1 pauses, SIGUSR2
    /// resumes, SIGHUP reloads the configuration.
    Run(CmdArgs),
    /// Desired vs observed state and the last reconcile (from the running daemon over its
    /// control socket, or read from the kernel when no daemon runs).
    Status(CmdArgs),
    /// Ask the running daemon to stop repairing (for manual changes); `resume` undoes it.
    Pause(CmdArgs),
    /// Ask the running daemon to resume repairing, starting with a full reconcile.
    Resume(CmdArgs),
    /// Take over matching hand-made devices in place (mark them as overlayd's).
    ///
    /// Devices with the configured names that overlayd did not create (made by hand or by
    /// the original scripts) are taken over without re-creating them: a device that matches the
    /// configuration is marked as overlayd's (device group 79); one that does not (another
    /// kind, VNI, port, group or underlay) is refused, naming the difference, and nothing is
    /// marked (exit 2). Traffic keeps flowing; run `overlayd apply` (or start the service)
    /// afterwards for what is still missing.
    Adopt(CmdArgs),
    /// Diagnose this node, read-only: each check's id, verdict, evidence and fix.
    #[command(long_about = DOCTOR_LONG_ABOUT)]
    Doctor(DoctorArgs),
    /// Exit 0 when the configuration names a role, 1 when nothing does yet.
    ///
    /// The unit's ExecCondition: the package ships /etc/overlayd/overlayd.toml with every key
    /// commented out, so an installed and enabled node stays idle (unit skipped, not failed)
    /// until it is configured. A configuration that names a role but is otherwise wrong counts
    /// as configured: the service then starts and fails loudly with exit status 2.
    Configured(CmdArgs),
}

pub const DOCTOR_LONG_ABOUT: &str = "\
Diagnose this node, read-only: every check prints a stable id, a verdict (ok, warn, fail,
unknown), the evidence it decided from and the fix. It reads the kernel (links, addresses,
routes, rules, the VTEP's forwarding database, sysctls, /proc/net/igmp), asks the running
daemon (control socket) for its history, pings the gateway once over the overlay and asks
the kernel where a reply to a VPC address would go. It changes nothing.

Checks (ids): bridge, vtep, mtu (bridge ≤ underlay − 50, ≤ 8450 with multicast flooding),
mtu.guest (nested guest networks below 1500), igmp.force-version, igmp.membership (the group
joined with IGMPv2: a TGW ignores v3), igmp.queries (a query heard within 2 × the TGW's
120 s; needs the daemon), igmp.max-memberships, fdb.remotes (remote VTEPs learned / in the
flood list), gateway.reachable, gateway.return-path (replies to the VPC leave through the
gateway, not the underlay; the router forwards), routes.link-local (IMDS, DNS, NTP on the
underlay), vtep.tx-checksum (offload with the kernel version: < 5.7 corrupts checksums after
NAT), managers (NetworkManager / systemd-networkd claiming overlayd's devices).

A check that cannot decide without history (no daemon running) says unknown. Exit status:
0 when nothing fails (warnings and unknowns alone: 0), 1 when a check fails, 2 bad input.

Examples:
  overlayd doctor
  overlayd doctor -o json | jq '.checks[] | select(.verdict != \"ok\")'
  overlayd doctor --config /etc/overlayd/overlayd.toml --igmp-query-interval 60";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Args, Clone)]
pub struct DoctorArgs {
    /// Output format (`-o json` is the same as --json).
    #[arg(short = 'o', long, value_enum, value_name = "FORMAT")]
    pub output: Option<Output>,
    /// The IGMP querier's interval in seconds (a Transit Gateway's: 120); no query for
    /// twice as long fails igmp.queries.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=86400), value_name = "SECS")]
    pub igmp_query_interval: u64,
    #[command(flatten)]
    pub common: CmdArgs,
}

impl DoctorArgs {
    /// The shared arguments, with `-o json` folded into `json`.
    pub fn common_args(&self) -> CmdArgs {
        let mut c = self.common.clone();
        c.json |= self.output == Some(Output::Json);
        c
    }
}

#[derive(Args, Clone)]
pub struct ValidateArgs {
    /// Print every key with its value and its source (flag, env, file, tag, IMDS, default).
    #[arg(long)]
    pub explain: bool,
    #[command(flatten)]
    pub common: CmdArgs,
}

#[derive(Args, Clone)]
pub struct CmdArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub node: NodeArgs,
}
