//! config + host facts → [`Desired`]. Pure: the observed state is only read for facts about
//! things overlayd does not own (the underlay: its existence, MTU and subnet).

use crate::config::{
    Config, ConfigError, Flood, GatewayMode, Mtu, PeerDiscovery, Role, MTU_CAP, VXLAN_OVERHEAD,
};
use crate::model::*;
use ipnet::Ipv4Net;
use overlay_router::nat::NatSpec;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

fn fact_err(key: &str, value: impl std::fmt::Display, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        value: value.to_string(),
        source: None,
        reason: reason.into(),
    }
}

/// The per-device sysctl that makes IGMP reports on the underlay version 2.
pub fn igmp_key(underlay: &str) -> String {
    format!("net/ipv4/conf/{underlay}/force_igmp_version")
}
pub const IP_FORWARD: &str = "net/ipv4/ip_forward";
/// Per network namespace: how many groups one socket may join. Every CloudStack guest
/// VXLAN on a host joins its group through the same kernel socket (dstport 8472).
pub const IGMP_MAX_MEMBERSHIPS: &str = "net/ipv4/igmp_max_memberships";
pub fn disable_ipv6_key(dev: &str) -> String {
    format!("net/ipv6/conf/{dev}/disable_ipv6")
}

/// Resolve the underlay name: configured, or the interface of the default route.
pub fn underlay_name(cfg: &Config, obs: &Observed) -> Result<String, ConfigError> {
    if let (None, Some(mac)) = (&cfg.underlay, &cfg.underlay_mac) {
        return obs
            .links
            .iter()
            .find(|l| fmt_mac(&l.mac).eq_ignore_ascii_case(mac))
            .map(|l| l.name.clone())
            .ok_or_else(|| {
                fact_err(
                    "underlay",
                    "auto",
                    format!("no interface has the MAC {mac} that IMDS reports for this instance"),
                )
            });
    }
    match &cfg.underlay {
        Some(u) => Ok(u.clone()),
        None => obs
            .default_route_dev(&cfg.bridge)
            .map(|l| l.name.clone())
            .ok_or_else(|| {
                fact_err(
                    "underlay",
                    "",
                    "not set and there is no default route to take it from; pass --underlay (e.g. eth0)",
                )
            }),
    }
}

pub fn desired(cfg: &Config, obs: &Observed) -> Result<Desired, ConfigError> {
    desired_with(cfg, obs, None)
}

