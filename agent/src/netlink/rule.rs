//! IPv4 policy rules: the dump and overlayd's `from <overlay address> lookup <table>`
//! (protocol 79, so `ip rule` shows "proto 79" and `down` finds exactly ours).

use super::{nl_err, R};
use crate::model::*;
use futures::TryStreamExt;
use ipnet::Ipv4Net;
use netlink_packet_route::route::RouteProtocol;
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use netlink_packet_route::AddressFamily;
use rtnetlink::{Handle, IpVersion};
use std::net::IpAddr;

fn parse_rule(m: &RuleMessage) -> Rule {
    let mut r = Rule {
        priority: 0,
        src: None,
        dst: None,
        table: m.header.table as u32,
        protocol: 0,
        action: u8::from(m.header.action),
        other_selectors: false,
    };
    for a in &m.attributes {
        match a {
            RuleAttribute::Priority(p) => r.priority = *p,
            RuleAttribute::Table(t) => r.table = *t,
            RuleAttribute::Protocol(p) => r.protocol = u8::from(*p),
            RuleAttribute::Source(IpAddr::V4(a)) => {
                r.src = Ipv4Net::new(*a, m.header.src_len).ok();
            }
            RuleAttribute::Destination(IpAddr::V4(a)) => {
                r.dst = Ipv4Net::new(*a, m.header.dst_len).ok();
            }
            RuleAttribute::Iifname(_)
            | RuleAttribute::Oifname(_)
            | RuleAttribute::FwMark(_)
            | RuleAttribute::UidRange(_)
            | RuleAttribute::IpProtocol(_)
            | RuleAttribute::SourcePortRange(_)
            | RuleAttribute::DestinationPortRange(_)
            | RuleAttribute::L3MDev(true)
            | RuleAttribute::TunId(_) => r.other_selectors = true,
            // The kernel reports these unset as -1.
            RuleAttribute::SuppressPrefixLen(v) | RuleAttribute::SuppressIfGroup(v)
                if *v != u32::MAX =>
            {
                r.other_selectors = true
            }
            _ => {}
        }
    }
    if m.header.tos != 0 {
        r.other_selectors = true;
    }
    r
}

pub async fn dump_rules(h: &Handle) -> R<Vec<Rule>> {
    let mut s = h.rule().get(IpVersion::V4).execute();
    let mut out = Vec::new();
    while let Some(m) = s.try_next().await.map_err(|e| nl_err("dump rules", e))? {
        out.push(parse_rule(&m));
    }
    Ok(out)
}

pub async fn add_rule(h: &Handle, r: &RuleSpec) -> R<()> {
    let mut req = h
        .rule()
        .add()
        .v4()
        .source_prefix(r.from.addr(), r.from.prefix_len())
        .table_id(r.table)
        .priority(r.priority)
        .action(RuleAction::ToTable);
    req.message_mut()
        .attributes
        .push(RuleAttribute::Protocol(RouteProtocol::Other(
            RTPROT_OVERLAYD,
        )));
    match req.execute().await {
        Ok(()) => Ok(()),
        Err(e) => {
            let e = nl_err(format!("add {r}"), e);
            // Already there (a race with another writer): the plan's intent holds.
            if e.errno == Some(libc::EEXIST) {
                Ok(())
            } else {
                Err(e)
            }
        }
    }
}

pub async fn del_rule(h: &Handle, priority: u32, from: Option<Ipv4Net>, table: u32) -> R<()> {
    let mut m = RuleMessage::default();
    m.header.family = AddressFamily::Inet;
    m.header.action = RuleAction::ToTable;
    if table > 255 {
        m.attributes.push(RuleAttribute::Table(table));
    } else {
        m.header.table = table as u8;
    }
    m.attributes.push(RuleAttribute::Priority(priority));
    if let Some(f) = from {
        m.header.src_len = f.prefix_len();
        m.attributes.push(RuleAttribute::Source(f.addr().into()));
    }
    match h.rule().del(m).execute().await {
        Ok(()) => Ok(()),
        Err(e) => {
            let e = nl_err(format!("delete rule {priority} lookup {table}"), e);
            if matches!(e.errno, Some(libc::ENOENT) | Some(libc::ESRCH)) {
                Ok(())
            } else {
                Err(e)
            }
        }
    }
}
