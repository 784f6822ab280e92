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
/// rtm_protocol of routes overlayd installs (shows as "proto 79" in `ip route`).
pub const RTPROT_OVERLAYD: u8 = 79;
/// Main routing table.
pub const RT_TABLE_MAIN: u32 = 254;
/// Default number of the routing table overlayd owns (overlay-sourced traffic).
pub const DEFAULT_ROUTE_TABLE: u32 = 79;
/// Priority of overlayd's policy rule `from <overlay address> lookup <route_table>`: before
/// the main table (32766), after the local table (0) and well clear of the 10000+ range that
/// amazon-ec2-net-utils uses for secondary interfaces.
pub const RULE_PRIORITY: u32 = 1079;
/// AWS link-local services: IMDS, Route 53 Resolver, Amazon Time Sync.
pub const AWS_LINK_LOCAL: [std::net::Ipv4Addr; 3] = [
    std::net::Ipv4Addr::new(169, 254, 169, 254),
    std::net::Ipv4Addr::new(169, 254, 169, 253),
    std::net::Ipv4Addr::new(169, 254, 169, 123),
];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct BridgeSpec {
    pub name: String,
    pub mac: [u8; 6],
    pub mtu: u32,
    pub address: Ipv4Net,
    /// IGMP snooping on the bridge. Off: there is no querier inside the overlay, and a
    /// snooping bridge that ever hears one (a guest, a misconfigured node) starts pruning
    /// CloudStack's guest VXLAN groups whose reports it missed. Off floods all overlay
    /// multicast to every port, which is what a VXLAN flood domain needs anyway.
    #[serde(default)]
    pub mcast_snooping: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct VtepSpec {
    pub name: String,
    pub vni: u32,
    pub port: u16,
    /// The multicast group flooding goes to; None with unicast flooding (no group: the
    /// kernel replicates to the all-zeros FDB entries instead, [`FloodList`]).
    pub group: Option<Ipv4Addr>,
    pub underlay: String,
    pub mtu: u32,
    /// `vtep_tx_checksum = "off"`: transmit-checksum offload switched off (ethtool).
    #[serde(default)]
    pub tx_checksum_off: bool,
    /// flood = evpn: the tunnel source (the underlay address FRR advertises as this VTEP);
    /// None: the kernel picks per packet.
    #[serde(default)]
    pub local: Option<Ipv4Addr>,
    /// The VTEP learns remote MACs from received frames (off with evpn: BGP installs them).
    #[serde(default = "yes")]
    pub learning: bool,
    /// flood = evpn: the VTEP's bridge port answers ARP from the neighbour table
    /// (neigh_suppress on) and learns nothing (learning off).
    #[serde(default)]
    pub neigh_suppress: bool,
}

fn yes() -> bool {
    true
}

/// Unicast flooding: the peers the VTEP replicates broadcast/unknown frames to, one
/// all-zeros FDB entry each. `peers` None = not known yet (EC2 discovery has not answered
/// once): the entries there are left as they are, never flushed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct FloodList {
    pub vtep: String,
    pub peers: Option<std::collections::BTreeSet<Ipv4Addr>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct DummySpec {
    pub name: String,
    /// Peer name used when the kernel has no `dummy` link type and a veth pair stands in.
    pub veth_peer: String,
    pub mtu: u32,
}

/// One route overlayd owns (protocol 79).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RouteSpec {
    pub table: u32,
    pub dst: Ipv4Net,
    pub gateway: Option<Ipv4Addr>,
    pub dev: String,
    pub metric: u32,
    /// Preferred source address (`src`), if any.
    pub src: Option<Ipv4Addr>,
    /// Only wanted while the table holds no default route of someone else's (the
    /// overlay-sourced mode's main-table default for nodes that have none of their own).
    #[serde(default)]
    pub fallback: bool,
    /// What the route is for (shown by `plan` and `status`).
    pub why: String,
}

impl RouteSpec {
    /// `ip route`-style text: `default via G dev D table T metric M`.
    pub fn describe(&self) -> String {
        let mut s = if self.dst.prefix_len() == 0 {
            "default".to_string()
        } else {
            self.dst.to_string()
        };
        if let Some(g) = self.gateway {
            s.push_str(&format!(" via {g}"));
        }
        s.push_str(&format!(" dev {}", self.dev));
        if self.table != RT_TABLE_MAIN {
            s.push_str(&format!(" table {}", self.table));
        }
        if let Some(src) = self.src {
            s.push_str(&format!(" src {src}"));
        }
        s.push_str(&format!(" metric {}", self.metric));
        s
    }
}

