//! The operations a plan is made of: what `plan` prints (text and `--json`) and the executor
//! carries out, one at a time, in order.

use crate::model::*;
use overlay_router::nat::NatSpec;
use serde::Serialize;
use std::fmt;
use std::net::Ipv4Addr;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    SetSysctl {
        key: String,
        value: String,
        from: Option<String>,
        /// Record `from` so `down` can put it back.
        record: bool,
    },
    DeleteLink {
        name: String,
        why: String,
    },
    CreateBridge {
        name: String,
        mac: Mac,
        mtu: u32,
        mcast_snooping: bool,
    },
    CreateVtep {
        name: String,
        vni: u32,
        port: u16,
        /// None: unicast flooding (no group).
        group: Option<Ipv4Addr>,
        underlay: String,
        mtu: u32,
        master: String,
        /// flood = evpn: the tunnel source address.
        local: Option<Ipv4Addr>,
        /// Learn remote MACs from received frames (off with evpn).
        learning: bool,
    },
    /// The VTEP's bridge port: neighbour suppression and learning (flood = evpn: on, off).
    SetBridgePort {
        name: String,
        neigh_suppress: bool,
        learning: bool,
    },
    /// Unicast flooding: add and remove all-zeros FDB entries on the VTEP, in one batch.
    SetFloodList {
        vtep: String,
        add: Vec<Ipv4Addr>,
        remove: Vec<Ipv4Addr>,
    },
    CreateDummy {
        name: String,
        veth_peer: String,
        mtu: u32,
        master: String,
    },
    SetOwner {
        name: String,
    },
    SetMtu {
        name: String,
        mtu: u32,
        from: u32,
    },
    SetMac {
        name: String,
        mac: Mac,
        /// What the link had (display only; may not be six bytes).
        from: String,
    },
    SetStpOff {
        name: String,
    },
    /// `vtep_tx_checksum = "off"` (ethtool -K NAME tx off).
    SetTxChecksumOff {
        name: String,
    },
    SetMaster {
        name: String,
        master: String,
    },
    SetUp {
        name: String,
    },
    AddAddress {
        dev: String,
        addr: ipnet::Ipv4Net,
    },
    SetMcastSnooping {
        name: String,
        on: bool,
    },
    /// Install one of overlayd's routes. With `replaces`, a foreign route with the same key
    /// (table, destination, metric) is taken over in one step and recorded so `down` puts
    /// it back; `replace` also covers re-pointing one of ours.
    AddRoute {
        route: RouteSpec,
        replace: bool,
        replaces: Option<SavedRoute>,
    },
    DelRoute {
        route: SavedRoute,
        why: String,
    },
    /// `down`: put back a foreign route that overlayd replaced.
    RestoreRoute {
        route: SavedRoute,
    },
    AddRule {
        rule: RuleSpec,
    },
    DelRule {
        priority: u32,
        from: Option<ipnet::Ipv4Net>,
        table: u32,
    },
    WriteHosts {
        path: String,
        line: Option<(Ipv4Addr, String)>,
    },
    WriteResolv {
        path: String,
        servers: Vec<Ipv4Addr>,
    },
    EnsureNat {
        spec: NatSpec,
        why: String,
    },
    RemoveNat,
    ForgetState,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::SetSysctl { key, value, from, .. } => write!(
                f,
                "sysctl {} = {value} (was {})",
                key.replace('/', "."),
                from.as_deref().unwrap_or("unset")
            ),
            Op::DeleteLink { name, why } => write!(f, "delete link {name} ({why})"),
            Op::CreateBridge { name, mac, mtu, mcast_snooping } => write!(
                f,
                "create bridge {name} (mac {mac}, mtu {mtu}, stp off, igmp snooping {}, up)",
                if *mcast_snooping { "on" } else { "off" }
            ),
            Op::CreateVtep { name, vni, port, group, underlay, mtu, master, local, learning } => write!(
                f,
                "create vxlan {name} (vni {vni}, dstport {port}, {}{}, dev {underlay}, mtu {mtu}, master {master}{}, up)",
                match (group, local) {
                    (Some(g), _) => format!("group {g}"),
                    (None, Some(_)) => "no group: BGP EVPN".to_string(),
                    (None, None) => "no group: unicast flooding".to_string(),
                },
                local.map(|a| format!(", local {a}")).unwrap_or_default(),
                if *learning { "" } else { ", nolearning" }
            ),
            Op::SetBridgePort { name, neigh_suppress, learning } => write!(
                f,
                "bridge port {name}: neigh_suppress {}, learning {}",
                if *neigh_suppress { "on" } else { "off" },
                if *learning { "on" } else { "off" }
            ),
            Op::SetFloodList { vtep, add, remove } => {
                let few = |v: &[Ipv4Addr]| {
                    let mut s: Vec<String> = v.iter().take(4).map(|a| a.to_string()).collect();
                    if v.len() > 4 {
                        s.push(format!("… {} more", v.len() - 4));
                    }
                    s.join(", ")
                };
                write!(f, "flood list of {vtep} (all-zeros FDB entries):")?;
                if !add.is_empty() {
                    write!(f, " add {} peer(s) [{}]", add.len(), few(add))?;
                }
                if !remove.is_empty() {
                    write!(f, " remove {} peer(s) [{}]", remove.len(), few(remove))?;
                }
                Ok(())
            }
            Op::CreateDummy { name, mtu, master, .. } => {
                write!(f, "create dummy {name} (mtu {mtu}, master {master}, up)")
            }
            Op::SetOwner { name } => write!(f, "mark {name} as owned by overlayd (device group 79)"),
            Op::SetMtu { name, mtu, from } => write!(f, "set {name} mtu {mtu} (was {from})"),
            Op::SetMac { name, mac, from } => write!(f, "set {name} address {mac} (was {from})"),
            Op::SetStpOff { name } => write!(f, "turn STP off on {name}"),
            Op::SetTxChecksumOff { name } => {
                write!(f, "turn transmit checksum offload off on {name}")
            }
            Op::SetMaster { name, master } => write!(f, "enslave {name} to {master}"),
            Op::SetUp { name } => write!(f, "set {name} up"),
            Op::AddAddress { dev, addr } => write!(f, "add address {addr} to {dev}"),
            Op::SetMcastSnooping { name, on } => write!(
                f,
                "turn IGMP snooping {} on {name}",
                if *on { "on" } else { "off" }
            ),
            Op::AddRoute { route, replaces, .. } => {
                write!(f, "add route {} ({})", route.describe(), route.why)?;
                if let Some(r) = replaces {
                    write!(f, ", replacing foreign route {r} (down restores it)")?;
                }
                Ok(())
            }
            Op::DelRoute { route, why } => write!(f, "delete route {route} ({why})"),
            Op::RestoreRoute { route } => write!(f, "restore route {route}"),
            Op::AddRule { rule } => write!(f, "add {rule}"),
            Op::DelRule { priority, from, table } => match from {
                Some(n) => write!(f, "delete rule {priority}: from {n} lookup {table}"),
                None => write!(f, "delete rule {priority}: lookup {table}"),
            },
            Op::WriteHosts { path, line } => match line {
                Some((ip, n)) => write!(f, "write \"{ip} {n}\" to {path}"),
                None => write!(f, "remove overlayd line from {path}"),
            },
            Op::WriteResolv { path, servers } if servers.is_empty() => {
                write!(f, "remove overlayd nameservers from {path}")
            }
            Op::WriteResolv { path, servers } => write!(
                f,
                "write nameserver {} to {path}",
                servers.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ")
            ),
            Op::EnsureNat { spec, why } => write!(
                f,
                "install NAT table ip overlayd: masquerade {} out of {} ({} exception(s)) ({why})",
                spec.overlay,
                spec.underlay,
                spec.exceptions.len()
            ),
            Op::RemoveNat => write!(f, "delete NAT table ip overlayd"),
            Op::ForgetState => write!(f, "remove overlayd state file"),
        }
    }
}

