//! How the lab runs overlayd in a node: the per-node run directory, the flags every
//! invocation gets, and the command (entering only the node's network namespace, or through
//! `ip netns exec`). Used by `up`/`status` (lab.rs) and the daemons (daemons.rs), so neither
//! imports the other.

use crate::sys;
use crate::topo::{self, Node, Role, Topology};
use anyhow::Result;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const RUN_ROOT: &str = "/run/overlay-lab";

pub(crate) fn run_dir(prefix: &str) -> PathBuf {
    Path::new(RUN_ROOT).join(prefix)
}

pub(crate) fn node_dir(prefix: &str, node: &str) -> PathBuf {
    run_dir(prefix).join(node)
}

/// The flags every overlayd invocation for `node` gets (after the subcommand).
pub(crate) fn overlayd_flags(t: &Topology, n: &Node) -> Vec<String> {
    let dir = node_dir(&t.prefix, &n.name);
    let d = |f: &str| dir.join(f).to_string_lossy().into_owned();
    let mut a: Vec<String> = vec!["--config".into(), d("overlayd.toml")];
    match t.flood {
        // Zero configuration: role, address, gateway, flood and cluster from the instance's
        // tags (IMDS), the underlay by the MAC IMDS reports.
        topo::Flood::UnicastEc2 | topo::Flood::EvpnEc2 => {
            a.extend(["--underlay".into(), "auto".into()]);
            // (a route reflector discovers nothing: its clients connect to it)
            if t.flood == topo::Flood::UnicastEc2 || n.role != Role::Router {
                a.extend(["--peer-interval".into(), t.peer_interval.to_string()]);
            }
            if t.flood == topo::Flood::EvpnEc2 {
                a.extend(evpn_flags(t, n));
            }
        }
        flood => {
            a.extend([
                "--role".into(),
                n.role.as_str().into(),
                "--underlay".into(),
                "eth0".into(),
                "--address".into(),
                format!("{}/{}", n.overlay_ip, topo::OVERLAY_LEN),
            ]);
            if flood == topo::Flood::Evpn {
                a.extend(evpn_flags(t, n));
            } else if flood == topo::Flood::UnicastStatic {
                let peers: Vec<String> = t
                    .nodes
                    .iter()
                    .filter(|p| p.name != n.name)
                    .map(|p| p.underlay_ip.to_string())
                    .collect();
                a.extend([
                    "--flood".into(),
                    "unicast".into(),
                    "--peer".into(),
                    peers.join(","),
                ]);
            } else {
                a.extend(["--group".into(), t.group.to_string()]);
            }
            if n.role != Role::Router {
                a.extend(["--gateway".into(), topo::OVERLAY_ROUTER.to_string()]);
            }
            if let Some(peer) = t.ha_peer_of(n) {
                a.extend([
                    "--ha-peer".into(),
                    peer.to_string(),
                    "--ha-vip".into(),
                    topo::OVERLAY_ROUTER.to_string(),
                ]);
            }
        }
    }
    a.extend([
        "--vni".into(),
        t.vni.to_string(),
        "--dns".into(),
        n.subnet_dns().to_string(),
        "--state-dir".into(),
        d("state"),
        "--hosts-file".into(),
        d("hosts"),
        "--resolv-conf".into(),
        d("resolv.conf"),
    ]);
    if n.role != Role::Router {
        a.extend([
            "--fqdn".into(),
            format!("{}.{}.lab.internal", n.name, t.prefix),
        ]);
    }
    a
}

/// flood = evpn: FRR spawned by overlayd in the node's run directory; every node peers with
/// the router(s), which accept clients from the whole VPC. Zero configuration
/// ([`topo::Flood::EvpnEc2`]): the flood mode from the tag, the reflectors from EC2.
fn evpn_flags(t: &Topology, n: &Node) -> Vec<String> {
    let reflectors: Vec<String> = t
        .nodes
        .iter()
        .filter(|r| r.role == Role::Router)
        .map(|r| r.underlay_ip.to_string())
        .collect();
    let zero = t.flood == topo::Flood::EvpnEc2;
    let mut a: Vec<String> = if zero {
        vec![]
    } else {
        vec!["--flood".into(), "evpn".into()]
    };
    a.extend([
        "--evpn-frr".into(),
        "spawn".into(),
        "--evpn-frr-dir".into(),
        node_dir(&t.prefix, &n.name)
            .join("frr")
            .to_string_lossy()
            .into_owned(),
    ]);
    if !zero {
        a.extend(["--evpn-reflector-ip".into(), reflectors.join(",")]);
    }
    if n.role == Role::Router {
        a.extend(["--evpn-listen".into(), topo::VPC_CIDR.into()]);
    }
    a
}

