//! IPv4 addresses: the dump and the overlay address on the bridge.

use super::{nl_err, Nl, R};
use crate::model::*;
use futures::TryStreamExt;
use ipnet::Ipv4Net;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::AddressFamily;
use rtnetlink::Handle;
use std::net::IpAddr;

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

pub async fn add_address(h: &Nl, dev: &str, addr: Ipv4Net) -> R<()> {
    let i = h.index(dev).await?;
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

/// Remove `ip` from the link `index` (router HA: a VIP left behind by a keepalived that was
/// killed, before keepalived starts again). Ok(false) when it was not there.
pub async fn del_address(h: &Handle, index: u32, ip: std::net::Ipv4Addr) -> R<bool> {
    let mut s = h.address().get().set_link_index_filter(index).execute();
    while let Some(m) = s
        .try_next()
        .await
        .map_err(|e| nl_err("dump addresses", e))?
    {
        let is = m.attributes.iter().any(|a| {
            matches!(a, AddressAttribute::Local(IpAddr::V4(v)) | AddressAttribute::Address(IpAddr::V4(v)) if *v == ip)
        });
        if m.header.family == AddressFamily::Inet && is {
            h.address()
                .del(m)
                .execute()
                .await
                .map_err(|e| nl_err(format!("delete address {ip}"), e))?;
            return Ok(true);
        }
    }
    Ok(false)
}
