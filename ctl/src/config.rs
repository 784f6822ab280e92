//! The cluster file (TOML) and the checks that need no AWS call.

use std::net::Ipv4Addr;
use std::path::Path;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::error::UsageError;

/// Tag key that marks every resource overlayctl owns.
pub const CLUSTER_TAG: &str = "overlay:cluster";
/// Tag key naming the role of a resource inside the cluster (vtep, router, efs, ...).
pub const ROLE_TAG: &str = "overlay:role";

fn default_efs_throughput() -> f64 {
    25.0
}
fn default_db_class() -> String {
    "db.m6g.large".to_string()
}
fn default_db_storage() -> i32 {
    20
}
fn default_db_max_storage() -> i32 {
    100
}
fn default_zones() -> Vec<String> {
    vec!["zone1".to_string()]
}
fn default_flood() -> String {
    "multicast".to_string()
}

/// How overlayd on the nodes finds its unicast peers (`peer_discovery`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerDiscovery {
    /// From EC2: `DescribeInstances` of the instances tagged with the cluster (the node's
    /// instance role needs `ec2:DescribeInstances`).
    Ec2,
    /// From overlayd's own configuration; no AWS call.
    Static,
}

impl PeerDiscovery {
    pub fn as_str(&self) -> &'static str {
        match self {
            PeerDiscovery::Ec2 => "ec2",
            PeerDiscovery::Static => "static",
        }
    }
}

/// How the overlay floods broadcast, unknown-unicast and multicast frames (`flood`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flood {
    /// Through a Transit Gateway multicast domain (IGMPv2): the TGW chain is provisioned.
    Multicast,
    /// Head-end replication: every VTEP sends a copy to every peer over unicast UDP 4789; no
    /// transit gateway.
    Unicast(PeerDiscovery),
    /// BGP EVPN control plane (FRR): every node's BGP speaker peers over iBGP (TCP 179) with
    /// the route reflector(s) on the router(s); flooding is head-end replication to the VTEPs
    /// EVPN announces, over unicast UDP 4789. No transit gateway, no multicast group.
    Evpn(PeerDiscovery),
}

impl Flood {
    pub fn as_str(&self) -> &'static str {
        match self {
            Flood::Multicast => "multicast",
            Flood::Unicast(_) => "unicast",
            Flood::Evpn(_) => "evpn",
        }
    }
    /// Whether the mode floods through a Transit Gateway multicast domain: the TGW chain, the
    /// IGMP rule and a multicast group are needed (multicast only).
    pub fn needs_multicast_domain(&self) -> bool {
        matches!(self, Flood::Multicast)
    }
    /// Whether the nodes run a BGP speaker (iBGP, TCP 179) that peers with the route
    /// reflector(s) on the router(s) (evpn only).
    pub fn needs_bgp(&self) -> bool {
        matches!(self, Flood::Evpn(_))
    }
    /// The peer discovery of unicast and evpn flooding (None with multicast, where it means
    /// nothing).
    pub fn peer_discovery(&self) -> Option<PeerDiscovery> {
        match self {
            Flood::Multicast => None,
            Flood::Unicast(p) | Flood::Evpn(p) => Some(*p),
        }
    }
}

/// The values `flood` accepts.
pub const FLOOD_MODES: [&str; 3] = ["multicast", "unicast", "evpn"];

/// `flood` and `peer_discovery` as written (in the cluster file or as `iam-policy` options):
/// `flood` is multicast, unicast or evpn; `peer_discovery` (ec2 or static, default ec2) only
/// goes with unicast and evpn: with multicast it would do nothing, so it is refused rather than
/// ignored.
pub fn parse_flood(flood: &str, peer_discovery: Option<&str>) -> Result<Flood, UsageError> {
    let peer = match peer_discovery {
        None => None,
        Some("ec2") => Some(PeerDiscovery::Ec2),
        Some("static") => Some(PeerDiscovery::Static),
        Some(other) => {
            return Err(UsageError::new(
                "peer_discovery",
                other,
                "must be \"ec2\" or \"static\"",
            ))
        }
    };
    match flood {
        "multicast" => match peer_discovery {
            None => Ok(Flood::Multicast),
            Some(p) => Err(UsageError::new(
                "peer_discovery",
                p,
                "only used with flood = \"unicast\" or \"evpn\" (multicast flooding needs no \
                 peer list): remove it, or set flood = \"unicast\" or \"evpn\"",
            )),
        },
        "unicast" => Ok(Flood::Unicast(peer.unwrap_or(PeerDiscovery::Ec2))),
        "evpn" => Ok(Flood::Evpn(peer.unwrap_or(PeerDiscovery::Ec2))),
        other => Err(UsageError::new(
            "flood",
            other,
            "must be \"multicast\" (Transit Gateway multicast domain), \"unicast\" \
             (head-end replication, no transit gateway) or \"evpn\" (BGP EVPN with route \
             reflectors on the routers, no transit gateway)",
        )),
    }
}

