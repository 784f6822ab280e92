//! The lab's addressing plan: which namespaces exist, what they are called and which addresses
//! they get. Everything here is pure computation so that `up`, `status` and `down` agree.

use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// Underlay (the emulated VPC subnet of the overlay nodes): 10.0.0.0/22.
pub const UNDERLAY_LEN: u8 = 22;
/// The VPC (both node subnets, the client subnet).
pub const VPC_CIDR: &str = "10.0.0.0/16";
/// The VPC router's address in the node subnet (AWS: subnet base + 1).
pub const UNDERLAY_GW: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
/// The "Amazon DNS" address (subnet base + 2); handed to overlayd as `--dns`, nothing answers.
pub const UNDERLAY_DNS: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
/// AWS link-local services the VPC answers on the node subnet: IMDS, DNS resolver, time sync.
pub const LINK_LOCAL_SERVICES: [Ipv4Addr; 3] = [
    Ipv4Addr::new(169, 254, 169, 254),
    Ipv4Addr::new(169, 254, 169, 253),
    Ipv4Addr::new(169, 254, 169, 123),
];
/// With two availability zones (`--azs 2`): the second node subnet, 10.0.4.0/22 (router
/// base + 1, DNS base + 2 as in the first), on bridge [`UNDERLAY_BRIDGE_B`].
pub const UNDERLAY_GW_B: Ipv4Addr = Ipv4Addr::new(10, 0, 4, 1);
/// Second subnet holding the VPC client: 10.0.8.0/24.
pub const CLIENT_LEN: u8 = 24;
pub const CLIENT_GW: Ipv4Addr = Ipv4Addr::new(10, 0, 8, 1);
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 8, 10);
/// Overlay.
pub const OVERLAY_NET: Ipv4Addr = Ipv4Addr::new(10, 101, 0, 0);
pub const OVERLAY_LEN: u8 = 16;
pub const OVERLAY_ROUTER: Ipv4Addr = Ipv4Addr::new(10, 101, 0, 1);
/// With a router pair: each router's own overlay address (10.101.0.1 is then the VIP).
pub const ROUTER_A: Ipv4Addr = Ipv4Addr::new(10, 101, 0, 3);
pub const ROUTER_B: Ipv4Addr = Ipv4Addr::new(10, 101, 0, 4);
/// First VM address.
pub const VM_BASE: Ipv4Addr = Ipv4Addr::new(10, 101, 128, 10);

/// Bridge in the vpc namespace standing in for the node subnet + TGW multicast domain.
pub const UNDERLAY_BRIDGE: &str = "ul";
/// Bridge in the vpc namespace for the second AZ's node subnet.
pub const UNDERLAY_BRIDGE_B: &str = "ul2";
/// The veth pair joining the two node-subnet bridges for the TGW multicast domain that spans
/// both AZs: only the VXLAN group's UDP crosses it (no ARP, no IGMP, no unicast: the
/// subnets are routed by the VPC router as in AWS).
pub const AZ_LINK: (&str, &str) = ("tgw-a", "tgw-b");
/// Bridge in the vpc namespace for the client subnet.
pub const CLIENT_BRIDGE: &str = "cl";
/// The client's port on `cl`.
pub const CLIENT_PORT: &str = "c-client";
/// rtm_protocol of the nodes' default route via the VPC router (as a DHCP client sets it).
pub const RTPROT_DHCP: u8 = 16;

pub const MAX_HOSTS: usize = 1000;
pub const MAX_VMS_PER_HOST: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Router,
    Management,
    Host,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Router => "router",
            Role::Management => "management",
            Role::Host => "host",
        }
    }
}

/// One overlay node (router, management or KVM host): a namespace whose `eth0` is a port of the
/// underlay bridge and which is configured by `overlayd apply`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    pub ns: String,
    pub role: Role,
    /// `eth0` address (prefix length UNDERLAY_LEN).
    pub underlay_ip: Ipv4Addr,
    /// Overlay address on cloudbr0 (prefix length OVERLAY_LEN).
    pub overlay_ip: Ipv4Addr,
    /// Name of the underlay bridge port (in the vpc namespace) that leads to this node.
    pub vpc_port: String,
    /// Availability zone: 0 (subnet 10.0.0.0/22) or 1 (10.0.4.0/22, `--azs 2`).
    #[serde(default)]
    pub az: u8,
}

impl Node {
    /// The VPC router's address in this node's subnet (its DHCP default route).
    pub fn subnet_gw(&self) -> Ipv4Addr {
        subnet_gw(self.az)
    }
    /// The "Amazon DNS" address of this node's subnet (base + 2).
    pub fn subnet_dns(&self) -> Ipv4Addr {
        if self.az == 0 {
            UNDERLAY_DNS
        } else {
            add(UNDERLAY_GW_B, 1)
        }
    }
    /// The vpc-namespace bridge of this node's subnet.
    pub fn bridge(&self) -> &'static str {
        subnet_bridge(self.az)
    }
}