/// [`desired`] with the peers EC2 discovery found (`discovered`; None = not known yet). Static
/// peers come from the configuration.
pub fn desired_with(
    cfg: &Config,
    obs: &Observed,
    discovered: Option<&BTreeSet<Ipv4Addr>>,
) -> Result<Desired, ConfigError> {
    let underlay = underlay_name(cfg, obs)?;
    let ul = obs.link(&underlay).ok_or_else(|| {
        fact_err(
            "underlay",
            &underlay,
            "no such interface in this network namespace",
        )
    })?;
    if ul.kind.as_deref() == Some("bridge") && ul.name == cfg.bridge {
        return Err(fact_err(
            "underlay",
            &underlay,
            "the underlay cannot be the overlay bridge",
        ));
    }
    // The overlay must not overlap any subnet on the underlay.
    let subnet = cfg.address.trunc();
    for a in obs.addrs_of(ul.index) {
        let un = a.addr.trunc();
        if un.contains(&subnet.network()) || subnet.contains(&un.network()) {
            return Err(ConfigError {
                key: "address".into(),
                value: cfg.address.to_string(),
                source: None,
                reason: format!(
                    "overlay subnet {subnet} overlaps the underlay subnet {un} on {underlay}"
                ),
            });
        }
    }

    let mtu = match cfg.mtu {
        Mtu::Auto => {
            if cfg.role.has_vtep() {
                if ul.mtu < 68 + VXLAN_OVERHEAD {
                    return Err(fact_err(
                        "mtu",
                        "auto",
                        format!(
                            "underlay {underlay} MTU {} leaves no room for VXLAN",
                            ul.mtu
                        ),
                    ));
                }
                (ul.mtu - VXLAN_OVERHEAD).min(MTU_CAP)
            } else {
                ul.mtu.min(1500)
            }
        }
        Mtu::Fixed(n) => {
            if cfg.role.has_vtep() && n > ul.mtu.saturating_sub(VXLAN_OVERHEAD) {
                return Err(fact_err(
                    "mtu",
                    n,
                    format!(
                        "above the underlay {underlay} MTU {} minus {VXLAN_OVERHEAD} bytes of VXLAN overhead (max {})",
                        ul.mtu,
                        ul.mtu.saturating_sub(VXLAN_OVERHEAD)
                    ),
                ));
            }
            n
        }
    };

    let bridge = BridgeSpec {
        name: cfg.bridge.clone(),
        mac: bridge_mac(cfg.address.addr()),
        mtu,
        address: cfg.address,
        mcast_snooping: false,
    };

    let mut sysctls = Vec::new();
    let unicast = cfg.flood == Flood::Unicast;
    let evpn_cfg = cfg.evpn.as_ref().filter(|_| cfg.flood == Flood::Evpn);
    // EVPN: the VTEP's tunnel source is the underlay's (first) address, which FRR
    // advertises as this node's VTEP.
    let local = match evpn_cfg {
        None => None,
        Some(_) => Some(
            obs.addrs_of(ul.index)
                .map(|a| a.addr.addr())
                .next()
                .ok_or_else(|| {
                    fact_err(
                        "underlay",
                        &underlay,
                        "flood = evpn needs the underlay's address (the VTEP's tunnel source) and it has none yet",
                    )
                })?,
        ),
    };
    let vtep = if cfg.role.has_vtep() {
        if cfg.flood.uses_group() {
            // Must be written before the VTEP joins its group: the first report goes out
            // as IGMPv3 otherwise, which a Transit Gateway ignores.
            sysctls.push(SysctlSpec {
                key: igmp_key(&underlay),
                value: "2".into(),
                restore: true,
                want: SysctlWant::Exact,
            });
        }
        Some(VtepSpec {
            name: cfg.vtep.clone(),
            vni: cfg.vni,
            port: cfg.port,
            group: if cfg.flood.uses_group() {
                Some(
                    cfg.group
                        .expect("validated: group present for multicast VTEPs"),
                )
            } else {
                None
            },
            underlay: underlay.clone(),
            mtu,
            tx_checksum_off: cfg.vtep_tx_checksum_off,
            local,
            learning: evpn_cfg.is_none(),
            neigh_suppress: evpn_cfg.is_some(),
        })
    } else {
        None
    };
    // Unicast flooding: every peer but this node itself (any address of the underlay).
    let flood_list = vtep.as_ref().filter(|_| unicast).map(|v| {
        let own: Vec<Ipv4Addr> = obs.addrs_of(ul.index).map(|a| a.addr.addr()).collect();
        let peers = match cfg.peer_discovery {
            Some(PeerDiscovery::Ec2) => discovered.cloned(),
            _ => Some(cfg.peers.iter().copied().collect()),
        };
        FloodList {
            vtep: v.name.clone(),
            peers: peers.map(|p| p.into_iter().filter(|ip| !own.contains(ip)).collect()),
        }
    });
    let dummy = (cfg.role == Role::Standalone).then(|| DummySpec {
        name: cfg.dummy.clone(),
        veth_peer: format!("{}p", cfg.dummy),
        mtu,
    });
    if cfg.role.forwards() {
        sysctls.push(SysctlSpec {
            key: IP_FORWARD.into(),
            value: "1".into(),
            restore: true,
            want: SysctlWant::Exact,
        });
    }
    if cfg.role.runs_guests() && cfg.igmp_max_memberships > 0 {
        sysctls.push(SysctlSpec {
            key: IGMP_MAX_MEMBERSHIPS.into(),
            value: cfg.igmp_max_memberships.to_string(),
            restore: true,
            want: SysctlWant::AtLeast,
        });
    }
    // IPv6 off on the overlay devices (they are ours: no restore needed).
    sysctls.push(SysctlSpec {
        key: disable_ipv6_key(&cfg.bridge),
        value: "1".into(),
        restore: false,
        want: SysctlWant::Exact,
    });
    if let Some(v) = &vtep {
        sysctls.push(SysctlSpec {
            key: disable_ipv6_key(&v.name),
            value: "1".into(),
            restore: false,
            want: SysctlWant::Exact,
        });
    }

    let (routes, rules) = routing(cfg, &underlay);

    let nat = (cfg.nat && cfg.role.forwards()).then(|| NatSpec {
        overlay: subnet,
        underlay: underlay.clone(),
        exceptions: cfg.nat_exceptions.clone(),
    });

    // The route reflectors: listed, or (peer_discovery = ec2) the routers EC2 found; none
    // found yet: no speaker yet (an API outage keeps the last good set, never an empty one)
    let reflectors: Option<Vec<Ipv4Addr>> = evpn_cfg.and_then(|e| match cfg.peer_discovery {
        Some(PeerDiscovery::Ec2) => discovered.map(|d| d.iter().copied().collect()),
        _ => Some(e.reflectors.clone()),
    });
    let evpn = match (evpn_cfg, &vtep, local, reflectors) {
        (Some(e), Some(v), Some(local), Some(reflectors)) => {
            let own: Vec<Ipv4Net> = obs.addrs_of(ul.index).map(|a| a.addr).collect();
            Some(crate::evpn::EvpnSpec {
                asn: e.asn,
                router_id: local,
                local,
                vni: v.vni,
                bridge: cfg.bridge.clone(),
                vtep: v.name.clone(),
                reflector: e.reflector,
                reflectors: reflectors
                    .into_iter()
                    .filter(|r| !own.iter().any(|a| a.addr() == *r))
                    .collect(),
                listen: if e.listen.is_empty() {
                    own.iter().map(|a| a.trunc()).take(1).collect()
                } else {
                    e.listen.clone()
                },
                hold_secs: e.hold_secs,
                frr: e.frr,
                frr_dir: e.frr_dir.display().to_string(),
            })
        }
        _ => None,
    };
    let ha_underlay = underlay.clone();
    Ok(Desired {
        role: cfg.role,
        underlay,
        bridge,
        vtep,
        flood_list,
        dummy,
        gateway_mode: cfg.gateway.map(|_| cfg.gateway_mode),
        routes,
        rules,
        sysctls,
        hosts_line: cfg.fqdn.clone().map(|f| (cfg.address.addr(), f)),
        dns: cfg.dns.clone(),
        nat,
        ha: cfg.ha.as_ref().map(|h| crate::ha::HaSpec {
            vip: h.vip,
            prefix_len: cfg.address.prefix_len(),
            local: cfg.address.addr(),
            peer: h.peer,
            bridge: cfg.bridge.clone(),
            underlay: ha_underlay.clone(),
            vrid: crate::ha::VRID,
            priority: h.priority,
            advert_ms: h.advert_ms,
            preempt: h.preempt,
        }),
        evpn,
        hosts_file: cfg.hosts_file.display().to_string(),
        resolv_conf: cfg.resolv_conf.display().to_string(),
    })
}

