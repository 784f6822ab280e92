//! The bridge's ports: the VTEP (ethvxlan0) of every role with a VXLAN, the dummy port
//! (ethdummy0, or a veth pair) of standalone. An existing port of the right kind is kept and
//! its drift repaired (owner mark, MTU, master, up, shared in [`keep_port`]); one the kernel
//! cannot change in place is deleted and re-created; a foreign link with our name is refused.

use super::{conflict, sysctl_op, Op, Plan};
use crate::config::ConfigError;
use crate::desired::disable_ipv6_key;
use crate::model::*;

/// Why an existing VTEP cannot be kept (the kernel refuses in-place VNI/port changes).
pub(super) fn vtep_mismatch(l: &Link, v: &VtepSpec, underlay_index: Option<u32>) -> Option<String> {
    if l.kind.as_deref() != Some("vxlan") {
        return Some(format!(
            "is a {} link, not vxlan",
            l.kind.as_deref().unwrap_or("plain")
        ));
    }
    let x = l.vxlan.clone().unwrap_or_default();
    let show = |v: Option<String>| v.unwrap_or_else(|| "none".into());
    if x.vni != Some(v.vni) {
        return Some(format!(
            "vni {} != {}",
            show(x.vni.map(|n| n.to_string())),
            v.vni
        ));
    }
    if x.port != Some(v.port) {
        return Some(format!(
            "dstport {} != {}",
            show(x.port.map(|n| n.to_string())),
            v.port
        ));
    }
    if x.group != v.group {
        return Some(format!(
            "group {} != {}",
            show(x.group.map(|n| n.to_string())),
            show(v.group.map(|n| n.to_string()))
        ));
    }
    if x.dev != underlay_index || underlay_index.is_none() {
        return Some(format!("underlay device differs from {}", v.underlay));
    }
    if x.learning != Some(v.learning) {
        return Some(format!(
            "learning is {}",
            if x.learning == Some(true) {
                "on"
            } else {
                "off"
            }
        ));
    }
    if v.local.is_some() && x.local != v.local {
        return Some(format!(
            "local {} != {}",
            show(x.local.map(|n| n.to_string())),
            show(v.local.map(|n| n.to_string()))
        ));
    }
    None
}

/// flood = evpn: the VTEP's bridge port suppresses ARP and learns nothing.
fn bridge_port_ops(p: &mut Plan, v: &VtepSpec, have: Option<BrPortInfo>) {
    if !v.neigh_suppress {
        return;
    }
    let ok = have.is_some_and(|b| b.neigh_suppress == Some(true) && b.learning == Some(false));
    if !ok {
        p.ops.push(Op::SetBridgePort {
            name: v.name.clone(),
            neigh_suppress: true,
            learning: false,
        });
    }
}

/// Drift of a port that is kept: MTU, master.
fn keep_port(p: &mut Plan, o: &Observed, l: &Link, mtu: u32, bridge: &str, bridge_created: bool) {
    if l.mtu != mtu {
        p.ops.push(Op::SetMtu {
            name: l.name.clone(),
            mtu,
            from: l.mtu,
        });
    }
    let master_ok =
        !bridge_created && l.master.is_some() && l.master == o.link(bridge).map(|b| b.index);
    if !master_ok {
        p.ops.push(Op::SetMaster {
            name: l.name.clone(),
            master: bridge.to_string(),
        });
    }
}

/// Standalone's port is a dummy, or a veth pair where the kernel has no dummy driver.
pub(super) fn is_dummy_port(l: &Link) -> bool {
    matches!(l.kind.as_deref(), Some("dummy") | Some("veth"))
}

fn set_up(p: &mut Plan, l: &Link) {
    if !l.up {
        p.ops.push(Op::SetUp {
            name: l.name.clone(),
        });
    }
}

