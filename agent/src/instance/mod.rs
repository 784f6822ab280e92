//! What the EC2 instance says about itself, for zero-configuration nodes: facts from IMDSv2
//! ([`imds`]) and the instance's `overlay:*` tags (IMDS `tags/instance/` when instance
//! metadata tags are enabled, else `DescribeTags` with the instance role, [`ec2`]), and the
//! documented `auto` values derived from them ([`auto_address`], [`auto_gateway`]).
//!
//! Configuration consults this only when some key asks for it (see `config::build_with`);
//! a complete configuration never waits on IMDS.

use ipnet::Ipv4Net;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

#[cfg(feature = "ec2")]
pub mod ec2;
pub mod imds;

/// Tag key → configuration key. Only these tags are read.
pub const TAG_KEYS: [(&str, &str); 6] = [
    ("overlay:cluster", "cluster"),
    ("overlay:role", "role"),
    ("overlay:address", "address"),
    ("overlay:group", "group"),
    ("overlay:gateway", "gateway"),
    ("overlay:flood", "flood"),
];

/// The instance's facts from IMDSv2.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceFacts {
    pub instance_id: String,
    pub region: String,
    pub availability_zone: String,
    /// The primary ENI's MAC (IMDS `mac`), lower case.
    pub mac: String,
    pub local_ipv4: Ipv4Addr,
    pub subnet: Ipv4Net,
    pub vpc_id: String,
    pub vpc_cidrs: Vec<Ipv4Net>,
    /// `overlay:*` tags (tag key → value).
    pub tags: BTreeMap<String, String>,
    /// Where the tags came from: "IMDS tags/instance" or "DescribeTags".
    pub tags_from: String,
}

static UNREACHABLE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Did the last [`fetch`] find nothing answering at all (rather than a bad answer)? That is
/// temporary at boot (no DHCP lease yet), so `run` exits 1 (restart) instead of 2 for it.
pub fn imds_was_unreachable() -> bool {
    UNREACHABLE.load(std::sync::atomic::Ordering::Relaxed)
}

/// Does this machine say it is an EC2 instance (DMI vendor / BIOS / asset tag)? Only then
/// is it worth waiting for IMDS at boot.
pub fn looks_like_ec2() -> bool {
    let dmi = |f: &str| {
        std::fs::read_to_string(format!("/sys/devices/virtual/dmi/id/{f}"))
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    };
    dmi("sys_vendor").contains("amazon")
        || dmi("bios_version").contains("amazon")
        || dmi("board_asset_tag").starts_with("i-")
}

/// [`fetch`], waiting up to `wait` (retrying every second) while nothing answers on
/// 169.254.169.254 — an instance whose underlay has no lease yet. Progress on stderr.
pub fn fetch_patiently(wait: std::time::Duration) -> Result<InstanceFacts, String> {
    let t0 = std::time::Instant::now();
    let mut said = std::time::Duration::ZERO;
    loop {
        match fetch() {
            Err(e) if imds_was_unreachable() && t0.elapsed() < wait => {
                if t0.elapsed() >= said {
                    eprintln!(
                        "overlayd: waiting for instance metadata ({e}); {:.0} s of {:.0} s",
                        t0.elapsed().as_secs_f64(),
                        wait.as_secs_f64()
                    );
                    said += std::time::Duration::from_secs(10);
                }
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
            r => return r,
        }
    }
}

/// Read everything [`InstanceFacts`] holds. The error says what could not be read.
pub fn fetch() -> Result<InstanceFacts, String> {
    UNREACHABLE.store(false, std::sync::atomic::Ordering::Relaxed);
    if std::env::var("AWS_EC2_METADATA_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true")) {
        return Err("IMDS is disabled (AWS_EC2_METADATA_DISABLED=true)".into());
    }
    let s = imds::Imds::connect().map_err(|e| {
        if matches!(e, imds::ImdsError::Unreachable(_)) {
            UNREACHABLE.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        e.to_string()
    })?;
    let need = |p: &str| s.need(p).map_err(|e| format!("{e} (reading {p})"));
    let mac = need("meta-data/mac")?.to_ascii_lowercase();
    if mac.len() != 17
        || !mac
            .split(':')
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(format!("IMDS mac {mac:?} is not a MAC address"));
    }
    let eni = |k: &str| format!("meta-data/network/interfaces/macs/{mac}/{k}");
    let ip_text = need("meta-data/local-ipv4")?;
    let local_ipv4: Ipv4Addr = ip_text
        .parse()
        .map_err(|_| format!("IMDS local-ipv4 {ip_text:?} is not an IPv4 address"))?;
    let net = |k: &str, t: &str| -> Result<Ipv4Net, String> {
        t.trim()
            .parse::<Ipv4Net>()
            .map(|n| n.trunc())
            .map_err(|_| format!("IMDS {k} {t:?} is not an IPv4 CIDR"))
    };
    let subnet = net(
        "subnet-ipv4-cidr-block",
        &need(&eni("subnet-ipv4-cidr-block"))?,
    )?;
    let vpc_cidrs = need(&eni("vpc-ipv4-cidr-blocks"))?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| net("vpc-ipv4-cidr-blocks", l))
        .collect::<Result<Vec<_>, _>>()?;
    let mut f = InstanceFacts {
        instance_id: need("meta-data/instance-id")?,
        region: need("meta-data/placement/region")?,
        availability_zone: need("meta-data/placement/availability-zone")?,
        mac: mac.clone(),
        local_ipv4,
        subnet,
        vpc_id: need(&eni("vpc-id"))?,
        vpc_cidrs,
        tags: BTreeMap::new(),
        tags_from: String::new(),
    };
    // Tags: from IMDS when instance metadata tags are on (the listing exists), else the API.
    match s
        .get("meta-data/tags/instance")
        .map_err(|e| e.to_string())?
    {
        Some(listing) => {
            f.tags_from = "IMDS tags/instance".into();
            for key in listing.lines().map(str::trim) {
                if TAG_KEYS.iter().any(|(t, _)| *t == key) {
                    if let Some(v) = s
                        .get(&format!("meta-data/tags/instance/{key}"))
                        .map_err(|e| e.to_string())?
                    {
                        f.tags.insert(key.to_string(), v.trim().to_string());
                    }
                }
            }
        }
        None => {
            f.tags_from = "DescribeTags".into();
            f.tags = describe_tags(&f)?;
        }
    }
    Ok(f)
}