/// The cluster file, keys exactly as operators write them.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    pub name: String,
    pub region: String,
    pub vpc_id: String,
    /// The overlay nodes' subnet (single-AZ form; exactly one of this and `subnet_ids`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet_id: Option<String>,
    /// The overlay nodes' subnets, one per AZ (multi-AZ form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet_ids: Option<Vec<String>>,
    /// Another AZ for the RDS subnet group; optional when `subnet_ids` covers two AZs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub second_subnet_id: Option<String>,
    pub overlay_cidr: String,
    /// Required with flood = "multicast"; with "unicast" and "evpn" checked if given, else unused.
    #[serde(default)]
    pub multicast_group: Option<String>,
    #[serde(default = "default_flood")]
    pub flood: String,
    #[serde(default)]
    pub peer_discovery: Option<String>,
    /// The router (exactly one of this and `router_instance_ids`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router_instance_id: Option<String>,
    /// The HA router pair, one per AZ (the first is the one routes are created for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router_instance_ids: Option<Vec<String>>,
    #[serde(default)]
    pub route_table_ids: Option<Vec<String>>,
    pub access_cidr: String,
    #[serde(default = "default_efs_throughput")]
    pub efs_throughput_mibps: f64,
    #[serde(default = "default_db_class")]
    pub db_instance_class: String,
    #[serde(default = "default_db_storage")]
    pub db_allocated_storage_gib: i32,
    #[serde(default = "default_db_max_storage")]
    pub db_max_storage_gib: i32,
    #[serde(default = "default_zones")]
    pub zones: Vec<String>,
}

/// The cluster file after validation, with parsed addresses.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub cfg: ClusterConfig,
    pub overlay: Ipv4Net,
    /// The multicast group (always set with flood = multicast).
    pub group: Option<Ipv4Addr>,
    pub access: Ipv4Net,
    pub flood: Flood,
    /// The overlay nodes' subnets (`subnet_id` or `subnet_ids`), in the order given.
    pub subnets: Vec<String>,
    /// The routers (`router_instance_id` or `router_instance_ids`): the first is the one new
    /// routes point at, the second (if any) its standby.
    pub routers: Vec<String>,
}

impl Cluster {
    pub fn name(&self) -> &str {
        &self.cfg.name
    }
    /// `overlay-<name>-<suffix>`: the Name tag / identifier of a resource.
    pub fn res_name(&self, suffix: &str) -> String {
        format!("overlay-{}-{}", self.cfg.name, suffix)
    }
    pub fn db_instance_id(&self) -> String {
        format!("overlay-{}-db", self.cfg.name)
    }
    pub fn db_subnet_group(&self) -> String {
        format!("overlay-{}-db", self.cfg.name)
    }
    /// The parameter group of a new DB instance: `overlay-<name>-mysql84` (the suffix follows
    /// [`crate::model::DB_MYSQL`]).
    pub fn db_parameter_group(&self) -> String {
        self.db_parameter_group_for(&crate::model::DB_MYSQL)
    }
    /// The parameter group for MySQL major `m`.
    pub fn db_parameter_group_for(&self, m: &crate::model::MysqlMajor) -> String {
        format!("overlay-{}-{}", self.cfg.name, m.name_suffix)
    }
    /// `overlay/<name>/db-<which>` (admin, service): [`secrets_prefix`] + `db-<which>`.
    pub fn secret_name(&self, which: &str) -> String {
        format!("{}db-{which}", secrets_prefix(&self.cfg.name))
    }
    pub fn efs_token(&self) -> String {
        format!("overlay-{}-efs", self.cfg.name)
    }
    /// The key the subnets were given with (`subnet_id` or `subnet_ids`), for error messages.
    pub fn subnet_field(&self) -> &'static str {
        if self.cfg.subnet_ids.is_some() {
            "subnet_ids"
        } else {
            "subnet_id"
        }
    }
    /// The key the routers were given with (`router_instance_id` or `router_instance_ids`).
    pub fn router_field(&self) -> &'static str {
        if self.cfg.router_instance_ids.is_some() {
            "router_instance_ids"
        } else {
            "router_instance_id"
        }
    }
    /// The subnets of the RDS subnet group: the overlay subnets and `second_subnet_id`.
    pub fn db_subnets(&self) -> Vec<String> {
        let mut v = self.subnets.clone();
        if let Some(s) = &self.cfg.second_subnet_id {
            if !v.contains(s) {
                v.push(s.clone());
            }
        }
        v
    }
}

/// Every secret of cluster `name` is named `overlay/<name>/...` (`*` gives the pattern of every
/// cluster's).
pub fn secrets_prefix(name: &str) -> String {
    format!("overlay/{name}/")
}

pub fn load(path: &Path) -> Result<Cluster, UsageError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        UsageError::new(
            "--config",
            &path.display().to_string(),
            &format!("cannot read: {e}"),
        )
    })?;
    parse(&text)
}

pub fn parse(text: &str) -> Result<Cluster, UsageError> {
    let cfg: ClusterConfig = toml::from_str(text).map_err(|e| {
        let msg = e.message().to_string();
        // A value of the wrong type: the key is the one on the line of the value.
        if msg.starts_with("invalid ") {
            if let Some((key, value)) = e.span().and_then(|sp| key_at(text, sp)) {
                return UsageError::new(&key, &value, msg.trim());
            }
        }
        // serde names the offending key between backticks for unknown/missing fields.
        let field = msg
            .split('`')
            .nth(1)
            .map(str::to_string)
            .unwrap_or_else(|| "config".to_string());
        UsageError::new(&field, "", msg.trim())
    })?;
    validate(cfg)
}

