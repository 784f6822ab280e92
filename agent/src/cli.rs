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
    /// Diagnose this node, read-only: each check's id, verdict (ok/warn/fail/unknown),
    /// evidence and fix — devices as configured, MTU against the underlay and the Transit
    /// Gateway's 8500-byte limit, IGMPv2 forced and the group joined with it, IGMP
    /// memberships against igmp_max_memberships, remote VTEPs known, IMDS/DNS/NTP routed on
    /// the underlay. Exit 1 when a check fails, else 0 (warnings and unknowns alone: 0).
    Doctor(CmdArgs),
    /// Exit 0 when the configuration names a role, 1 when nothing does yet.
    ///
    /// The unit's ExecCondition: the package ships /etc/overlayd/overlayd.toml with every key
    /// commented out, so an installed and enabled node stays idle (unit skipped, not failed)
    /// until it is configured. A configuration that names a role but is otherwise wrong counts
    /// as configured: the service then starts and fails loudly with exit status 2.
    Configured(CmdArgs),
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