/// The VPC router's address in AZ `az`'s node subnet.
pub fn subnet_gw(az: u8) -> Ipv4Addr {
    if az == 0 {
        UNDERLAY_GW
    } else {
        UNDERLAY_GW_B
    }
}

/// The vpc-namespace bridge of AZ `az`'s node subnet.
pub fn subnet_bridge(az: u8) -> &'static str {
    if az == 0 {
        UNDERLAY_BRIDGE
    } else {
        UNDERLAY_BRIDGE_B
    }
}

/// A "VM": a namespace with `eth0` whose peer is a port of its host's cloudbr0.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Vm {
    pub name: String,
    pub ns: String,
    pub host: String,
    /// Port name in the host namespace (enslaved to cloudbr0).
    pub host_port: String,
    pub ip: Ipv4Addr,
}

/// How the lab's overlay floods (overlayd's `flood`), and where unicast peers come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Flood {
    /// The vpc bridge stands in for a TGW multicast domain (IGMP snooping + querier).
    #[default]
    Multicast,
    /// No TGW: the vpc bridge drops every multicast frame; each node gets every other
    /// node as a static peer.
    UnicastStatic,
    /// No TGW, peers from EC2 DescribeInstances (moto, through the lab's EC2 API relay);
    /// every node is configured from its instance tags alone.
    UnicastEc2,
    /// No TGW, no flooding by the VPC: BGP EVPN through FRR in each node (overlayd run spawns
    /// zebra and bgpd), the router(s) route reflectors.
    Evpn,
    /// [`Flood::Evpn`] with every node configured from its instance tags alone, the route
    /// reflectors found by EC2 DescribeInstances (the cluster's `overlay:role=router`).
    EvpnEc2,
}

impl Flood {
    /// No multicast: the VPC drops every multicast frame (unicast or EVPN).
    pub fn unicast(self) -> bool {
        self != Flood::Multicast
    }
    /// Nodes configured by their instance tags alone, peers (or reflectors) from EC2.
    pub fn zero_config(self) -> bool {
        matches!(self, Flood::UnicastEc2 | Flood::EvpnEc2)
    }
    pub fn name(self) -> &'static str {
        match self {
            Flood::Multicast => "multicast",
            Flood::UnicastStatic | Flood::UnicastEc2 => "unicast",
            Flood::Evpn | Flood::EvpnEc2 => "evpn",
        }
    }
}

fn one() -> u8 {
    1
}

fn default_peer_interval() -> u64 {
    10
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Topology {
    pub prefix: String,
    #[serde(default)]
    pub flood: Flood,
    /// overlayd's `peer_interval` with [`Flood::UnicastEc2`].
    #[serde(default = "default_peer_interval")]
    pub peer_interval: u64,
    pub group: Ipv4Addr,
    pub vni: u32,
    pub underlay_mtu: u32,
    /// Availability zones (node subnets): 1 or 2.
    #[serde(default = "one")]
    pub azs: u8,
    pub vpc_ns: String,
    pub client_ns: String,
    pub client_ip: Ipv4Addr,
    pub nodes: Vec<Node>,
    pub vms: Vec<Vm>,
}

/// Directed broadcast address of the subnet of `ip`/`len`.
pub fn broadcast(ip: Ipv4Addr, len: u8) -> Ipv4Addr {
    let host = if len >= 32 { 0 } else { u32::MAX >> len };
    Ipv4Addr::from(u32::from(ip) | host)
}

/// Network address of `ip`/`len`.
pub fn network(ip: Ipv4Addr, len: u8) -> Ipv4Addr {
    let mask = if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len.min(32)))
    };
    Ipv4Addr::from(u32::from(ip) & mask)
}

/// The MAC the lab gives an instance's `eth0` (locally administered, 02:00 + its VPC address),
/// so IMDS `mac` and `network/interfaces/macs/<mac>/` name the interface the node really has.
pub fn eth0_mac(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("02:00:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
}

pub fn add(ip: Ipv4Addr, n: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(ip) + n as u32)
}

/// Check a lab prefix: it becomes the start of every namespace name (`P-...`), so it must not
/// contain '-' (otherwise `down` of prefix "a" could hit lab "a-b").
pub fn validate_prefix(p: &str) -> Result<(), String> {
    let ok_chars = p
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if p.is_empty() || p.len() > 16 || !ok_chars || !p.starts_with(|c: char| c.is_ascii_lowercase())
    {
        return Err(format!(
            "invalid --prefix {p:?}: use 1-16 characters [a-z0-9], starting with a letter \
             (it starts every namespace name, as \"{p}-<node>\")"
        ));
    }
    Ok(())
}