pub(super) fn plan_vtep(
    p: &mut Plan,
    d: &Desired,
    o: &Observed,
    bridge_created: bool,
) -> Result<(), ConfigError> {
    let Some(v) = &d.vtep else {
        return Ok(());
    };
    let br = &d.bridge;
    let ul_index = o.link(&d.underlay).map(|l| l.index);
    let mut create = false;
    match o.link(&v.name) {
        None => create = true,
        Some(l) if !l.owned() => {
            return Err(match vtep_mismatch(l, v, ul_index) {
                Some(why) => conflict(
                    "vtep",
                    &v.name,
                    format!("an existing link with this name {why} and overlayd did not create it; remove or rename it"),
                ),
                None => super::not_ours("vtep", &v.name),
            })
        }
        Some(l) => {
            if let Some(why) = vtep_mismatch(l, v, ul_index) {
                p.ops.push(Op::DeleteLink {
                    name: v.name.clone(),
                    why: format!("incompatible: {why}; the kernel cannot change this in place"),
                });
                create = true;
            } else {
                keep_port(p, o, l, v.mtu, &br.name, bridge_created);
                // a port (re-)enslaved starts with the bridge's defaults
                let fresh = p
                    .ops
                    .iter()
                    .any(|op| matches!(op, Op::SetMaster { name, .. } if *name == v.name));
                bridge_port_ops(p, v, if fresh { None } else { l.brport });
                sysctl_op(p, o, &disable_ipv6_key(&v.name), "1", false, false);
                set_up(p, l);
            }
        }
    }
    if create {
        p.ops.push(Op::CreateVtep {
            name: v.name.clone(),
            vni: v.vni,
            port: v.port,
            group: v.group,
            underlay: v.underlay.clone(),
            mtu: v.mtu,
            master: br.name.clone(),
            local: v.local,
            learning: v.learning,
        });
        bridge_port_ops(p, v, None);
        // Created enslaved and up in one netlink request.
        sysctl_op(p, o, &disable_ipv6_key(&v.name), "1", false, true);
    }
    // a new VTEP starts with the kernel's default (on)
    if v.tx_checksum_off && (create || o.vtep_tx_checksum != Some(false)) {
        p.ops.push(Op::SetTxChecksumOff {
            name: v.name.clone(),
        });
    }
    Ok(())
}

/// Unicast flooding: the VTEP's all-zeros FDB entries become exactly the peers. Missing
/// ones are added; one of ours (recorded when added) whose peer left is removed; entries
/// someone else added are never removed. With the peers unknown (EC2 never answered yet)
/// nothing changes: an error never flushes the flood list.
pub(super) fn plan_flood_list(p: &mut Plan, d: &Desired, o: &Observed) {
    let Some(fl) = &d.flood_list else {
        return;
    };
    let Some(want) = &fl.peers else {
        return;
    };
    // A VTEP (re-)created by this plan starts with an empty FDB.
    let created = p
        .ops
        .iter()
        .any(|op| matches!(op, Op::CreateVtep { name, .. } if *name == fl.vtep));
    let empty = std::collections::BTreeSet::new();
    let have = if created { &empty } else { &o.flood_list };
    let add: Vec<_> = want.difference(have).copied().collect();
    let remove: Vec<_> = have
        .intersection(&o.flood_list_owned)
        .filter(|ip| !want.contains(ip))
        .copied()
        .collect();
    if !add.is_empty() || !remove.is_empty() {
        p.ops.push(Op::SetFloodList {
            vtep: fl.vtep.clone(),
            add,
            remove,
        });
    }
}

pub(super) fn plan_dummy(
    p: &mut Plan,
    d: &Desired,
    o: &Observed,
    bridge_created: bool,
) -> Result<(), ConfigError> {
    let Some(dm) = &d.dummy else {
        return Ok(());
    };
    let br = &d.bridge;
    let mut create = false;
    match o.link(&dm.name) {
        None => create = true,
        Some(l) if !l.owned() => {
            return Err(if is_dummy_port(l) {
                super::not_ours("dummy", &dm.name)
            } else {
                conflict(
                    "dummy",
                    &dm.name,
                    format!(
                        "an existing {} link has this name and overlayd did not create it",
                        l.kind.as_deref().unwrap_or("physical")
                    ),
                )
            })
        }
        Some(l) if !is_dummy_port(l) => {
            p.ops.push(Op::DeleteLink {
                name: dm.name.clone(),
                why: "not a dummy".into(),
            });
            create = true;
        }
        Some(l) => {
            keep_port(p, o, l, dm.mtu, &br.name, bridge_created);
            set_up(p, l);
            if l.kind.as_deref() == Some("veth") {
                if let Some(peer) = l.link.and_then(|i| o.link_by_index(i)) {
                    set_up(p, peer);
                }
            }
        }
    }
    if create {
        p.ops.push(Op::CreateDummy {
            name: dm.name.clone(),
            veth_peer: dm.veth_peer.clone(),
            mtu: dm.mtu,
            master: br.name.clone(),
        });
    }
    Ok(())
}
