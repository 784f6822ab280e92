//! Configuration: TOML file, `OVERLAYD_*` environment variables and flags, merged with
//! precedence flag > env > file, then validated into a typed [`Config`].
//!
//! Validation here is *static*: it needs nothing from the kernel. Checks that need host
//! facts (does the underlay exist, its MTU and subnet) live in [`crate::desired`].
//! Every error names the key, the offending value and where it came from.
//!
//! - `settings.rs`: every key, declared once (clap derive for flags and `OVERLAYD_*`, the TOML
//!   file walked by the same names)
//! - `checks.rs`: one small `check_*` per key, typing its text into [`Config`]
//! - here: the types, the layering (flag > env > file) and [`build`]

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;

mod checks;
mod instance_layers;
mod settings;
#[cfg(test)]
mod tests;

use checks::validate;
pub use checks::{check_ifname, cloudstack_recognises, CLOUDSTACK_PORT_PATTERNS};
pub use settings::{keys, FileConfig, Overrides, Settings};

pub const DEFAULT_CONFIG: &str = "/etc/overlayd/overlayd.toml";
/// TGW multicast MTU is 8500; VXLAN adds 50 bytes.
pub const MTU_CAP: u32 = 8450;
pub const VXLAN_OVERHEAD: u32 = 50;
pub const MTU_MIN: u32 = 68;
pub const MTU_MAX: u32 = 8950;

/// Where a value came from, so errors can tell the operator what to fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Flag,
    Env,
    File,
    /// An `overlay:*` tag of the EC2 instance.
    Tag,
    /// Derived from the instance's IMDSv2 facts (an `auto` value).
    Imds,
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::Flag => "command line",
            Source::Env => "environment",
            Source::File => "config file",
            Source::Tag => "instance tag",
            Source::Imds => "instance metadata",
            Source::Default => "default",
        })
    }
}

/// A configuration error: always names the key and the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub value: String,
    pub source: Option<Source>,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {} = {:?}", self.key, self.value)?;
        if let Some(s) = self.source {
            write!(f, " (from {s})")?;
        }
        write!(f, ": {}", self.reason)
    }
}

impl std::error::Error for ConfigError {}

