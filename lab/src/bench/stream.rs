//! A steady ICMP echo stream (one request per interval, 64-bit sequence numbers in the
//! payload) from one namespace to an address, with the send and answer time of every probe
//! kept, so the repair benchmark can tell when traffic passes again and which probes were lost.

use crate::sys::enter_netns;
use anyhow::{bail, Result};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const MAGIC: &[u8; 8] = b"olbench1";

/// Internet checksum (RFC 1071) of `b`.
pub fn inet_checksum(b: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    let mut it = b.chunks_exact(2);
    for w in &mut it {
        sum += u16::from_be_bytes([w[0], w[1]]) as u64;
    }
    if let [last] = it.remainder() {
        sum += (*last as u64) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn request(ident: u16, seq: u64) -> [u8; 24] {
    let mut p = [0u8; 24];
    p[0] = 8;
    p[4..6].copy_from_slice(&ident.to_be_bytes());
    p[6..8].copy_from_slice(&(seq as u16).to_be_bytes());
    p[8..16].copy_from_slice(MAGIC);
    p[16..24].copy_from_slice(&seq.to_be_bytes());
    let c = inet_checksum(&p);
    p[2..4].copy_from_slice(&c.to_be_bytes());
    p
}

/// The sequence number of an echo reply (IPv4 header included) from `from` with `ident`.
pub fn parse_reply(pkt: &[u8], ident: u16, from: Ipv4Addr) -> Option<u64> {
    if pkt.len() < 20 {
        return None;
    }
    let ihl = ((pkt[0] & 0x0f) as usize) * 4;
    let icmp = pkt.get(ihl..)?;
    if icmp.len() < 24 || icmp[0] != 0 || Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]) != from
    {
        return None;
    }
    if u16::from_be_bytes([icmp[4], icmp[5]]) != ident || &icmp[8..16] != MAGIC {
        return None;
    }
    Some(u64::from_be_bytes(icmp[16..24].try_into().ok()?))
}

struct Shared {
    base: Instant,
    /// Nanoseconds after `base` + 1 (0 = not sent / not answered), indexed by sequence.
    sent: Vec<AtomicU64>,
    answered: Vec<AtomicU64>,
    next: AtomicUsize,
    stop: AtomicBool,
}