/// The node's /etc/overlayd/overlayd.toml in the instance lab: the same settings as
/// [`overlayd_flags`], with the package's default paths (the node has its own filesystem).
pub(crate) fn overlayd_toml(t: &Topology, n: &Node) -> String {
    let mut s = format!(
        "# written by overlay-lab for node {} of lab {}\n\
         role = \"{}\"\n\
         underlay = \"eth0\"\n\
         address = \"{}/{}\"\n\
         {}\n\
         vni = {}\n\
         dns = [\"{}\"]\n",
        n.name,
        t.prefix,
        n.role.as_str(),
        n.overlay_ip,
        topo::OVERLAY_LEN,
        match t.flood {
            topo::Flood::Multicast => format!("group = \"{}\"", t.group),
            // FRR as the distribution's frr.service (evpn_frr = systemd, the default)
            topo::Flood::Evpn => format!(
                "flood = \"evpn\"\nevpn_reflectors = [{}]{}",
                t.nodes
                    .iter()
                    .filter(|r| r.role == Role::Router)
                    .map(|r| format!("\"{}\"", r.underlay_ip))
                    .collect::<Vec<_>>()
                    .join(", "),
                if n.role == Role::Router {
                    format!("\nevpn_listen = [\"{}\"]", topo::VPC_CIDR)
                } else {
                    String::new()
                }
            ),
            _ => format!(
                "flood = \"unicast\"\npeers = [{}]",
                t.nodes
                    .iter()
                    .filter(|p| p.name != n.name)
                    .map(|p| format!("\"{}\"", p.underlay_ip))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
        t.vni,
        n.subnet_dns(),
    );
    if let Some(peer) = t.ha_peer_of(n) {
        s.push_str(&format!(
            "ha_peer = \"{peer}\"\nha_vip = \"{}\"\n",
            topo::OVERLAY_ROUTER
        ));
    }
    if n.role == Role::Router {
        // as the README recommends for a router: masquerade what leaves for the internet,
        // not what stays in the VPC (the client's subnet is inside 10.0.0.0/16)
        s.push_str("nat = true\nnat_exceptions = [\"10.0.0.0/16\"]\n");
    } else {
        s.push_str(&format!(
            "gateway = \"{}\"\nfqdn = \"{}.{}.lab.internal\"\n",
            topo::OVERLAY_ROUTER,
            n.name,
            t.prefix
        ));
    }
    s
}

/// overlayd SUB FLAGS... inside the node's namespace, with a clean OVERLAYD_* environment.
/// Like `ip netns exec NS overlayd ...` for the network namespace (overlayd uses netlink and
/// /proc/sys/net only, both per network namespace), but without `ip netns exec`'s private
/// mount namespace, whose copy of ~1000 netns mounts costs more than overlayd itself in big
/// labs. `--ip-netns-exec` (or OVERLAY_LAB_IP_NETNS_EXEC=1) uses the real `ip netns exec`.
pub(crate) fn overlayd_cmd(
    overlayd: &Path,
    t: &Topology,
    n: &Node,
    sub: &[&str],
) -> Result<Command> {
    let mut c = if ip_netns_exec() {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &n.ns]).arg(overlayd);
        c
    } else {
        sys::command_in_netns(&n.ns, overlayd)?
    };
    c.args(sub);
    c.args(overlayd_flags(t, n));
    for (k, _) in std::env::vars_os() {
        let k2 = k.to_string_lossy();
        if k2.starts_with("OVERLAYD_") || k2.starts_with("AWS_") {
            c.env_remove(k);
        }
    }
    // (router HA: the route takeover's ReplaceRoute goes the same way)
    if t.flood.zero_config() || t.ha_peer_of(n).is_some() {
        // The EC2 API as the lab's instances reach it (relayed to moto); credentials and
        // region come from IMDS as on EC2.
        c.env("AWS_ENDPOINT_URL_EC2", crate::imds::ec2_api_url());
    }
    Ok(c)
}

pub static IP_NETNS_EXEC: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn ip_netns_exec() -> bool {
    IP_NETNS_EXEC.load(std::sync::atomic::Ordering::Relaxed)
}

/// The command as a human would type it.
pub(crate) fn overlayd_cmdline(overlayd: &Path, t: &Topology, n: &Node, sub: &[&str]) -> String {
    let mut v = vec![
        "ip".to_string(),
        "netns".into(),
        "exec".into(),
        n.ns.clone(),
        overlayd.display().to_string(),
    ];
    v.extend(sub.iter().map(|s| s.to_string()));
    v.extend(overlayd_flags(t, n));
    v.join(" ")
}
