//! The VTEP (ethvxlan0): VNI, dstport, group, underlay, learning; created enslaved and up.

use super::{index_of, nl_err, R};
use crate::model::*;
use rtnetlink::Handle;
use rtnetlink::LinkVxlan;
use std::net::Ipv4Addr;

#[allow(clippy::too_many_arguments)]
pub async fn create_vtep(
    h: &Handle,
    name: &str,
    vni: u32,
    port: u16,
    group: Ipv4Addr,
    underlay: &str,
    mtu: u32,
    master: &str,
) -> R<()> {
    let ul = index_of(h, underlay).await?;
    let br = index_of(h, master).await?;
    let msg = LinkVxlan::new(name, vni)
        .dev(ul)
        .port(port)
        .group(group)
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