/// overlayd's policy rule: `from <from> lookup <table> priority <priority>` (protocol 79).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RuleSpec {
    pub priority: u32,
    pub from: Ipv4Net,
    pub table: u32,
}

impl std::fmt::Display for RuleSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "rule {}: from {} lookup {}",
            self.priority, self.from, self.table
        )
    }
}

/// How a sysctl value is wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SysctlWant {
    /// Exactly this value.
    #[default]
    Exact,
    /// At least this (integer) value: a higher one set by the operator is kept.
    AtLeast,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct SysctlSpec {
    /// Path under /proc/sys, with '/' separators (e.g. `net/ipv4/ip_forward`).
    pub key: String,
    pub value: String,
    /// Restore the original value on `down` (false for per-device keys of devices we own:
    /// they vanish with the device).
    pub restore: bool,
    #[serde(default)]
    pub want: SysctlWant,
}

impl SysctlSpec {
    /// Does the current value satisfy this spec?
    pub fn satisfied_by(&self, cur: Option<&str>) -> bool {
        let Some(cur) = cur.map(str::trim) else {
            return false;
        };
        match self.want {
            SysctlWant::Exact => cur == self.value,
            SysctlWant::AtLeast => match (cur.parse::<u64>(), self.value.parse::<u64>()) {
                (Ok(c), Ok(v)) => c >= v,
                _ => cur == self.value,
            },
        }
    }
}

/// Everything the node should look like.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Desired {
    pub role: crate::config::Role,
    pub underlay: String,
    pub bridge: BridgeSpec,
    pub vtep: Option<VtepSpec>,
    /// flood = unicast only.
    #[serde(default)]
    pub flood_list: Option<FloodList>,
    pub dummy: Option<DummySpec>,
    /// Gateway mode of host/management (None for router/standalone).
    pub gateway_mode: Option<crate::config::GatewayMode>,
    /// Every route overlayd owns, in the order they are installed.
    pub routes: Vec<RouteSpec>,
    /// Policy rules overlayd owns.
    pub rules: Vec<RuleSpec>,
    /// In the order they must be written (force_igmp_version before the VTEP exists).
    pub sysctls: Vec<SysctlSpec>,
    pub hosts_line: Option<(Ipv4Addr, String)>,
    pub dns: Vec<Ipv4Addr>,
    pub nat: Option<NatSpec>,
    /// Router HA (VRRP by keepalived, the VIP on the bridge): see [`crate::ha`].
    #[serde(default)]
    pub ha: Option<crate::ha::HaSpec>,
    /// flood = evpn: the node's BGP EVPN speaker (FRR), see [`crate::evpn`].
    #[serde(default)]
    pub evpn: Option<crate::evpn::EvpnSpec>,
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
    #[serde(default)]
    pub local: Option<Ipv4Addr>,
}

/// A bridge port's flags (IFLA_BRPORT_*), as dumped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, Default)]
pub struct BrPortInfo {
    pub learning: Option<bool>,
    pub neigh_suppress: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// IFLA_INFO_KIND: bridge, vxlan, veth, dummy … (None for physical/loopback).
    pub kind: Option<String>,
    pub up: bool,
    /// IFF_LOWER_UP: the link has carrier (a veth whose peer is down has none).
    #[serde(default)]
    pub carrier: bool,
    pub mtu: u32,
    pub master: Option<u32>,
    pub mac: Vec<u8>,
    pub alias: Option<String>,
    /// Device group (0 = default).
    #[serde(default)]
    pub group: u32,
    pub vxlan: Option<VxlanInfo>,
    /// The port's flags when the link is enslaved to a bridge.
    #[serde(default)]
    pub brport: Option<BrPortInfo>,
    /// Bridge STP state (0 = off).
    pub stp: Option<u32>,
    /// Bridge IGMP snooping (IFLA_BR_MCAST_SNOOPING).
    #[serde(default)]
    pub mcast_snooping: Option<bool>,
    /// veth peer index (IFLA_LINK).
    pub link: Option<u32>,
}

