//! rtnetlink pieces for the repair benchmark: a socket subscribed to link events (to
//! timestamp the VTEP coming back), RTM_DELLINK (to break the node), and the link events of a
//! datagram. Messages are built and parsed by netlink-packet-route over a netlink-sys
//! socket; synchronous, so the timestamps are taken right at recv().

use anyhow::{bail, Context, Result};
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_REQUEST,
};
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::RouteNetlinkMessage;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// Multicast group bit of RTNLGRP_LINK.
pub const RTMGRP_LINK: u32 = 1;
pub const IFF_UP: u32 = 1;

/// One RTM_NEWLINK / RTM_DELLINK message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkEvent {
    pub new: bool,
    pub index: i32,
    pub flags: u32,
    pub name: String,
    pub master: Option<u32>,
}

impl LinkEvent {
    /// The VTEP is back: a new device of that name, up and enslaved to `master`.
    pub fn is_repaired(&self, name: &str, old_index: i32, master: u32) -> bool {
        self.new
            && self.name == name
            && self.index != old_index
            && self.flags & IFF_UP != 0
            && self.master == Some(master)
    }

    fn of(new: bool, m: &LinkMessage) -> LinkEvent {
        let mut ev = LinkEvent {
            new,
            index: m.header.index as i32,
            flags: m.header.flags.bits(),
            name: String::new(),
            master: None,
        };
        for a in &m.attributes {
            match a {
                LinkAttribute::IfName(n) => ev.name = n.clone(),
                LinkAttribute::Controller(i) => ev.master = Some(*i),
                _ => {}
            }
        }
        ev
    }
}

/// Every link message of one netlink datagram; other messages (and a truncated tail) are
/// skipped.
pub fn parse_link_events(buf: &[u8]) -> Vec<LinkEvent> {
    let mut out = Vec::new();
    let mut off = 0;
    while off < buf.len() {
        let Ok(m) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[off..]) else {
            break;
        };
        let len = m.header.length as usize;
        match &m.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) => {
                out.push(LinkEvent::of(true, l))
            }
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(l)) => {
                out.push(LinkEvent::of(false, l))
            }
            _ => {}
        }
        if len == 0 {
            break;
        }
        off += (len + 3) & !3;
    }
    out
}

/// A NETLINK_ROUTE socket in the network namespace of the creating thread.
pub struct NlSock {
    sock: netlink_sys::Socket,
    seq: u32,
}