impl Topology {
    pub fn new(
        prefix: &str,
        hosts: usize,
        vms_per_host: usize,
        group: Ipv4Addr,
        vni: u32,
        underlay_mtu: u32,
    ) -> Topology {
        let ns = |n: &str| format!("{prefix}-{n}");
        let mut nodes = vec![
            Node {
                name: "router".into(),
                ns: ns("router"),
                role: Role::Router,
                underlay_ip: Ipv4Addr::new(10, 0, 0, 4),
                overlay_ip: OVERLAY_ROUTER,
                vpc_port: "u-router".into(),
                az: 0,
            },
            Node {
                name: "mgmt".into(),
                ns: ns("mgmt"),
                role: Role::Management,
                underlay_ip: Ipv4Addr::new(10, 0, 0, 5),
                overlay_ip: Ipv4Addr::new(10, 101, 0, 2),
                vpc_port: "u-mgmt".into(),
                az: 0,
            },
        ];
        let mut vms = Vec::new();
        for i in 1..=hosts {
            let name = format!("h{i}");
            for j in 1..=vms_per_host {
                let vname = format!("{name}-vm{j}");
                vms.push(Vm {
                    ns: ns(&vname),
                    host: name.clone(),
                    host_port: format!("vm{j}"),
                    ip: add(VM_BASE, (i - 1) * vms_per_host + (j - 1)),
                    name: vname,
                });
            }
            nodes.push(Node {
                ns: ns(&name),
                role: Role::Host,
                underlay_ip: add(Ipv4Addr::new(10, 0, 0, 10), i - 1),
                overlay_ip: add(Ipv4Addr::new(10, 101, 0, 10), i - 1),
                vpc_port: format!("u-{name}"),
                az: 0,
                name,
            });
        }
        Topology {
            prefix: prefix.to_string(),
            flood: Flood::Multicast,
            peer_interval: default_peer_interval(),
            group,
            vni,
            underlay_mtu,
            azs: 1,
            vpc_ns: ns("vpc"),
            client_ns: ns("client"),
            client_ip: CLIENT_IP,
            nodes,
            vms,
        }
    }

    pub fn router(&self) -> &Node {
        &self.nodes[0]
    }

    /// Router HA: a second router ("router2", 10.0.0.6); the two routers take their own
    /// overlay addresses (.3, .4) and the hosts' gateway 10.101.0.1 becomes the VIP the
    /// active one holds (VRRP over the overlay).
    pub fn with_router_pair(&mut self) {
        self.nodes[0].overlay_ip = ROUTER_A;
        let r2 = Node {
            name: "router2".into(),
            ns: format!("{}-router2", self.prefix),
            role: Role::Router,
            underlay_ip: Ipv4Addr::new(10, 0, 0, 6),
            overlay_ip: ROUTER_B,
            vpc_port: "u-router2".into(),
            az: 0,
        };
        self.nodes.insert(1, r2);
    }

    /// Two availability zones: a second node subnet (10.0.4.0/22) holding router2 (with a
    /// pair) and the second half of the hosts (h1..h⌈n/2⌉ stay in the first). A node keeps
    /// its offset in its subnet (h6: 10.0.0.15 → 10.0.4.15), so its overlay address is the
    /// same in either AZ. The TGW multicast domain spans both subnets.
    pub fn with_two_azs(&mut self) {
        self.azs = 2;
        let hosts = self.nodes.iter().filter(|n| n.role == Role::Host).count();
        let first = hosts.div_ceil(2);
        let mut seen = 0;
        for n in &mut self.nodes {
            let move_it = match n.role {
                Role::Router => n.name == "router2",
                Role::Management => false,
                Role::Host => {
                    seen += 1;
                    seen > first
                }
            };
            if move_it {
                n.az = 1;
                let offset =
                    u32::from(n.underlay_ip) - u32::from(network(UNDERLAY_GW, UNDERLAY_LEN));
                n.underlay_ip =
                    Ipv4Addr::from(u32::from(network(UNDERLAY_GW_B, UNDERLAY_LEN)) + offset);
            }
        }
    }

