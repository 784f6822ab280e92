//! A minimal synchronous rtnetlink client for the lab's own plumbing (addresses, veths, routes
//! inside the lab namespaces). Spawning `ip` costs ~6 ms per process here, which dominated
//! `up` for hundreds of namespaces; one netlink request costs microseconds. overlayd itself is
//! always the real binary; this is only for the emulated VPC around it.

use anyhow::{bail, Context, Result};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};

const RTM_NEWLINK: u16 = 16;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLMSG_ERROR: u16 = 2;

const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const NLA_F_NESTED: u16 = 0x8000;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const RTA_GATEWAY: u16 = 5;
const IFF_UP: u32 = 1;

/// A NETLINK_ROUTE socket in the network namespace of the thread that created it.
pub struct Nl {
    fd: OwnedFd,
    seq: u32,
}

fn attr(buf: &mut Vec<u8>, ty: u16, data: &[u8]) {
    let len = 4 + data.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(data);
    while buf.len() & 3 != 0 {
        buf.push(0);
    }
}

/// Start a nested attribute; finish it with `end_nest`.
fn begin_nest(buf: &mut Vec<u8>, ty: u16) -> usize {
    let at = buf.len();
    buf.extend_from_slice(&[0, 0]);
    buf.extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
    at
}

fn end_nest(buf: &mut [u8], at: usize) {
    let len = (buf.len() - at) as u16;
    buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
}

fn name_bytes(name: &str) -> Vec<u8> {
    let mut v = name.as_bytes().to_vec();
    v.push(0);
    v
}

fn ifinfomsg(buf: &mut Vec<u8>, index: i32, flags: u32, change: u32) {
    buf.push(0); // AF_UNSPEC
    buf.push(0);
    buf.extend_from_slice(&0u16.to_ne_bytes());
    buf.extend_from_slice(&index.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&change.to_ne_bytes());
}

/// Interface index by name in the calling thread's namespace.
pub fn ifindex(name: &str) -> Result<u32> {
    let c = std::ffi::CString::new(name)?;
    // SAFETY: valid C string; if_nametoindex uses a socket in the thread's netns.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        bail!("no interface {name}");
    }
    Ok(i)
}