impl Op {
    /// A short machine-friendly kind (metrics label, repair catalogue).
    pub fn kind(&self) -> &'static str {
        match self {
            Op::SetSysctl { .. } => "sysctl",
            Op::DeleteLink { .. } => "delete_link",
            Op::CreateBridge { .. } => "create_bridge",
            Op::CreateVtep { .. } => "create_vtep",
            Op::SetFloodList { .. } => "flood_list",
            Op::SetBridgePort { .. } => "bridge_port",
            Op::CreateDummy { .. } => "create_dummy",
            Op::SetOwner { .. } => "owner",
            Op::SetMtu { .. } => "mtu",
            Op::SetMac { .. } => "mac",
            Op::SetStpOff { .. } => "stp",
            Op::SetTxChecksumOff { .. } => "tx_checksum",
            Op::SetMaster { .. } => "master",
            Op::SetUp { .. } => "up",
            Op::AddAddress { .. } => "address",
            Op::SetMcastSnooping { .. } => "snooping",
            Op::AddRoute { .. } => "route",
            Op::DelRoute { .. } => "route_delete",
            Op::RestoreRoute { .. } => "route_restore",
            Op::AddRule { .. } => "rule",
            Op::DelRule { .. } => "rule_delete",
            Op::WriteHosts { .. } => "hosts",
            Op::WriteResolv { .. } => "resolv",
            Op::EnsureNat { .. } => "nat",
            Op::RemoveNat => "nat_remove",
            Op::ForgetState => "state",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub ops: Vec<Op>,
    pub warnings: Vec<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}