    /// The node-subnet bridges of the vpc namespace (one per AZ).
    pub fn bridges(&self) -> Vec<&'static str> {
        (0..self.azs).map(subnet_bridge).collect()
    }

    /// The routers (one, or the HA pair).
    pub fn routers(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.role == Role::Router)
    }

    /// With a router pair: the other router's overlay address.
    pub fn ha_peer_of(&self, n: &Node) -> Option<Ipv4Addr> {
        if n.role != Role::Router || self.routers().count() < 2 {
            return None;
        }
        self.routers()
            .find(|r| r.name != n.name)
            .map(|r| r.overlay_ip)
    }

    /// The `overlay:*` tags that configure node `n` with nothing else (zero-configuration
    /// nodes, [`Flood::UnicastEc2`]): the router and hosts take `address = auto` (the router
    /// overlay_cidr's .1, a host its subnet offset: h1 10.0.0.10 → 10.101.0.10), the
    /// management server its conventional 10.101.0.2.
    pub fn zero_config_tags(&self, n: &Node) -> Vec<(String, String)> {
        let mut v = vec![
            ("overlay:cluster".to_string(), self.prefix.clone()),
            ("overlay:role".to_string(), n.role.as_str().to_string()),
            ("overlay:flood".to_string(), self.flood.name().to_string()),
        ];
        v.push((
            "overlay:address".to_string(),
            match n.role {
                Role::Management => format!("{}/{OVERLAY_LEN}", n.overlay_ip),
                _ => "auto".to_string(),
            },
        ));
        if n.role != Role::Router {
            v.push(("overlay:gateway".to_string(), "auto".to_string()));
        }
        v
    }

    /// All namespaces of the lab, infrastructure first.
    pub fn namespaces(&self) -> Vec<String> {
        let mut v = vec![self.vpc_ns.clone(), self.client_ns.clone()];
        v.extend(self.nodes.iter().map(|n| n.ns.clone()));
        v.extend(self.vms.iter().map(|m| m.ns.clone()));
        v
    }

    /// Reachability endpoints: (name, namespace, address).
    pub fn endpoints(&self) -> Vec<Endpoint> {
        let mut v: Vec<Endpoint> = self
            .nodes
            .iter()
            .map(|n| Endpoint {
                name: n.name.clone(),
                ns: n.ns.clone(),
                ip: n.overlay_ip,
            })
            .collect();
        v.extend(self.vms.iter().map(|m| Endpoint {
            name: m.name.clone(),
            ns: m.ns.clone(),
            ip: m.ip,
        }));
        v.push(Endpoint {
            name: "client".into(),
            ns: self.client_ns.clone(),
            ip: self.client_ip,
        });
        v
    }

    pub fn node_by_port(&self, port: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.vpc_port == port)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Endpoint {
    pub name: String,
    pub ns: String,
    pub ip: Ipv4Addr,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_fit_and_names_are_short() {
        let t = Topology::new(
            "abcdefghijklmnop",
            MAX_HOSTS,
            MAX_VMS_PER_HOST,
            Ipv4Addr::new(239, 255, 0, 1),
            100,
            9001,
        );
        let last = t.nodes.last().unwrap();
        // still inside the /22 underlay and below the first VM address
        assert!(u32::from(last.underlay_ip) < u32::from(Ipv4Addr::new(10, 0, 3, 255)));
        assert!(u32::from(last.overlay_ip) < u32::from(VM_BASE));
        assert!(u32::from(t.vms.last().unwrap().ip) < u32::from(Ipv4Addr::new(10, 101, 255, 255)));
        for n in &t.nodes {
            assert!(n.vpc_port.len() <= 15, "{}", n.vpc_port);
        }
        let mut ips: Vec<_> = t.endpoints().iter().map(|e| e.ip).collect();
        ips.sort();
        ips.dedup();
        assert_eq!(ips.len(), t.endpoints().len());
    }

    #[test]
    fn two_azs_split_the_hosts_and_the_router_pair() {
        let mut t = Topology::new("t", 10, 0, Ipv4Addr::new(239, 255, 0, 1), 100, 9001);
        t.with_router_pair();
        t.with_two_azs();
        let in_b: Vec<&str> = t
            .nodes
            .iter()
            .filter(|n| n.az == 1)
            .map(|n| n.name.as_str())
            .collect();
        assert_eq!(in_b, ["router2", "h6", "h7", "h8", "h9", "h10"]);
        let h6 = t.nodes.iter().find(|n| n.name == "h6").unwrap();
        assert_eq!(h6.underlay_ip, Ipv4Addr::new(10, 0, 4, 15));
        assert_eq!(h6.overlay_ip, Ipv4Addr::new(10, 101, 0, 15));
        assert_eq!(h6.subnet_gw(), UNDERLAY_GW_B);
        assert_eq!(h6.subnet_dns(), Ipv4Addr::new(10, 0, 4, 2));
        assert_eq!(t.bridges(), [UNDERLAY_BRIDGE, UNDERLAY_BRIDGE_B]);
        let mut ips: Vec<_> = t.nodes.iter().map(|n| n.underlay_ip).collect();
        ips.sort();
        ips.dedup();
        assert_eq!(ips.len(), t.nodes.len());
    }

    #[test]
    fn prefix_rules() {
        assert!(validate_prefix("lab1").is_ok());
        assert!(validate_prefix("a-b").is_err());
        assert!(validate_prefix("").is_err());
        assert!(validate_prefix("1a").is_err());
        assert!(validate_prefix("Abc").is_err());
    }
}