/// The `key = value` line holding `span`: (key, the value's text).
fn key_at(text: &str, span: std::ops::Range<usize>) -> Option<(String, String)> {
    let start = text[..span.start.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let line = text[start..].lines().next()?;
    let (key, _) = line.split_once('=')?;
    let key = key.trim().trim_matches('"');
    let ok = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let value = text.get(span)?.trim().trim_matches('"');
    ok.then(|| (key.to_string(), value.to_string()))
}

fn check_id(field: &str, value: &str, prefix: &str) -> Result<(), UsageError> {
    let rest = value.strip_prefix(prefix).and_then(|r| r.strip_prefix('-'));
    let ok = match rest {
        Some(hex) => {
            (hex.len() == 8 || hex.len() == 17)
                && hex
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        }
        None => false,
    };
    if ok {
        Ok(())
    } else {
        Err(UsageError::new(
            field,
            value,
            &format!(
                "not a valid id (expected {prefix}- followed by 8 or 17 lowercase hex digits)"
            ),
        ))
    }
}

/// A cluster name: lowercase letters, digits and hyphens (it is part of resource names).
pub fn check_name(name: &str) -> Result<(), UsageError> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
        && !name.contains("--");
    if ok {
        Ok(())
    } else {
        Err(UsageError::new(
            "name",
            name,
            "must be 1-32 chars of lowercase letters, digits and single hyphens, starting with a letter \
             (it is used in RDS identifiers)",
        ))
    }
}

fn check_region(region: &str) -> Result<(), UsageError> {
    let parts: Vec<&str> = region.split('-').collect();
    let ok = parts.len() >= 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        })
        && parts.last().unwrap().chars().all(|c| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(UsageError::new(
            "region",
            region,
            "not an AWS region name (e.g. eu-west-1)",
        ))
    }
}

fn parse_net(field: &str, value: &str) -> Result<Ipv4Net, UsageError> {
    let net: Ipv4Net = value
        .parse()
        .map_err(|_| UsageError::new(field, value, "not an IPv4 CIDR (a.b.c.d/len)"))?;
    if net.trunc() != net {
        return Err(UsageError::new(
            field,
            value,
            &format!("host bits set; did you mean {}?", net.trunc()),
        ));
    }
    Ok(net)
}

fn check_group(value: &str) -> Result<Ipv4Addr, UsageError> {
    let group: Ipv4Addr = value
        .parse()
        .map_err(|_| UsageError::new("multicast_group", value, "not an IPv4 address"))?;
    if !group.is_multicast() {
        return Err(UsageError::new(
            "multicast_group",
            value,
            "not a multicast address (224.0.0.0/4)",
        ));
    }
    let o = group.octets();
    if o[0] == 224 && o[1] == 0 && o[2] == 0 {
        return Err(UsageError::new(
            "multicast_group",
            value,
            "224.0.0.0/24 is link-local control traffic and is not forwarded by a transit gateway",
        ));
    }
    Ok(group)
}

/// Exactly one of the single form (`single_key`) and the list form (`list_key`): the ids, each
/// valid, distinct, at least one and at most `max`.
fn one_of(
    single_key: &str,
    single: &Option<String>,
    list_key: &str,
    list: &Option<Vec<String>>,
    prefix: &str,
    max: Option<usize>,
    what: &str,
) -> Result<Vec<String>, UsageError> {
    let ids = match (single, list) {
        (Some(s), None) => {
            check_id(single_key, s, prefix)?;
            return Ok(vec![s.clone()]);
        }
        (None, Some(v)) => v.clone(),
        (Some(s), Some(_)) => {
            return Err(UsageError::new(
                single_key,
                s,
                &format!("give either {single_key} or {list_key}, not both"),
            ))
        }
        (None, None) => {
            return Err(UsageError::new(
                single_key,
                "",
                &format!("missing: give {single_key} ({what}) or {list_key} (a list)"),
            ))
        }
    };
    let shown = format!("[{}]", ids.join(", "));
    if ids.is_empty() {
        return Err(UsageError::new(
            list_key,
            "[]",
            &format!("must list at least one {what}"),
        ));
    }
    if let Some(max) = max {
        if ids.len() > max {
            return Err(UsageError::new(
                list_key,
                &shown,
                &format!("at most {max} (one {what} per availability zone)"),
            ));
        }
    }
    for (i, id) in ids.iter().enumerate() {
        check_id(list_key, id, prefix)?;
        if ids[..i].contains(id) {
            return Err(UsageError::new(
                list_key,
                id,
                &format!("listed twice in {shown}"),
            ));
        }
    }
    Ok(ids)
}