/// MTU of CloudStack's guest VXLAN networks nested in the overlay (bridge MTU − 50), for
/// the roles that run guests.
pub fn guest_mtu(d: &Desired) -> Option<u32> {
    d.role
        .runs_guests()
        .then(|| d.bridge.mtu.saturating_sub(VXLAN_OVERHEAD))
}

/// The routes and rules of a node (see README, "Routing").
///
/// Every role: a /32 per AWS link-local service (IMDS, DNS resolver, time sync) on the
/// underlay, so a CloudStack `cloud0` with 169.254.0.1/16 cannot capture them.
///
/// Host/management with a gateway:
/// - always: `from <overlay address> lookup <route_table>`, and in that table the overlay
///   subnet on the bridge (node-to-node traffic stays direct) and a default via the
///   gateway, so replies to VPC clients that reached the node through the router go back
///   through it (the VPC's source/destination check drops them on the underlay);
/// - overlay-sourced: a main-table default via the gateway only as a fallback, while the
///   node has no default route of its own;
/// - all: 0.0.0.0/1 and 128.0.0.0/1 via the gateway in main — more specific than any
///   default route, so a DHCP client re-adding its default on renewal neither wins nor
///   collides (EEXIST) with ours; its route stays as the fallback.
pub fn routing(cfg: &Config, underlay: &str) -> (Vec<RouteSpec>, Vec<RuleSpec>) {
    let mut routes = Vec::new();
    let mut rules = Vec::new();
    for a in &cfg.link_local_routes {
        routes.push(RouteSpec {
            table: RT_TABLE_MAIN,
            dst: Ipv4Net::new(*a, 32).expect("/32"),
            gateway: None,
            dev: underlay.to_string(),
            metric: 0,
            src: None,
            fallback: false,
            why: "AWS link-local service stays on the underlay".into(),
        });
    }
    let Some(gw) = cfg.gateway else {
        return (routes, rules);
    };
    let br = &cfg.bridge;
    let via = |table: u32, dst: Ipv4Net, fallback: bool, why: &str| RouteSpec {
        table,
        dst,
        gateway: Some(gw),
        dev: br.clone(),
        metric: if table == RT_TABLE_MAIN {
            cfg.route_metric
        } else {
            0
        },
        src: None,
        fallback,
        why: why.into(),
    };
    rules.push(RuleSpec {
        priority: RULE_PRIORITY,
        from: Ipv4Net::new(cfg.address.addr(), 32).expect("/32"),
        table: cfg.route_table,
    });
    routes.push(RouteSpec {
        table: cfg.route_table,
        dst: cfg.address.trunc(),
        gateway: None,
        dev: br.clone(),
        metric: 0,
        src: Some(cfg.address.addr()),
        fallback: false,
        why: "overlay-sourced traffic to the overlay stays direct".into(),
    });
    routes.push(via(
        cfg.route_table,
        Ipv4Net::default(),
        false,
        "overlay-sourced traffic leaves through the gateway",
    ));
    match cfg.gateway_mode {
        GatewayMode::OverlaySourced => routes.push(via(
            RT_TABLE_MAIN,
            Ipv4Net::default(),
            true,
            "the node has no default route of its own",
        )),
        GatewayMode::All => {
            for half in ["0.0.0.0/1", "128.0.0.0/1"] {
                routes.push(via(
                    RT_TABLE_MAIN,
                    half.parse().expect("half"),
                    false,
                    "gateway_mode = all: everything through the gateway",
                ));
            }
        }
    }
    (routes, rules)
}
