//! rtnetlink I/O: dump links/addresses/routes into [`Observed`], and the individual link,
//! address and route changes the executor needs. No `ip`/`brctl` subprocesses.

use crate::model::*;
use futures::TryStreamExt;
use ipnet::Ipv4Net;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{
    BridgeStpState, InfoBridge, InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo,
    LinkMessage,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol};
use netlink_packet_route::AddressFamily;
use rtnetlink::{
    Handle, LinkBridge, LinkDummy, LinkUnspec, LinkVeth, LinkVxlan, RouteMessageBuilder,
};
use std::net::{IpAddr, Ipv4Addr};

/// A netlink failure with the errno kept, so callers can branch on EEXIST/EOPNOTSUPP.
#[derive(Debug)]
pub struct NlError {
    pub what: String,
    pub errno: Option<i32>,
    pub msg: String,
}

impl std::fmt::Display for NlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.errno {
            Some(e) => write!(
                f,
                "{}: {} (errno {e})",
                self.what,
                std::io::Error::from_raw_os_error(e)
            ),
            None => write!(f, "{}: {}", self.what, self.msg),
        }
    }
}
impl std::error::Error for NlError {}

pub fn nl_err(what: impl Into<String>, e: rtnetlink::Error) -> NlError {
    let errno = match &e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    };
    NlError {
        what: what.into(),
        errno,
        msg: e.to_string(),
    }
}

type R<T> = Result<T, NlError>;

pub fn connect() -> std::io::Result<Handle> {
    let (conn, handle, _) = rtnetlink::new_connection()?;
    tokio::spawn(conn);
    Ok(handle)
}

