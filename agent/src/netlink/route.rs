//! IPv4 routes: the dump, and the routes overlayd owns (protocol 79) in the main table
//! and in its own table.

use super::{nl_err, Nl, R};
use crate::model::*;
use futures::TryStreamExt;
use ipnet::Ipv4Net;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope,
};
use rtnetlink::Handle;
use rtnetlink::RouteMessageBuilder;
use std::net::Ipv4Addr;

fn parse_route(m: &RouteMessage) -> Option<Route> {
    let mut dst = Ipv4Addr::UNSPECIFIED;
    let mut r = Route {
        dst: Ipv4Net::default(),
        gateway: None,
        oif: None,
        metric: 0,
        protocol: u8::from(m.header.protocol),
        table: m.header.table as u32,
        scope: u8::from(m.header.scope),
        kind: u8::from(m.header.kind),
        prefsrc: None,
    };
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(RouteAddress::Inet(v)) => dst = *v,
            RouteAttribute::Gateway(RouteAddress::Inet(v)) => r.gateway = Some(*v),
            RouteAttribute::PrefSource(RouteAddress::Inet(v)) => r.prefsrc = Some(*v),
            RouteAttribute::Oif(v) => r.oif = Some(*v),
            RouteAttribute::Priority(v) => r.metric = *v,
            RouteAttribute::Table(v) => r.table = *v,
            _ => {}
        }
    }
    r.dst = Ipv4Net::new(dst, m.header.destination_prefix_length).ok()?;
    Some(r)
}

/// Every IPv4 route of every table.
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

/// The kernel's route lookup (`ip route get DST from SRC`): where a packet from `src` to
/// `dst` would leave (read-only; policy rules included).
pub async fn route_get(h: &Handle, dst: Ipv4Addr, src: Ipv4Addr) -> R<Option<Route>> {
    let msg = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(dst, 32)
        .source_prefix(src, 32)
        .build();
    let mut s = h.route().get(msg).execute();
    let m = s
        .try_next()
        .await
        .map_err(|e| nl_err(format!("route get {dst} from {src}"), e))?;
    Ok(m.as_ref().and_then(parse_route))
}

#[allow(clippy::too_many_arguments)]
fn route_msg(
    table: u32,
    dst: Ipv4Net,
    gateway: Option<Ipv4Addr>,
    oif: u32,
    metric: u32,
    protocol: u8,
    scope: RouteScope,
    prefsrc: Option<Ipv4Addr>,
) -> RouteMessage {
    let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
        .table_id(table)
        .destination_prefix(dst.addr(), dst.prefix_len())
        .output_interface(oif)
        .priority(metric)
        .protocol(RouteProtocol::from(protocol))
        .scope(scope);
    if let Some(g) = gateway {
        b = b.gateway(g);
    }
    if let Some(s) = prefsrc {
        b = b.pref_source(s);
    }
    b.build()
}

/// Install one of overlayd's routes. `replace`: take the place of the route with the same
/// key (table, destination, metric) in one step, as the plan decided.
pub async fn add_route(h: &Nl, r: &RouteSpec, replace: bool) -> R<()> {
    let i = h.index(&r.dev).await?;
    let scope = if r.gateway.is_some() {
        RouteScope::Universe
    } else {
        RouteScope::Link
    };
    let msg = route_msg(
        r.table,
        r.dst,
        r.gateway,
        i,
        r.metric,
        RTPROT_OVERLAYD,
        scope,
        r.src,
    );
    let req = h.route().add(msg);
    let req = if replace { req.replace() } else { req };
    req.execute().await.map_err(|e| {
        let mut e = nl_err(format!("add route {}", r.describe()), e);
        if e.errno == Some(libc::EEXIST) {
            e.what.push_str(
                " — a route with the same table, destination and metric appeared meanwhile",
            );
        }
        e
    })
}

/// Put back a route overlayd replaced (or create it again), as it was.
pub async fn restore_route(h: &Nl, r: &SavedRoute) -> R<()> {
    let i = h.index(&r.dev).await?;
    let msg = route_msg(
        r.table,
        r.dst,
        r.gateway,
        i,
        r.metric,
        r.protocol,
        RouteScope::from(r.scope),
        r.prefsrc,
    );
    h.route()
        .add(msg)
        .replace()
        .execute()
        .await
        .map_err(|e| nl_err(format!("restore route {r}"), e))
}

/// Delete a route; one that is already gone (or whose device is) is not an error.
pub async fn del_route(h: &Nl, r: &SavedRoute) -> R<()> {
    let i = match h.index(&r.dev).await {
        Ok(i) => i,
        Err(_) => return Ok(()),
    };
    // Scope "nowhere" matches a route of any scope (as `ip route del` does).
    let msg = route_msg(
        r.table,
        r.dst,
        r.gateway,
        i,
        r.metric,
        r.protocol,
        RouteScope::NoWhere,
        None,
    );
    match h.route().del(msg).execute().await {
        Ok(()) => Ok(()),
        Err(e) => {
            let e = nl_err(format!("delete route {r}"), e);
            if e.errno == Some(libc::ESRCH) {
                Ok(())
            } else {
                Err(e)
            }
        }
    }
}