pub fn validate(cfg: ClusterConfig) -> Result<Cluster, UsageError> {
    check_name(&cfg.name)?;
    check_region(&cfg.region)?;
    check_id("vpc_id", &cfg.vpc_id, "vpc")?;
    let subnets = one_of(
        "subnet_id",
        &cfg.subnet_id,
        "subnet_ids",
        &cfg.subnet_ids,
        "subnet",
        None,
        "subnet",
    )?;
    match &cfg.second_subnet_id {
        Some(second) => {
            check_id("second_subnet_id", second, "subnet")?;
            if subnets.contains(second) {
                let key = if cfg.subnet_ids.is_some() {
                    "one of subnet_ids"
                } else {
                    "subnet_id"
                };
                return Err(UsageError::new(
                    "second_subnet_id",
                    second,
                    &format!("must differ from {key} (RDS needs subnets in two AZs)"),
                ));
            }
        }
        None if subnets.len() < 2 => {
            return Err(UsageError::new(
                "second_subnet_id",
                "",
                "required unless subnet_ids lists subnets in two availability zones \
                 (RDS needs subnets in two AZs)",
            ))
        }
        None => {}
    }
    let routers = one_of(
        "router_instance_id",
        &cfg.router_instance_id,
        "router_instance_ids",
        &cfg.router_instance_ids,
        "i",
        Some(2),
        "router",
    )?;
    if let Some(rts) = &cfg.route_table_ids {
        if rts.is_empty() {
            return Err(UsageError::new(
                "route_table_ids",
                "[]",
                "must list at least one route table (omit the key to use every route table of the VPC)",
            ));
        }
        for rt in rts {
            check_id("route_table_ids", rt, "rtb")?;
        }
    }
    let overlay = parse_net("overlay_cidr", &cfg.overlay_cidr)?;
    if overlay.prefix_len() > 28 {
        return Err(UsageError::new(
            "overlay_cidr",
            &cfg.overlay_cidr,
            "prefix longer than /28",
        ));
    }
    let access = parse_net("access_cidr", &cfg.access_cidr)?;
    let flood = parse_flood(&cfg.flood, cfg.peer_discovery.as_deref())?;
    let group = match &cfg.multicast_group {
        Some(g) => Some(check_group(g)?),
        None if flood.needs_multicast_domain() => {
            return Err(UsageError::new(
                "multicast_group",
                "",
                "required with flood = \"multicast\" (the VXLAN flood group, e.g. 239.1.1.1)",
            ))
        }
        None => None,
    };
    if !(cfg.efs_throughput_mibps >= 1.0 && cfg.efs_throughput_mibps <= 3414.0) {
        return Err(UsageError::new(
            "efs_throughput_mibps",
            &cfg.efs_throughput_mibps.to_string(),
            "must be between 1 and 3414",
        ));
    }
    if !cfg.db_instance_class.starts_with("db.") || cfg.db_instance_class.split('.').count() != 3 {
        return Err(UsageError::new(
            "db_instance_class",
            &cfg.db_instance_class,
            "not an RDS instance class (e.g. db.m6g.large)",
        ));
    }
    if !(20..=65536).contains(&cfg.db_allocated_storage_gib) {
        return Err(UsageError::new(
            "db_allocated_storage_gib",
            &cfg.db_allocated_storage_gib.to_string(),
            "must be between 20 and 65536",
        ));
    }
    if cfg.db_max_storage_gib < cfg.db_allocated_storage_gib {
        return Err(UsageError::new(
            "db_max_storage_gib",
            &cfg.db_max_storage_gib.to_string(),
            "must be at least db_allocated_storage_gib",
        ));
    }
    if cfg.zones.is_empty() {
        return Err(UsageError::new(
            "zones",
            "[]",
            "must name at least one CloudStack zone",
        ));
    }
    for z in &cfg.zones {
        if z.is_empty()
            || !z
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(UsageError::new(
                "zones",
                z,
                "zone names are letters, digits, - and _",
            ));
        }
    }
    Ok(Cluster {
        cfg,
        overlay,
        group,
        access,
        flood,
        subnets,
        routers,
    })
}

/// A subnet as AWS has it: (subnet id, vpc id, availability zone, cidr).
pub type SubnetFact = (String, String, String, Ipv4Net);

/// Facts read from AWS that the bad-input checks need.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub vpc_exists: bool,
    pub vpc_cidrs: Vec<Ipv4Net>,
    /// Per overlay subnet (in [`Cluster::subnets`] order): the subnet when it exists.
    pub subnets: Vec<Option<SubnetFact>>,
    /// `second_subnet_id` when given and it exists.
    pub second_subnet: Option<SubnetFact>,
    /// Per router (in [`Cluster::routers`] order): (subnet id of the primary ENI, vpc id) when
    /// the instance exists.
    pub routers: Vec<Option<(String, String)>>,
    /// Route tables of the VPC.
    pub vpc_route_tables: Vec<String>,
}

