//! One ICMP echo from a given source address (`ping -I SRC DST`): how `overlayd doctor` asks
//! whether the gateway answers over the overlay. A raw socket (root), blocking, bounded by
//! its timeout; it sends and reads, and changes no configuration.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// The Internet checksum (RFC 1071) of `b` (ICMP here, IGMP in [`crate::igmp_report`]).
pub(crate) fn checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in b.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        sum += u32::from(w);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An echo request: type 8, id, sequence, 16 bytes of payload.
pub fn echo_request(id: u16, seq: u16) -> Vec<u8> {
    let mut p = vec![8, 0, 0, 0];
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(b"overlayd doctor!");
    let c = checksum(&p);
    p[2..4].copy_from_slice(&c.to_be_bytes());
    p
}

/// Whether an IPv4 packet (header included, as a raw socket returns it) is the echo reply
/// from `from` with this id.
pub fn is_reply(pkt: &[u8], from: Ipv4Addr, id: u16) -> bool {
    if pkt.len() < 20 || pkt[0] >> 4 != 4 {
        return false;
    }
    let ihl = usize::from(pkt[0] & 0x0f) * 4;
    let src = Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]);
    match pkt.get(ihl..ihl + 8) {
        Some(icmp) => src == from && icmp[0] == 0 && icmp[4..6] == id.to_be_bytes(),
        None => false,
    }
}

pub(crate) fn sockaddr(a: Ipv4Addr) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(a.octets()),
        },
        sin_zero: [0; 8],
    }
}

/// Up to `tries` echoes from `src` to `dst`, each waited for `wait`: the round-trip time of
/// the first answer, or why there was none.
pub fn ping(src: Ipv4Addr, dst: Ipv4Addr, tries: u16, wait: Duration) -> Result<Duration, String> {
    // SAFETY: socket(2); owned from here on.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::IPPROTO_ICMP,
        )
    };
    if fd < 0 {
        return Err(format!(
            "raw ICMP socket: {} (doctor needs root for this check)",
            std::io::Error::last_os_error()
        ));
    }
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let sa = sockaddr(src);
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: sa outlives the call; its size is passed.
    if unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_in).cast(),
            len,
        )
    } != 0
    {
        return Err(format!(
            "bind to {src}: {}",
            std::io::Error::last_os_error()
        ));
    }
    let id = (std::process::id() & 0xffff) as u16;
    let to = sockaddr(dst);
    for seq in 1..=tries {
        let req = echo_request(id, seq);
        let t0 = Instant::now();
        // SAFETY: req and to outlive the call.
        let n = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                req.as_ptr().cast(),
                req.len(),
                0,
                (&to as *const libc::sockaddr_in).cast(),
                len,
            )
        };
        if n < 0 {
            return Err(format!(
                "send to {dst} from {src}: {}",
                std::io::Error::last_os_error()
            ));
        }
        let mut buf = [0u8; 1500];
        while t0.elapsed() < wait {
            let left = wait.saturating_sub(t0.elapsed());
            let mut pfd = libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one pollfd.
            let r = unsafe { libc::poll(&mut pfd, 1, left.as_millis().max(1) as libc::c_int) };
            if r <= 0 {
                continue;
            }
            // SAFETY: buf is valid for its length.
            let n = unsafe {
                libc::recv(
                    fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n > 0 && is_reply(&buf[..n as usize], dst, id) {
                return Ok(t0.elapsed());
            }
        }
    }
    Err(format!(
        "no answer from {dst} to {tries} echo request(s) from {src} ({} ms each)",
        wait.as_millis()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_checksums_to_zero_and_replies_are_matched_by_source_and_id() {
        let r = echo_request(0x1234, 1);
        assert_eq!(checksum(&r), 0, "a correct checksum sums to zero");
        let mut reply = vec![
            0x45, 0, 0, 44, 0, 0, 0, 0, 64, 1, 0, 0, 10, 101, 0, 1, 10, 101, 0, 10,
        ];
        let mut icmp = r.clone();
        icmp[0] = 0;
        reply.extend_from_slice(&icmp);
        let gw = Ipv4Addr::new(10, 101, 0, 1);
        assert!(is_reply(&reply, gw, 0x1234));
        assert!(!is_reply(&reply, gw, 0x4321), "another id");
        assert!(
            !is_reply(&reply, Ipv4Addr::new(10, 101, 0, 2), 0x1234),
            "another source"
        );
        assert!(!is_reply(&reply[..24], gw, 0x1234), "truncated");
    }
}
