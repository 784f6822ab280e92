//! The two states the spine compares: what the configuration asks for ([`Desired`]) and
//! what the kernel has ([`Observed`]). Both are plain data; nothing here talks to the kernel.

use ipnet::Ipv4Net;
use overlay_router::nat::{NatObserved, NatSpec};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// Device group (IFLA_GROUP) of every link overlayd creates: set in the creating request
/// itself, so a link is never, even after a kill -9, created without its owner mark.
/// `ip -d link` shows it as "group 79"; `ip link show group 79` lists overlayd's links.
pub const OWNER_GROUP: u32 = 79;
/// Older/foreign marker also accepted as ownership (link alias).
pub const OWNER_ALIAS: &str = "overlayd";
/// rtm_protocol of routes overlayd installs (shows as "proto 79" in `ip route`).
pub const RTPROT_OVERLAYD: u8 = 79;
/// Main routing table.
pub const RT_TABLE_MAIN: u32 = 254;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct BridgeSpec {
    pub name: String,
    pub mac: [u8; 6],
    pub mtu: u32,
    pub address: Ipv4Net,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct VtepSpec {
    pub name: String,
    pub vni: u32,
    pub port: u16,
    pub group: Ipv4Addr,
    pub underlay: String,
    pub mtu: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct DummySpec {
    pub name: String,
    /// Peer name used when the kernel has no `dummy` link type and a veth pair stands in.
    pub veth_peer: String,
    pub mtu: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RouteSpec {
    pub gateway: Ipv4Addr,
    pub dev: String,
    pub metric: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct SysctlSpec {
    /// Path under /proc/sys, with '/' separators (e.g. `net/ipv4/ip_forward`).
    pub key: String,
    pub value: String,
    /// Restore the original value on `down` (false for per-device keys of devices we own:
    /// they vanish with the device).
    pub restore: bool,
}

/// Everything the node should look like.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Desired {
    pub role: crate::config::Role,
    pub underlay: String,
    pub bridge: BridgeSpec,
    pub vtep: Option<VtepSpec>,
    pub dummy: Option<DummySpec>,
    pub default_route: Option<RouteSpec>,
    /// In the order they must be written (force_igmp_version before the VTEP exists).
    pub sysctls: Vec<SysctlSpec>,
    pub hosts_line: Option<(Ipv4Addr, String)>,
    pub dns: Vec<Ipv4Addr>,
    pub nat: Option<NatSpec>,
    pub hosts_file: String,
    pub resolv_conf: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, Default)]
pub struct VxlanInfo {
    pub vni: Option<u32>,
    pub port: Option<u16>,
    pub group: Option<Ipv4Addr>,
    pub dev: Option<u32>,
    pub learning: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// IFLA_INFO_KIND: bridge, vxlan, veth, dummy … (None for physical/loopback).
    pub kind: Option<String>,
    pub up: bool,
    pub mtu: u32,
    pub master: Option<u32>,
    pub mac: Vec<u8>,
    pub alias: Option<String>,
    /// Device group (0 = default).
    #[serde(default)]
    pub group: u32,
    pub vxlan: Option<VxlanInfo>,
    /// Bridge STP state (0 = off).
    pub stp: Option<u32>,
    /// veth peer index (IFLA_LINK).
    pub link: Option<u32>,
}

impl Link {
    pub fn owned(&self) -> bool {
        self.group == OWNER_GROUP || self.alias.as_deref() == Some(OWNER_ALIAS)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Addr {
    pub index: u32,
    pub addr: Ipv4Net,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Route {
    pub dst: Ipv4Net,
    pub gateway: Option<Ipv4Addr>,
    pub oif: Option<u32>,
    pub metric: u32,
    pub protocol: u8,
    pub table: u32,
}

/// What the kernel (and the few files we manage) look like now.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Observed {
    pub links: Vec<Link>,
    pub addrs: Vec<Addr>,
    pub routes: Vec<Route>,
    /// Sysctl key → current value (None when the key does not exist).
    pub sysctls: BTreeMap<String, Option<String>>,
    pub hosts: Option<String>,
    pub resolv: Option<String>,
    #[serde(skip)]
    pub nat: Option<NatObserved>,
}

impl Observed {
    pub fn link(&self, name: &str) -> Option<&Link> {
        self.links.iter().find(|l| l.name == name)
    }
    pub fn link_by_index(&self, index: u32) -> Option<&Link> {
        self.links.iter().find(|l| l.index == index)
    }
    pub fn addrs_of(&self, index: u32) -> impl Iterator<Item = &Addr> {
        self.addrs.iter().filter(move |a| a.index == index)
    }
    /// The interface carrying the main table's default route with the lowest metric,
    /// ignoring `exclude` (our own bridge).
    pub fn default_route_dev(&self, exclude: &str) -> Option<&Link> {
        let excl = self.link(exclude).map(|l| l.index);
        self.routes
            .iter()
            .filter(|r| {
                r.table == RT_TABLE_MAIN
                    && r.dst.prefix_len() == 0
                    && r.oif.is_some()
                    && r.oif != excl
            })
            .min_by_key(|r| r.metric)
            .and_then(|r| self.link_by_index(r.oif.unwrap()))
    }
}

/// The bridge MAC is pinned so recreating the VTEP (the bridge's lowest port MAC) never
/// changes it; derived from the overlay address: locally administered, unicast, stable.
pub fn bridge_mac(addr: Ipv4Addr) -> [u8; 6] {
    let o = addr.octets();
    [0x02, 0x0f, o[0], o[1], o[2], o[3]]
}

pub fn fmt_mac(m: &[u8]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
