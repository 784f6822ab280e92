//! The VTEP's flood list for unicast flooding: one all-zeros FDB entry per peer
//! (`bridge fdb append 00:00:00:00:00:00 dev ethvxlan0 dst <peer>`), which makes the kernel
//! send a copy of every broadcast, unknown-unicast and multicast frame to each peer
//! (head-end replication). Learned entries (real MACs) are the kernel's and never touched.
//!
//! Changes go out as one batch: every request is written before the first answer is read,
//! and the answers are collected afterwards.

use super::{nl_err, NlError, R};
use futures::{StreamExt, TryStreamExt};
use netlink_packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REQUEST,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::Handle;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

const ZERO_MAC: [u8; 6] = [0; 6];

/// The FDB entries of the device `index`: (all-zeros MAC?, remote destination).
async fn dump_entries(h: &Handle, index: u32) -> R<Vec<(bool, Option<Ipv4Addr>)>> {
    let mut req = h.neighbours().get();
    req.message_mut().header.family = AddressFamily::Bridge;
    let mut s = req.execute();
    let mut out = Vec::new();
    while let Some(m) = s
        .try_next()
        .await
        .map_err(|e| nl_err("dump bridge fdb", e))?
    {
        if m.header.ifindex != index {
            continue;
        }
        let mut zero = false;
        let mut dst = None;
        for a in &m.attributes {
            match a {
                NeighbourAttribute::LinkLayerAddress(l) => zero = l.as_slice() == ZERO_MAC,
                NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => dst = Some(*ip),
                // AF_BRIDGE messages carry the VXLAN remote as raw bytes.
                NeighbourAttribute::Destination(NeighbourAddress::Other(b)) if b.len() == 4 => {
                    dst = Some(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
                }
                _ => {}
            }
        }
        out.push((zero, dst));
    }
    Ok(out)
}

/// The destinations of the all-zeros entries of the device `index`.
pub async fn dump_flood_list(h: &Handle, index: u32) -> R<BTreeSet<Ipv4Addr>> {
    Ok(dump_entries(h, index)
        .await?
        .into_iter()
        .filter_map(|(zero, dst)| dst.filter(|_| zero))
        .collect())
}

/// The remote VTEPs of the device `index`'s learned (or otherwise installed) entries: remote
/// address → number of MACs behind it. All-zeros entries (flood list, multicast default)
/// and multicast destinations are not remotes.
pub async fn dump_remote_vteps(
    h: &Handle,
    index: u32,
) -> R<std::collections::BTreeMap<Ipv4Addr, usize>> {
    let mut out = std::collections::BTreeMap::new();
    for (zero, dst) in dump_entries(h, index).await? {
        match dst {
            Some(ip) if !zero && !ip.is_multicast() && !ip.is_unspecified() => {
                *out.entry(ip).or_insert(0) += 1
            }
            _ => {}
        }
    }
    Ok(out)
}

fn entry(index: u32, dst: Ipv4Addr) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Bridge;
    m.header.ifindex = index;
    m.header.state = NeighbourState::Permanent;
    // NTF_SELF: the VTEP's own table, not its master bridge's.
    m.header.flags = NeighbourFlags::Own;
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(ZERO_MAC.to_vec()));
    m.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(dst)));
    m
}

/// Add `add` and remove `remove` on the VTEP `name`, all in one batch. An entry that is
/// already there (EEXIST) or already gone (ENOENT) counts as done; every other failure is
/// reported after the whole batch ran, naming the first peer that failed and how many did.
pub async fn set_flood_list(
    h: &super::Nl,
    name: &str,
    add: &[Ipv4Addr],
    remove: &[Ipv4Addr],
) -> R<()> {
    let index = h.index(name).await?;
    let mut handle: Handle = (**h).clone();
    let mut pending = Vec::with_capacity(add.len() + remove.len());
    for (ip, adding) in add
        .iter()
        .map(|ip| (*ip, true))
        .chain(remove.iter().map(|ip| (*ip, false)))
    {
        let m = entry(index, ip);
        let mut req = NetlinkMessage::from(if adding {
            RouteNetlinkMessage::NewNeighbour(m)
        } else {
            RouteNetlinkMessage::DelNeighbour(m)
        });
        req.header.flags = NLM_F_REQUEST | NLM_F_ACK;
        if adding {
            req.header.flags |= NLM_F_CREATE | NLM_F_APPEND;
        }
        let resp = handle
            .request(req)
            .map_err(|e| nl_err(format!("fdb {name} dst {ip}"), e))?;
        pending.push((ip, adding, resp));
    }
    let answers = futures::future::join_all(pending.into_iter().map(
        |(ip, adding, mut resp)| async move {
            while let Some(msg) = resp.next().await {
                if let NetlinkPayload::Error(e) = msg.payload {
                    if let Some(code) = e.code {
                        let errno = -code.get();
                        let benign = if adding { libc::EEXIST } else { libc::ENOENT };
                        if errno != benign {
                            return Err((ip, adding, errno));
                        }
                    }
                }
            }
            Ok(())
        },
    ))
    .await;
    let failed: Vec<(Ipv4Addr, bool, i32)> = answers.into_iter().filter_map(Result::err).collect();
    match failed.first() {
        None => Ok(()),
        Some((ip, adding, errno)) => Err(NlError {
            what: format!(
                "fdb {} {name} dst {ip} ({} of {} changes failed)",
                if *adding {
                    "append 00:00:00:00:00:00"
                } else {
                    "del 00:00:00:00:00:00"
                },
                failed.len(),
                add.len() + remove.len()
            ),
            errno: Some(*errno),
            msg: String::new(),
        }),
    }
}
