//! The keys of overlayd's configuration, declared once.

use super::*;

/// Values stay text here; each key's check in [`build`] types it and names key, value and
/// source when it is bad.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct Settings {
    /// TOML configuration file [default: /etc/overlayd/overlayd.toml, ignored if absent]
    #[arg(long, env = "OVERLAYD_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// host | management | router | standalone, or auto (the instance's overlay:role tag)
    #[arg(long, env = "OVERLAYD_ROLE")]
    pub role: Option<String>,
    /// Cluster name: peers for peer_discovery = ec2 are the running instances of the VPC
    /// tagged overlay:cluster=<name> [default: this instance's overlay:cluster tag]
    #[arg(long, env = "OVERLAYD_CLUSTER", value_name = "NAME")]
    pub cluster: Option<String>,
    /// Underlay interface carrying VXLAN, or auto (the interface with the MAC IMDS reports)
    /// [default: the interface of the default route]
    #[arg(long, env = "OVERLAYD_UNDERLAY", value_name = "IFNAME")]
    pub underlay: Option<String>,
    /// This node's overlay address as CIDR, e.g. 10.101.0.10/16, or auto: overlay_cidr's
    /// network + this instance's offset in its VPC subnet (the router: overlay_cidr's .1)
    #[arg(long, env = "OVERLAYD_ADDRESS", value_name = "CIDR")]
    pub address: Option<String>,
    /// The router's overlay IP (host/management only), or auto: overlay_cidr's first host
    /// address, the router's by convention
    #[arg(long, env = "OVERLAYD_GATEWAY", value_name = "IP")]
    pub gateway: Option<String>,
    /// The overlay's CIDR, used by address/gateway = auto [default: 10.101.0.0/16]
    #[arg(long, env = "OVERLAYD_OVERLAY_CIDR", value_name = "CIDR")]
    pub overlay_cidr: Option<String>,
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
    /// Multicast group for flooding, e.g. 239.255.0.1 (all roles but standalone; flood =
    /// multicast only)
    #[arg(long, env = "OVERLAYD_GROUP", value_name = "IP")]
    pub group: Option<String>,
    /// How broadcast/unknown frames reach the other nodes: multicast (a Transit Gateway
    /// multicast domain floods the group), unicast (one copy per peer, from an all-zeros
    /// FDB entry per peer; no TGW) or evpn (a BGP EVPN speaker, FRR, learns the other
    /// nodes' MACs and flood list from route reflectors; no TGW, no member cap)
    /// [default: multicast]
    #[arg(long, env = "OVERLAYD_FLOOD", value_name = "MODE")]
    pub flood: Option<String>,
    /// flood = unicast: the peers' underlay IPs (repeatable; env: comma-separated)
    #[arg(
        long = "peer",
        env = "OVERLAYD_PEERS",
        value_name = "IP",
        value_delimiter = ','
    )]
    pub peers: Vec<String>,
    /// flood = unicast: static (the peers key) or ec2 (running instances of the VPC tagged
    /// overlay:cluster=<cluster>, from DescribeInstances) [default: ec2 without peers, else
    /// static]. flood = evpn: static (evpn_reflectors) or ec2 (those instances tagged
    /// overlay:role=router are the route reflectors) [default: ec2 on a client with a cluster
    /// and no evpn_reflectors, else static]
    #[arg(long, env = "OVERLAYD_PEER_DISCOVERY", value_name = "SOURCE")]
    pub peer_discovery: Option<String>,
    /// peer_discovery = ec2: seconds between refreshes (also on SIGHUP) [default: 10]
    #[arg(long, env = "OVERLAYD_PEER_INTERVAL", value_name = "SECS")]
    pub peer_interval: Option<String>,
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
    /// The VTEP's transmit-checksum offload: "off" switches it off (kernels before 5.7
    /// corrupt offloaded VXLAN checksums after NAT: 63-second TCP stalls; `overlayd doctor`
    /// reports it), "keep" leaves the kernel's setting [default: keep]
    #[arg(long, env = "OVERLAYD_VTEP_TX_CHECKSUM", value_name = "keep|off")]
    pub vtep_tx_checksum: Option<String>,
    /// router: the other router's overlay IP; turns on router HA (VRRP by keepalived over
    /// the overlay, the gateway address `ha_vip` held by the active router)
    #[arg(long, env = "OVERLAYD_HA_PEER", value_name = "IP")]
    pub ha_peer: Option<String>,
    /// router HA: the gateway address the hosts use, held by the active router (not the
    /// router's own `address`) [default: overlay_cidr's first host address]
    #[arg(long, env = "OVERLAYD_HA_VIP", value_name = "IP")]
    pub ha_vip: Option<String>,
    /// router HA: VRRP priority 1..254; only breaks the tie when both start [default: 100]
    #[arg(long, env = "OVERLAYD_HA_PRIORITY", value_name = "N")]
    pub ha_priority: Option<String>,
    /// router HA: VRRP advertisement interval in milliseconds, a multiple of 10; the backup
    /// takes over after about 3.6 of them [default: 200]
    #[arg(long, env = "OVERLAYD_HA_ADVERT_INTERVAL_MS", value_name = "MS")]
    pub ha_advert_interval_ms: Option<String>,
    /// router HA: a recovered router with a higher priority takes the VIP back (a second
    /// cut) [default: false]
    #[arg(long, env = "OVERLAYD_HA_PREEMPT", value_name = "BOOL")]
    pub ha_preempt: Option<String>,
    /// flood = evpn: the private BGP AS of the cluster, 64512..65534 or
    /// 4200000000..4294967294 (iBGP: the same on every node) [default: 65000]
    #[arg(long, env = "OVERLAYD_EVPN_ASN", value_name = "ASN")]
    pub evpn_asn: Option<String>,
    /// flood = evpn: this node is a route reflector (clients connect to it from
    /// evpn_listen) [default: true for role router, else false]
    #[arg(long, env = "OVERLAYD_EVPN_REFLECTOR", value_name = "BOOL")]
    pub evpn_reflector: Option<String>,
    /// flood = evpn: the route reflectors' underlay IPs (repeatable; env: comma-separated);
    /// every node peers with each of them, never with the other hosts. A reflector's own
    /// address in the list is skipped (the same list fits every node)
    #[arg(
        long = "evpn-reflector-ip",
        env = "OVERLAYD_EVPN_REFLECTORS",
        value_name = "IP",
        value_delimiter = ','
    )]
    pub evpn_reflectors: Vec<String>,
    /// flood = evpn, reflector: the underlay CIDRs BGP clients may connect from
    /// (repeatable) [default: the underlay's own subnet]
    #[arg(
        long = "evpn-listen",
        env = "OVERLAYD_EVPN_LISTEN",
        value_name = "CIDR",
        value_delimiter = ','
    )]
    pub evpn_listen: Vec<String>,
    /// flood = evpn: BGP hold time in seconds, 3..65535 (keepalives every third of it); a
    /// node that dies without a clean stop is withdrawn after this long [default: 9]
    #[arg(long, env = "OVERLAYD_EVPN_HOLD_TIME", value_name = "SECS")]
    pub evpn_hold_time: Option<String>,
    /// flood = evpn: how FRR runs. systemd: overlayd writes /etc/frr/frr.conf and
    /// /etc/frr/daemons and restarts frr.service when they change; spawn: overlayd runs
    /// zebra and bgpd as its children (a node per network namespace, as in overlay-lab)
    /// [default: systemd]
    #[arg(long, env = "OVERLAYD_EVPN_FRR", value_name = "systemd|spawn")]
    pub evpn_frr: Option<String>,
    /// flood = evpn: FRR's directory (systemd: its configuration, spawn: configuration,
    /// sockets and pid files) [default: /etc/frr with systemd, /run/overlayd/frr with spawn]
    #[arg(long, env = "OVERLAYD_EVPN_FRR_DIR", value_name = "DIR")]
    pub evpn_frr_dir: Option<String>,
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
    pub(super) values: BTreeMap<&'static str, Vec<String>>,
}

impl FileConfig {
    /// Whether the file sets `key`.
    pub fn has(&self, key: &str) -> bool {
        self.values.contains_key(key)
    }
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