fn err(
    key: &str,
    value: impl fmt::Display,
    source: Option<Source>,
    reason: impl Into<String>,
) -> ConfigError {
    ConfigError {
        key: key.to_string(),
        value: value.to_string(),
        source,
        reason: reason.into(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Host,
    Management,
    Router,
    Standalone,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "host" => Some(Role::Host),
            "management" => Some(Role::Management),
            "router" => Some(Role::Router),
            "standalone" => Some(Role::Standalone),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Host => "host",
            Role::Management => "management",
            Role::Router => "router",
            Role::Standalone => "standalone",
        }
    }
    /// Roles that carry the VXLAN overlay.
    pub fn has_vtep(self) -> bool {
        !matches!(self, Role::Standalone)
    }
    /// Roles whose default route points at the overlay router.
    pub fn needs_gateway(self) -> bool {
        matches!(self, Role::Host | Role::Management)
    }
    /// Roles whose node runs CloudStack guests (and so guest VXLAN networks).
    pub fn runs_guests(self) -> bool {
        matches!(self, Role::Host | Role::Standalone)
    }
    /// Roles that forward between overlay and VPC (and may NAT).
    pub fn forwards(self) -> bool {
        matches!(self, Role::Router | Role::Standalone)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which traffic of a host/management node leaves through the overlay gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GatewayMode {
    /// Only traffic sourced from the overlay address (a policy rule into overlayd's table);
    /// the instance's own default route on the underlay stays in charge of everything else.
    OverlaySourced,
    /// Everything (0.0.0.0/1 + 128.0.0.0/1 via the gateway, which beat any default route
    /// a DHCP client installs, whatever its metric), plus the overlay-sourced rule.
    All,
}

impl GatewayMode {
    pub fn parse(s: &str) -> Option<GatewayMode> {
        match s {
            "overlay-sourced" => Some(GatewayMode::OverlaySourced),
            "all" => Some(GatewayMode::All),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            GatewayMode::OverlaySourced => "overlay-sourced",
            GatewayMode::All => "all",
        }
    }
}

impl fmt::Display for GatewayMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Router HA as configured (`ha_*` keys); see [`crate::ha`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaSettings {
    pub vip: Ipv4Addr,
    pub peer: Ipv4Addr,
    pub priority: u8,
    pub advert_ms: u32,
    pub preempt: bool,
}

/// How broadcast, unknown-unicast and multicast frames reach the other VTEPs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Flood {
    /// To the multicast group (an AWS Transit Gateway multicast domain floods it).
    Multicast,
    /// One copy per peer (head-end replication from an all-zeros FDB entry per peer).
    Unicast,
    /// BGP EVPN (FRR): MACs and the flood list come from route reflectors; see [`crate::evpn`].
    Evpn,
}

impl Flood {
    pub fn parse(s: &str) -> Option<Flood> {
        match s {
            "multicast" => Some(Flood::Multicast),
            "unicast" => Some(Flood::Unicast),
            "evpn" => Some(Flood::Evpn),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Flood::Multicast => "multicast",
            Flood::Unicast => "unicast",
            Flood::Evpn => "evpn",
        }
    }
    /// Whether the VTEP floods to a multicast group (and so needs IGMPv2 on the underlay).
    pub fn uses_group(self) -> bool {
        self == Flood::Multicast
    }
}

/// How FRR runs for flood = evpn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FrrMode {
    /// The distribution's frr.service: overlayd writes its files and restarts it.
    Systemd,
    /// zebra and bgpd as overlayd's children (one node per network namespace).
    Spawn,
}

/// flood = evpn as configured (`evpn_*` keys).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvpnSettings {
    pub asn: u32,
    pub reflector: bool,
    /// The reflectors' underlay IPs (this node's own address is skipped at run time).
    pub reflectors: Vec<Ipv4Addr>,
    /// Reflector: where clients may connect from (empty: the underlay's own subnet).
    pub listen: Vec<Ipv4Net>,
    pub hold_secs: u16,
    pub frr: FrrMode,
    pub frr_dir: PathBuf,
}

/// Where the peers of unicast flooding come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerDiscovery {
    /// The `peers` key.
    Static,
    /// `DescribeInstances`: running instances of the VPC tagged `overlay:cluster=<cluster>`.
    Ec2,
}

/// Default overlay CIDR (the original templates' 10.101.0.0/16).
pub const DEFAULT_OVERLAY_CIDR: &str = "10.101.0.0/16";
/// Default seconds between EC2 peer refreshes.
pub const DEFAULT_PEER_INTERVAL: u64 = 10;

/// Default of `igmp_max_memberships`: room for hundreds of CloudStack guest networks
/// (each one's VXLAN joins a group on the same kernel socket; the kernel default is 20).
pub const DEFAULT_IGMP_MAX_MEMBERSHIPS: u32 = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mtu {
    Auto,
    Fixed(u32),
}

