//! The overlay bridge (cloudbr0): kind, owner mark, pinned MAC, MTU, STP, IGMP snooping,
//! IPv6 off, the overlay address; up last (after its ports).

use super::{conflict, sysctl_op, Op, Plan};
use crate::config::ConfigError;
use crate::desired::disable_ipv6_key;
use crate::model::*;

/// Plan the bridge; returns whether it is (re-)created by this plan.
pub(super) fn plan_bridge(p: &mut Plan, d: &Desired, o: &Observed) -> Result<bool, ConfigError> {
    let br = &d.bridge;
    let mac = Mac(br.mac);
    // (Snooping is set in the creating request; see BridgeSpec::mcast_snooping.)
    let mut bridge_created = false;
    match o.link(&br.name) {
        Some(l) if l.kind.as_deref() != Some("bridge") => {
            if !l.owned() {
                return Err(conflict(
                    "bridge",
                    &br.name,
                    format!(
                        "an existing {} link has this name and overlayd did not create it; remove or rename it",
                        l.kind.as_deref().unwrap_or("physical")
                    ),
                ));
            }
            p.ops.push(Op::DeleteLink {
                name: br.name.clone(),
                why: "not a bridge".into(),
            });
            bridge_created = true;
        }
        None => bridge_created = true,
        Some(l) if !l.owned() => return Err(super::not_ours("bridge", &br.name)),
        Some(l) => {
            if l.mac != br.mac {
                p.ops.push(Op::SetMac {
                    name: br.name.clone(),
                    mac,
                    from: fmt_mac(&l.mac),
                });
            }
            if l.mtu != br.mtu {
                p.ops.push(Op::SetMtu {
                    name: br.name.clone(),
                    mtu: br.mtu,
                    from: l.mtu,
                });
            }
            if l.stp.unwrap_or(0) != 0 {
                p.ops.push(Op::SetStpOff {
                    name: br.name.clone(),
                });
            }
            if l.mcast_snooping.is_some_and(|s| s != br.mcast_snooping) {
                p.ops.push(Op::SetMcastSnooping {
                    name: br.name.clone(),
                    on: br.mcast_snooping,
                });
            }
        }
    }
    if bridge_created {
        p.ops.push(Op::CreateBridge {
            name: br.name.clone(),
            mac,
            mtu: br.mtu,
            mcast_snooping: br.mcast_snooping,
        });
    }
    sysctl_op(
        p,
        o,
        &disable_ipv6_key(&br.name),
        "1",
        false,
        bridge_created,
    );
    let br_link = if bridge_created {
        None
    } else {
        o.link(&br.name)
    };
    let has_addr = br_link.is_some_and(|l| o.addrs_of(l.index).any(|a| a.addr == br.address));
    if !has_addr {
        p.ops.push(Op::AddAddress {
            dev: br.name.clone(),
            addr: br.address,
        });
    }
    if let Some(l) = br_link {
        for a in o.addrs_of(l.index).filter(|a| a.addr != br.address) {
            p.warnings.push(format!(
                "{} also carries {} (not configured; left alone)",
                br.name, a.addr
            ));
        }
    }
    Ok(bridge_created)
}

/// A created bridge is created up; an existing one is set up after its ports.
pub(super) fn plan_bridge_up(p: &mut Plan, d: &Desired, o: &Observed, bridge_created: bool) {
    if bridge_created {
        return;
    }
    if !o.link(&d.bridge.name).is_some_and(|l| l.up) {
        p.ops.push(Op::SetUp {
            name: d.bridge.name.clone(),
        });
    }
}