impl NlSock {
    /// `groups`: multicast groups to listen to (0 for a request-only socket).
    pub fn new(groups: u32) -> Result<NlSock> {
        let mut sock = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_ROUTE)
            .context("netlink socket")?;
        sock.bind(&netlink_sys::SocketAddr::new(0, groups))
            .context("netlink bind")?;
        // failure only means a smaller buffer
        let _ = sock.set_rx_buf_sz(4usize << 20);
        let s = NlSock { sock, seq: 1 };
        s.set_timeout(Duration::from_millis(20));
        Ok(s)
    }

    fn set_timeout(&self, d: Duration) {
        let tv = libc::timeval {
            tv_sec: d.as_secs() as libc::time_t,
            tv_usec: d.subsec_micros() as libc::suseconds_t,
        };
        // SAFETY: valid fd and option buffer (netlink-sys has no receive timeout).
        unsafe {
            libc::setsockopt(
                self.sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as u32,
            );
        }
    }

    /// One datagram (None on timeout), with the time recv() returned.
    fn recv(&mut self) -> Option<(Vec<u8>, Instant)> {
        let mut buf: Vec<u8> = Vec::with_capacity(1 << 16);
        let n = self.sock.recv(&mut buf, 0).ok()?;
        let at = Instant::now();
        (n > 0).then(|| {
            buf.truncate(n);
            (buf, at)
        })
    }

    /// The link events of the next datagram (None on timeout), with the time recv() returned.
    pub fn recv_events(&mut self) -> Option<(Instant, Vec<LinkEvent>)> {
        let (b, at) = self.recv()?;
        Some((at, parse_link_events(&b)))
    }

    /// RTM_DELLINK of interface `index`; returns once the kernel acknowledged it.
    pub fn del_link(&mut self, index: i32) -> Result<()> {
        self.seq += 1;
        let mut l = LinkMessage::default();
        l.header.index = index as u32;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK;
        header.sequence_number = self.seq;
        let mut m = NetlinkMessage::new(
            header,
            NetlinkPayload::from(RouteNetlinkMessage::DelLink(l)),
        );
        m.finalize();
        let mut out = vec![0u8; m.buffer_len()];
        m.serialize(&mut out);
        self.sock.send(&out, 0).context("netlink send")?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let Some((b, _)) = self.recv() else {
                continue;
            };
            let mut off = 0;
            while off < b.len() {
                let Ok(r) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&b[off..]) else {
                    break;
                };
                let len = r.header.length as usize;
                if r.header.sequence_number == self.seq {
                    if let NetlinkPayload::Error(e) = &r.payload {
                        return match e.code {
                            None => Ok(()),
                            Some(c) => bail!(
                                "RTM_DELLINK: {}",
                                std::io::Error::from_raw_os_error(-c.get())
                            ),
                        };
                    }
                }
                if len == 0 {
                    break;
                }
                off += (len + 3) & !3;
            }
        }
        bail!("RTM_DELLINK: no acknowledgement within 5 s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::link::LinkFlags;

    fn msg(new: bool, index: i32, flags: LinkFlags, name: &str, master: Option<u32>) -> Vec<u8> {
        let mut l = LinkMessage::default();
        l.header.index = index as u32;
        l.header.flags = flags;
        l.attributes.push(LinkAttribute::Mtu(1500));
        l.attributes.push(LinkAttribute::IfName(name.into()));
        if let Some(m) = master {
            l.attributes.push(LinkAttribute::Controller(m));
        }
        let inner = if new {
            RouteNetlinkMessage::NewLink(l)
        } else {
            RouteNetlinkMessage::DelLink(l)
        };
        let mut m = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(inner));
        m.finalize();
        let mut b = vec![0u8; m.buffer_len()];
        m.serialize(&mut b);
        b
    }

    #[test]
    fn parses_several_link_messages_and_skips_others() {
        let mut d = msg(false, 7, LinkFlags::empty(), "ethvxlan0", None);
        let mut a = netlink_packet_route::address::AddressMessage::default();
        a.header.index = 7;
        let mut other = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::from(RouteNetlinkMessage::NewAddress(a)),
        );
        other.finalize();
        let mut ob = vec![0u8; other.buffer_len()];
        other.serialize(&mut ob);
        d.extend_from_slice(&ob);
        d.extend(msg(
            true,
            9,
            LinkFlags::Up | LinkFlags::Running,
            "ethvxlan0",
            Some(3),
        ));
        let ev = parse_link_events(&d);
        assert_eq!(ev.len(), 2);
        assert!(!ev[0].new);
        assert_eq!(ev[0].index, 7);
        assert_eq!(ev[1].name, "ethvxlan0");
        assert_eq!(ev[1].master, Some(3));
        assert!(ev[1].is_repaired("ethvxlan0", 7, 3));
        assert!(
            !ev[1].is_repaired("ethvxlan0", 9, 3),
            "same index = old device"
        );
        assert!(!ev[1].is_repaired("ethvxlan0", 7, 4), "other master");
        let down = &parse_link_events(&msg(true, 9, LinkFlags::empty(), "ethvxlan0", Some(3)))[0];
        assert!(!down.is_repaired("ethvxlan0", 7, 3), "not up");
    }

    #[test]
    fn truncated_input_does_not_panic() {
        let m = msg(true, 2, LinkFlags::Up, "cloudbr0", None);
        for cut in 0..m.len() {
            let _ = parse_link_events(&m[..cut]);
        }
    }
}
