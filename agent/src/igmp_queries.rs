//! IGMP queries heard on the underlay: the history `overlayd doctor` needs to tell "the
//! Transit Gateway asks this node" from "nobody asks" (subnet not associated with the
//! multicast domain, or IGMP from 0.0.0.0/32 blocked by a security group or network ACL).
//!
//! A raw `IPPROTO_IGMP` socket bound to the underlay gets a copy of every IGMP packet the
//! kernel delivers there (queries to 224.0.0.1 included: every interface is in all-hosts);
//! it only reads, so nothing the kernel does changes. Runs in its own thread for the
//! daemon's lifetime, with multicast flooding only.

use serde::Serialize;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the daemon remembers about queries (part of `overlayd status --json`).
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct QueryLog {
    /// The device listened on.
    pub device: String,
    /// Since when (ms since the epoch): 0 while the socket could not be opened yet.
    pub listening_since_unix_ms: u128,
    /// General and group-specific queries heard.
    pub count: u64,
    pub last_unix_ms: Option<u128>,
    pub last_from: Option<Ipv4Addr>,
    /// 1, 2 or 3 (from the query's length and max-response field).
    pub last_version: Option<u8>,
    /// Why listening failed (None while it works).
    pub error: Option<String>,
}

/// One IGMP query in an IPv4 packet as a raw socket returns it (IP header included):
/// (source, version), or None for anything that is not a query.
pub fn parse_query(pkt: &[u8]) -> Option<(Ipv4Addr, u8)> {
    if pkt.len() < 20 || pkt[0] >> 4 != 4 || pkt[9] != libc::IPPROTO_IGMP as u8 {
        return None;
    }
    let ihl = usize::from(pkt[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([pkt[2], pkt[3]])).min(pkt.len());
    let igmp = pkt.get(ihl..total)?;
    if igmp.len() < 8 || igmp[0] != 0x11 {
        return None;
    }
    let from = Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]);
    // RFC 3376 §7.1: 8 bytes with max resp 0 = v1, 8 bytes = v2, ≥ 12 bytes = v3
    let version = match (igmp.len(), igmp[1]) {
        (8, 0) => 1,
        (8, _) => 2,
        _ => 3,
    };
    Some((from, version))
}

fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

fn open(device: &str) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket(2); the fd is owned from here on.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_IGMP) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    use std::os::fd::AsRawFd;
    let name = device.as_bytes();
    // SAFETY: the name buffer outlives the call; its length is passed.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}

/// Listen on `device` for the rest of the process's life, recording into `log` (and
/// calling `on_query` per query, for metrics).
pub fn spawn(
    device: String,
    log: Arc<Mutex<QueryLog>>,
    on_query: impl Fn() + Send + 'static,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("igmp-queries".into())
        .spawn(move || loop {
            let fd = match open(&device) {
                Ok(fd) => {
                    let mut l = log.lock().unwrap();
                    if l.listening_since_unix_ms == 0 {
                        l.listening_since_unix_ms = now_ms();
                    }
                    l.error = None;
                    fd
                }
                Err(e) => {
                    log.lock().unwrap().error = Some(format!("raw IGMP socket on {device}: {e}"));
                    std::thread::sleep(Duration::from_secs(5));
                    continue;
                }
            };
            let mut buf = [0u8; 2048];
            loop {
                use std::os::fd::AsRawFd;
                // SAFETY: buf is valid for its length.
                let n =
                    unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
                if n < 0 {
                    let e = std::io::Error::last_os_error();
                    match e.kind() {
                        std::io::ErrorKind::Interrupted => continue,
                        // open again (SO_BINDTODEVICE is by name) after a pause
                        _ => {
                            log.lock().unwrap().error = Some(format!("recv on {device}: {e}"));
                            std::thread::sleep(Duration::from_secs(5));
                            break;
                        }
                    }
                }
                if let Some((from, version)) = parse_query(&buf[..n as usize]) {
                    let mut l = log.lock().unwrap();
                    l.count += 1;
                    l.last_unix_ms = Some(now_ms());
                    l.last_from = Some(from);
                    l.last_version = Some(version);
                    drop(l);
                    on_query();
                }
            }
        })
        .map(|_| ())
}

/// Seconds since the last query, or — none heard — since listening began (the bool says
/// which: true = a query was heard). None while not listening.
pub fn age_secs(l: &QueryLog, now_unix_ms: u128) -> Option<(u64, bool)> {
    let secs = |t: u128| (now_unix_ms.saturating_sub(t) / 1000) as u64;
    match l.last_unix_ms {
        Some(t) => Some((secs(t), true)),
        None if l.listening_since_unix_ms > 0 => Some((secs(l.listening_since_unix_ms), false)),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(src: [u8; 4], igmp: &[u8]) -> Vec<u8> {
        // 24-byte header (router alert option), as queriers send them
        let total = 24 + igmp.len();
        let mut p = vec![
            0x46,
            0,
            (total >> 8) as u8,
            total as u8,
            0,
            0,
            0,
            0,
            1,
            2,
            0,
            0,
        ];
        p.extend_from_slice(&src);
        p.extend_from_slice(&[224, 0, 0, 1, 0x94, 4, 0, 0]);
        p.extend_from_slice(igmp);
        p
    }

    #[test]
    fn queries_are_told_apart_by_version_and_reports_ignored() {
        let v2 = ip([0, 0, 0, 0], &[0x11, 100, 0, 0, 0, 0, 0, 0]);
        assert_eq!(parse_query(&v2), Some((Ipv4Addr::UNSPECIFIED, 2)));
        let v1 = ip([10, 0, 0, 1], &[0x11, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(parse_query(&v1), Some((Ipv4Addr::new(10, 0, 0, 1), 1)));
        let v3 = ip([0, 0, 0, 0], &[0x11, 100, 0, 0, 0, 0, 0, 0, 2, 125, 0, 0]);
        assert_eq!(parse_query(&v3).map(|q| q.1), Some(3));
        let report = ip([10, 0, 0, 5], &[0x16, 0, 0, 0, 239, 255, 0, 1]);
        assert_eq!(parse_query(&report), None);
        assert_eq!(parse_query(&v2[..20]), None, "truncated");
    }

    #[test]
    fn age_counts_from_the_last_query_or_from_listening() {
        let mut l = QueryLog {
            listening_since_unix_ms: 10_000,
            ..Default::default()
        };
        assert_eq!(age_secs(&l, 250_000), Some((240, false)));
        l.last_unix_ms = Some(200_000);
        assert_eq!(age_secs(&l, 250_000), Some((50, true)));
        assert_eq!(age_secs(&QueryLog::default(), 5), None);
    }
}