impl Link {
    pub fn owned(&self) -> bool {
        self.group == OWNER_GROUP
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
    /// rtm_scope (0 universe, 253 link, 254 host).
    #[serde(default)]
    pub scope: u8,
    /// rtm_type (1 unicast, 2 local, 3 broadcast, 5 multicast …).
    #[serde(default = "unicast")]
    pub kind: u8,
    /// Preferred source (RTA_PREFSRC).
    #[serde(default)]
    pub prefsrc: Option<Ipv4Addr>,
}

fn unicast() -> u8 {
    1
}

impl Route {
    pub fn owned(&self) -> bool {
        self.protocol == RTPROT_OVERLAYD
    }
}

/// A route as the executor needs it to delete or re-create it: like [`Route`], with the
/// device by name (indexes change when links are re-created). Saved in the state file
/// for a foreign route overlayd replaced, so `down` can put it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct SavedRoute {
    pub table: u32,
    pub dst: Ipv4Net,
    pub gateway: Option<Ipv4Addr>,
    pub dev: String,
    pub metric: u32,
    pub protocol: u8,
    pub scope: u8,
    pub prefsrc: Option<Ipv4Addr>,
}

impl SavedRoute {
    pub fn from_observed(r: &Route, o: &Observed) -> SavedRoute {
        SavedRoute {
            table: r.table,
            dst: r.dst,
            gateway: r.gateway,
            dev: r
                .oif
                .and_then(|i| o.link_by_index(i))
                .map(|l| l.name.clone())
                .unwrap_or_default(),
            metric: r.metric,
            protocol: r.protocol,
            scope: r.scope,
            prefsrc: r.prefsrc,
        }
    }
    /// The kernel's key of an IPv4 route: table, destination, (tos,) metric.
    pub fn same_key(&self, table: u32, dst: Ipv4Net, metric: u32) -> bool {
        self.table == table && self.dst == dst && self.metric == metric
    }
}

impl std::fmt::Display for SavedRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.dst.prefix_len() == 0 {
            f.write_str("default")?;
        } else {
            write!(f, "{}", self.dst)?;
        }
        if let Some(g) = self.gateway {
            write!(f, " via {g}")?;
        }
        if !self.dev.is_empty() {
            write!(f, " dev {}", self.dev)?;
        }
        if self.table != RT_TABLE_MAIN {
            write!(f, " table {}", self.table)?;
        }
        write!(f, " metric {} proto {}", self.metric, self.protocol)
    }
}

/// An IPv4 policy rule (`ip rule`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Rule {
    pub priority: u32,
    /// Source selector (`from`); None = all.
    pub src: Option<Ipv4Net>,
    /// Destination selector (`to`); None = all.
    pub dst: Option<Ipv4Net>,
    pub table: u32,
    pub protocol: u8,
    /// FR_ACT_* (1 = lookup table).
    pub action: u8,
    /// True when the rule has selectors overlayd does not use (iif, oif, fwmark, …).
    pub other_selectors: bool,
}

impl Rule {
    pub fn owned(&self) -> bool {
        self.protocol == RTPROT_OVERLAYD
    }
    pub fn matches(&self, r: &RuleSpec) -> bool {
        self.priority == r.priority
            && self.src == Some(r.from)
            && self.dst.is_none()
            && self.table == r.table
            && self.action == 1
            && !self.other_selectors
    }
}

/// What the kernel (and the few files we manage) look like now.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Observed {
    pub links: Vec<Link>,
    pub addrs: Vec<Addr>,
    pub routes: Vec<Route>,
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Sysctl key → current value (None when the key does not exist).
    pub sysctls: BTreeMap<String, Option<String>>,
    pub hosts: Option<String>,
    pub resolv: Option<String>,
    #[serde(skip)]
    pub nat: Option<NatObserved>,
    /// The VTEP's all-zeros FDB destinations (read only with unicast flooding).
    #[serde(default)]
    pub flood_list: std::collections::BTreeSet<Ipv4Addr>,
    /// Those of them overlayd added (from the state file): the only ones it removes.
    #[serde(default)]
    pub flood_list_owned: std::collections::BTreeSet<Ipv4Addr>,
    /// The VTEP's transmit-checksum offload (ethtool; None: no VTEP or not readable).
    #[serde(default)]
    pub vtep_tx_checksum: Option<bool>,
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

/// A MAC address: shown and serialised as `02:0f:0a:65:00:0a`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mac(pub [u8; 6]);

impl std::fmt::Display for Mac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&fmt_mac(&self.0))
    }
}

impl std::str::FromStr for Mac {
    type Err = String;
    fn from_str(s: &str) -> Result<Mac, String> {
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 6 {
            return Err(format!(
                "{s:?} is not a MAC address (six hex bytes with ':')"
            ));
        }
        let mut m = [0u8; 6];
        for (i, p) in parts.iter().enumerate() {
            m[i] = u8::from_str_radix(p, 16)
                .map_err(|_| format!("{s:?} is not a MAC address (byte {p:?})"))?;
        }
        Ok(Mac(m))
    }
}

impl Serialize for Mac {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Mac {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Mac, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

pub fn fmt_mac(m: &[u8]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
