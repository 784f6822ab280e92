//! ethtool's transmit-checksum offload of a device (`ethtool -k DEV` "tx-checksumming"),
//! through the legacy SIOCETHTOOL ioctl: read it, and switch it off for the VTEP when the
//! configuration says so (`vtep_tx_checksum = "off"`).
//!
//! Why it matters: on kernels before 5.7, VXLAN packets whose inner checksum the device
//! leaves to offload come out with a wrong checksum once NAT rewrote them (MASQUERADE with
//! random ports), and the receiver drops them; TCP recovers only after retransmission
//! backoff — the "63-second stalls" flannel and Calico users saw. Newer kernels are fixed.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GTXCSUM: u32 = 0x16;
const ETHTOOL_STXCSUM: u32 = 0x17;

#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    data: *mut libc::c_void,
    _pad: [u8; 16],
}

fn ioctl(dev: &str, cmd: u32, data: u32) -> std::io::Result<u32> {
    if dev.is_empty() || dev.len() >= libc::IFNAMSIZ {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: socket(2); the fd is owned from here on.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut v = EthtoolValue { cmd, data };
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        data: (&mut v as *mut EthtoolValue).cast(),
        _pad: [0; 16],
    };
    for (d, s) in req.name.iter_mut().zip(dev.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: req and v outlive the call; the kernel reads/writes one ethtool_value.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), SIOCETHTOOL as _, &mut req) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(v.data)
}

/// Whether `dev` offloads transmit checksums (any of the checksum features on).
pub fn tx_checksum(dev: &str) -> std::io::Result<bool> {
    ioctl(dev, ETHTOOL_GTXCSUM, 0).map(|v| v != 0)
}

/// Switch `dev`'s transmit-checksum offload on or off.
pub fn set_tx_checksum(dev: &str, on: bool) -> std::io::Result<()> {
    ioctl(dev, ETHTOOL_STXCSUM, u32::from(on)).map(|_| ())
}

/// The running kernel's release (`uname -r`).
pub fn kernel_release() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .map(|s| s.trim().to_string())
}

/// (major, minor) of a release such as "5.4.0-1103-aws" or "6.1.0-27-cloud-amd64".
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

/// Kernels that miscompute offloaded VXLAN checksums after NAT (fixed in 5.7).
pub fn kernel_has_nat_checksum_bug(release: &str) -> Option<bool> {
    kernel_version(release).map(|v| v < (5, 7))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_releases_parse_and_the_bug_range_is_before_5_7() {
        assert_eq!(kernel_version("5.4.0-1103-aws"), Some((5, 4)));
        assert_eq!(kernel_version("6.1.0-27-cloud-amd64"), Some((6, 1)));
        assert_eq!(kernel_version("4.18.0-553.el8_10.x86_64"), Some((4, 18)));
        assert_eq!(kernel_has_nat_checksum_bug("5.4.0"), Some(true));
        assert_eq!(kernel_has_nat_checksum_bug("5.7.0"), Some(false));
        assert_eq!(kernel_has_nat_checksum_bug("garbage"), None);
    }

    #[test]
    fn a_name_too_long_is_refused_before_any_ioctl() {
        assert!(tx_checksum("a-name-longer-than-ifnamsiz").is_err());
        assert!(tx_checksum("").is_err());
    }
}
