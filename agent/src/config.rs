//! Configuration: TOML file, `OVERLAYD_*` environment variables and flags, merged with
//! precedence flag > env > file, then validated into a typed [`Config`].
//!
//! Validation here is *static*: it needs nothing from the kernel. Checks that need host
//! facts (does the underlay exist, its MTU and subnet) live in [`crate::desired`].
//! Every error names the key, the offending value and where it came from.

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;

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
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::Flag => "command line",
            Source::Env => "environment",
            Source::File => "config file",
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
/// Values stay text here; each key's check in [`build`] types it and names key, value and
/// source when it is bad.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct Settings {
    /// TOML configuration file [default: /etc/overlayd/overlayd.toml, ignored if absent]
    #[arg(long, env = "OVERLAYD_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// host | management | router | standalone
    #[arg(long, env = "OVERLAYD_ROLE")]
    pub role: Option<String>,
    /// Underlay interface carrying VXLAN [default: the interface of the default route]
    #[arg(long, env = "OVERLAYD_UNDERLAY", value_name = "IFNAME")]
    pub underlay: Option<String>,
    /// This node's overlay address as CIDR, e.g. 10.101.0.10/16
    #[arg(long, env = "OVERLAYD_ADDRESS", value_name = "CIDR")]
    pub address: Option<String>,
    /// The router's overlay IP (host/management only)
    #[arg(long, env = "OVERLAYD_GATEWAY", value_name = "IP")]
    pub gateway: Option<String>,
    /// DNS server written to resolv.conf (repeatable; env: comma-separated)
    #[arg(long, env = "OVERLAYD_DNS", value_name = "IP", value_delimiter = ',')]
    pub dns: Vec<String>,
    /// Overlay bridge name [default: cloudbr0]
    #[arg(long, env = "OVERLAYD_BRIDGE", value_name = "IFNAME")]
    pub bridge: Option<String>,
    /// VXLAN device name; CloudStack needs eth*, bond*, ens* … [default: ethvxlan0]
    #[arg(long, env = "OVERLAYD_VTEP", value_name = "IFNAME")]
    pub vtep: Option<String>,
    /// VXLAN network identifier, 1..16777215 [default: 100]
    #[arg(long, env = "OVERLAYD_VNI")]
    pub vni: Option<String>,
    /// VXLAN UDP port [default: 4789]
    #[arg(long, env = "OVERLAYD_PORT")]
    pub port: Option<String>,
    /// Multicast group for flooding, e.g. 239.255.0.1 (all roles but standalone)
    #[arg(long, env = "OVERLAYD_GROUP", value_name = "IP")]
    pub group: Option<String>,
    /// auto (underlay MTU - 50, at most 8450) or a number [default: auto]
    #[arg(long, env = "OVERLAYD_MTU")]
    pub mtu: Option<String>,
    /// Keep "<overlay IP> <fqdn>" in the hosts file (CloudStack resolves its own FQDN)
    #[arg(long, env = "OVERLAYD_FQDN")]
    pub fqdn: Option<String>,
    /// Masquerade overlay traffic leaving the underlay (router/standalone)
    #[arg(long, env = "OVERLAYD_NAT", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub nat: Option<String>,
    /// Destination not to masquerade (repeatable; env OVERLAYD_NAT_EXCEPTIONS, comma-separated)
    #[arg(
        long = "nat-exception",
        env = "OVERLAYD_NAT_EXCEPTIONS",
        value_name = "CIDR",
        value_delimiter = ','
    )]
    pub nat_exceptions: Vec<String>,
    /// Dummy port for standalone [default: ethdummy0]
    #[arg(long, env = "OVERLAYD_DUMMY", value_name = "IFNAME")]
    pub dummy: Option<String>,
    /// Metric of the default route via the gateway [default: 0]
    #[arg(long, env = "OVERLAYD_ROUTE_METRIC", value_name = "N")]
    pub route_metric: Option<String>,
    /// host/management: overlay-sourced (only traffic from the overlay address uses the
    /// gateway; the instance's own default route stays) or all [default: overlay-sourced]
    #[arg(long, env = "OVERLAYD_GATEWAY_MODE", value_name = "MODE")]
    pub gateway_mode: Option<String>,
    /// Routing table overlayd owns for overlay-sourced traffic [default: 79]
    #[arg(long, env = "OVERLAYD_ROUTE_TABLE", value_name = "N")]
    pub route_table: Option<String>,
    /// Link-local service kept on the underlay with a /32 route (repeatable; "none" for
    /// none) [default: 169.254.169.254, 169.254.169.253, 169.254.169.123]
    #[arg(
        long = "link-local-route",
        env = "OVERLAYD_LINK_LOCAL_ROUTES",
        value_name = "IP",
        value_delimiter = ','
    )]
    pub link_local_routes: Vec<String>,
    /// host/standalone: raise net.ipv4.igmp_max_memberships to at least N, room for
    /// CloudStack's guest VXLAN networks; 0 leaves it alone [default: 1024]
    #[arg(long, env = "OVERLAYD_IGMP_MAX_MEMBERSHIPS", value_name = "N")]
    pub igmp_max_memberships: Option<String>,
    /// Where overlayd records what it changed [default: /var/lib/overlayd]
    #[arg(long, env = "OVERLAYD_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<String>,
    /// Hosts file for the fqdn line [default: /etc/hosts]
    #[arg(long, env = "OVERLAYD_HOSTS_FILE", value_name = "PATH")]
    pub hosts_file: Option<String>,
    /// resolv.conf to write DNS servers to [default: /etc/resolv.conf]
    #[arg(long, env = "OVERLAYD_RESOLV_CONF", value_name = "PATH")]
    pub resolv_conf: Option<String>,
    /// Full resync period of `overlayd run`, seconds [default: 30]
    #[arg(long, env = "OVERLAYD_RESYNC_INTERVAL", value_name = "SECS")]
    pub resync_interval: Option<String>,
    /// Prometheus listen address of `overlayd run`, or "off" [default: 127.0.0.1:9465]
    #[arg(long, env = "OVERLAYD_METRICS_ADDRESS", value_name = "IP:PORT")]
    pub metrics_address: Option<String>,
    /// Control socket of `overlayd run` (status, pause, resume) [default: /run/overlayd/overlayd.sock]
    #[arg(long, env = "OVERLAYD_CONTROL_SOCKET", value_name = "PATH")]
    pub control_socket: Option<String>,
}

