//! The VTEP (ethvxlan0): VNI, dstport, group (none with unicast flooding), underlay,
//! learning; created enslaved and up.

use super::{nl_err, Nl, R};
use crate::model::*;
use rtnetlink::LinkVxlan;
use std::net::Ipv4Addr;

/// What the kernel cannot change in place on a VTEP.
pub struct VtepArgs {
    pub vni: u32,
    pub port: u16,
    pub group: Option<Ipv4Addr>,
    pub local: Option<Ipv4Addr>,
    pub learning: bool,
}

pub async fn create_vtep(
    h: &Nl,
    name: &str,
    v: &VtepArgs,
    underlay: &str,
    mtu: u32,
    master: &str,
) -> R<()> {
    let ul = h.index(underlay).await?;
    let br = h.index(master).await?;
    let mut b = LinkVxlan::new(name, v.vni).dev(ul).port(v.port);
    if let Some(g) = v.group {
        b = b.group(g);
    }
    if let Some(a) = v.local {
        b = b.local(a);
    }
    let msg = b
        .learning(v.learning)
        .mtu(mtu)
        .controller(br)
        .link_group(OWNER_GROUP)
        .up()
        .build();
    // Created owned, enslaved and up in one request: force_igmp_version was written before
    // this (the plan orders it), so the join it triggers is already IGMPv2.
    h.link()
        .add(msg)
        .execute()
        .await
        .map_err(|e| nl_err(format!("create vxlan {name}"), e))
}

/// `ip link set NAME type bridge_slave neigh_suppress on|off learning on|off`.
pub async fn set_bridge_port(h: &Nl, name: &str, neigh_suppress: bool, learning: bool) -> R<()> {
    let i = h.index(name).await?;
    let msg = rtnetlink::LinkBridgePort::new(i)
        .neigh_suppress(neigh_suppress)
        .learning(learning)
        .build();
    // RTM_NEWLINK without NLM_F_CREATE: RTM_SETLINK ignores a port's slave data
    h.link()
        .set_port(msg)
        .execute()
        .await
        .map_err(|e| nl_err(format!("set bridge port flags of {name}"), e))
}
