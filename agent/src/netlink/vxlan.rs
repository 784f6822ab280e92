//! The VTEP (ethvxlan0): VNI, dstport, group (none with unicast flooding), underlay,
//! learning; created enslaved and up.

use super::{nl_err, Nl, R};
use crate::model::*;
use rtnetlink::LinkVxlan;
use std::net::Ipv4Addr;

#[allow(clippy::too_many_arguments)]
pub async fn create_vtep(
    h: &Nl,
    name: &str,
    vni: u32,
    port: u16,
    group: Option<Ipv4Addr>,
    underlay: &str,
    mtu: u32,
    master: &str,
) -> R<()> {
    let ul = h.index(underlay).await?;
    let br = h.index(master).await?;
    let mut b = LinkVxlan::new(name, vni).dev(ul).port(port);
    if let Some(g) = group {
        b = b.group(g);
    }
    let msg = b
        .learning(true)
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
