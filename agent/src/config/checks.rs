//! One check per key: its text from the layers into a typed value, or an error naming key,
//! value and source.

use super::*;

/// Linux interface name rules (IFNAMSIZ 16 incl. NUL).
pub fn check_ifname(key: &str, name: &str, src: Option<Source>) -> Result<(), ConfigError> {
    if name.is_empty() {
        return Err(err(key, name, src, "interface name is empty"));
    }
    if name.len() > 15 {
        return Err(err(
            key,
            name,
            src,
            format!(
                "interface name is {} bytes; Linux allows at most 15",
                name.len()
            ),
        ));
    }
    if name == "." || name == ".." {
        return Err(err(key, name, src, "not a valid interface name"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| *c == '/' || *c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(err(
            key,
            name,
            src,
            format!("interface name contains {c:?}; '/', ':' and whitespace are not allowed"),
        ));
    }
    Ok(())
}

/// Name prefixes the CloudStack KVM agent accepts as a bridge's physical port.
pub const CLOUDSTACK_PORT_PATTERNS: &[&str] = &[
    "eth", "bond", "team", "vlan", "em", "ens", "eno", "enp", "enx",
];

/// Does CloudStack's KVM agent treat this name as a physical port (eth*, bond*, …, p*p*)?
pub fn cloudstack_recognises(name: &str) -> bool {
    if CLOUDSTACK_PORT_PATTERNS.iter().any(|p| name.starts_with(p)) {
        return true;
    }
    // p<digits>p<digits>
    let b = name.as_bytes();
    if b.first() == Some(&b'p') {
        let rest = &name[1..];
        if let Some(i) = rest.find('p') {
            let (a, c) = (&rest[..i], &rest[i + 1..]);
            return !a.is_empty()
                && a.bytes().all(|x| x.is_ascii_digit())
                && c.bytes().next().is_some_and(|x| x.is_ascii_digit());
        }
    }
    false
}

pub(super) fn parse_u32(key: &str, v: &str, src: Source) -> Result<u32, ConfigError> {
    v.trim()
        .parse::<u32>()
        .map_err(|_| err(key, v, Some(src), "not a non-negative integer"))
}

pub(super) fn check_gateway_mode(m: &Layers, role: Role) -> Result<GatewayMode, ConfigError> {
    match get(m, "gateway_mode") {
        None => Ok(GatewayMode::OverlaySourced),
        Some((v, s)) => {
            let g = GatewayMode::parse(v).ok_or_else(|| {
                err(
                    "gateway_mode",
                    v,
                    Some(s),
                    "expected overlay-sourced (default: only overlay-sourced traffic uses the gateway) \
                     or all (the gateway is preferred for everything)",
                )
            })?;
            if !role.needs_gateway() {
                return Err(err(
                    "gateway_mode",
                    v,
                    Some(s),
                    format!("only host and management nodes have a gateway, not {role}"),
                ));
            }
            Ok(g)
        }
    }
}

pub(super) fn check_route_table(m: &Layers) -> Result<u32, ConfigError> {
    match get(m, "route_table") {
        None => Ok(crate::model::DEFAULT_ROUTE_TABLE),
        Some((v, s)) => {
            let n = parse_u32("route_table", v, s)?;
            if n == 0 || (253..=255).contains(&n) {
                return Err(err(
                    "route_table",
                    v,
                    Some(s),
                    "0 and 253-255 are the kernel's (unspec, default, main, local); pick another table number",
                ));
            }
            Ok(n)
        }
    }
}

pub(super) fn check_link_local_routes(m: &Layers) -> Result<Vec<Ipv4Addr>, ConfigError> {
    if !m.contains_key("link_local_routes") {
        return Ok(crate::model::AWS_LINK_LOCAL.to_vec());
    }
    let (vals, src) = list(m, "link_local_routes");
    let mut out: Vec<Ipv4Addr> = Vec::new();
    for v in vals {
        if v == "none" {
            continue;
        }
        let a: Ipv4Addr = v
            .parse()
            .map_err(|_| err("link_local_routes", v, src, "not an IPv4 address"))?;
        if a.is_unspecified() || a.is_multicast() || a.is_broadcast() || a.is_loopback() {
            return Err(err(
                "link_local_routes",
                v,
                src,
                "not a unicast service address",
            ));
        }
        if !out.contains(&a) {
            out.push(a);
        }
    }
    Ok(out)
}

/// The bridge and port names, and the underlay when configured.
pub(super) struct Names {
    underlay: Option<String>,
    bridge: String,
    vtep: String,
    dummy: String,
}

/// `role`: host | management | router | standalone (required).
pub(super) fn check_role(m: &Layers) -> Result<Role, ConfigError> {
    Ok(match get(m, "role") {
        None => {
            return Err(err(
                "role",
                "",
                None,
                "role is required: host | management | router | standalone",
            ))
        }
        Some((v, s)) => Role::parse(v).ok_or_else(|| {
            err(
                "role",
                v,
                Some(s),
                "unknown role; expected host | management | router | standalone",
            )
        })?,
    })
}

/// `underlay`, `bridge`, `vtep`, `dummy`: valid Linux names, names CloudStack's agent treats
/// as physical ports, all different.
pub(super) fn check_names(m: &Layers, role: Role) -> Result<Names, ConfigError> {
    let name = |k: &str, dflt: &str| -> Result<(String, Option<Source>), ConfigError> {
        let (v, s) = get(m, k)
            .map(|(v, s)| (v.to_string(), Some(s)))
            .unwrap_or((dflt.to_string(), None));
        check_ifname(k, &v, s)?;
        Ok((v, s))
    };
    let underlay = match get(m, "underlay") {
        Some((v, s)) => {
            check_ifname("underlay", v, Some(s))?;
            Some(v.to_string())
        }
        None => None,
    };
    let (bridge, _) = name("bridge", "cloudbr0")?;
    let (vtep, vtep_src) = name("vtep", "ethvxlan0")?;
    let (dummy, dummy_src) = name("dummy", "ethdummy0")?;
    if role.has_vtep() && !cloudstack_recognises(&vtep) {
        return Err(err(
            "vtep",
            &vtep,
            vtep_src,
            format!(
                "CloudStack's KVM agent only treats bridge ports named {}* or p<N>p<N> as physical; \
                 it would not use {bridge} (use e.g. ethvxlan0)",
                CLOUDSTACK_PORT_PATTERNS.join("*, ")
            ),
        ));
    }
    if role == Role::Standalone {
        if !cloudstack_recognises(&dummy) {
            return Err(err(
                "dummy",
                &dummy,
                dummy_src,
                "CloudStack's KVM agent only treats bridge ports named eth*, bond*, … as physical (use e.g. ethdummy0)",
            ));
        }
        if dummy.len() > 14 {
            return Err(err(
                "dummy",
                &dummy,
                dummy_src,
                "at most 14 bytes (a veth peer named <dummy>p is used where the kernel lacks dummy)",
            ));
        }
    }
    if let Some(u) = &underlay {
        for (k, n) in [("bridge", &bridge), ("vtep", &vtep), ("dummy", &dummy)] {
            if n == u {
                return Err(err(
                    k,
                    n,
                    get(m, k).map(|x| x.1),
                    "must differ from the underlay interface",
                ));
            }
        }
    }
    if bridge == vtep || (role == Role::Standalone && bridge == dummy) {
        return Err(err(
            "bridge",
            &bridge,
            get(m, "bridge").map(|x| x.1),
            "bridge and port names must differ",
        ));
    }

    Ok(Names {
        underlay,
        bridge,
        vtep,
        dummy,
    })
}

/// `address`: this node's overlay CIDR (required), a usable unicast host address.
pub(super) fn check_address(m: &Layers) -> Result<Ipv4Net, ConfigError> {
    Ok(match get(m, "address") {
        None => {
            return Err(err(
                "address",
                "",
                None,
                "address is required: this node's overlay CIDR, e.g. 10.101.0.10/16",
            ))
        }
        Some((v, s)) => {
            let net: Ipv4Net = v.parse().map_err(|_| {
                err(
                    "address",
                    v,
                    Some(s),
                    "not an IPv4 CIDR such as 10.101.0.10/16",
                )
            })?;
            if net.prefix_len() > 30 {
                return Err(err(
                    "address",
                    v,
                    Some(s),
                    "prefix must be /30 or shorter to hold a subnet of nodes",
                ));
            }
            if net.addr() == net.network() {
                return Err(err(
                    "address",
                    v,
                    Some(s),
                    format!("{} is the network address of {}", net.addr(), net.trunc()),
                ));
            }
            if net.addr() == net.broadcast() {
                return Err(err(
                    "address",
                    v,
                    Some(s),
                    format!("{} is the broadcast address of {}", net.addr(), net.trunc()),
                ));
            }
            let a = net.addr();
            if a.is_loopback() || a.is_multicast() || a.is_link_local() || a.is_unspecified() {
                return Err(err("address", v, Some(s), "must be a unicast address outside loopback and link-local (CloudStack uses 169.254.0.0/16)"));
            }
            net
        }
    })
}

/// `gateway`: required for host/management, refused for router/standalone; inside the overlay subnet.
pub(super) fn check_gateway(
    m: &Layers,
    role: Role,
    address: Ipv4Net,
) -> Result<Option<Ipv4Addr>, ConfigError> {
    Ok(match (get(m, "gateway"), role.needs_gateway()) {
        (None, true) => {
            return Err(err(
                "gateway",
                "",
                None,
                format!("role {role} needs gateway: the router's overlay IP"),
            ))
        }
        (Some((v, s)), false) => {
            return Err(err(
                "gateway",
                v,
                Some(s),
                format!(
            "role {role} must not have a gateway (the {role} is the way out of the overlay)"
        ),
            ))
        }
        (None, false) => None,
        (Some((v, s)), true) => {
            let g: Ipv4Addr = v
                .parse()
                .map_err(|_| err("gateway", v, Some(s), "not an IPv4 address"))?;
            let subnet = address.trunc();
            if !subnet.contains(&g) {
                return Err(err(
                    "gateway",
                    v,
                    Some(s),
                    format!("outside the overlay subnet {subnet}"),
                ));
            }
            if g == address.addr() {
                return Err(err(
                    "gateway",
                    v,
                    Some(s),
                    "equal to this node's own address",
                ));
            }
            if g == subnet.network() || g == subnet.broadcast() {
                return Err(err(
                    "gateway",
                    v,
                    Some(s),
                    format!("is the network or broadcast address of {subnet}"),
                ));
            }
            Some(g)
        }
    })
}

/// `dns`: IPv4 servers, none link-local.
pub(super) fn check_dns(m: &Layers) -> Result<Vec<Ipv4Addr>, ConfigError> {
    let (dns_raw, dns_src) = list(m, "dns");
    let mut dns = Vec::new();
    for d in dns_raw {
        let ip: Ipv4Addr = d
            .parse()
            .map_err(|_| err("dns", d, dns_src, "not an IPv4 address"))?;
        if ip.is_link_local() {
            return Err(err("dns", d, dns_src, "link-local DNS (169.254.*) is unusable: CloudStack claims 169.254.0.0/16; use the VPC base + 2"));
        }
        dns.push(ip);
    }

    Ok(dns)
}

/// `vni`: 1..16777215, default 100.
pub(super) fn check_vni(m: &Layers) -> Result<u32, ConfigError> {
    Ok(match get(m, "vni") {
        None => 100,
        Some((v, s)) => {
            let n = parse_u32("vni", v, s)?;
            if n == 0 || n > 16_777_215 {
                return Err(err("vni", v, Some(s), "VNI must be 1..16777215"));
            }
            n
        }
    })
}

/// `port`: the VXLAN UDP port, default 4789.
pub(super) fn check_port(m: &Layers) -> Result<u16, ConfigError> {
    Ok(match get(m, "port") {
        None => 4789,
        Some((v, s)) => {
            let n = parse_u32("port", v, s)?;
            if n == 0 || n > 65535 {
                return Err(err("port", v, Some(s), "UDP port must be 1..65535"));
            }
            n as u16
        }
    })
}

/// `group`: an IPv4 multicast group that IGMP reports (required with a VTEP that floods by
/// multicast; refused with flood = unicast, where the VTEP has no group).
pub(super) fn check_group(
    m: &Layers,
    role: Role,
    flood: Flood,
    warnings: &mut Vec<String>,
) -> Result<Option<Ipv4Addr>, ConfigError> {
    if !flood.uses_group() {
        let flood = flood.as_str();
        return match get(m, "group") {
            Some((v, Source::Tag)) => {
                warnings.push(format!(
                    "the overlay:group tag ({v}) is ignored: flood = {flood} uses no multicast group"
                ));
                Ok(None)
            }
            Some((v, s)) => Err(err(
                "group",
                v,
                Some(s),
                format!("flood = {flood} sends no multicast (the VTEP has no group); remove group, or use flood = multicast"),
            )),
            None => Ok(None),
        };
    }
    Ok(match (get(m, "group"), role.has_vtep()) {
        (None, true) => {
            return Err(err(
                "group",
                "",
                None,
                format!(
                    "role {role} needs group: the VXLAN multicast group, e.g. 239.255.0.1 \
                     (or flood = unicast, which needs no Transit Gateway)"
                ),
            ))
        }
        (Some((v, s)), has) => {
            let g: Ipv4Addr = v
                .parse()
                .map_err(|_| err("group", v, Some(s), "not an IPv4 address"))?;
            if !g.is_multicast() {
                return Err(err(
                    "group",
                    v,
                    Some(s),
                    "not an IPv4 multicast address (224.0.0.0/4; use 239.255.0.0/16)",
                ));
            }
            let o = g.octets();
            if o[0] == 224 && o[1] == 0 && o[2] == 0 {
                return Err(err(
                    "group",
                    v,
                    Some(s),
                    "224.0.0.0/24 is link-local control traffic and is never reported over IGMP",
                ));
            }
            if !(o[0] == 239 && o[1] == 255) {
                warnings.push(format!("group {g} is outside 239.255.0.0/16 (the local scope recommended for the overlay)"));
            }
            if !has {
                warnings.push(format!("group {g} is ignored for role {role} (no VTEP)"));
                None
            } else {
                Some(g)
            }
        }
        (None, false) => None,
    })
}

/// `mtu`: auto or 68..8950 (warned above the TGW's 8450).
pub(super) fn check_mtu(
    m: &Layers,
    role: Role,
    warnings: &mut Vec<String>,
) -> Result<Mtu, ConfigError> {
    Ok(match get(m, "mtu") {
        None => Mtu::Auto,
        Some((v, _)) if v.trim() == "auto" => Mtu::Auto,
        Some((v, s)) => {
            let n = v
                .trim()
                .parse::<u32>()
                .map_err(|_| err("mtu", v, Some(s), "expected auto or a number"))?;
            if !(MTU_MIN..=MTU_MAX).contains(&n) {
                return Err(err(
                    "mtu",
                    v,
                    Some(s),
                    format!("MTU must be {MTU_MIN}..{MTU_MAX}"),
                ));
            }
            if n > MTU_CAP && role.has_vtep() {
                warnings.push(format!(
                "mtu {n} exceeds {MTU_CAP}: multicast through a Transit Gateway is limited to 8500 bytes and larger flooded frames are dropped silently"
            ));
            }
            Mtu::Fixed(n)
        }
    })
}

/// `fqdn`: a valid host name.
pub(super) fn check_fqdn(m: &Layers) -> Result<Option<String>, ConfigError> {
    Ok(match get(m, "fqdn") {
        None => None,
        Some((v, s)) => {
            let ok = !v.is_empty()
                && v.len() <= 253
                && v.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && !l.starts_with('-')
                        && !l.ends_with('-')
                        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
            if !ok {
                return Err(err("fqdn", v, Some(s), "not a valid host name"));
            }
            Some(v.to_string())
        }
    })
}

/// `nat`, `nat_exceptions`: router/standalone only.
pub(super) fn check_nat(
    m: &Layers,
    role: Role,
    warnings: &mut Vec<String>,
) -> Result<(bool, Vec<Ipv4Net>), ConfigError> {
    let nat = match get(m, "nat") {
        None => false,
        Some((v, s)) => match v {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            _ => return Err(err("nat", v, Some(s), "expected true or false")),
        },
    };
    if nat && !role.forwards() {
        return Err(err(
            "nat",
            "true",
            get(m, "nat").map(|x| x.1),
            format!("NAT is only for router or standalone, not {role}"),
        ));
    }
    let (exc_raw, exc_src) = list(m, "nat_exceptions");
    if !exc_raw.is_empty() && !role.forwards() {
        return Err(err(
            "nat_exceptions",
            exc_raw.join(","),
            exc_src,
            format!("NAT options are only for router or standalone, not {role}"),
        ));
    }
    if !exc_raw.is_empty() && !nat {
        warnings.push("nat_exceptions given without nat = true; they have no effect".to_string());
    }
    let mut nat_exceptions = Vec::new();
    for e in exc_raw {
        let n: Ipv4Net = e
            .parse()
            .or_else(|_| e.parse::<Ipv4Addr>().map(|a| Ipv4Net::new(a, 32).unwrap()))
            .map_err(|_| err("nat_exceptions", e, exc_src, "not an IPv4 CIDR"))?;
        nat_exceptions.push(n.trunc());
    }

    Ok((nat, nat_exceptions))
}

/// `route_metric`: metric of the main-table routes via the gateway.
pub(super) fn check_route_metric(m: &Layers) -> Result<u32, ConfigError> {
    Ok(match get(m, "route_metric") {
        None => 0,
        Some((v, s)) => parse_u32("route_metric", v, s)?,
    })
}

/// `ha_*`: router HA, turned on by `ha_peer` (router role only). The VIP and the peer are
/// in the overlay subnet and differ from this router's address and from each other.
pub(super) fn check_ha(
    m: &Layers,
    role: Role,
    address: Ipv4Net,
    overlay_cidr: Ipv4Net,
) -> Result<Option<HaSettings>, ConfigError> {
    let others = [
        "ha_vip",
        "ha_priority",
        "ha_advert_interval_ms",
        "ha_preempt",
    ];
    let Some((peer_raw, peer_src)) = get(m, "ha_peer") else {
        if let Some(k) = others.iter().find(|k| get(m, k).is_some()) {
            let (v, s) = get(m, k).unwrap();
            return Err(err(
                k,
                v,
                Some(s),
                "router HA settings need ha_peer (the other router)",
            ));
        }
        return Ok(None);
    };
    if role != Role::Router {
        return Err(err(
            "ha_peer",
            peer_raw,
            Some(peer_src),
            format!("router HA is for the router role, not {role}"),
        ));
    }
    let subnet = address.trunc();
    let ip = |k: &str, v: &str, s: Source| -> Result<Ipv4Addr, ConfigError> {
        let a: Ipv4Addr = v
            .parse()
            .map_err(|_| err(k, v, Some(s), "not an IPv4 address"))?;
        if !subnet.contains(&a) || a == subnet.network() || a == subnet.broadcast() {
            return Err(err(
                k,
                v,
                Some(s),
                format!("not a host address of the overlay subnet {subnet}"),
            ));
        }
        if a == address.addr() {
            return Err(err(
                k,
                v,
                Some(s),
                "is this router's own address; each router has its own, the VIP is a third",
            ));
        }
        Ok(a)
    };
    let peer = ip("ha_peer", peer_raw, peer_src)?;
    let vip = match get(m, "ha_vip") {
        Some((v, s)) => ip("ha_vip", v, s)?,
        None => {
            let d = Ipv4Addr::from(u32::from(overlay_cidr.network()) + 1);
            if d == address.addr() {
                return Err(err(
                    "ha_vip",
                    d.to_string(),
                    None,
                    "the default VIP (overlay_cidr's first host) is this router's address: give the router another address, or set ha_vip",
                ));
            }
            d
        }
    };
    if vip == peer {
        return Err(err(
            "ha_vip",
            vip.to_string(),
            get(m, "ha_vip").map(|x| x.1),
            "is the peer's address",
        ));
    }
    let priority = match get(m, "ha_priority") {
        None => 100,
        Some((v, s)) => match v.parse::<u8>() {
            Ok(n) if (1..=254).contains(&n) => n,
            _ => return Err(err("ha_priority", v, Some(s), "expected 1..254")),
        },
    };
    let advert_ms = match get(m, "ha_advert_interval_ms") {
        None => 200,
        Some((v, s)) => match v.parse::<u32>() {
            Ok(n) if (10..=40950).contains(&n) && n % 10 == 0 => n,
            _ => {
                return Err(err(
                    "ha_advert_interval_ms",
                    v,
                    Some(s),
                    "expected 10..40950, a multiple of 10 (VRRPv3 counts centiseconds)",
                ))
            }
        },
    };
    let preempt = match get(m, "ha_preempt") {
        None => false,
        Some((v, s)) => match v {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            _ => return Err(err("ha_preempt", v, Some(s), "expected true or false")),
        },
    };
    Ok(Some(HaSettings {
        vip,
        peer,
        priority,
        advert_ms,
        preempt,
    }))
}

const EVPN_KEYS: &[&str] = &[
    "evpn_asn",
    "evpn_reflector",
    "evpn_reflectors",
    "evpn_listen",
    "evpn_hold_time",
    "evpn_frr",
    "evpn_frr_dir",
];

fn parse_bool(k: &str, v: &str, s: Source) -> Result<bool, ConfigError> {
    match v {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(err(k, v, Some(s), "expected true or false")),
    }
}

/// Whether `asn` is a private AS number (RFC 6996).
pub fn private_asn(asn: u32) -> bool {
    (64512..=65534).contains(&asn) || (4_200_000_000..=4_294_967_294).contains(&asn)
}

/// The `evpn_*` keys: only with flood = evpn on a role with a VTEP (so a half-switched
/// configuration is caught); a node that is no reflector needs the reflectors.
pub(super) fn check_evpn(
    m: &Layers,
    role: Role,
    flood: Flood,
    discovery: Option<PeerDiscovery>,
) -> Result<Option<EvpnSettings>, ConfigError> {
    if flood != Flood::Evpn || !role.has_vtep() {
        for k in EVPN_KEYS {
            let (vals, src) = list(m, k);
            if let (Some(v), Some(s)) = (vals.first(), src) {
                let why = if role.has_vtep() {
                    "only for flood = evpn".to_string()
                } else {
                    format!("role {role} has no VTEP")
                };
                return Err(err(k, v, Some(s), why));
            }
        }
        if flood == Flood::Evpn {
            if let Some((v, s)) = get(m, "flood") {
                return Err(err(
                    "flood",
                    v,
                    Some(s),
                    format!("role {role} has no VTEP, so no BGP EVPN speaker"),
                ));
            }
        }
        return Ok(None);
    }
    let asn = match get(m, "evpn_asn") {
        None => 65000,
        Some((v, s)) => {
            let n = v
                .trim()
                .parse::<u32>()
                .map_err(|_| err("evpn_asn", v, Some(s), "not an AS number"))?;
            if !private_asn(n) {
                return Err(err(
                    "evpn_asn",
                    v,
                    Some(s),
                    "not a private AS number: use 64512..65534 or 4200000000..4294967294",
                ));
            }
            n
        }
    };
    let reflector = match get(m, "evpn_reflector") {
        None => role == Role::Router,
        Some((v, s)) => parse_bool("evpn_reflector", v, s)?,
    };
    let (vals, rsrc) = list(m, "evpn_reflectors");
    let mut reflectors = Vec::new();
    for v in &vals {
        let a: Ipv4Addr = v.parse().map_err(|_| {
            err(
                "evpn_reflectors",
                v,
                rsrc,
                "not an IPv4 address (a route reflector's underlay IP)",
            )
        })?;
        if a.is_unspecified() || a.is_multicast() || a.is_broadcast() || a.is_loopback() {
            return Err(err(
                "evpn_reflectors",
                v,
                rsrc,
                "not a unicast underlay address",
            ));
        }
        if !reflectors.contains(&a) {
            reflectors.push(a);
        }
    }
    if !reflector && reflectors.is_empty() && discovery != Some(PeerDiscovery::Ec2) {
        return Err(err(
            "evpn_reflectors",
            "",
            None,
            "flood = evpn needs the route reflectors' underlay IPs (the routers'), e.g. \
             evpn_reflectors = [\"10.0.0.10\"]; or a cluster name, to find them by their \
             tags (peer_discovery = ec2); or make this node one with evpn_reflector = true",
        ));
    }
    let (vals, lsrc) = list(m, "evpn_listen");
    let mut listen = Vec::new();
    for v in &vals {
        if !reflector {
            return Err(err(
                "evpn_listen",
                v,
                lsrc,
                "only a route reflector listens for clients (evpn_reflector = true)",
            ));
        }
        let n: Ipv4Net = v.parse().map_err(|_| {
            err(
                "evpn_listen",
                v,
                lsrc,
                "not an IPv4 CIDR such as 10.0.0.0/16",
            )
        })?;
        listen.push(n.trunc());
    }
    let hold_secs = match get(m, "evpn_hold_time") {
        None => 9,
        Some((v, s)) => match v.trim_end_matches('s').parse::<u16>() {
            Ok(n) if n >= 3 => n,
            _ => {
                return Err(err(
                    "evpn_hold_time",
                    v,
                    Some(s),
                    "expected 3..65535 seconds",
                ))
            }
        },
    };
    let frr = match get(m, "evpn_frr") {
        None | Some(("systemd", _)) => FrrMode::Systemd,
        Some(("spawn", _)) => FrrMode::Spawn,
        Some((v, s)) => {
            return Err(err(
                "evpn_frr",
                v,
                Some(s),
                "expected systemd (the distribution's frr.service) or spawn (overlayd runs zebra and bgpd)",
            ))
        }
    };
    let frr_dir = match get(m, "evpn_frr_dir") {
        None => PathBuf::from(match frr {
            FrrMode::Systemd => "/etc/frr",
            FrrMode::Spawn => "/run/overlayd/frr",
        }),
        Some((v, s)) => {
            if !v.starts_with('/') {
                return Err(err("evpn_frr_dir", v, Some(s), "must be an absolute path"));
            }
            PathBuf::from(v)
        }
    };
    Ok(Some(EvpnSettings {
        asn,
        reflector,
        reflectors,
        listen,
        hold_secs,
        frr,
        frr_dir,
    }))
}

/// `vtep_tx_checksum`: keep (the kernel's setting) or off; true when it is to be off.
pub(super) fn check_vtep_tx_checksum(m: &Layers) -> Result<bool, ConfigError> {
    match get(m, "vtep_tx_checksum") {
        None => Ok(false),
        Some((v, s)) => match v {
            "keep" => Ok(false),
            "off" => Ok(true),
            _ => Err(err("vtep_tx_checksum", v, Some(s), "expected keep or off")),
        },
    }
}

/// `igmp_max_memberships`: 0 (leave alone) or at least the kernel default 20.
pub(super) fn check_igmp_max_memberships(m: &Layers) -> Result<u32, ConfigError> {
    Ok(match get(m, "igmp_max_memberships") {
        None => DEFAULT_IGMP_MAX_MEMBERSHIPS,
        Some((v, s)) => {
            let n = parse_u32("igmp_max_memberships", v, s)?;
            if n != 0 && n < 20 {
                return Err(err(
                    "igmp_max_memberships",
                    v,
                    Some(s),
                    "below the kernel default of 20; use 0 to leave the kernel's value alone",
                ));
            }
            n
        }
    })
}

/// `state_dir`, `hosts_file`, `resolv_conf`, `control_socket`: absolute paths.
pub(super) fn check_paths(m: &Layers) -> Result<(PathBuf, PathBuf, PathBuf, PathBuf), ConfigError> {
    let path = |k: &str, d: &str| -> Result<PathBuf, ConfigError> {
        match get(m, k) {
            None => Ok(PathBuf::from(d)),
            Some((v, s)) => {
                if !v.starts_with('/') {
                    return Err(err(k, v, Some(s), "must be an absolute path"));
                }
                Ok(PathBuf::from(v))
            }
        }
    };
    let state_dir = path("state_dir", "/var/lib/overlayd")?;
    let hosts_file = path("hosts_file", "/etc/hosts")?;
    let resolv_conf = path("resolv_conf", "/etc/resolv.conf")?;
    let control_socket = path("control_socket", "/run/overlayd/overlayd.sock")?;
    Ok((state_dir, hosts_file, resolv_conf, control_socket))
}

/// `resync_interval`: seconds, at least 1.
pub(super) fn check_resync_interval(m: &Layers) -> Result<u64, ConfigError> {
    Ok(match get(m, "resync_interval") {
        None => 30,
        Some((v, s)) => {
            let n = parse_u32("resync_interval", v.trim_end_matches('s'), s)?;
            if n == 0 {
                return Err(err(
                    "resync_interval",
                    v,
                    Some(s),
                    "must be at least 1 second",
                ));
            }
            n as u64
        }
    })
}

/// `metrics_address`: IP:PORT or off.
pub(super) fn check_metrics_address(m: &Layers) -> Result<String, ConfigError> {
    Ok(match get(m, "metrics_address") {
        None => "127.0.0.1:9465".to_string(),
        Some((v, _)) if v.is_empty() || v == "off" => "off".to_string(),
        Some((v, s)) => {
            v.parse::<std::net::SocketAddr>().map_err(|_| {
                err(
                    "metrics_address",
                    v,
                    Some(s),
                    "expected IP:PORT such as 127.0.0.1:9465, or \"off\"",
                )
            })?;
            v.to_string()
        }
    })
}

/// `overlay_cidr`: a network address, /30 or shorter.
pub(super) fn check_overlay_cidr(m: &Layers) -> Result<Ipv4Net, ConfigError> {
    Ok(match get(m, "overlay_cidr") {
        None => DEFAULT_OVERLAY_CIDR.parse().expect("default parses"),
        Some((v, s)) => {
            let n: Ipv4Net = v.parse().map_err(|_| {
                err(
                    "overlay_cidr",
                    v,
                    Some(s),
                    "not an IPv4 CIDR such as 10.101.0.0/16",
                )
            })?;
            if n.trunc() != n || n.prefix_len() > 30 {
                return Err(err(
                    "overlay_cidr",
                    v,
                    Some(s),
                    format!(
                        "must be a network address with a /30 or shorter prefix (e.g. {})",
                        n.trunc()
                    ),
                ));
            }
            n
        }
    })
}

/// `flood`: multicast (default) | unicast.
pub(super) fn check_flood(m: &Layers) -> Result<Flood, ConfigError> {
    Ok(match get(m, "flood") {
        None => Flood::Multicast,
        Some((v, s)) => Flood::parse(v).ok_or_else(|| {
            err(
                "flood",
                v,
                Some(s),
                "expected multicast (a Transit Gateway multicast domain floods the group), \
                 unicast (one copy per peer, no TGW) or evpn (BGP EVPN through FRR and route \
                 reflectors, no TGW)",
            )
        })?,
    })
}

/// `cluster`: 1-128 characters of a tag value, no control characters.
pub(super) fn check_cluster(m: &Layers) -> Result<Option<String>, ConfigError> {
    Ok(match get(m, "cluster") {
        None => None,
        Some((v, s)) => {
            if v.is_empty() || v.chars().count() > 128 || v.chars().any(char::is_control) {
                return Err(err(
                    "cluster",
                    v,
                    Some(s),
                    "a cluster name is 1-128 printable characters (the overlay:cluster tag value)",
                ));
            }
            Some(v.to_string())
        }
    })
}

/// The unicast peers: `peers`, `peer_discovery`, `peer_interval` (all refused with
/// flood = multicast, so a half-switched configuration is caught).
pub(super) fn check_peers(
    m: &Layers,
    role: Role,
    flood: Flood,
    cluster: &Option<String>,
) -> Result<(Vec<Ipv4Addr>, Option<PeerDiscovery>, u64), ConfigError> {
    let (vals, psrc) = list(m, "peers");
    let disc = get(m, "peer_discovery");
    let interval = get(m, "peer_interval");
    if flood == Flood::Evpn && role.has_vtep() {
        return check_evpn_discovery(m, role, cluster);
    }
    if flood != Flood::Unicast || !role.has_vtep() {
        let why = if role.has_vtep() {
            "only for flood = unicast".to_string()
        } else {
            format!("role {role} has no VTEP")
        };
        if let Some(v) = vals.first() {
            return Err(err("peers", v, psrc, why));
        }
        if let Some((v, s)) = disc {
            return Err(err("peer_discovery", v, Some(s), why));
        }
        if let Some((v, s)) = interval {
            return Err(err("peer_interval", v, Some(s), why));
        }
        return Ok((vec![], None, DEFAULT_PEER_INTERVAL));
    }
    let mut peers = Vec::new();
    for v in &vals {
        let a: Ipv4Addr = v.parse().map_err(|_| {
            err(
                "peers",
                v,
                psrc,
                "not an IPv4 address (a peer's underlay IP)",
            )
        })?;
        if a.is_unspecified() || a.is_multicast() || a.is_broadcast() || a.is_loopback() {
            return Err(err("peers", v, psrc, "not a unicast underlay address"));
        }
        if !peers.contains(&a) {
            peers.push(a);
        }
    }
    let discovery = match disc {
        None if peers.is_empty() => PeerDiscovery::Ec2,
        None => PeerDiscovery::Static,
        Some(("static", _)) => PeerDiscovery::Static,
        Some(("ec2", s)) => {
            if let Some(v) = vals.first() {
                return Err(err(
                    "peers",
                    v,
                    psrc,
                    format!("peer_discovery = ec2 (from {s}) finds the peers itself; remove peers or use peer_discovery = static"),
                ));
            }
            PeerDiscovery::Ec2
        }
        Some((v, s)) => return Err(err(
            "peer_discovery",
            v,
            Some(s),
            "expected static (the peers key) or ec2 (DescribeInstances by the overlay:cluster tag)",
        )),
    };
    if discovery == PeerDiscovery::Ec2 && !cfg!(feature = "ec2") {
        return Err(err(
            "peer_discovery",
            "ec2",
            disc.map(|(_, s)| s),
            "this overlayd is built without the EC2 API (cargo feature ec2); use peer_discovery = static with peers",
        ));
    }
    if discovery == PeerDiscovery::Ec2 && cluster.is_none() {
        return Err(err(
            "cluster",
            "",
            None,
            "peer_discovery = ec2 needs the cluster name (the overlay:cluster tag value of the peers)",
        ));
    }
    if discovery == PeerDiscovery::Static && peers.is_empty() {
        return Err(err(
            "peers",
            "",
            psrc,
            "peer_discovery = static needs peers: the other nodes' underlay IPs",
        ));
    }
    let secs = match interval {
        None => DEFAULT_PEER_INTERVAL,
        Some((v, s)) => {
            let n = parse_u32("peer_interval", v.trim_end_matches('s'), s)?;
            if n == 0 || n > 3600 {
                return Err(err("peer_interval", v, Some(s), "must be 1..3600 seconds"));
            }
            n as u64
        }
    };
    Ok((peers, Some(discovery), secs))
}

/// flood = evpn: where the route reflectors come from. `evpn_reflectors` listed (static: no
/// peer discovery at run time), or `peer_discovery = ec2`: the running instances of the
/// cluster tagged `overlay:role=router` (the default for a node that is no reflector, has no
/// list and has a cluster). `peers` is unicast's and refused.
fn check_evpn_discovery(
    m: &Layers,
    role: Role,
    cluster: &Option<String>,
) -> Result<(Vec<Ipv4Addr>, Option<PeerDiscovery>, u64), ConfigError> {
    let (vals, psrc) = list(m, "peers");
    if let Some(v) = vals.first() {
        return Err(err(
            "peers",
            v,
            psrc,
            "flood = evpn has no peer list: every node peers with the route reflectors \
             (evpn_reflectors, or peer_discovery = ec2 to find them by their tags)",
        ));
    }
    let (listed, lsrc) = list(m, "evpn_reflectors");
    let reflector = match get(m, "evpn_reflector") {
        None => role == Role::Router,
        Some((v, s)) => parse_bool("evpn_reflector", v, s)?,
    };
    let disc = get(m, "peer_discovery");
    let discovery = match disc {
        None if listed.is_empty() && !reflector && cluster.is_some() && cfg!(feature = "ec2") => {
            Some(PeerDiscovery::Ec2)
        }
        None | Some(("static", _)) => None,
        Some(("ec2", s)) => {
            if let Some(v) = listed.first() {
                return Err(err(
                    "evpn_reflectors",
                    v,
                    lsrc,
                    format!("peer_discovery = ec2 (from {s}) finds the reflectors itself (overlay:role=router); remove evpn_reflectors or use peer_discovery = static"),
                ));
            }
            if !cfg!(feature = "ec2") {
                return Err(err(
                    "peer_discovery",
                    "ec2",
                    Some(s),
                    "this overlayd is built without the EC2 API (cargo feature ec2); list evpn_reflectors instead",
                ));
            }
            if cluster.is_none() {
                return Err(err(
                    "cluster",
                    "",
                    None,
                    "peer_discovery = ec2 needs the cluster name (the overlay:cluster tag value of the route reflectors)",
                ));
            }
            Some(PeerDiscovery::Ec2)
        }
        Some((v, s)) => {
            return Err(err(
                "peer_discovery",
                v,
                Some(s),
                "expected static (evpn_reflectors) or ec2 (the cluster's instances tagged overlay:role=router)",
            ))
        }
    };
    let secs = match get(m, "peer_interval") {
        None => DEFAULT_PEER_INTERVAL,
        Some((v, s)) if discovery.is_none() => {
            return Err(err(
                "peer_interval",
                v,
                Some(s),
                "only with peer_discovery = ec2 (the reflectors are listed)",
            ))
        }
        Some((v, s)) => {
            let n = parse_u32("peer_interval", v.trim_end_matches('s'), s)?;
            if n == 0 || n > 3600 {
                return Err(err("peer_interval", v, Some(s), "must be 1..3600 seconds"));
            }
            n as u64
        }
    };
    Ok((vec![], discovery, secs))
}

/// Type every key, one small check each (in dependency order), into a [`Config`].
pub(super) fn validate(m: &Layers) -> Result<Config, ConfigError> {
    let mut warnings = Vec::new();
    let role = check_role(m)?;
    let Names {
        underlay,
        bridge,
        vtep,
        dummy,
    } = check_names(m, role)?;
    let address = check_address(m)?;
    let gateway = check_gateway(m, role, address)?;
    let dns = check_dns(m)?;
    let vni = check_vni(m)?;
    let port = check_port(m)?;
    let flood = check_flood(m)?;
    let group = check_group(m, role, flood, &mut warnings)?;
    let cluster = check_cluster(m)?;
    let (peers, peer_discovery, peer_interval_secs) = check_peers(m, role, flood, &cluster)?;
    let overlay_cidr = check_overlay_cidr(m)?;
    let mtu = check_mtu(m, role, &mut warnings)?;
    let fqdn = check_fqdn(m)?;
    let (nat, nat_exceptions) = check_nat(m, role, &mut warnings)?;
    let route_metric = check_route_metric(m)?;
    let gateway_mode = check_gateway_mode(m, role)?;
    let route_table = check_route_table(m)?;
    let link_local_routes = check_link_local_routes(m)?;
    let igmp_max_memberships = check_igmp_max_memberships(m)?;
    let vtep_tx_checksum_off = check_vtep_tx_checksum(m)?;
    let ha = check_ha(m, role, address, overlay_cidr)?;
    let evpn = check_evpn(m, role, flood, peer_discovery)?;
    let (state_dir, hosts_file, resolv_conf, control_socket) = check_paths(m)?;
    let resync_interval_secs = check_resync_interval(m)?;
    let metrics_address = check_metrics_address(m)?;
    Ok(Config {
        role,
        underlay,
        underlay_mac: None,
        address,
        gateway,
        dns,
        bridge,
        vtep,
        vni,
        port,
        group,
        flood,
        peers,
        peer_discovery,
        peer_interval_secs,
        cluster,
        overlay_cidr,
        mtu,
        fqdn,
        nat,
        nat_exceptions,
        dummy,
        route_metric,
        gateway_mode,
        route_table,
        link_local_routes,
        igmp_max_memberships,
        vtep_tx_checksum_off,
        ha,
        evpn,
        state_dir,
        hosts_file,
        resolv_conf,
        resync_interval_secs,
        metrics_address,
        control_socket,
        warnings,
        instance: None,
        origins: BTreeMap::new(),
    })
}