/// The configuration keys (every field of [`Settings`] but `config`), from its clap
/// definition: one list, never written out by hand.
pub fn keys() -> &'static [&'static str] {
    static KEYS: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        use clap::Args;
        Settings::augment_args(clap::Command::new("overlayd"))
            .get_arguments()
            .map(|a| a.get_id().as_str())
            .filter(|id| *id != "config")
            .map(|id| &*Box::leak(id.to_string().into_boxed_str()))
            .collect()
    })
}

/// The file as written by the operator: key → its value(s) as text. Unknown keys are refused.
#[derive(Debug, Default, Clone)]
pub struct FileConfig {
    values: BTreeMap<&'static str, Vec<String>>,
}

/// Values from flags or the environment (clap resolves the environment, so each value is
/// tagged with whether it came from a flag or the environment).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub values: BTreeMap<&'static str, (Vec<String>, Source)>,
}

impl Overrides {
    pub fn set(&mut self, key: &'static str, vals: Vec<String>, source: Source) {
        self.values.insert(key, (vals, source));
    }

    /// The keys given on the command line or in the environment of a parse of [`Settings`].
    pub fn from_matches(m: &clap::ArgMatches) -> Overrides {
        use clap::parser::ValueSource;
        let mut o = Overrides::default();
        for key in keys() {
            let source = match m.value_source(key) {
                Some(ValueSource::CommandLine) => Source::Flag,
                Some(ValueSource::EnvVariable) => Source::Env,
                _ => continue,
            };
            let vals: Vec<String> = m
                .get_many::<String>(key)
                .map(|v| v.cloned().collect())
                .unwrap_or_default();
            o.set(key, vals, source);
        }
        o
    }
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    pub role: Role,
    /// `None` = the interface of the default route (resolved against the kernel).
    pub underlay: Option<String>,
    pub address: Ipv4Net,
    pub gateway: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub bridge: String,
    pub vtep: String,
    pub vni: u32,
    pub port: u16,
    pub group: Option<Ipv4Addr>,
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
    pub state_dir: PathBuf,
    pub hosts_file: PathBuf,
    pub resolv_conf: PathBuf,
    pub resync_interval_secs: u64,
    pub metrics_address: String,
    pub control_socket: PathBuf,
    /// Warnings that do not refuse the configuration (printed by the CLI).
    #[serde(skip)]
    pub warnings: Vec<String>,
}

