//! An unsolicited IGMPv2 membership report for the VXLAN group, sent by overlayd itself.
//!
//! The kernel reports a group when the VTEP joins it, and afterwards only when asked (a
//! query). A switch that forgets a member when its link goes down (a snooping bridge flushes
//! the port's groups; a multicast domain may drop an interface it lost) then keeps it out of
//! the group's traffic — every broadcast and unknown unicast frame — until the next query,
//! up to two minutes later with a TGW. overlayd announces the membership again when the
//! underlay has its carrier back and when overlayd starts, as the kernel does on a join.
//!
//! The report is the kernel's own kind: type 0x16, to the group, TTL 1, the Router Alert
//! option (RFC 2236), out of the underlay with the underlay's address.

use std::net::Ipv4Addr;

use crate::icmp::{checksum, sockaddr};

/// IGMPv2 membership report.
const V2_REPORT: u8 = 0x16;

/// The 8 bytes of an IGMPv2 report for `group`.
pub fn v2_report(group: Ipv4Addr) -> [u8; 8] {
    let g = group.octets();
    let mut p = [V2_REPORT, 0, 0, 0, g[0], g[1], g[2], g[3]];
    let c = checksum(&p).to_be_bytes();
    p[2] = c[0];
    p[3] = c[1];
    p
}

fn setsockopt<T>(fd: i32, level: i32, name: i32, v: &T) -> std::io::Result<()> {
    // SAFETY: `v` is valid for size_of::<T>() bytes for the duration of the call.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (v as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Send one report for `group` out of `device` (ifindex `index`).
pub fn send(device: &str, index: u32, group: Ipv4Addr) -> std::io::Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: plain socket(2); the fd is owned from here on.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::IPPROTO_IGMP,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let raw = fd.as_raw_fd();
    let mreqn = libc::ip_mreqn {
        imr_multiaddr: libc::in_addr { s_addr: 0 },
        imr_address: libc::in_addr { s_addr: 0 },
        imr_ifindex: index as i32,
    };
    setsockopt(raw, libc::IPPROTO_IP, libc::IP_MULTICAST_IF, &mreqn)?;
    setsockopt(raw, libc::IPPROTO_IP, libc::IP_MULTICAST_TTL, &1i32)?;
    setsockopt(raw, libc::IPPROTO_IP, libc::IP_MULTICAST_LOOP, &0i32)?;
    // Router Alert (RFC 2113): type 148, length 4, value 0
    setsockopt(
        raw,
        libc::IPPROTO_IP,
        libc::IP_OPTIONS,
        &[0x94u8, 0x04, 0, 0],
    )?;
    let pkt = v2_report(group);
    let dst = sockaddr(group);
    // SAFETY: pkt and dst are valid for the lengths passed.
    let n = unsafe {
        libc::sendto(
            raw,
            pkt.as_ptr().cast(),
            pkt.len(),
            0,
            (&dst as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if n < 0 {
        return Err(std::io::Error::other(format!(
            "IGMPv2 report on {device}: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_v2_report_is_the_kernels() {
        // as tcpdump shows the kernel's report for 239.255.0.1
        let p = v2_report(Ipv4Addr::new(239, 255, 0, 1));
        assert_eq!(p[0], 0x16);
        assert_eq!(&p[4..], &[239, 255, 0, 1]);
        assert_eq!(checksum(&p), 0, "a packet with its checksum sums to zero");
        assert_eq!(u16::from_be_bytes([p[2], p[3]]), 0xf9_fe);
    }
}
