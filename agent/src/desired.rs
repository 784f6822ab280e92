//! config + host facts → [`Desired`]. Pure: the observed state is only read for facts about
//! things overlayd does not own (the underlay: its existence, MTU and subnet).

use crate::config::{Config, ConfigError, Mtu, Role, MTU_CAP, VXLAN_OVERHEAD};
use crate::model::*;
use overlay_router::nat::NatSpec;

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
pub fn disable_ipv6_key(dev: &str) -> String {
    format!("net/ipv6/conf/{dev}/disable_ipv6")
}

/// Resolve the underlay name: configured, or the interface of the default route.
pub fn underlay_name(cfg: &Config, obs: &Observed) -> Result<String, ConfigError> {
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
    };

    let mut sysctls = Vec::new();
    let vtep = if cfg.role.has_vtep() {
        // Must be written before the VTEP joins its group: the first report goes out
        // as IGMPv3 otherwise, which a Transit Gateway ignores.
        sysctls.push(SysctlSpec {
            key: igmp_key(&underlay),
            value: "2".into(),
            restore: true,
        });
        Some(VtepSpec {
            name: cfg.vtep.clone(),
            vni: cfg.vni,
            port: cfg.port,
            group: cfg.group.expect("validated: group present for VTEP roles"),
            underlay: underlay.clone(),
            mtu,
        })
    } else {
        None
    };
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
        });
    }
    // IPv6 off on the overlay devices (they are ours: no restore needed).
    sysctls.push(SysctlSpec {
        key: disable_ipv6_key(&cfg.bridge),
        value: "1".into(),
        restore: false,
    });
    if let Some(v) = &vtep {
        sysctls.push(SysctlSpec {
            key: disable_ipv6_key(&v.name),
            value: "1".into(),
            restore: false,
        });
    }

    let default_route = cfg.gateway.map(|g| RouteSpec {
        gateway: g,
        dev: cfg.bridge.clone(),
        metric: cfg.route_metric,
    });

    let nat = (cfg.nat && cfg.role.forwards()).then(|| NatSpec {
        overlay: subnet,
        underlay: underlay.clone(),
        exceptions: cfg.nat_exceptions.clone(),
    });

    Ok(Desired {
        role: cfg.role,
        underlay,
        bridge,
        vtep,
        dummy,
        default_route,
        sysctls,
        hosts_line: cfg.fqdn.clone().map(|f| (cfg.address.addr(), f)),
        dns: cfg.dns.clone(),
        nat,
        hosts_file: cfg.hosts_file.display().to_string(),
        resolv_conf: cfg.resolv_conf.display().to_string(),
    })
}