/// One raw value with its origin, before typing.
#[derive(Debug, Clone)]
struct Raw {
    vals: Vec<String>,
    source: Source,
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
                },
            )
        })
        .collect()
}

/// Merge file and overrides (flags/env win) and validate.
pub fn build(file: &FileConfig, over: &Overrides) -> Result<Config, ConfigError> {
    let mut m = file_map(file);
    for (k, (vals, src)) in &over.values {
        m.insert(
            k,
            Raw {
                vals: vals.clone(),
                source: *src,
            },
        );
    }
    validate(&m)
}

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

fn parse_u32(key: &str, v: &str, src: Source) -> Result<u32, ConfigError> {
    v.trim()
        .parse::<u32>()
        .map_err(|_| err(key, v, Some(src), "not a non-negative integer"))
}

fn check_gateway_mode(m: &Layers, role: Role) -> Result<GatewayMode, ConfigError> {
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

fn check_route_table(m: &Layers) -> Result<u32, ConfigError> {
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

fn check_link_local_routes(m: &Layers) -> Result<Vec<Ipv4Addr>, ConfigError> {
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

/// The merged layers: key → raw values and where they came from.
type Layers = BTreeMap<&'static str, Raw>;

/// The bridge and port names, and the underlay when configured.
struct Names {
    underlay: Option<String>,
    bridge: String,
    vtep: String,
    dummy: String,
}

/// `role`: host | management | router | standalone (required).
fn check_role(m: &Layers) -> Result<Role, ConfigError> {
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
fn check_names(m: &Layers, role: Role) -> Result<Names, ConfigError> {
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
fn check_address(m: &Layers) -> Result<Ipv4Net, ConfigError> {
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
fn check_gateway(
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
fn check_dns(m: &Layers) -> Result<Vec<Ipv4Addr>, ConfigError> {
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
fn check_vni(m: &Layers) -> Result<u32, ConfigError> {
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
fn check_port(m: &Layers) -> Result<u16, ConfigError> {
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

/// `group`: an IPv4 multicast group that IGMP reports (required with a VTEP).
fn check_group(
    m: &Layers,
    role: Role,
    warnings: &mut Vec<String>,
) -> Result<Option<Ipv4Addr>, ConfigError> {
    Ok(match (get(m, "group"), role.has_vtep()) {
        (None, true) => {
            return Err(err(
                "group",
                "",
                None,
                format!("role {role} needs group: the VXLAN multicast group, e.g. 239.255.0.1"),
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
fn check_mtu(m: &Layers, role: Role, warnings: &mut Vec<String>) -> Result<Mtu, ConfigError> {
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
fn check_fqdn(m: &Layers) -> Result<Option<String>, ConfigError> {
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
fn check_nat(
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
fn check_route_metric(m: &Layers) -> Result<u32, ConfigError> {
    Ok(match get(m, "route_metric") {
        None => 0,
        Some((v, s)) => parse_u32("route_metric", v, s)?,
    })
}

/// `igmp_max_memberships`: 0 (leave alone) or at least the kernel default 20.
fn check_igmp_max_memberships(m: &Layers) -> Result<u32, ConfigError> {
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
fn check_paths(m: &Layers) -> Result<(PathBuf, PathBuf, PathBuf, PathBuf), ConfigError> {
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
fn check_resync_interval(m: &Layers) -> Result<u64, ConfigError> {
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
fn check_metrics_address(m: &Layers) -> Result<String, ConfigError> {
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

/// Type every key, one small check each (in dependency order), into a [`Config`].
fn validate(m: &Layers) -> Result<Config, ConfigError> {
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
    let group = check_group(m, role, &mut warnings)?;
    let mtu = check_mtu(m, role, &mut warnings)?;
    let fqdn = check_fqdn(m)?;
    let (nat, nat_exceptions) = check_nat(m, role, &mut warnings)?;
    let route_metric = check_route_metric(m)?;
    let gateway_mode = check_gateway_mode(m, role)?;
    let route_table = check_route_table(m)?;
    let link_local_routes = check_link_local_routes(m)?;
    let igmp_max_memberships = check_igmp_max_memberships(m)?;
    let (state_dir, hosts_file, resolv_conf, control_socket) = check_paths(m)?;
    let resync_interval_secs = check_resync_interval(m)?;
    let metrics_address = check_metrics_address(m)?;
    Ok(Config {
        role,
        underlay,
        address,
        gateway,
        dns,
        bridge,
        vtep,
        vni,
        port,
        group,
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
        state_dir,
        hosts_file,
        resolv_conf,
        resync_interval_secs,
        metrics_address,
        control_socket,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&'static str, &str)]) -> Result<Config, ConfigError> {
        let mut o = Overrides::default();
        for (k, v) in pairs {
            o.set(k, vec![v.to_string()], Source::Flag);
        }
        build(&FileConfig::default(), &o)
    }

    fn host() -> Vec<(&'static str, &'static str)> {
        vec![
            ("role", "host"),
            ("address", "10.101.0.10/16"),
            ("gateway", "10.101.0.1"),
            ("group", "239.255.0.1"),
            ("underlay", "eth0"),
        ]
    }

    fn with(
        mut base: Vec<(&'static str, &'static str)>,
        k: &'static str,
        v: &'static str,
    ) -> Vec<(&'static str, &'static str)> {
        base.retain(|(x, _)| *x != k);
        base.push((k, v));
        base
    }

    fn bad(pairs: Vec<(&'static str, &'static str)>, key: &str) {
        match cfg(&pairs) {
            Ok(c) => panic!("expected error on {key}, got {c:?}"),
            Err(e) => assert_eq!(e.key, key, "{e}"),
        }
    }

    #[test]
    fn every_key_is_a_flag_an_env_var_and_a_file_key() {
        use clap::Args;
        let cmd = Settings::augment_args(clap::Command::new("t"));
        assert_eq!(keys().len(), 26);
        for k in keys() {
            let a = cmd.get_arguments().find(|a| a.get_id() == *k).unwrap();
            let env = a.get_env().unwrap().to_string_lossy().into_owned();
            assert_eq!(env, format!("OVERLAYD_{}", k.to_uppercase()), "{k}");
            assert!(a.get_long().is_some(), "{k} has no flag");
            // accepted in the file
            let text = format!("{k} = \"x\"\n");
            assert!(parse_file(&text, "/f").is_ok(), "{k} refused in the file");
        }
        let e = parse_file("vni = 1\nfrobnicate = 2\n", "/f").unwrap_err();
        assert_eq!(e.key, "frobnicate");
        assert!(e.reason.contains("unknown key in /f"), "{e}");
        let e = parse_file("vni = { a = 1 }\n", "/f").unwrap_err();
        assert_eq!(e.key, "vni");
        let e = parse_file("vni = \n", "/f").unwrap_err();
        assert_eq!(e.key, "config");
        // TOML types become text; the key's check types them
        let f = parse_file("vni = 7\nnat = true\ndns = [\"10.0.0.2\"]\n", "/f").unwrap();
        let mut o = Overrides::default();
        o.set("role", vec!["router".into()], Source::Flag);
        o.set("address", vec!["10.101.0.1/16".into()], Source::Flag);
        o.set("group", vec!["239.255.0.1".into()], Source::Flag);
        let c = build(&f, &o).unwrap();
        assert_eq!((c.vni, c.nat, c.dns.len()), (7, true, 1));
    }

    #[test]
    fn good_host() {
        let c = cfg(&host()).unwrap();
        assert_eq!(c.role, Role::Host);
        assert_eq!(c.vni, 100);
        assert_eq!(c.port, 4789);
        assert_eq!(c.bridge, "cloudbr0");
        assert_eq!(c.vtep, "ethvxlan0");
        assert_eq!(c.mtu, Mtu::Auto);
        assert!(c.warnings.is_empty());
    }

    #[test]
    fn group_must_be_multicast() {
        bad(with(host(), "group", "10.0.0.1"), "group");
        bad(with(host(), "group", "not-an-ip"), "group");
        bad(with(host(), "group", "224.0.0.5"), "group");
    }

    #[test]
    fn vni_range() {
        bad(with(host(), "vni", "0"), "vni");
        bad(with(host(), "vni", "16777216"), "vni");
        bad(with(host(), "vni", "-1"), "vni");
        assert_eq!(cfg(&with(host(), "vni", "16777215")).unwrap().vni, 16777215);
    }

    #[test]
    fn port_range() {
        bad(with(host(), "port", "0"), "port");
        bad(with(host(), "port", "65536"), "port");
    }

    #[test]
    fn address_checks() {
        bad(with(host(), "address", "10.101.0.10"), "address");
        bad(with(host(), "address", "nonsense"), "address");
        bad(with(host(), "address", "10.101.0.0/16"), "address");
        bad(with(host(), "address", "10.101.255.255/16"), "address");
        bad(with(host(), "address", "10.101.0.1/32"), "address");
    }

    #[test]
    fn gateway_checks() {
        bad(with(host(), "gateway", "10.102.0.1"), "gateway");
        bad(with(host(), "gateway", "10.101.0.10"), "gateway");
        let mut h = host();
        h.retain(|(k, _)| *k != "gateway");
        bad(h.clone(), "gateway");
        bad(with(h.clone(), "role", "management"), "gateway");
        // refused for router / standalone
        bad(with(host(), "role", "router"), "gateway");
        bad(with(host(), "role", "standalone"), "gateway");
        // fine without
        assert!(cfg(&with(h.clone(), "role", "router")).is_ok());
        assert!(cfg(&with(h, "role", "standalone")).is_ok());
    }

    #[test]
    fn unknown_role() {
        bad(with(host(), "role", "kvm"), "role");
    }

    #[test]
    fn interface_names() {
        bad(with(host(), "bridge", "a-very-long-bridge0"), "bridge");
        bad(with(host(), "vtep", "eth/vx"), "vtep");
        bad(with(host(), "underlay", "eth 0"), "underlay");
        bad(with(host(), "underlay", "eth0123456789abcd"), "underlay");
        // CloudStack would not recognise this VTEP name
        bad(with(host(), "vtep", "vxlan100"), "vtep");
        assert!(cfg(&with(host(), "vtep", "ens5vx")).is_ok());
        assert!(cloudstack_recognises("p1p1"));
        assert!(!cloudstack_recognises("pxp1"));
    }

    #[test]
    fn mtu_range() {
        bad(with(host(), "mtu", "67"), "mtu");
        bad(with(host(), "mtu", "8951"), "mtu");
        bad(with(host(), "mtu", "big"), "mtu");
        assert_eq!(
            cfg(&with(host(), "mtu", "1400")).unwrap().mtu,
            Mtu::Fixed(1400)
        );
        let c = cfg(&with(host(), "mtu", "8900")).unwrap();
        assert_eq!(c.warnings.len(), 1);
    }

    #[test]
    fn nat_only_on_forwarders() {
        bad(with(host(), "nat", "true"), "nat");
        bad(
            with(host(), "nat_exceptions", "10.0.0.0/8"),
            "nat_exceptions",
        );
        let mut r = host();
        r.retain(|(k, _)| *k != "gateway");
        let r = with(with(r, "role", "router"), "nat", "true");
        let c = cfg(&with(
            r.clone(),
            "nat_exceptions",
            "192.168.0.0/16,10.0.0.5",
        ))
        .unwrap();
        assert!(c.nat);
        assert_eq!(c.nat_exceptions.len(), 2);
        bad(with(r, "nat_exceptions", "300.0.0.0/8"), "nat_exceptions");
    }

    #[test]
    fn group_required_except_standalone() {
        let mut h = host();
        h.retain(|(k, _)| *k != "group");
        bad(h.clone(), "group");
        let mut s = h;
        s.retain(|(k, _)| *k != "gateway");
        assert!(cfg(&with(s, "role", "standalone")).is_ok());
    }

    #[test]
    fn unknown_toml_key() {
        let e = parse_file("role = \"host\"\nbrigde = \"cloudbr0\"\n", "x.toml").unwrap_err();
        assert_eq!(e.key, "brigde");
        assert!(e.reason.contains("unknown key"));
    }

    #[test]
    fn precedence_flag_over_env_over_file() {
        let f = parse_file(
            "role = \"host\"\naddress = \"10.101.0.10/16\"\ngateway = \"10.101.0.1\"\ngroup = \"239.255.0.1\"\nvni = 7\n",
            "x",
        )
        .unwrap();
        let mut o = Overrides::default();
        assert_eq!(build(&f, &o).unwrap().vni, 7);
        o.set("vni", vec!["8".into()], Source::Env);
        assert_eq!(build(&f, &o).unwrap().vni, 8);
        o.set("vni", vec!["9".into()], Source::Flag);
        assert_eq!(build(&f, &o).unwrap().vni, 9);
        o.set("vni", vec!["0".into()], Source::Env);
        let e = build(&f, &o).unwrap_err();
        assert_eq!(e.source, Some(Source::Env));
    }

    #[test]
    fn error_names_key_and_value() {
        let e = cfg(&with(host(), "group", "10.1.2.3")).unwrap_err();
        let s = e.to_string();
        assert!(s.contains("group") && s.contains("10.1.2.3"), "{s}");
    }
}