impl Nl {
    pub fn new() -> Result<Nl> {
        // SAFETY: plain socket(2).
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            bail!("netlink socket: {}", std::io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh, owned descriptor.
        let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        Ok(Nl { fd, seq: 1 })
    }

    /// Send one request (payload = family header + attributes) and wait for its ack.
    fn request(&mut self, ty: u16, flags: u16, payload: &[u8]) -> Result<()> {
        self.seq += 1;
        let mut m = Vec::with_capacity(16 + payload.len());
        m.extend_from_slice(&((16 + payload.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        m.extend_from_slice(&self.seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(payload);
        // SAFETY: valid buffer; the kernel is the default destination of a netlink socket.
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
        let mut buf = vec![0u8; 8192];
        loop {
            // SAFETY: valid buffer.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                    0,
                )
            };
            if n < 0 {
                bail!("netlink recv: {}", std::io::Error::last_os_error());
            }
            let n = n as usize;
            let mut off = 0;
            while off + 16 <= n {
                let len = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap()) as usize;
                let mty = u16::from_ne_bytes(buf[off + 4..off + 6].try_into().unwrap());
                let seq = u32::from_ne_bytes(buf[off + 8..off + 12].try_into().unwrap());
                if len < 16 {
                    break;
                }
                if mty == NLMSG_ERROR && seq == self.seq && off + 20 <= n {
                    let err = i32::from_ne_bytes(buf[off + 16..off + 20].try_into().unwrap());
                    if err == 0 {
                        return Ok(());
                    }
                    bail!("{}", std::io::Error::from_raw_os_error(-err));
                }
                off += (len + 3) & !3;
            }
        }
    }

    /// Set a link up (by name).
    pub fn link_up(&mut self, name: &str) -> Result<()> {
        let mut p = Vec::new();
        ifinfomsg(&mut p, ifindex(name)? as i32, IFF_UP, IFF_UP);
        self.request(RTM_NEWLINK, 0, &p)
            .with_context(|| format!("set {name} up"))
    }

    /// Create a veth pair `name` (here, optionally enslaved to `master`, up) and `peer` (moved
    /// into the namespace `peer_ns`), both with `mtu`.
    pub fn add_veth(
        &mut self,
        name: &str,
        master: Option<u32>,
        mtu: u32,
        peer: &str,
        peer_ns: &std::fs::File,
    ) -> Result<()> {
        let mut p = Vec::new();
        ifinfomsg(&mut p, 0, IFF_UP, IFF_UP);
        attr(&mut p, IFLA_IFNAME, &name_bytes(name));
        attr(&mut p, IFLA_MTU, &mtu.to_ne_bytes());
        if let Some(m) = master {
            attr(&mut p, IFLA_MASTER, &m.to_ne_bytes());
        }
        let li = begin_nest(&mut p, IFLA_LINKINFO);
        attr(&mut p, IFLA_INFO_KIND, b"veth");
        let data = begin_nest(&mut p, IFLA_INFO_DATA);
        let peer_at = begin_nest(&mut p, VETH_INFO_PEER);
        ifinfomsg(&mut p, 0, 0, 0);
        attr(&mut p, IFLA_IFNAME, &name_bytes(peer));
        attr(&mut p, IFLA_MTU, &mtu.to_ne_bytes());
        attr(&mut p, IFLA_NET_NS_FD, &peer_ns.as_raw_fd().to_ne_bytes());
        end_nest(&mut p, peer_at);
        end_nest(&mut p, data);
        end_nest(&mut p, li);
        self.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, &p)
            .with_context(|| format!("create veth {name} (peer {peer})"))
    }

    pub fn add_addr(&mut self, dev: &str, ip: Ipv4Addr, len: u8) -> Result<()> {
        let idx = ifindex(dev)?;
        let mut p = vec![libc::AF_INET as u8, len, 0, 0];
        p.extend_from_slice(&idx.to_ne_bytes());
        attr(&mut p, IFA_LOCAL, &ip.octets());
        attr(&mut p, IFA_ADDRESS, &ip.octets());
        self.request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, &p)
            .with_context(|| format!("add {ip}/{len} to {dev}"))
    }

    /// `default via VIA` in main, metric 0, with routing protocol `proto` (3 = boot, as
    /// `ip route` sets it; 16 = dhcp, as a DHCP client does).
    pub fn add_default_route(&mut self, via: Ipv4Addr, proto: u8) -> Result<()> {
        // rtmsg: family, dst_len, src_len, tos, table MAIN, protocol, scope UNIVERSE,
        // type UNICAST, flags
        let mut p = vec![libc::AF_INET as u8, 0, 0, 0, 254, proto, 0, 1];
        p.extend_from_slice(&0u32.to_ne_bytes());
        attr(&mut p, RTA_GATEWAY, &via.octets());
        self.request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, &p)
            .with_context(|| format!("add default route via {via}"))
    }
}

/// Turn IPv6 off in the calling thread's namespace (for links created afterwards too). Used for
/// VMs and the client only: their link-local chatter (DAD, router and MLD solicitations) would
/// otherwise be flooded through every VTEP, which in a 250-host lab costs more CPU than the
/// rest of `up`. The overlay nodes keep their IPv6 defaults (overlayd's environment).
pub fn disable_ipv6() -> Result<()> {
    for k in ["all", "default"] {
        std::fs::write(format!("/proc/sys/net/ipv6/conf/{k}/disable_ipv6"), "1")
            .with_context(|| format!("net.ipv6.conf.{k}.disable_ipv6"))?;
    }
    Ok(())
}

/// Run `f` on a fresh thread inside namespace `ns` (the caller's thread is not moved).
pub fn in_netns<R: Send>(ns: &str, f: impl FnOnce() -> Result<R> + Send) -> Result<R> {
    std::thread::scope(|s| {
        s.spawn(|| {
            crate::sys::enter_netns(ns)?;
            f()
        })
        .join()
        .unwrap_or_else(|_| bail!("worker thread for {ns} panicked"))
    })
}
