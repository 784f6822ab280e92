//! Raw rtnetlink pieces for the repair benchmark: a socket subscribed to link events (to
//! timestamp the VTEP coming back), RTM_DELLINK (to break the node), and a parser of link
//! messages. Synchronous and allocation-light, so the timestamps are taken right at recv().

use anyhow::{bail, Result};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const IFLA_IFNAME: u16 = 3;
const IFLA_MASTER: u16 = 10;
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
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Parse every link message of one netlink datagram; other message types are skipped.
pub fn parse_link_events(buf: &[u8]) -> Vec<LinkEvent> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + 16 <= buf.len() {
        let len = u32_at(buf, off) as usize;
        let ty = u16_at(buf, off + 4);
        if len < 16 || off + len > buf.len() {
            break;
        }
        if (ty == RTM_NEWLINK || ty == RTM_DELLINK) && len >= 32 {
            let m = &buf[off..off + len];
            let mut ev = LinkEvent {
                new: ty == RTM_NEWLINK,
                index: u32_at(m, 20) as i32,
                flags: u32_at(m, 24),
                name: String::new(),
                master: None,
            };
            let mut a = 32;
            while a + 4 <= m.len() {
                let alen = u16_at(m, a) as usize;
                let aty = u16_at(m, a + 2) & 0x3fff;
                if alen < 4 || a + alen > m.len() {
                    break;
                }
                let data = &m[a + 4..a + alen];
                match aty {
                    IFLA_IFNAME => {
                        let end = data.iter().position(|&c| c == 0).unwrap_or(data.len());
                        ev.name = String::from_utf8_lossy(&data[..end]).into_owned();
                    }
                    IFLA_MASTER if data.len() >= 4 => ev.master = Some(u32_at(data, 0)),
                    _ => {}
                }
                a += (alen + 3) & !3;
            }
            out.push(ev);
        }
        off += (len + 3) & !3;
    }
    out
}

/// A NETLINK_ROUTE socket in the network namespace of the creating thread.
pub struct NlSock {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl NlSock {
    /// `groups`: multicast groups to listen to (0 for a request-only socket).
    pub fn new(groups: u32) -> Result<NlSock> {
        // SAFETY: plain socket(2).
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if raw < 0 {
            bail!("netlink socket: {}", std::io::Error::last_os_error());
        }
        // SAFETY: fresh descriptor, owned from here on.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: zeroed sockaddr_nl is valid; fields set below.
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as u16;
        sa.nl_groups = groups;
        // SAFETY: valid fd and address.
        let rc = unsafe {
            libc::bind(
                raw,
                &sa as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if rc != 0 {
            bail!("netlink bind: {}", std::io::Error::last_os_error());
        }
        let size: libc::c_int = 4 << 20;
        // SAFETY: valid fd and option buffer; failure only means a smaller buffer.
        unsafe {
            libc::setsockopt(
                raw,
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                &size as *const _ as *const libc::c_void,
                4,
            );
        }
        let s = NlSock {
            fd,
            seq: 1,
            buf: vec![0; 1 << 16],
        };
        s.set_timeout(Duration::from_millis(20));
        Ok(s)
    }

    fn set_timeout(&self, d: Duration) {
        let tv = libc::timeval {
            tv_sec: d.as_secs() as libc::time_t,
            tv_usec: d.subsec_micros() as libc::suseconds_t,
        };
        // SAFETY: valid fd and option buffer.
        unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as u32,
            );
        }
    }

    /// One datagram (None on timeout), with the time recv() returned.
    fn recv(&mut self) -> Option<(usize, Instant)> {
        // SAFETY: valid buffer.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                self.buf.as_mut_ptr() as *mut libc::c_void,
                self.buf.len(),
                0,
            )
        };
        let at = Instant::now();
        (n > 0).then_some((n as usize, at))
    }

    /// The link events of the next datagram (None on timeout), with the time recv() returned.
    pub fn recv_events(&mut self) -> Option<(Instant, Vec<LinkEvent>)> {
        let (n, at) = self.recv()?;
        Some((at, parse_link_events(&self.buf[..n])))
    }

    /// RTM_DELLINK of interface `index`; returns once the kernel acknowledged it.
    pub fn del_link(&mut self, index: i32) -> Result<()> {
        self.seq += 1;
        let mut m = Vec::with_capacity(32);
        m.extend_from_slice(&32u32.to_ne_bytes());
        m.extend_from_slice(&RTM_DELLINK.to_ne_bytes());
        m.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        m.extend_from_slice(&self.seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&[0, 0, 0, 0]); // family, pad, type
        m.extend_from_slice(&index.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        // SAFETY: valid buffer; the kernel is the default destination.
        let n = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                m.as_ptr() as *const libc::c_void,
                m.len(),
                0,
            )
        };
        if n < 0 {
            bail!("netlink send: {}", std::io::Error::last_os_error());
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let Some((n, _)) = self.recv() else {
                continue;
            };
            let b = &self.buf[..n];
            let mut off = 0;
            while off + 20 <= n {
                let len = u32_at(b, off) as usize;
                if len < 16 {
                    break;
                }
                if u16_at(b, off + 4) == NLMSG_ERROR && u32_at(b, off + 8) == self.seq {
                    let err = u32_at(b, off + 16) as i32;
                    if err == 0 {
                        return Ok(());
                    }
                    bail!("RTM_DELLINK: {}", std::io::Error::from_raw_os_error(-err));
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

    fn attr(b: &mut Vec<u8>, ty: u16, data: &[u8]) {
        b.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
        b.extend_from_slice(&ty.to_ne_bytes());
        b.extend_from_slice(data);
        while b.len() & 3 != 0 {
            b.push(0);
        }
    }

    fn msg(ty: u16, index: i32, flags: u32, name: &str, master: Option<u32>) -> Vec<u8> {
        let mut b = vec![0u8; 16];
        b.extend_from_slice(&[0, 0, 1, 0]);
        b.extend_from_slice(&index.to_ne_bytes());
        b.extend_from_slice(&flags.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes());
        attr(&mut b, 4, &1500u32.to_ne_bytes());
        let mut n = name.as_bytes().to_vec();
        n.push(0);
        attr(&mut b, IFLA_IFNAME, &n);
        if let Some(m) = master {
            attr(&mut b, IFLA_MASTER, &m.to_ne_bytes());
        }
        let len = b.len() as u32;
        b[0..4].copy_from_slice(&len.to_ne_bytes());
        b[4..6].copy_from_slice(&ty.to_ne_bytes());
        b
    }

    #[test]
    fn parses_several_link_messages_and_skips_others() {
        let mut d = msg(RTM_DELLINK, 7, 0, "ethvxlan0", None);
        let mut other = vec![0u8; 20];
        other[0..4].copy_from_slice(&20u32.to_ne_bytes());
        other[4..6].copy_from_slice(&20u16.to_ne_bytes()); // RTM_NEWADDR
        d.extend_from_slice(&other);
        d.extend(msg(RTM_NEWLINK, 9, IFF_UP | 0x40, "ethvxlan0", Some(3)));
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
        let down = &parse_link_events(&msg(RTM_NEWLINK, 9, 0, "ethvxlan0", Some(3)))[0];
        assert!(!down.is_repaired("ethvxlan0", 7, 3), "not up");
    }

    #[test]
    fn truncated_input_does_not_panic() {
        let m = msg(RTM_NEWLINK, 2, 1, "cloudbr0", None);
        for cut in 0..m.len() {
            let _ = parse_link_events(&m[..cut]);
        }
    }
}
