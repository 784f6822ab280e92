//! The overlay bridge (cloudbr0): created owned, STP off, IGMP snooping as configured,
//! MAC pinned, up.

use super::{nl_err, Nl, R};
use crate::model::*;
use netlink_packet_route::link::BridgeStpState;
use rtnetlink::Handle;
use rtnetlink::LinkBridge;

pub async fn create_bridge(
    h: &Handle,
    name: &str,
    mac: [u8; 6],
    mtu: u32,
    mcast_snooping: bool,
) -> R<()> {
    // One request: owned (device group), STP off, snooping, pinned MAC, up.
    let msg = rtnetlink::LinkMessageBuilder::<LinkBridge>::new(name)
        .stp_state(BridgeStpState::Disabled)
        .mcast_snooping(mcast_snooping)
        .address(mac.to_vec())
        .mtu(mtu)
        .link_group(OWNER_GROUP)
        .up()
        .build();
    h.link()
        .add(msg)
        .execute()
        .await
        .map_err(|e| nl_err(format!("create bridge {name}"), e))
}

pub async fn set_stp_off(h: &Nl, name: &str) -> R<()> {
    let i = h.index(name).await?;
    let msg = rtnetlink::LinkMessageBuilder::<LinkBridge>::new(name)
        .index(i)
        .stp_state(BridgeStpState::Disabled)
        .build();
    h.link()
        .change(msg)
        .execute()
        .await
        .map_err(|e| nl_err(format!("turn STP off on {name}"), e))
}

pub async fn set_mcast_snooping(h: &Nl, name: &str, on: bool) -> R<()> {
    let i = h.index(name).await?;
    let msg = rtnetlink::LinkMessageBuilder::<LinkBridge>::new(name)
        .index(i)
        .mcast_snooping(on)
        .build();
    h.link()
        .change(msg)
        .execute()
        .await
        .map_err(|e| nl_err(format!("set IGMP snooping {on} on {name}"), e))
}
