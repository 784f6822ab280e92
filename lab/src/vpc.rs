//! The emulated VPC's rules, as strict as AWS (nftables, bridge family, in the vpc namespace):
//! - source/destination check on every instance port but the router's: an IPv4 frame from a
//!   port whose source is not that instance's VPC address is dropped, and so is one to a
//!   port whose destination is not (multicast and broadcast aside) — a reply leaving a node
//!   from its overlay address through `eth0` is lost, exactly as on EC2;
//! - the TGW stand-in never relays one member's IGMP message to another member (a TGW does
//!   not; a snooping bridge forwards reports to the group's members, whose IGMPv2 report
//!   suppression would then make them vanish at the next query). The bridge still snoops
//!   them: snooping happens before the forward hook.
//!
//! - with unicast flooding there is no TGW at all: every multicast frame is dropped (counted),
//!   as a VPC without a multicast domain does.
//!
//! Drops are counted in named counters that `overlay-lab status` prints.

use crate::topo::{self, Topology};
use anyhow::{Context, Result};
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::process::Command;

pub const TABLE: &str = "vpc";
pub const COUNTERS: [(&str, &str); 4] = [
    ("src_check_drops", "source/destination check: wrong source"),
    (
        "dst_check_drops",
        "source/destination check: wrong destination",
    ),
    (
        "igmp_relay_drops",
        "IGMP messages not relayed between members",
    ),
    (
        "multicast_drops",
        "multicast dropped: no TGW multicast domain (unicast flooding)",
    ),
];

/// (port in the vpc namespace, the instance's VPC address) for every checked instance.
pub fn checked_ports(t: &Topology) -> Vec<(String, std::net::Ipv4Addr)> {
    let mut v: Vec<(String, std::net::Ipv4Addr)> = t
        .nodes
        .iter()
        .filter(|n| n.role != topo::Role::Router)
        .map(|n| (n.vpc_port.clone(), n.underlay_ip))
        .collect();
    v.push((topo::CLIENT_PORT.to_string(), t.client_ip));
    v
}

/// The nftables ruleset (one transaction).
pub fn ruleset(t: &Topology) -> String {
    let ports = checked_ports(t);
    let names: Vec<String> = ports.iter().map(|(p, _)| format!("\"{p}\"")).collect();
    let pairs: Vec<String> = ports
        .iter()
        .map(|(p, a)| format!("\"{p}\" . {a}"))
        .collect();
    let bcast = format!(
        "224.0.0.0/4, 255.255.255.255, {}, {}, {}",
        topo::broadcast(topo::UNDERLAY_GW, topo::UNDERLAY_LEN),
        topo::broadcast(topo::UNDERLAY_GW_B, topo::UNDERLAY_LEN),
        topo::broadcast(topo::CLIENT_GW, topo::CLIENT_LEN)
    );
    // two AZs: the TGW multicast domain spans both subnets, so the group's VXLAN traffic
    // (UDP to a multicast address) crosses the link between their bridges — nothing else
    // (ARP, unicast, IGMP: the subnets are routed, as in a VPC)
    let az_link = if t.azs == 2 {
        let (a, b) = topo::AZ_LINK;
        format!(
            "oifname {{ \"{a}\", \"{b}\" }} ether type ip ip daddr 224.0.0.0/4 meta l4proto udp accept\n    \
             oifname {{ \"{a}\", \"{b}\" }} drop\n    "
        )
    } else {
        String::new()
    };
    let mut s = String::new();
    let _ = writeln!(s, "table bridge {TABLE} {{");
    for (c, what) in COUNTERS {
        let _ = writeln!(s, "  counter {c} {{ comment \"{what}\" }}");
    }
    let _ = writeln!(
        s,
        "  set instance_ports {{ type ifname; elements = {{ {} }} }}",
        names.join(", ")
    );
    let _ = writeln!(
        s,
        "  set instance_addrs {{ type ifname . ipv4_addr; elements = {{ {} }} }}",
        pairs.join(", ")
    );
    let dst = format!(
        "oifname @instance_ports ether type ip ip daddr != {{ {bcast} }} oifname . ip daddr != @instance_addrs counter name dst_check_drops drop"
    );
    // No multicast domain: the VPC delivers no multicast at all (IGMP included), dropped as
    // it enters the switch (before the bridge's own flooding decisions).
    let no_mcast = if t.flood.unicast() {
        "ether type ip ip daddr 224.0.0.0/4 counter name multicast_drops drop\n    "
    } else {
        ""
    };
    let _ = writeln!(
        s,
        "  chain ingress_check {{ type filter hook prerouting priority 0; policy accept;\n    \
         {no_mcast}iifname @instance_ports ether type ip iifname . ip saddr != @instance_addrs counter name src_check_drops drop\n  }}"
    );
    let _ = writeln!(
        s,
        "  chain forward_check {{ type filter hook forward priority 0; policy accept;\n    \
         ether type ip ip protocol igmp counter name igmp_relay_drops drop\n    {az_link}{dst}\n  }}"
    );
    let _ = writeln!(
        s,
        "  chain egress_check {{ type filter hook output priority 0; policy accept;\n    {no_mcast}{dst}\n  }}"
    );
    s.push_str("}\n");
    s
}