#[cfg(feature = "ec2")]
fn describe_tags(f: &InstanceFacts) -> Result<BTreeMap<String, String>, String> {
    ec2::describe_tags_blocking(&f.region, &f.instance_id).map_err(|e| {
        format!(
            "instance metadata tags are off and DescribeTags failed ({e}); enable them \
             (aws ec2 modify-instance-metadata-options --instance-metadata-tags enabled) or allow \
             ec2:DescribeTags to the instance role"
        )
    })
}

#[cfg(not(feature = "ec2"))]
fn describe_tags(_: &InstanceFacts) -> Result<BTreeMap<String, String>, String> {
    Err(
        "instance metadata tags are off and this overlayd is built without the EC2 API \
         (feature ec2); enable them: aws ec2 modify-instance-metadata-options \
         --instance-metadata-tags enabled"
            .into(),
    )
}

/// `address = "auto"`: the instance's offset inside its subnet, kept inside the overlay CIDR:
/// `overlay network + (local IPv4 - subnet network)`, with the overlay's prefix length. Two
/// instances of one subnet have different VPC addresses, so they never collide; AWS reserves
/// the subnet's first four addresses, so offsets 1-3 (the router's `.1` and the management
/// server's `.2` by convention) are never produced. The router takes the gateway convention
/// instead: [`auto_address_router`].
pub fn auto_address(f: &InstanceFacts, overlay: Ipv4Net) -> Result<Ipv4Net, String> {
    if !f.subnet.contains(&f.local_ipv4) {
        return Err(format!(
            "IMDS says local-ipv4 {} is outside its subnet {}",
            f.local_ipv4, f.subnet
        ));
    }
    if f.subnet.prefix_len() < overlay.prefix_len() {
        return Err(format!(
            "the subnet {} has more addresses than overlay_cidr {overlay}, so its addresses cannot \
             be mapped without collisions; use a larger overlay_cidr or explicit addresses",
            f.subnet
        ));
    }
    let offset = u32::from(f.local_ipv4) - u32::from(f.subnet.network());
    let ip = Ipv4Addr::from(u32::from(overlay.network()) + offset);
    if ip == overlay.network() || ip == overlay.broadcast() {
        return Err(format!("{ip} is not a host address of {overlay}"));
    }
    Ok(Ipv4Net::new(ip, overlay.prefix_len()).expect("prefix of a valid net"))
}

/// The router's `address = "auto"`: [`auto_gateway`] with the overlay's prefix length, so the
/// hosts' `gateway = "auto"` finds it. Needs nothing from the instance.
pub fn auto_address_router(overlay: Ipv4Net) -> Ipv4Net {
    Ipv4Net::new(auto_gateway(overlay), overlay.prefix_len()).expect("prefix of a valid net")
}

/// `gateway = "auto"`: by convention the router's overlay address is the first host address
/// of the overlay CIDR (10.101.0.1 in 10.101.0.0/16, as in the original templates).
pub fn auto_gateway(overlay: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(overlay.network()) + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(ip: &str, subnet: &str) -> InstanceFacts {
        InstanceFacts {
            instance_id: "i-1".into(),
            region: "eu-west-1".into(),
            availability_zone: "eu-west-1a".into(),
            mac: "02:00:0a:00:00:0a".into(),
            local_ipv4: ip.parse().unwrap(),
            subnet: subnet.parse().unwrap(),
            vpc_id: "vpc-1".into(),
            vpc_cidrs: vec!["10.0.0.0/16".parse().unwrap()],
            tags: BTreeMap::new(),
            tags_from: String::new(),
        }
    }

    #[test]
    fn auto_address_keeps_the_offset_in_the_subnet() {
        let o: Ipv4Net = "10.101.0.0/16".parse().unwrap();
        let a = auto_address(&facts("10.0.1.57", "10.0.1.0/24"), o).unwrap();
        assert_eq!(a.to_string(), "10.101.0.57/16");
        let a = auto_address(&facts("10.0.2.10", "10.0.0.0/22"), o).unwrap();
        assert_eq!(a.to_string(), "10.101.2.10/16");
        // every address of a /22 maps to a distinct overlay address
        let mut seen = std::collections::BTreeSet::new();
        for off in 4..1023u32 {
            let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 0, 0)) + off);
            let a = auto_address(&facts(&ip.to_string(), "10.0.0.0/22"), o).unwrap();
            assert!(seen.insert(a.addr()));
            assert_ne!(a.addr(), auto_gateway(o));
        }
    }

    #[test]
    fn router_takes_the_gateway_convention_and_small_overlays_are_refused() {
        let o: Ipv4Net = "10.101.0.0/16".parse().unwrap();
        assert_eq!(auto_address_router(o).to_string(), "10.101.0.1/16");
        assert_eq!(auto_gateway(o).to_string(), "10.101.0.1");
        let small: Ipv4Net = "10.101.0.0/24".parse().unwrap();
        let e = auto_address(&facts("10.0.1.57", "10.0.0.0/20"), small).unwrap_err();
        assert!(e.contains("more addresses"), "{e}");
    }
}