fn parse_link(m: &LinkMessage) -> Link {
    let mut l = Link {
        index: m.header.index,
        name: String::new(),
        kind: None,
        up: m.header.flags.contains(LinkFlags::Up),
        mtu: 0,
        master: None,
        mac: vec![],
        alias: None,
        group: 0,
        vxlan: None,
        stp: None,
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
                                    _ => {}
                                }
                            }
                            l.vxlan = Some(x);
                        }
                        LinkInfo::Data(InfoData::Bridge(b)) => {
                            for e in b {
                                if let InfoBridge::StpState(s) = e {
                                    l.stp = Some(u32::from(*s));
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

pub async fn dump_addrs(h: &Handle) -> R<Vec<Addr>> {
    let mut s = h.address().get().execute();
    let mut out = Vec::new();
    while let Some(m) = s
        .try_next()
        .await
        .map_err(|e| nl_err("dump addresses", e))?
    {
        if m.header.family != AddressFamily::Inet {
            continue;
        }
        let mut local = None;
        let mut addr = None;
        for a in &m.attributes {
            match a {
                AddressAttribute::Local(IpAddr::V4(v)) => local = Some(*v),
                AddressAttribute::Address(IpAddr::V4(v)) => addr = Some(*v),
                _ => {}
            }
        }
        if let Some(ip) = local.or(addr) {
            if let Ok(n) = Ipv4Net::new(ip, m.header.prefix_len) {
                out.push(Addr {
                    index: m.header.index,
                    addr: n,
                });
            }
        }
    }
    Ok(out)
}

fn parse_route(m: &RouteMessage) -> Option<Route> {
    let mut dst = Ipv4Addr::UNSPECIFIED;
    let mut r = Route {
        dst: Ipv4Net::default(),
        gateway: None,
        oif: None,
        metric: 0,
        protocol: u8::from(m.header.protocol),
        table: m.header.table as u32,
    };
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(RouteAddress::Inet(v)) => dst = *v,
            RouteAttribute::Gateway(RouteAddress::Inet(v)) => r.gateway = Some(*v),
            RouteAttribute::Oif(v) => r.oif = Some(*v),
            RouteAttribute::Priority(v) => r.metric = *v,
            RouteAttribute::Table(v) => r.table = *v,
            _ => {}
        }
    }
    r.dst = Ipv4Net::new(dst, m.header.destination_prefix_length).ok()?;
    Some(r)
}

pub async fn dump_routes(h: &Handle) -> R<Vec<Route>> {
    let msg = RouteMessageBuilder::<Ipv4Addr>::new().build();
    let mut s = h.route().get(msg).execute();
    let mut out = Vec::new();
    while let Some(m) = s.try_next().await.map_err(|e| nl_err("dump routes", e))? {
        if let Some(r) = parse_route(&m) {
            out.push(r);
        }
    }
    Ok(out)
}

/// Name → ifindex for the duration of one plan execution: seeded from the observation
/// the plan was made from, so each step costs one netlink round trip, not two.
static INDEXES: std::sync::Mutex<Option<std::collections::HashMap<String, u32>>> =
    std::sync::Mutex::new(None);

/// Start an execution: forget old indexes, trust the fresh observation.
pub fn seed_indexes(links: &[Link]) {
    let m = links.iter().map(|l| (l.name.clone(), l.index)).collect();
    *INDEXES.lock().unwrap() = Some(m);
}

/// Stop trusting cached indexes (e.g. after a failure).
pub fn clear_indexes() {
    *INDEXES.lock().unwrap() = None;
}

fn forget_index(name: &str) {
    if let Some(m) = INDEXES.lock().unwrap().as_mut() {
        m.remove(name);
    }
}

async fn index_of(h: &Handle, name: &str) -> R<u32> {
    if let Some(i) = INDEXES
        .lock()
        .unwrap()
        .as_ref()
        .and_then(|m| m.get(name).copied())
    {
        return Ok(i);
    }
    let mut s = h.link().get().match_name(name.to_string()).execute();
    match s.try_next().await {
        Ok(Some(m)) => {
            if let Some(c) = INDEXES.lock().unwrap().as_mut() {
                c.insert(name.to_string(), m.header.index);
            }
            Ok(m.header.index)
        }
        Ok(None) => Err(NlError {
            what: format!("find link {name}"),
            errno: Some(libc::ENODEV),
            msg: "not found".into(),
        }),
        Err(e) => Err(nl_err(format!("find link {name}"), e)),
    }
}

pub async fn link_index(h: &Handle, name: &str) -> R<u32> {
    index_of(h, name).await
}

pub async fn create_bridge(h: &Handle, name: &str, mac: [u8; 6], mtu: u32) -> R<()> {
    // One request: owned (device group), STP off, pinned MAC, up.
    let msg = rtnetlink::LinkMessageBuilder::<LinkBridge>::new(name)
        .stp_state(BridgeStpState::Disabled)
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

/// A dummy port; where the kernel has no dummy driver (EOPNOTSUPP), a veth pair whose
/// peer stays outside the bridge.
pub async fn create_dummy(
    h: &Handle,
    name: &str,
    peer: &str,
    mtu: u32,
    master: &str,
) -> R<&'static str> {
    let br = index_of(h, master).await?;
    let msg = LinkDummy::new(name)
        .mtu(mtu)
        .controller(br)
        .link_group(OWNER_GROUP)
        .up()
        .build();
    let kind = match h.link().add(msg).execute().await {
        Ok(()) => "dummy",
        Err(e) => {
            let e = nl_err(format!("create dummy {name}"), e);
            if e.errno != Some(libc::EOPNOTSUPP) {
                return Err(e);
            }
            let msg = LinkVeth::new(name, peer)
                .mtu(mtu)
                .controller(br)
                .link_group(OWNER_GROUP)
                .up()
                .build();
            h.link()
                .add(msg)
                .execute()
                .await
                .map_err(|e| nl_err(format!("create veth {name} (dummy fallback)"), e))?;
            set_owner(h, peer).await?;
            set_up(h, peer).await?;
            "veth"
        }
    };
    Ok(kind)
}

pub async fn set_owner(h: &Handle, name: &str) -> R<()> {
    let i = index_of(h, name).await?;
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

pub async fn set_mtu(h: &Handle, name: &str, mtu: u32) -> R<()> {
    let i = index_of(h, name).await?;
    h.link()
        .set(LinkUnspec::new_with_index(i).mtu(mtu).build())
        .execute()
        .await
        .map_err(|e| nl_err(format!("set mtu of {name}"), e))
}

pub async fn set_mac(h: &Handle, name: &str, mac: [u8; 6]) -> R<()> {
    let i = index_of(h, name).await?;
    h.link()
        .set(LinkUnspec::new_with_index(i).address(mac.to_vec()).build())
        .execute()
        .await
        .map_err(|e| nl_err(format!("set address of {name}"), e))
}

pub async fn set_stp_off(h: &Handle, name: &str) -> R<()> {
    let i = index_of(h, name).await?;
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

pub async fn set_master(h: &Handle, name: &str, master: &str) -> R<()> {
    let i = index_of(h, name).await?;
    let m = index_of(h, master).await?;
    h.link()
        .set(LinkUnspec::new_with_index(i).controller(m).build())
        .execute()
        .await
        .map_err(|e| nl_err(format!("enslave {name} to {master}"), e))
}

pub async fn set_up(h: &Handle, name: &str) -> R<()> {
    let i = index_of(h, name).await?;
    h.link()
        .set(LinkUnspec::new_with_index(i).up().build())
        .execute()
        .await
        .map_err(|e| nl_err(format!("set {name} up"), e))
}

pub async fn delete_link(h: &Handle, name: &str) -> R<bool> {
    let i = index_of(h, name).await;
    forget_index(name);
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

pub async fn add_address(h: &Handle, dev: &str, addr: Ipv4Net) -> R<()> {
    let i = index_of(h, dev).await?;
    match h
        .address()
        .add(i, IpAddr::V4(addr.addr()), addr.prefix_len())
        .execute()
        .await
    {
        Ok(()) => Ok(()),
        Err(e) => {
            let e = nl_err(format!("add address {addr} to {dev}"), e);
            if e.errno == Some(libc::EEXIST) {
                Ok(())
            } else {
                Err(e)
            }
        }
    }
}

fn route_msg(dst: Ipv4Net, gateway: Option<Ipv4Addr>, oif: u32, metric: u32) -> RouteMessage {
    let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(dst.addr(), dst.prefix_len())
        .output_interface(oif)
        .priority(metric)
        .protocol(RouteProtocol::Other(RTPROT_OVERLAYD));
    if let Some(g) = gateway {
        b = b.gateway(g);
    }
    b.build()
}

pub async fn add_default_route(h: &Handle, gateway: Ipv4Addr, dev: &str, metric: u32) -> R<()> {
    let i = index_of(h, dev).await?;
    h.route()
        .add(route_msg(Ipv4Net::default(), Some(gateway), i, metric))
        .execute()
        .await
        .map_err(|e| {
            let mut e = nl_err(format!("add default route via {gateway} dev {dev} metric {metric}"), e);
            if e.errno == Some(libc::EEXIST) {
                e.what.push_str(
                    " — another default route with the same metric exists; set route_metric to a different value",
                );
            }
            e
        })
}

pub async fn del_route(
    h: &Handle,
    dst: Ipv4Net,
    gateway: Option<Ipv4Addr>,
    dev: &str,
    metric: u32,
) -> R<()> {
    let i = match index_of(h, dev).await {
        Ok(i) => i,
        Err(_) => return Ok(()),
    };
    match h
        .route()
        .del(route_msg(dst, gateway, i, metric))
        .execute()
        .await
    {
        Ok(()) => Ok(()),
        Err(e) => {
            let e = nl_err(format!("delete route {dst} dev {dev}"), e);
            if e.errno == Some(libc::ESRCH) {
                Ok(())
            } else {
                Err(e)
            }
        }
    }
}

pub fn kind_name(k: &InfoKind) -> String {
    k.to_string()
}
