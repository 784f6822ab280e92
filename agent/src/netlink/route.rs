//! IPv4 routes: the dump and overlayd's default route via the router (protocol 79).

use super::{index_of, nl_err, R};
use crate::model::*;
use futures::TryStreamExt;
use ipnet::Ipv4Net;
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol};
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