pub fn install(t: &Topology) -> Result<()> {
    crate::sys::run_ok(
        Command::new("ip").args(["netns", "exec", &t.vpc_ns, "nft", "-f", "-"]),
        Some(&ruleset(t)),
    )
    .map(|_| ())
    .context("installing the VPC's source/destination check (nftables)")
}

/// The drop counters: {"src_check_drops": N, ...} (packets).
pub fn counters(vpc_ns: &str) -> Result<Value> {
    let out = crate::sys::run_ok(
        Command::new("ip").args([
            "netns", "exec", vpc_ns, "nft", "-j", "list", "counters", "table", "bridge", TABLE,
        ]),
        None,
    )?;
    let v: Value = serde_json::from_str(&out)?;
    let mut m = serde_json::Map::new();
    for item in v["nftables"].as_array().into_iter().flatten() {
        if let Some(c) = item.get("counter") {
            if let Some(name) = c["name"].as_str() {
                m.insert(name.to_string(), json!(c["packets"].as_u64().unwrap_or(0)));
            }
        }
    }
    Ok(Value::Object(m))
}

pub fn render_counters(v: &Value) -> String {
    let g = |k: &str| v[k].as_u64().unwrap_or(0);
    format!(
        "VPC source/destination check drops: {} wrong source, {} wrong destination; \
         IGMP messages not relayed between members: {}; multicast dropped (no TGW): {}\n",
        g("src_check_drops"),
        g("dst_check_drops"),
        g("igmp_relay_drops"),
        g("multicast_drops")
    )
}

/// The counter of unknown-unicast flooding on the underlay: VXLAN packets the VPC delivers to
/// a node that carry a unicast frame for a MAC that node does not have (its bridge's, its
/// VMs'). A VTEP that knows where a MAC lives sends one copy to that node; one that does not
/// (no FDB entry) replicates the frame to every remote VTEP, and all but one copy land here.
pub const UNKNOWN_UNICAST: &str = "unknown_unicast_copies";

/// Install the [`UNKNOWN_UNICAST`] counter (modes without multicast: the copies are unicast
/// on the underlay). `owned`: each node's VPC port and the MACs behind it.
pub fn install_unknown_unicast(t: &Topology, owned: &[(String, Vec<[u8; 6]>)]) -> Result<()> {
    let mut s = String::new();
    let _ = writeln!(s, "add counter bridge {TABLE} {UNKNOWN_UNICAST}");
    // postrouting: bridged (same subnet) and routed (the other AZ) packets alike
    let _ = writeln!(
        s,
        "add chain bridge {TABLE} unknown_unicast {{ type filter hook postrouting priority 0; policy accept; }}"
    );
    for (port, macs) in owned {
        let set: Vec<String> = macs
            .iter()
            .map(|m| {
                format!(
                    "0x{}",
                    m.iter().map(|b| format!("{b:02x}")).collect::<String>()
                )
            })
            .collect();
        // @th,128: the inner Ethernet destination (after 8 bytes of UDP and 8 of VXLAN);
        // bit 135 is its group bit (0: unicast)
        let _ = writeln!(
            s,
            "add rule bridge {TABLE} unknown_unicast oifname \"{port}\" ether type ip udp dport {} @th,135,1 0 @th,128,48 != {{ {} }} counter name {UNKNOWN_UNICAST}",
            4789,
            set.join(", ")
        );
    }
    crate::sys::run_ok(
        Command::new("ip").args(["netns", "exec", &t.vpc_ns, "nft", "-f", "-"]),
        Some(&s),
    )
    .map(|_| ())
    .context("installing the unknown-unicast counter (nftables)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn router_port_is_exempt_and_every_other_instance_checked() {
        let t = Topology::new("t", 2, 1, "239.255.0.1".parse().unwrap(), 100, 1500);
        let p = checked_ports(&t);
        assert!(!p.iter().any(|(n, _)| n == "u-router"));
        assert!(p
            .iter()
            .any(|(n, a)| n == "u-h2" && a.to_string() == "10.0.0.11"));
        assert!(p.iter().any(|(n, _)| n == topo::CLIENT_PORT));
        let r = ruleset(&t);
        assert!(r.contains("\"u-mgmt\" . 10.0.0.5"));
        assert!(r.contains("10.0.3.255") && r.contains("10.0.8.255"));
        assert!(r.contains("hook output") && r.contains("hook forward"));
        assert!(!r.contains("name multicast_drops drop"));
    }

    #[test]
    fn without_a_tgw_every_multicast_frame_is_dropped() {
        let mut t = Topology::new("t", 2, 1, "239.255.0.1".parse().unwrap(), 100, 1500);
        t.flood = topo::Flood::UnicastStatic;
        let r = ruleset(&t);
        assert_eq!(
            r.matches("ip daddr 224.0.0.0/4 counter name multicast_drops drop")
                .count(),
            2
        );
    }
}