/// Checks that need facts from AWS; pure so it can be unit-tested.
pub fn validate_facts(c: &Cluster, f: &Facts) -> Result<(), UsageError> {
    let cfg = &c.cfg;
    if !f.vpc_exists {
        return Err(UsageError::new(
            "vpc_id",
            &cfg.vpc_id,
            "no such VPC in this region",
        ));
    }
    for v in &f.vpc_cidrs {
        if v.contains(&c.overlay.network()) || c.overlay.contains(&v.network()) {
            return Err(UsageError::new(
                "overlay_cidr",
                &cfg.overlay_cidr,
                &format!("overlaps the VPC CIDR {v}"),
            ));
        }
    }
    let sfield = c.subnet_field();
    let mut found: Vec<&SubnetFact> = Vec::new();
    for (i, id) in c.subnets.iter().enumerate() {
        let s = f
            .subnets
            .get(i)
            .and_then(Option::as_ref)
            .ok_or_else(|| UsageError::new(sfield, id, "no such subnet"))?;
        if s.1 != cfg.vpc_id {
            return Err(UsageError::new(
                sfield,
                id,
                &format!("is in {}, not in vpc_id {}", s.1, cfg.vpc_id),
            ));
        }
        if let Some(other) = found.iter().find(|o| o.2 == s.2) {
            return Err(UsageError::new(
                sfield,
                &format!("{}, {}", other.0, id),
                &format!(
                    "{} and {id} are both in availability zone {}: give one subnet per AZ",
                    other.0, s.2
                ),
            ));
        }
        found.push(s);
    }
    if let Some(second) = &cfg.second_subnet_id {
        let (sid2, svpc2, saz2, _) = f
            .second_subnet
            .as_ref()
            .ok_or_else(|| UsageError::new("second_subnet_id", second, "no such subnet"))?;
        if svpc2 != &cfg.vpc_id {
            return Err(UsageError::new(
                "second_subnet_id",
                sid2,
                &format!("is in {svpc2}, not in vpc_id {}", cfg.vpc_id),
            ));
        }
        // RDS needs two AZs: with one overlay subnet the second subnet brings the other one.
        if found.len() == 1 && &found[0].2 == saz2 {
            return Err(UsageError::new(
                "second_subnet_id",
                sid2,
                &format!(
                    "is in the same availability zone ({saz2}) as {sfield}; RDS needs two AZs"
                ),
            ));
        }
    }
    let rfield = c.router_field();
    let mut router_subnets: Vec<&String> = Vec::new();
    for (i, id) in c.routers.iter().enumerate() {
        let (rsub, _) = f
            .routers
            .get(i)
            .and_then(Option::as_ref)
            .ok_or_else(|| UsageError::new(rfield, id, "no such instance"))?;
        if !c.subnets.contains(rsub) {
            let wanted = if c.subnets.len() == 1 {
                format!("not in {sfield} {}", c.subnets[0])
            } else {
                format!("not in any of {sfield} [{}]", c.subnets.join(", "))
            };
            return Err(UsageError::new(
                rfield,
                id,
                &format!("its primary interface is in {rsub}, {wanted}"),
            ));
        }
        if router_subnets.contains(&rsub) {
            return Err(UsageError::new(
                rfield,
                &c.routers.join(", "),
                &format!(
                    "both routers are in {rsub}: put the pair in different subnets \
                     (availability zones), one router per AZ"
                ),
            ));
        }
        router_subnets.push(rsub);
    }
    if let Some(rts) = &cfg.route_table_ids {
        for rt in rts {
            if !f.vpc_route_tables.contains(rt) {
                return Err(UsageError::new(
                    "route_table_ids",
                    rt,
                    "not a route table of vpc_id",
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const GOOD: &str = r#"
name = "lab1"
region = "eu-west-1"
vpc_id = "vpc-0123456789abcdef0"
subnet_id = "subnet-0123456789abcdef0"
second_subnet_id = "subnet-0123456789abcdef1"
overlay_cidr = "100.64.0.0/16"
multicast_group = "239.1.1.1"
router_instance_id = "i-0123456789abcdef0"
access_cidr = "203.0.113.0/24"
"#;

    fn with(key: &str, value: &str) -> String {
        let mut out = String::new();
        let mut found = false;
        for line in GOOD.lines() {
            if line.starts_with(&format!("{key} =")) {
                out.push_str(&format!("{key} = {value}\n"));
                found = true;
            } else {
                out.push_str(line);
                out.push('\n');
            }
        }
        if !found {
            out.push_str(&format!("{key} = {value}\n"));
        }
        out
    }

    fn err_field(text: &str) -> String {
        parse(text).unwrap_err().field
    }

    #[test]
    fn defaults_apply() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.cfg.efs_throughput_mibps, 25.0);
        assert_eq!(c.cfg.db_instance_class, "db.m6g.large");
        assert_eq!(c.cfg.db_allocated_storage_gib, 20);
        assert_eq!(c.cfg.db_max_storage_gib, 100);
        assert_eq!(c.cfg.zones, vec!["zone1"]);
        assert!(c.cfg.route_table_ids.is_none());
    }

    #[test]
    fn malformed_ids_name_the_field() {
        assert_eq!(err_field(&with("vpc_id", "\"vpc-xyz\"")), "vpc_id");
        assert_eq!(err_field(&with("subnet_id", "\"sub-0123\"")), "subnet_id");
        assert_eq!(
            err_field(&with("router_instance_id", "\"i-123\"")),
            "router_instance_id"
        );
        assert_eq!(
            err_field(&with("route_table_ids", "[\"rtb-zz\"]")),
            "route_table_ids"
        );
        assert_eq!(
            err_field(&with("second_subnet_id", "\"subnet-0123456789abcdef0\"")),
            "second_subnet_id"
        );
    }

    #[test]
    fn bad_values_name_the_field() {
        assert_eq!(
            err_field(&with("multicast_group", "\"10.0.0.1\"")),
            "multicast_group"
        );
        assert_eq!(
            err_field(&with("multicast_group", "\"224.0.0.5\"")),
            "multicast_group"
        );
        assert_eq!(
            err_field(&with("overlay_cidr", "\"100.64.0.1/16\"")),
            "overlay_cidr"
        );
        assert_eq!(err_field(&with("access_cidr", "\"nope\"")), "access_cidr");
        assert_eq!(err_field(&with("name", "\"Lab_1\"")), "name");
        assert_eq!(err_field(&with("region", "\"mars\"")), "region");
        assert_eq!(
            err_field(&with("db_max_storage_gib", "10")),
            "db_max_storage_gib"
        );
        assert_eq!(
            err_field(&with("efs_throughput_mibps", "0")),
            "efs_throughput_mibps"
        );
        assert_eq!(err_field(&with("zones", "[]")), "zones");
    }

    #[test]
    fn flood_defaults_to_multicast_and_unicast_to_ec2_discovery() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.flood, Flood::Multicast);
        assert_eq!(c.group, Some("239.1.1.1".parse().unwrap()));
        let c = parse(&with("flood", "\"unicast\"")).unwrap();
        assert_eq!(c.flood, Flood::Unicast(PeerDiscovery::Ec2));
        let c = parse(&format!(
            "{}peer_discovery = \"static\"\n",
            with("flood", "\"unicast\"")
        ))
        .unwrap();
        assert_eq!(c.flood, Flood::Unicast(PeerDiscovery::Static));
        assert_eq!(c.flood.peer_discovery(), Some(PeerDiscovery::Static));
    }

    #[test]
    fn evpn_flooding_takes_peer_discovery_like_unicast() {
        let c = parse(&with("flood", "\"evpn\"")).unwrap();
        assert_eq!(c.flood, Flood::Evpn(PeerDiscovery::Ec2));
        assert_eq!(c.flood.as_str(), "evpn");
        assert!(!c.flood.needs_multicast_domain() && c.flood.needs_bgp());
        let c = parse(&format!(
            "{}peer_discovery = \"static\"\n",
            with("flood", "\"evpn\"")
        ))
        .unwrap();
        assert_eq!(c.flood, Flood::Evpn(PeerDiscovery::Static));
        assert_eq!(c.flood.peer_discovery(), Some(PeerDiscovery::Static));
        // the helpers, mode by mode
        for (f, domain, bgp) in [
            (Flood::Multicast, true, false),
            (Flood::Unicast(PeerDiscovery::Ec2), false, false),
            (Flood::Evpn(PeerDiscovery::Ec2), false, true),
        ] {
            assert_eq!(
                (f.needs_multicast_domain(), f.needs_bgp()),
                (domain, bgp),
                "{f:?}"
            );
            assert!(FLOOD_MODES.contains(&f.as_str()));
        }
        assert_eq!(Flood::Multicast.peer_discovery(), None);
        // bad peer_discovery with evpn: named with its value
        let e = parse(&format!(
            "{}peer_discovery = \"dns\"\n",
            with("flood", "\"evpn\"")
        ))
        .unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.value.as_str()),
            ("peer_discovery", "dns")
        );
        // a wrong spelling is refused, naming every mode
        let e = parse(&with("flood", "\"EVPN\"")).unwrap_err();
        assert_eq!((e.field.as_str(), e.value.as_str()), ("flood", "EVPN"));
        assert!(e.message.contains("\"evpn\""), "{e}");
    }

    #[test]
    fn multicast_group_is_needed_only_for_multicast_flooding() {
        let without: String = GOOD
            .lines()
            .filter(|l| !l.starts_with("multicast_group"))
            .map(|l| format!("{l}\n"))
            .collect();
        let e = parse(&without).unwrap_err();
        assert_eq!(e.field, "multicast_group");
        assert!(e.message.contains("flood"), "{e}");
        for mode in ["unicast", "evpn"] {
            let c = parse(&format!("{without}flood = \"{mode}\"\n")).unwrap();
            assert_eq!(c.group, None, "{mode}");
        }
        // given with unicast it is still checked (switching back is one key)
        let bad = with("multicast_group", "\"10.0.0.1\"");
        for mode in ["unicast", "evpn"] {
            assert_eq!(
                parse(&format!("{bad}flood = \"{mode}\"\n"))
                    .unwrap_err()
                    .field,
                "multicast_group",
                "{mode}"
            );
        }
    }

    #[test]
    fn bad_flood_settings_name_the_field_and_value() {
        let e = parse(&with("flood", "\"broadcast\"")).unwrap_err();
        assert_eq!((e.field.as_str(), e.value.as_str()), ("flood", "broadcast"));
        assert!(e.to_string().contains("flood = \"broadcast\""), "{e}");
        let e = parse(&format!(
            "{}peer_discovery = \"dns\"\n",
            with("flood", "\"unicast\"")
        ))
        .unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.value.as_str()),
            ("peer_discovery", "dns")
        );
        // peer_discovery with multicast would do nothing: refused
        let e = parse(&format!("{GOOD}peer_discovery = \"ec2\"\n")).unwrap_err();
        assert_eq!(e.field, "peer_discovery");
        assert!(e.message.contains("unicast"), "{e}");
        // not a string: the TOML error still names the key and the value
        let e = parse(&with("flood", "1")).unwrap_err();
        assert_eq!((e.field.as_str(), e.value.as_str()), ("flood", "1"));
        assert_eq!(
            err_field(&with("db_allocated_storage_gib", "\"20\"")),
            "db_allocated_storage_gib"
        );
    }

    #[test]
    fn names_of_the_database_pieces() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.db_parameter_group(), "overlay-lab1-mysql84");
        assert_eq!(
            c.db_parameter_group_for(&crate::model::MYSQL_8_0),
            "overlay-lab1-mysql80"
        );
        assert_eq!(c.secret_name("admin"), "overlay/lab1/db-admin");
        assert_eq!(c.secret_name("service"), "overlay/lab1/db-service");
        assert!(c.secret_name("admin").starts_with(&secrets_prefix("lab1")));
    }

    #[test]
    fn unknown_key_is_rejected() {
        let e = parse(&format!("{GOOD}\nvpcid = \"x\"\n")).unwrap_err();
        assert!(e.to_string().contains("vpcid"), "{e}");
    }

    fn facts() -> Facts {
        Facts {
            vpc_exists: true,
            vpc_cidrs: vec!["10.0.0.0/16".parse().unwrap()],
            subnets: vec![Some((
                "subnet-0123456789abcdef0".into(),
                "vpc-0123456789abcdef0".into(),
                "eu-west-1a".into(),
                "10.0.1.0/24".parse().unwrap(),
            ))],
            second_subnet: Some((
                "subnet-0123456789abcdef1".into(),
                "vpc-0123456789abcdef0".into(),
                "eu-west-1b".into(),
                "10.0.2.0/24".parse().unwrap(),
            )),
            routers: vec![Some((
                "subnet-0123456789abcdef0".into(),
                "vpc-0123456789abcdef0".into(),
            ))],
            vpc_route_tables: vec![],
        }
    }

    #[test]
    fn facts_ok() {
        validate_facts(&parse(GOOD).unwrap(), &facts()).unwrap();
    }

    #[test]
    fn facts_errors_name_the_field() {
        let c = parse(GOOD).unwrap();
        let mut f = facts();
        f.vpc_cidrs.push("100.64.8.0/24".parse().unwrap());
        assert_eq!(validate_facts(&c, &f).unwrap_err().field, "overlay_cidr");
        let mut f = facts();
        f.subnets[0].as_mut().unwrap().1 = "vpc-0000000000000000f".into();
        assert_eq!(validate_facts(&c, &f).unwrap_err().field, "subnet_id");
        let mut f = facts();
        f.second_subnet.as_mut().unwrap().2 = "eu-west-1a".into();
        assert_eq!(
            validate_facts(&c, &f).unwrap_err().field,
            "second_subnet_id"
        );
        let mut f = facts();
        f.routers = vec![Some((
            "subnet-0123456789abcdef1".into(),
            "vpc-0123456789abcdef0".into(),
        ))];
        assert_eq!(
            validate_facts(&c, &f).unwrap_err().field,
            "router_instance_id"
        );
        let mut f = facts();
        f.vpc_exists = false;
        assert_eq!(validate_facts(&c, &f).unwrap_err().field, "vpc_id");
    }

    const A: &str = "subnet-0123456789abcdef0";
    const B: &str = "subnet-0123456789abcdef1";
    const C: &str = "subnet-0123456789abcdef2";
    const RA: &str = "i-0123456789abcdef0";
    const RB: &str = "i-0123456789abcdef1";

    /// GOOD in the multi-AZ form: two subnets, a router pair, no second_subnet_id.
    fn multi() -> String {
        GOOD.lines()
            .filter(|l| {
                !l.starts_with("subnet_id")
                    && !l.starts_with("second_subnet_id")
                    && !l.starts_with("router_instance_id")
            })
            .map(|l| format!("{l}\n"))
            .chain([
                format!("subnet_ids = [\"{A}\", \"{B}\"]\n"),
                format!("router_instance_ids = [\"{RA}\", \"{RB}\"]\n"),
            ])
            .collect()
    }

    fn err_of(text: &str) -> UsageError {
        parse(text).unwrap_err()
    }

    #[test]
    fn single_forms_normalise_to_one_subnet_and_one_router() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.subnets, vec![A]);
        assert_eq!(c.routers, vec![RA]);
        assert_eq!(c.db_subnets(), vec![A, B]);
        assert_eq!(
            (c.subnet_field(), c.router_field()),
            ("subnet_id", "router_instance_id")
        );
    }

    #[test]
    fn list_forms_normalise_and_second_subnet_becomes_optional() {
        let c = parse(&multi()).unwrap();
        assert_eq!(c.subnets, vec![A, B]);
        assert_eq!(c.routers, vec![RA, RB]);
        assert_eq!(c.db_subnets(), vec![A, B]);
        assert_eq!(
            (c.subnet_field(), c.router_field()),
            ("subnet_ids", "router_instance_ids")
        );
        // given anyway: it joins the RDS subnet group
        let c = parse(&format!("{}second_subnet_id = \"{C}\"\n", multi())).unwrap();
        assert_eq!(c.db_subnets(), vec![A, B, C]);
        // one router with two subnets, one subnet in the list form with second_subnet_id
        let t = multi().replace(&format!("[\"{RA}\", \"{RB}\"]"), &format!("[\"{RA}\"]"));
        assert_eq!(parse(&t).unwrap().routers, vec![RA]);
        let t = multi().replace(&format!("[\"{A}\", \"{B}\"]"), &format!("[\"{A}\"]"));
        let e = err_of(&t);
        assert_eq!(e.field, "second_subnet_id", "{e}");
        let c = parse(&format!("{t}second_subnet_id = \"{C}\"\n")).unwrap();
        assert_eq!(c.db_subnets(), vec![A, C]);
    }

    #[test]
    fn both_or_neither_form_is_refused_naming_the_field() {
        let e = err_of(&format!("{GOOD}subnet_ids = [\"{B}\"]\n"));
        assert_eq!(e.field, "subnet_id");
        assert!(e.message.contains("not both"), "{e}");
        let e = err_of(&format!("{GOOD}router_instance_ids = [\"{RB}\"]\n"));
        assert_eq!(e.field, "router_instance_id");
        assert!(e.message.contains("router_instance_ids"), "{e}");
        let no_subnet: String = GOOD
            .lines()
            .filter(|l| !l.starts_with("subnet_id"))
            .map(|l| format!("{l}\n"))
            .collect();
        let e = err_of(&no_subnet);
        assert_eq!(e.field, "subnet_id");
        assert!(e.message.contains("subnet_ids"), "{e}");
        let no_router: String = GOOD
            .lines()
            .filter(|l| !l.starts_with("router_instance_id"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(err_of(&no_router).field, "router_instance_id");
    }

    #[test]
    fn bad_lists_name_the_field_and_value() {
        let m = multi();
        let sub = |v: &str| m.replace(&format!("[\"{A}\", \"{B}\"]"), v);
        let rt = |v: &str| m.replace(&format!("[\"{RA}\", \"{RB}\"]"), v);
        let e = err_of(&sub("[]"));
        assert_eq!((e.field.as_str(), e.value.as_str()), ("subnet_ids", "[]"));
        let e = err_of(&sub(&format!("[\"{A}\", \"subnet-xyz\"]")));
        assert_eq!(
            (e.field.as_str(), e.value.as_str()),
            ("subnet_ids", "subnet-xyz")
        );
        let e = err_of(&sub(&format!("[\"{A}\", \"{A}\"]")));
        assert_eq!((e.field.as_str(), e.value.as_str()), ("subnet_ids", A));
        let e = err_of(&rt(&format!("[\"{RA}\", \"{RA}\"]")));
        assert_eq!(
            (e.field.as_str(), e.value.as_str()),
            ("router_instance_ids", RA)
        );
        let e = err_of(&rt(&format!(
            "[\"{RA}\", \"{RB}\", \"i-0123456789abcdef2\"]"
        )));
        assert_eq!(e.field, "router_instance_ids");
        assert!(e.message.contains("at most 2"), "{e}");
        let e = err_of(&rt("[]"));
        assert_eq!(e.field, "router_instance_ids");
        let e = err_of(&rt("[\"i-1\"]"));
        assert_eq!(
            (e.field.as_str(), e.value.as_str()),
            ("router_instance_ids", "i-1")
        );
        // second_subnet_id may not be one of the overlay subnets
        let e = err_of(&format!("{m}second_subnet_id = \"{B}\"\n"));
        assert_eq!(e.field, "second_subnet_id");
    }

    fn subnet(id: &str, az: &str, cidr: &str) -> Option<SubnetFact> {
        Some((
            id.into(),
            "vpc-0123456789abcdef0".into(),
            az.into(),
            cidr.parse().unwrap(),
        ))
    }

    fn multi_facts() -> Facts {
        Facts {
            subnets: vec![
                subnet(A, "eu-west-1a", "10.0.1.0/24"),
                subnet(B, "eu-west-1b", "10.0.2.0/24"),
            ],
            second_subnet: None,
            routers: vec![
                Some((A.into(), "vpc-0123456789abcdef0".into())),
                Some((B.into(), "vpc-0123456789abcdef0".into())),
            ],
            ..facts()
        }
    }

    #[test]
    fn multi_az_facts() {
        let c = parse(&multi()).unwrap();
        validate_facts(&c, &multi_facts()).unwrap();
        // a subnet that does not exist or is elsewhere
        let mut f = multi_facts();
        f.subnets[1] = None;
        let e = validate_facts(&c, &f).unwrap_err();
        assert_eq!((e.field.as_str(), e.value.as_str()), ("subnet_ids", B));
        let mut f = multi_facts();
        f.subnets[1].as_mut().unwrap().1 = "vpc-0000000000000000f".into();
        let e = validate_facts(&c, &f).unwrap_err();
        assert_eq!((e.field.as_str(), e.value.as_str()), ("subnet_ids", B));
        // two subnets in one AZ: both named
        let mut f = multi_facts();
        f.subnets[1].as_mut().unwrap().2 = "eu-west-1a".into();
        let e = validate_facts(&c, &f).unwrap_err();
        assert_eq!(e.field, "subnet_ids");
        assert!(e.message.contains(A) && e.message.contains(B), "{e}");
        assert!(e.message.contains("eu-west-1a"), "{e}");
        // a router outside the subnets
        let mut f = multi_facts();
        f.routers[1] = Some((C.into(), "vpc-0123456789abcdef0".into()));
        let e = validate_facts(&c, &f).unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.value.as_str()),
            ("router_instance_ids", RB)
        );
        assert!(e.message.contains(C), "{e}");
        // both routers in one subnet (one AZ)
        let mut f = multi_facts();
        f.routers[1] = Some((A.into(), "vpc-0123456789abcdef0".into()));
        let e = validate_facts(&c, &f).unwrap_err();
        assert_eq!(e.field, "router_instance_ids");
        assert!(e.value.contains(RA) && e.value.contains(RB), "{e}");
        // a router that does not exist
        let mut f = multi_facts();
        f.routers[0] = None;
        let e = validate_facts(&c, &f).unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.value.as_str()),
            ("router_instance_ids", RA)
        );
        // second_subnet_id with two AZs already covered: any AZ will do
        let c = parse(&format!("{}second_subnet_id = \"{C}\"\n", multi())).unwrap();
        let mut f = multi_facts();
        f.second_subnet = subnet(C, "eu-west-1a", "10.0.3.0/24");
        validate_facts(&c, &f).unwrap();
        f.second_subnet = None;
        assert_eq!(
            validate_facts(&c, &f).unwrap_err().field,
            "second_subnet_id"
        );
    }
}
