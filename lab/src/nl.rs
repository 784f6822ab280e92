//! A small synchronous rtnetlink client for the lab's own plumbing (addresses, veths, routes
//! inside the lab namespaces). Spawning `ip` costs ~6 ms per process here, which dominated
//! `up` for hundreds of namespaces; one netlink request costs microseconds. Messages are
//! built and parsed by netlink-packet-route, sent over a netlink-sys socket (no hand-made
//! encoding). overlayd itself is always the real binary; this is only for the emulated VPC.

use anyhow::{bail, Context, Result};
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;

/// A NETLINK_ROUTE socket in the network namespace of the thread that created it.
pub struct Nl {
    sock: netlink_sys::Socket,
    seq: u32,
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
        let mut sock = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_ROUTE)
            .context("netlink socket")?;
        sock.bind_auto().context("netlink bind")?;
        sock.connect(&netlink_sys::SocketAddr::new(0, 0))
            .context("netlink connect")?;
        Ok(Nl { sock, seq: 1 })
    }

    /// Send one request and wait for its ack; a NACK becomes the errno's error.
    fn request(&mut self, msg: RouteNetlinkMessage, flags: u16) -> Result<()> {
        self.seq += 1;
        let mut header = NetlinkHeader::default();
        header.flags = flags | NLM_F_REQUEST | NLM_F_ACK;
        header.sequence_number = self.seq;
        let mut m = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        m.finalize();
        let mut buf = vec![0u8; m.buffer_len()];
        m.serialize(&mut buf);
        self.sock.send(&buf, 0).context("netlink send")?;
        loop {
            let mut rx: Vec<u8> = Vec::with_capacity(8192);
            let n = self.sock.recv(&mut rx, 0).context("netlink recv")?;
            let mut off = 0;
            while off < n {
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rx[off..n])
                    .context("netlink reply")?;
                let len = reply.header.length as usize;
                if reply.header.sequence_number == self.seq {
                    if let NetlinkPayload::Error(e) = &reply.payload {
                        return match e.code {
                            None => Ok(()),
                            Some(c) => Err(std::io::Error::from_raw_os_error(-c.get()).into()),
                        };
                    }
                }
                if len == 0 {
                    break;
                }
                off += (len + 3) & !3;
            }
        }
    }

    /// Set a link up (by name).
    pub fn link_up(&mut self, name: &str) -> Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = ifindex(name)?;
        m.header.flags = LinkFlags::Up;
        m.header.change_mask = LinkFlags::Up;
        self.request(RouteNetlinkMessage::SetLink(m), 0)
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
        let mut p = LinkMessage::default();
        p.attributes.push(LinkAttribute::IfName(peer.into()));
        p.attributes.push(LinkAttribute::Mtu(mtu));
        p.attributes
            .push(LinkAttribute::NetNsFd(peer_ns.as_raw_fd()));
        let mut m = LinkMessage::default();
        m.header.flags = LinkFlags::Up;
        m.header.change_mask = LinkFlags::Up;
        m.attributes.push(LinkAttribute::IfName(name.into()));
        m.attributes.push(LinkAttribute::Mtu(mtu));
        if let Some(i) = master {
            m.attributes.push(LinkAttribute::Controller(i));
        }
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p))),
        ]));
        self.request(RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL)
            .with_context(|| format!("create veth {name} (peer {peer})"))
    }

    pub fn add_addr(&mut self, dev: &str, ip: Ipv4Addr, len: u8) -> Result<()> {
        let mut m = AddressMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.prefix_len = len;
        m.header.index = ifindex(dev)?;
        m.attributes.push(AddressAttribute::Local(IpAddr::V4(ip)));
        m.attributes.push(AddressAttribute::Address(IpAddr::V4(ip)));
        self.request(
            RouteNetlinkMessage::NewAddress(m),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .with_context(|| format!("add {ip}/{len} to {dev}"))
    }

    /// `default via VIA` in main, metric 0, with routing protocol `proto` (3 = boot, as
    /// `ip route` sets it; 16 = dhcp, as a DHCP client does).
    pub fn add_default_route(&mut self, via: Ipv4Addr, proto: u8) -> Result<()> {
        let mut m = RouteMessage::default();
        m.header.address_family = AddressFamily::Inet;
        m.header.table = RouteHeader::RT_TABLE_MAIN;
        m.header.protocol = RouteProtocol::from(proto);
        m.header.scope = RouteScope::Universe;
        m.header.kind = RouteType::Unicast;
        m.attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet(via)));
        self.request(RouteNetlinkMessage::NewRoute(m), NLM_F_CREATE | NLM_F_EXCL)
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

/// The MAC of `dev` in the current network namespace (SIOCGIFHWADDR).
pub fn mac_of(dev: &str) -> Result<[u8; 6]> {
    // SAFETY: a datagram socket for the ioctl, closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        bail!("socket: {}", std::io::Error::last_os_error());
    }
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(dev.bytes().take(15)) {
        *d = s as libc::c_char;
    }
    // SAFETY: SIOCGIFHWADDR fills ifr_hwaddr of our ifreq.
    let r = unsafe { libc::ioctl(fd, libc::SIOCGIFHWADDR, &mut req) };
    let err = std::io::Error::last_os_error();
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    if r < 0 {
        bail!("{dev}: SIOCGIFHWADDR: {err}");
    }
    // SAFETY: the ioctl succeeded, so the union holds the hardware address.
    let sa = unsafe { req.ifr_ifru.ifru_hwaddr };
    let mut m = [0u8; 6];
    for (d, s) in m.iter_mut().zip(sa.sa_data.iter()) {
        *d = *s as u8;
    }
    Ok(m)
}