/// A running probe stream. Stop it with `stop()`; dropping it stops it too.
pub struct Stream {
    sh: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

fn stamp(base: Instant, t: Instant) -> u64 {
    t.saturating_duration_since(base).as_nanos() as u64 + 1
}

impl Stream {
    /// Start sending from namespace `ns` to `dst` every `interval`, for at most `capacity`
    /// probes.
    pub fn start(ns: &str, dst: Ipv4Addr, interval: Duration, capacity: usize) -> Result<Stream> {
        let sh = Arc::new(Shared {
            base: Instant::now(),
            sent: (0..capacity).map(|_| AtomicU64::new(0)).collect(),
            answered: (0..capacity).map(|_| AtomicU64::new(0)).collect(),
            next: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let ident = (std::process::id() as u16) ^ 0x5a5a;
        let (tx, rx) = std::sync::mpsc::channel::<Result<Arc<OwnedFd>>>();
        let ns = ns.to_string();
        let sh_send = sh.clone();
        let sender = std::thread::spawn(move || {
            let sock = (|| -> Result<Arc<OwnedFd>> {
                enter_netns(&ns)?;
                // SAFETY: plain socket(2).
                let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) };
                if fd < 0 {
                    bail!("raw ICMP socket: {}", std::io::Error::last_os_error());
                }
                // SAFETY: fresh descriptor.
                Ok(Arc::new(unsafe { OwnedFd::from_raw_fd(fd) }))
            })();
            let sock = match sock {
                Ok(s) => {
                    let _ = tx.send(Ok(s.clone()));
                    s
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            send_loop(&sh_send, &sock, dst, ident, interval);
        });
        let sock = rx
            .recv()
            .map_err(|_| anyhow::anyhow!("probe sender thread died"))??;
        let sh_recv = sh.clone();
        let receiver = std::thread::spawn(move || recv_loop(&sh_recv, &sock, dst, ident));
        Ok(Stream {
            sh,
            threads: vec![sender, receiver],
        })
    }

    pub fn stop(&mut self) {
        self.sh.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }

    /// Number of probes sent so far.
    pub fn sent(&self) -> usize {
        self.sh.next.load(Ordering::Acquire)
    }

    fn at(&self, v: u64) -> Option<Instant> {
        (v != 0).then(|| self.sh.base + Duration::from_nanos(v - 1))
    }

    pub fn sent_at(&self, seq: usize) -> Option<Instant> {
        self.at(self.sh.sent.get(seq)?.load(Ordering::Acquire))
    }

    pub fn answered_at(&self, seq: usize) -> Option<Instant> {
        self.at(self.sh.answered.get(seq)?.load(Ordering::Acquire))
    }

    /// First sequence number sent at or after `t` (may not be sent yet).
    pub fn first_sent_after(&self, t: Instant) -> usize {
        let n = self.sent();
        // sends are in time order: binary search
        let (mut lo, mut hi) = (0, n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.sent_at(mid) {
                Some(s) if s < t => lo = mid + 1,
                _ => hi = mid,
            }
        }
        lo
    }

    /// Wait until a probe sent at or after `t` is answered; returns the earliest answer time.
    pub fn wait_answer_after(&self, t: Instant, deadline: Instant) -> Option<Instant> {
        let first = self.first_sent_after(t);
        while Instant::now() < deadline {
            if let Some(a) = (first..self.sent())
                .filter_map(|s| self.answered_at(s))
                .min()
            {
                return Some(a);
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        None
    }

    /// Wait until `k` consecutive probes sent after now were answered (steady traffic).
    pub fn wait_steady(&self, k: usize, deadline: Instant) -> bool {
        let start = self.first_sent_after(Instant::now());
        let mut run = 0;
        let mut s = start;
        while Instant::now() < deadline {
            if s < self.sent() {
                match self.answered_at(s) {
                    Some(_) => {
                        run += 1;
                        s += 1;
                        if run >= k {
                            return true;
                        }
                        continue;
                    }
                    None => {
                        // give it 50 ms to be answered, else count it as a break
                        if self
                            .sent_at(s)
                            .is_some_and(|t| t.elapsed() > Duration::from_millis(50))
                        {
                            run = 0;
                            s += 1;
                            continue;
                        }
                    }
                }
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        false
    }

    /// Probes sent in [from, to) that never got an answer.
    pub fn lost_between(&self, from: Instant, to: Instant) -> usize {
        let a = self.first_sent_after(from);
        let b = self.first_sent_after(to);
        (a..b).filter(|&s| self.answered_at(s).is_none()).count()
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.stop();
    }
}

fn send_loop(sh: &Shared, sock: &OwnedFd, dst: Ipv4Addr, ident: u16, interval: Duration) {
    let sa = libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(dst).to_be(),
        },
        sin_zero: [0; 8],
    };
    let mut next = Instant::now();
    let mut seq = 0usize;
    while !sh.stop.load(Ordering::Relaxed) && seq < sh.sent.len() {
        let now = Instant::now();
        if now < next {
            std::thread::sleep(next - now);
        }
        let p = request(ident, seq as u64);
        let t = Instant::now();
        sh.sent[seq].store(stamp(sh.base, t), Ordering::Release);
        sh.next.store(seq + 1, Ordering::Release);
        // SAFETY: valid buffer and address; send errors (unreachable) are just lost probes.
        unsafe {
            libc::sendto(
                sock.as_raw_fd(),
                p.as_ptr() as *const libc::c_void,
                p.len(),
                libc::MSG_DONTWAIT,
                &sa as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            );
        }
        seq += 1;
        next += interval;
        // after a long stall, do not burst to catch up
        if Instant::now() > next + interval * 10 {
            next = Instant::now();
        }
    }
}

fn recv_loop(sh: &Shared, sock: &OwnedFd, from: Ipv4Addr, ident: u16) {
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 20_000,
    };
    // SAFETY: valid fd and option buffer.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as u32,
        );
    }
    let mut buf = [0u8; 2048];
    while !sh.stop.load(Ordering::Relaxed) {
        // SAFETY: valid buffer.
        let n = unsafe {
            libc::recv(
                sock.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                0,
            )
        };
        if n <= 0 {
            continue;
        }
        let t = Instant::now();
        if let Some(seq) = parse_reply(&buf[..n as usize], ident, from) {
            if let Some(slot) = sh.answered.get(seq as usize) {
                let _ = slot.compare_exchange(
                    0,
                    stamp(sh.base, t),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_checksum_verifies_and_reply_parses() {
        let p = request(0x1234, 70_000);
        assert_eq!(inet_checksum(&p), 0);
        // turn it into a reply from 10.101.0.10 with a 20-byte IPv4 header
        let mut pkt = vec![
            0x45u8, 0, 0, 44, 0, 0, 0, 0, 64, 1, 0, 0, 10, 101, 0, 10, 10, 101, 0, 2,
        ];
        let mut r = p;
        r[0] = 0;
        pkt.extend_from_slice(&r);
        let from = Ipv4Addr::new(10, 101, 0, 10);
        assert_eq!(parse_reply(&pkt, 0x1234, from), Some(70_000));
        assert_eq!(parse_reply(&pkt, 0x1235, from), None);
        assert_eq!(
            parse_reply(&pkt, 0x1234, Ipv4Addr::new(10, 101, 0, 11)),
            None
        );
        assert_eq!(parse_reply(&pkt[..30], 0x1234, from), None);
    }

    #[test]
    fn checksum_of_odd_length() {
        assert_eq!(inet_checksum(&[0xff]), !0xff00);
        assert_eq!(inet_checksum(&[]), 0xffff);
    }
}