/// Every configuration key, declared once: the flag `--<key>` (a few read better in the
/// singular: `--nat-exception`, `--link-local-route`), the environment variable
/// `OVERLAYD_<KEY>`, the config file key `<key>` (the field name), and the `--help` text.
/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    pub role: Role,
    /// `None` = the interface with `underlay_mac`, else of the default route (resolved
    /// against the kernel).
    pub underlay: Option<String>,
    /// `underlay = "auto"`: the MAC IMDS reports for the primary ENI.
    pub underlay_mac: Option<String>,
    pub address: Ipv4Net,
    pub gateway: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub bridge: String,
    pub vtep: String,
    pub vni: u32,
    pub port: u16,
    pub group: Option<Ipv4Addr>,
    pub flood: Flood,
    /// Static peers (flood = unicast, peer_discovery = static).
    pub peers: Vec<Ipv4Addr>,
    /// None unless flood = unicast.
    pub peer_discovery: Option<PeerDiscovery>,
    pub peer_interval_secs: u64,
    pub cluster: Option<String>,
    pub overlay_cidr: Ipv4Net,
    pub mtu: Mtu,
    pub fqdn: Option<String>,
    pub nat: bool,
    pub nat_exceptions: Vec<Ipv4Net>,
    pub dummy: String,
    pub route_metric: u32,
    pub gateway_mode: GatewayMode,
    pub route_table: u32,
    /// AWS link-local services kept on the underlay with /32 routes.
    pub link_local_routes: Vec<Ipv4Addr>,
    /// 0 = leave the kernel's value alone.
    pub igmp_max_memberships: u32,
    /// `vtep_tx_checksum = "off"`: overlayd switches the VTEP's tx checksum offload off.
    pub vtep_tx_checksum_off: bool,
    /// Router HA (`ha_peer` given).
    pub ha: Option<HaSettings>,
    /// flood = evpn (None otherwise, and for roles without a VTEP).
    pub evpn: Option<EvpnSettings>,
    pub state_dir: PathBuf,
    pub hosts_file: PathBuf,
    pub resolv_conf: PathBuf,
    pub resync_interval_secs: u64,
    pub metrics_address: String,
    pub control_socket: PathBuf,
    /// Warnings that do not refuse the configuration (printed by the CLI).
    #[serde(skip)]
    pub warnings: Vec<String>,
    /// The instance's facts, when IMDS was consulted (peer discovery needs VPC and region).
    #[serde(skip)]
    pub instance: Option<crate::instance::InstanceFacts>,
    /// Key → where its value came from (`validate --explain`); keys absent are defaults.
    #[serde(skip)]
    pub origins: BTreeMap<&'static str, String>,
}

/// One raw value with its origin, before typing.
#[derive(Debug, Clone)]
struct Raw {
    vals: Vec<String>,
    source: Source,
    /// How an instance-derived value was found (explain).
    detail: Option<String>,
}

/// Parse TOML text into the file form. Every key must be one of [`keys`]; a value is a
/// string, number or boolean, or (for list keys) an array of them. No serde message is
/// scraped: unknown keys and bad shapes are found by walking the table.
pub fn parse_file(text: &str, path: &str) -> Result<FileConfig, ConfigError> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        err(
            "config",
            path,
            Some(Source::File),
            format!("not valid TOML: {}", e.message()),
        )
    })?;
    let mut f = FileConfig::default();
    for (k, v) in &table {
        let Some(key) = keys().iter().copied().find(|x| x == k) else {
            return Err(err(
                k,
                k,
                Some(Source::File),
                format!("unknown key in {path} (known keys: {})", keys().join(", ")),
            ));
        };
        let scalar = |v: &toml::Value| -> Result<String, ConfigError> {
            match v {
                toml::Value::String(s) => Ok(s.clone()),
                toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_) => {
                    Ok(v.to_string())
                }
                other => Err(err(
                    key,
                    other.to_string(),
                    Some(Source::File),
                    format!("{path}: expected a string, number or boolean"),
                )),
            }
        };
        let vals = match v {
            toml::Value::Array(items) => items.iter().map(scalar).collect::<Result<_, _>>()?,
            one => vec![scalar(one)?],
        };
        f.values.insert(key, vals);
    }
    Ok(f)
}

fn file_map(f: &FileConfig) -> BTreeMap<&'static str, Raw> {
    f.values
        .iter()
        .map(|(k, v)| {
            (
                *k,
                Raw {
                    vals: v.clone(),
                    source: Source::File,
                    detail: None,
                },
            )
        })
        .collect()
}

/// Merge file and overrides (flags/env win) and validate; the instance is never consulted
/// (an `auto` value or a missing key is then an error saying so).
pub fn build(file: &FileConfig, over: &Overrides) -> Result<Config, ConfigError> {
    build_with(
        file,
        over,
        &|| Err("instance metadata not consulted".into()),
    )
}

