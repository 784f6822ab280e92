//! Links in general: the dump into [`Link`], and changes any link kind takes (owner mark,
//! MTU, MAC, master, up, delete).

use super::{nl_err, Nl, R};
use crate::model::*;
use futures::TryStreamExt;
use netlink_packet_route::link::{
    InfoBridge, InfoBridgePort, InfoData, InfoPortData, InfoVxlan, LinkAttribute, LinkFlags,
    LinkInfo, LinkMessage,
};
use rtnetlink::Handle;
use rtnetlink::LinkUnspec;

fn parse_link(m: &LinkMessage) -> Link {
    let mut l = Link {
        index: m.header.index,
        name: String::new(),
        kind: None,
        up: m.header.flags.contains(LinkFlags::Up),
        carrier: m.header.flags.contains(LinkFlags::LowerUp),
        mtu: 0,
        master: None,
        mac: vec![],
        alias: None,
        group: 0,
        vxlan: None,
        brport: None,
        stp: None,
        mcast_snooping: None,
        link: None,
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => l.name = n.clone(),
            LinkAttribute::Mtu(v) => l.mtu = *v,
            LinkAttribute::Controller(v) => l.master = Some(*v),
            LinkAttribute::Address(v) => l.mac = v.clone(),
            LinkAttribute::IfAlias(v) => l.alias = Some(v.clone()),
            LinkAttribute::Group(g) => l.group = *g,
            LinkAttribute::Link(v) => l.link = Some(*v),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    match i {
                        LinkInfo::Kind(k) => l.kind = Some(k.to_string()),
                        LinkInfo::Data(InfoData::Vxlan(v)) => {
                            let mut x = VxlanInfo::default();
                            for e in v {
                                match e {
                                    InfoVxlan::Id(n) => x.vni = Some(*n),
                                    InfoVxlan::Port(p) => x.port = Some(*p),
                                    InfoVxlan::Group(g) => x.group = Some(*g),
                                    InfoVxlan::Link(d) => x.dev = Some(*d),
                                    InfoVxlan::Learning(b) => x.learning = Some(*b),
                                    InfoVxlan::Local(a) => x.local = Some(*a),
                                    _ => {}
                                }
                            }
                            l.vxlan = Some(x);
                        }
                        LinkInfo::PortData(InfoPortData::BridgePort(ps)) => {
                            let mut bp = BrPortInfo::default();
                            for e in ps {
                                match e {
                                    InfoBridgePort::Learning(b) => bp.learning = Some(*b),
                                    InfoBridgePort::NeighSupress(b) => bp.neigh_suppress = Some(*b),
                                    _ => {}
                                }
                            }
                            l.brport = Some(bp);
                        }
                        LinkInfo::Data(InfoData::Bridge(b)) => {
                            for e in b {
                                match e {
                                    InfoBridge::StpState(s) => l.stp = Some(u32::from(*s)),
                                    InfoBridge::MulticastSnooping(b) => l.mcast_snooping = Some(*b),
                                    _ => {}
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    l
}

pub async fn dump_links(h: &Handle) -> R<Vec<Link>> {
    let mut s = h.link().get().execute();
    let mut out = Vec::new();
    while let Some(m) = s.try_next().await.map_err(|e| nl_err("dump links", e))? {
        out.push(parse_link(&m));
    }
    Ok(out)
}

pub async fn set_owner(h: &Nl, name: &str) -> R<()> {
    let i = h.index(name).await?;
    h.link()
        .set(
            LinkUnspec::new_with_index(i)
                .link_group(OWNER_GROUP)
                .build(),
        )
        .execute()
        .await
        .map_err(|e| {
            nl_err(
                format!("mark {name} as overlayd's (group {OWNER_GROUP})"),
                e,
            )
        })
}

pub async fn set_mtu(h: &Nl, name: &str, mtu: u32) -> R<()> {
    let i = h.index(name).await?;
    h.link()
        .set(LinkUnspec::new_with_index(i).mtu(mtu).build())
        .execute()
        .await
        .map_err(|e| nl_err(format!("set mtu of {name}"), e))
}

pub async fn set_mac(h: &Nl, name: &str, mac: [u8; 6]) -> R<()> {
    let i = h.index(name).await?;
    h.link()
        .set(LinkUnspec::new_with_index(i).address(mac.to_vec()).build())
        .execute()
        .await
        .map_err(|e| nl_err(format!("set address of {name}"), e))
}

pub async fn set_master(h: &Nl, name: &str, master: &str) -> R<()> {
    let i = h.index(name).await?;
    let m = h.index(master).await?;
    h.link()
        .set(LinkUnspec::new_with_index(i).controller(m).build())
        .execute()
        .await
        .map_err(|e| nl_err(format!("enslave {name} to {master}"), e))
}

pub async fn set_up(h: &Nl, name: &str) -> R<()> {
    let i = h.index(name).await?;
    h.link()
        .set(LinkUnspec::new_with_index(i).up().build())
        .execute()
        .await
        .map_err(|e| nl_err(format!("set {name} up"), e))
}

pub async fn delete_link(h: &Nl, name: &str) -> R<bool> {
    let i = h.index(name).await;
    h.forget(name);
    let i = match i {
        Ok(i) => i,
        Err(e) if e.errno == Some(libc::ENODEV) => return Ok(false),
        Err(e) => return Err(e),
    };
    match h.link().del(i).execute().await {
        Ok(()) => Ok(true),
        Err(e) => {
            let e = nl_err(format!("delete link {name}"), e);
            if e.errno == Some(libc::ENODEV) {
                Ok(false)
            } else {
                Err(e)
            }
        }
    }
}
