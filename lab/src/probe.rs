//! In-process ICMP echo prober: one thread per source namespace (setns on that thread only),
//! one raw ICMP socket, echo requests to every target of that source, resent until answered or
//! the deadline passes. No `ping` binary, no process per pair, so it scales to big labs.

use crate::sys::enter_netns;
use crate::topo::Endpoint;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// What one source thread found: (pair index, rtt) and an error that made it give up.
type SourceResult = (Vec<(usize, Option<Duration>)>, Option<String>);

/// Result per requested pair: time to first echo reply, or None.
pub struct ProbeResult {
    pub rtt: Vec<Option<Duration>>,
    pub errors: Vec<String>,
}

fn checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in b.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        sum += w as u32;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn echo_request(ident: u16, seq: u16) -> Vec<u8> {
    let mut p = vec![8u8, 0, 0, 0];
    p.extend_from_slice(&ident.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(b"overlay-lab-prob");
    let c = checksum(&p);
    p[2..4].copy_from_slice(&c.to_be_bytes());
    p
}

struct RawSock(i32);

impl Drop for RawSock {
    fn drop(&mut self) {
        // SAFETY: we own the fd.
        unsafe { libc::close(self.0) };
    }
}

impl RawSock {
    fn new() -> std::io::Result<RawSock> {
        // SAFETY: plain socket(2) call.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let s = RawSock(fd);
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 20_000,
        };
        // SAFETY: valid fd and option buffer.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as u32,
            );
        }
        Ok(s)
    }

    fn send_to(&self, dst: Ipv4Addr, pkt: &[u8]) -> isize {
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(dst).to_be(),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: valid buffer and address; errors (e.g. EHOSTUNREACH) just mean "retry".
        unsafe {
            libc::sendto(
                self.0,
                pkt.as_ptr() as *const libc::c_void,
                pkt.len(),
                libc::MSG_DONTWAIT,
                &sa as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            )
        }
    }

    /// One received IPv4 packet (with header), or None on timeout.
    fn recv(&self, buf: &mut [u8]) -> Option<usize> {
        // SAFETY: valid buffer.
        let n = unsafe { libc::recv(self.0, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
        (n > 0).then_some(n as usize)
    }
}

/// Probe `pairs` (indexes into `eps`) until every pair answered or `timeout` passed.
pub fn probe(eps: &[Endpoint], pairs: &[(usize, usize)], timeout: Duration) -> ProbeResult {
    probe_every(eps, pairs, timeout, None)
}

/// [`probe`], re-sending unanswered echoes every `every` (None: 0.2 s, 0.4 s, then every
/// 0.5 s): a fixed short interval measures *when* a target became reachable.
pub fn probe_every(
    eps: &[Endpoint],
    pairs: &[(usize, usize)],
    timeout: Duration,
    every: Option<Duration>,
) -> ProbeResult {
    let mut by_src: BTreeMap<usize, Vec<(usize, usize)>> = BTreeMap::new();
    for (k, &(s, d)) in pairs.iter().enumerate() {
        by_src.entry(s).or_default().push((k, d));
    }
    let start = Instant::now();
    let mut rtt = vec![None; pairs.len()];
    let mut errors = Vec::new();
    let results: Vec<SourceResult> = std::thread::scope(|sc| {
        let handles: Vec<_> = by_src
            .iter()
            .enumerate()
            .map(|(ti, (&src, targets))| {
                sc.spawn(move || probe_from(ti, &eps[src], eps, targets, start, timeout, every))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (res, err) in results {
        for (k, r) in res {
            rtt[k] = r;
        }
        errors.extend(err);
    }
    ProbeResult { rtt, errors }
}

fn probe_from(
    ti: usize,
    src: &Endpoint,
    eps: &[Endpoint],
    targets: &[(usize, usize)],
    start: Instant,
    timeout: Duration,
    every: Option<Duration>,
) -> SourceResult {
    let fail_all = |e: String| (targets.iter().map(|&(k, _)| (k, None)).collect(), Some(e));
    if let Err(e) = enter_netns(&src.ns) {
        return fail_all(format!("{}: {e:#}", src.name));
    }
    let sock = match RawSock::new() {
        Ok(s) => s,
        Err(e) => return fail_all(format!("{}: raw ICMP socket: {e}", src.name)),
    };
    let ident = ((std::process::id() as usize * 131 + ti) & 0xffff) as u16;
    // seq = position in `targets`
    let mut got: Vec<Option<Duration>> = vec![None; targets.len()];
    let mut left = targets.len();
    let mut next_send = start;
    let mut round = 0u32;
    let mut buf = [0u8; 2048];
    while left > 0 && start.elapsed() < timeout {
        if Instant::now() >= next_send {
            for (i, &(_, d)) in targets.iter().enumerate() {
                if got[i].is_none() {
                    let r = sock.send_to(eps[d].ip, &echo_request(ident, i as u16));
                    if r < 0 && std::env::var_os("OVERLAY_LAB_PROBE_DEBUG").is_some() {
                        eprintln!(
                            "probe {} -> {}: {}",
                            src.name,
                            eps[d].name,
                            std::io::Error::last_os_error()
                        );
                    }
                }
            }
            round += 1;
            // 0.2 s, 0.4 s, then every 0.5 s
            next_send = Instant::now()
                + every.unwrap_or(Duration::from_millis((200 * round as u64).min(500)));
        }
        let Some(n) = sock.recv(&mut buf) else {
            continue;
        };
        let p = &buf[..n];
        if n < 20 {
            continue;
        }
        let ihl = ((p[0] & 0x0f) as usize) * 4;
        if n < ihl + 8 || p[ihl] != 0 {
            continue;
        }
        let from = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
        let id = u16::from_be_bytes([p[ihl + 4], p[ihl + 5]]);
        let seq = u16::from_be_bytes([p[ihl + 6], p[ihl + 7]]) as usize;
        if id != ident || seq >= targets.len() || got[seq].is_some() {
            continue;
        }
        if eps[targets[seq].1].ip != from {
            continue;
        }
        got[seq] = Some(start.elapsed());
        left -= 1;
    }
    (
        targets.iter().zip(got).map(|(&(k, _), g)| (k, g)).collect(),
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn icmp_checksum_verifies() {
        let p = echo_request(0x1234, 7);
        assert_eq!(checksum(&p), 0);
        assert_eq!(p[0], 8);
    }
}