/// Like [`build`], with `instance` asked for the instance's facts (IMDSv2 and tags) when, and
/// only when, some key needs them: see [`instance_layers::needed`].
pub fn build_with(
    file: &FileConfig,
    over: &Overrides,
    instance: &dyn Fn() -> Result<crate::instance::InstanceFacts, String>,
) -> Result<Config, ConfigError> {
    let mut m = file_map(file);
    for (k, (vals, src)) in &over.values {
        m.insert(
            k,
            Raw {
                vals: vals.clone(),
                source: *src,
                detail: None,
            },
        );
    }
    let facts = instance_layers::needed(&m).then(instance);
    if let Some(Ok(f)) = &facts {
        instance_layers::add_tags(&mut m, f);
    }
    let imds_err = match &facts {
        Some(Err(e)) => Some(e.clone()),
        _ => None,
    };
    let annotate = |mut e: ConfigError| {
        if let Some(why) = &imds_err {
            if e.value.is_empty() || e.value == "auto" {
                e.reason = format!("{}; the instance could not be asked: {why}", e.reason);
            }
        }
        e
    };
    instance_layers::resolve_auto(&mut m, facts.as_ref().and_then(|r| r.as_ref().ok()))
        .map_err(annotate)?;
    let mut cfg = validate(&m).map_err(annotate)?;
    cfg.instance = facts.and_then(Result::ok);
    if cfg.underlay.as_deref() == Some("auto") {
        cfg.underlay = None;
        cfg.underlay_mac = cfg.instance.as_ref().map(|f| f.mac.clone());
    }
    cfg.origins = m
        .iter()
        .map(|(k, r)| {
            let mut s = r.source.to_string();
            if let Some(d) = &r.detail {
                s.push_str(&format!(": {d}"));
            }
            (*k, s)
        })
        .collect();
    Ok(cfg)
}

/// Every key with its effective value and where it came from, one per line.
pub fn explain(cfg: &Config) -> String {
    let v = serde_json::to_value(cfg).unwrap_or_default();
    let mut out = String::new();
    for key in keys() {
        let val = v
            .get(*key)
            .or_else(|| v.get(format!("{key}_secs")))
            .cloned()
            .unwrap_or(serde_json::Value::Null);
        let shown = match &val {
            serde_json::Value::Null if *key == "underlay" && cfg.underlay_mac.is_some() => {
                format!("auto ({})", cfg.underlay_mac.as_deref().unwrap_or_default())
            }
            serde_json::Value::Null => "(none)".to_string(),
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Array(a) if a.is_empty() => "[]".to_string(),
            other => other.to_string(),
        };
        let from = cfg
            .origins
            .get(key)
            .cloned()
            .unwrap_or_else(|| "default".into());
        out.push_str(&format!("{key:<22} = {shown:<24} ({from})\n"));
    }
    if let Some(f) = &cfg.instance {
        out.push_str(&format!(
            "instance: {} in {} ({}), {} on {} (MAC {}), VPC {} {:?}, tags from {}\n",
            f.instance_id,
            f.availability_zone,
            f.region,
            f.local_ipv4,
            f.subnet,
            f.mac,
            f.vpc_id,
            f.vpc_cidrs
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>(),
            f.tags_from
        ));
    }
    out
}

/// The merged layers: key → raw values and where they came from.
type Layers = BTreeMap<&'static str, Raw>;

fn get<'a>(m: &'a Layers, k: &str) -> Option<(&'a str, Source)> {
    m.get(k)
        .and_then(|r| r.vals.last().map(|v| (v.as_str(), r.source)))
}

fn list<'a>(m: &'a Layers, k: &str) -> (Vec<&'a str>, Option<Source>) {
    match m.get(k) {
        Some(r) => (
            r.vals
                .iter()
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect(),
            Some(r.source),
        ),
        None => (vec![], None),
    }
}
