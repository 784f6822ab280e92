//! `overlayd doctor`: name the fault on this node before the operator reaches for tcpdump.
//!
//! Pure: [`diagnose`] turns the desired state (the configuration's) and the facts read from
//! the kernel ([`Facts`]: links, addresses, routes, sysctls, `/proc/net/igmp`, the VTEP's
//! forwarding database) into checks, each with a stable id, a verdict, its evidence and the
//! fix. Reading the facts is the caller's (read-only: dumps and /proc reads, never a change).
//! A check that cannot decide from what is read now (no history) says `unknown`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use serde::Serialize;

use crate::config::{GatewayMode, Role};
use crate::igmp_queries::QueryLog;
use crate::model::{Desired, Observed, Route};
use crate::network_managers::Claim;

/// The verdict of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Ok,
    Unknown,
    Warn,
    Fail,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Unknown => "unknown",
            Verdict::Warn => "warn",
            Verdict::Fail => "fail",
        }
    }
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Stable id (documented in docs/operations.md; scripts match on it).
    pub id: &'static str,
    pub verdict: Verdict,
    /// One line: what was found.
    pub summary: String,
    /// What it was decided from (values as read).
    pub evidence: Vec<String>,
    /// What to do about it (None when ok).
    pub fix: Option<String>,
}

/// One device of `/proc/net/igmp`: its IGMP mode (the querier version it reports with) and
/// the groups joined on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgmpDevice {
    pub name: String,
    /// 1, 2 or 3 (the `V1`/`V2`/`V3` column: the version of the reports it sends).
    pub version: u8,
    pub groups: BTreeSet<Ipv4Addr>,
}

/// Parses `/proc/net/igmp`. A device line is `Idx Device : Count Querier`, each group line
/// below it `Group Users Timer Reporter`, the group as the kernel prints a network-order
/// address read as a native integer (`%08X`), hence `to_ne_bytes`.
pub fn parse_proc_igmp(text: &str) -> Vec<IgmpDevice> {
    let mut out: Vec<IgmpDevice> = Vec::new();
    for line in text.lines().skip(1) {
        let indented = line.starts_with(char::is_whitespace);
        let w: Vec<&str> = line.split_whitespace().collect();
        if !indented && w.len() >= 5 && w[2] == ":" {
            let version = w[4]
                .strip_prefix('V')
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            out.push(IgmpDevice {
                name: w[1].to_string(),
                version,
                groups: BTreeSet::new(),
            });
        } else if indented && !w.is_empty() {
            if let (Some(dev), Ok(n)) = (out.last_mut(), u32::from_str_radix(w[0], 16)) {
                dev.groups.insert(Ipv4Addr::from(n.to_ne_bytes()));
            }
        }
    }
    out
}

/// The running daemon as doctor found it on its control socket.
#[derive(Debug, Clone, Default)]
pub enum Daemon {
    /// Nothing answers (why); no history.
    #[default]
    NotRunning,
    Running {
        /// Its IGMP query listener's log (None: not listening: unicast, or it failed).
        queries: Option<QueryLog>,
    },
}

/// What `diagnose` decides from, read by the caller (dumps, /proc and /run reads, one
/// route lookup, one ping; never a change).
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub observed: Observed,
    /// `/proc/net/igmp`, parsed.
    pub igmp: Vec<IgmpDevice>,
    /// The VTEP's learned FDB entries: remote VTEP → MACs behind it (None: not read).
    pub learned: Option<BTreeMap<Ipv4Addr, usize>>,
    pub daemon: Daemon,
    pub now_unix_ms: u128,
    /// The querier's interval (the TGW's: 120 s); two missed = nobody asks.
    pub query_interval_secs: u64,
    /// The configured gateway (host/management).
    pub gateway: Option<Ipv4Addr>,
    /// One echo to the gateway from the overlay address (None: not tried).
    pub gateway_ping: Option<Result<Duration, String>>,
    /// A VPC address (the underlay subnet's router, base + 1) and where the kernel sends a
    /// packet from the overlay address to it (None: not looked up).
    pub return_path: Option<(Ipv4Addr, Result<Option<Route>, String>)>,
    /// `uname -r`.
    pub kernel: Option<String>,
    /// NetworkManager / systemd-networkd running in this namespace, and their claims on
    /// overlayd's devices.
    pub managers_running: Vec<&'static str>,
    pub claims: Vec<Claim>,
    /// Router HA: the daemon's view (its `status`: state, keepalived, last takeover; None:
    /// no daemon or no pair).
    pub ha: Option<crate::ha::HaStatus>,
    /// Router HA: one echo to the peer's overlay address, and (on the backup) one to the VIP.
    pub ha_peer_ping: Option<Result<Duration, String>>,
    pub ha_vip_ping: Option<Result<Duration, String>>,
    /// flood = evpn: FRR's state, read by doctor itself (vtysh; None: not read).
    pub evpn: Option<crate::evpn::EvpnStatus>,
}

/// The TGW's multicast frames carry at most 8500 bytes: the VTEP's inner MTU + 50.
pub const TGW_MULTICAST_MTU: u32 = 8500;
/// A TGW asks every 2 minutes; two missed queries mean it does not ask this node at all.
pub const QUERY_INTERVAL_SECS: u64 = 120;
/// VXLAN's encapsulation on an IPv4 underlay.
pub const VXLAN_OVERHEAD: u32 = 50;

/// 224.0.0.0/24 (all-hosts and the like): joined by every interface, not counted by
/// `igmp_max_memberships`.
fn is_local_network_control(g: Ipv4Addr) -> bool {
    let o = g.octets();
    o[0] == 224 && o[1] == 0 && o[2] == 0
}

/// An optional value as text ("none" when absent).
fn shown<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "none".into())
}

fn sysctl<'a>(f: &'a Facts, key: &str) -> Option<&'a str> {
    f.observed
        .sysctls
        .get(key)
        .and_then(|v| v.as_deref())
        .map(str::trim)
}

fn check(
    id: &'static str,
    verdict: Verdict,
    summary: String,
    evidence: Vec<String>,
    fix: Option<&str>,
) -> Check {
    Check {
        id,
        verdict,
        summary,
        evidence,
        fix: if verdict == Verdict::Ok {
            None
        } else {
            fix.map(str::to_string)
        },
    }
}

/// Every check, in a fixed order.
pub fn diagnose(d: &Desired, f: &Facts) -> Vec<Check> {
    let mut v = vec![bridge(d, f), vtep(d, f), mtu(d, f), guest_mtu(d, f)];
    let multicast = d.vtep.as_ref().and_then(|t| t.group);
    if let Some(group) = multicast {
        v.push(force_igmp_version(d, f));
        v.push(igmp_membership(d, f, group));
        v.push(igmp_queries(f));
    }
    v.push(igmp_max_memberships(f));
    if d.evpn.is_some() {
        v.push(evpn_bgp(d, f));
    }
    v.push(remote_vteps(d, f));
    v.push(gateway_reachable(d, f));
    v.push(return_path(d, f));
    if d.ha.is_some() {
        v.push(router_pair(d, f));
    }
    v.push(link_local_routes(d, f));
    v.push(tx_checksum(d, f));
    v.push(managers(f));
    v
}

/// Nested guests: CloudStack's guest VXLANs run inside cloudbr0, so a guest NIC carries
/// the bridge's MTU − 50.
fn guest_mtu(d: &Desired, f: &Facts) -> Check {
    if !d.role.runs_guests() {
        return check(
            "mtu.guest",
            Verdict::Ok,
            format!("no guests on a {} node", d.role),
            vec![],
            None,
        );
    }
    let Some(b) = f.observed.link(&d.bridge.name) else {
        return check(
            "mtu.guest",
            Verdict::Unknown,
            format!("{} missing: guest MTU not known", d.bridge.name),
            vec![],
            None,
        );
    };
    let guest = b.mtu.saturating_sub(VXLAN_OVERHEAD);
    let evidence = vec![format!(
        "{} mtu {} − {VXLAN_OVERHEAD} (a guest VXLAN inside it) = {guest}",
        b.name, b.mtu
    )];
    if guest < 1500 {
        check(
            "mtu.guest",
            Verdict::Warn,
            format!(
                "guest networks carry at most {guest}-byte packets: guests with the usual 1500 \
                 lose full-size packets (TCP stalls after the handshake)"
            ),
            evidence,
            Some("give the guest networks an MTU of at most the figure above (CloudStack's network MTU), or an underlay with jumbo frames (EC2: 9001)"),
        )
    } else {
        check(
            "mtu.guest",
            Verdict::Ok,
            format!("guest networks can carry {guest}-byte packets (≥ 1500)"),
            evidence,
            None,
        )
    }
}

fn gateway_reachable(d: &Desired, f: &Facts) -> Check {
    let id = "gateway.reachable";
    let Some(gw) = f
        .gateway
        .filter(|_| matches!(d.role, Role::Host | Role::Management))
    else {
        return check(
            id,
            Verdict::Ok,
            format!("no gateway on a {} node (it is the way out itself)", d.role),
            vec![],
            None,
        );
    };
    let src = d.bridge.address.addr();
    match &f.gateway_ping {
        None => check(
            id,
            Verdict::Unknown,
            format!("gateway {gw} not pinged"),
            vec![],
            None,
        ),
        Some(Ok(rtt)) => check(
            id,
            Verdict::Ok,
            format!(
                "gateway {gw} answers over the overlay ({:.1} ms)",
                rtt.as_secs_f64() * 1000.0
            ),
            vec![format!("ICMP echo {src} → {gw}")],
            None,
        ),
        Some(Err(e)) => check(
            id,
            Verdict::Fail,
            format!("gateway {gw} does not answer over the overlay: no VPC access from here (with a router pair: neither router holds it — both down)"),
            vec![e.clone()],
            Some("run doctor on the router (each of the pair); then the fdb.remotes and igmp.* checks here (is the router's VTEP reachable?)"),
        ),
    }
}

/// Router HA on one router of the pair: which one holds the VIP, whether the other answers,
/// and whether the active one moved the VPC routes. A router whose peer is gone is a single
/// point of failure again (warn); a backup that sees nobody holding the VIP is the double
/// failure as seen from the survivor (fail).
fn router_pair(d: &Desired, f: &Facts) -> Check {
    let id = "router.pair";
    let Some(spec) = &d.ha else {
        return check(id, Verdict::Ok, "no router pair".into(), vec![], None);
    };
    let (vip, peer) = (spec.vip, spec.peer);
    let here = crate::ha::is_active(spec, &f.observed);
    let mut evidence = vec![format!(
        "VIP {vip} {} {}",
        if here { "on" } else { "not on" },
        spec.bridge
    )];
    let Some(st) = &f.ha else {
        return check(
            id,
            Verdict::Fail,
            "no daemon answers: keepalived is not running here, so this router takes no part in the election".into(),
            evidence,
            Some("systemctl start overlayd (it runs keepalived); journalctl -u overlayd"),
        );
    };
    match st.keepalived_pid {
        Some(pid) => evidence.push(format!(
            "keepalived pid {pid}, {} restarts",
            st.keepalived_restarts
        )),
        None => {
            evidence.push(format!(
                "keepalived not running: {}",
                st.error.as_deref().unwrap_or("no error recorded")
            ));
            return check(
                id,
                Verdict::Fail,
                "keepalived is not running: this router takes no part in the election".into(),
                evidence,
                Some("install keepalived (the router pair needs it); journalctl -u overlayd names the error"),
            );
        }
    }
    if let Some(e) = &st.garp_error {
        evidence.push(e.clone());
        return check(
            id,
            Verdict::Fail,
            "keepalived cannot announce the VIP (no gratuitous ARP): a failover would leave the hosts sending to the old router".into(),
            evidence,
            Some("install -D -m 644 /usr/share/overlayd/router-pair.conf /etc/systemd/system/overlayd.service.d/router-pair.conf && systemctl daemon-reload && systemctl restart overlayd"),
        );
    }
    let peer_up = match &f.ha_peer_ping {
        Some(Ok(rtt)) => {
            evidence.push(format!(
                "peer {peer} answers ({:.1} ms)",
                rtt.as_secs_f64() * 1000.0
            ));
            Some(true)
        }
        Some(Err(e)) => {
            evidence.push(format!("peer {peer}: {e}"));
            Some(false)
        }
        None => None,
    };
    if here {
        if let Some(t) = &st.takeover {
            evidence.push(format!(
                "route takeover: eni {}, {} kept, {} moved{}",
                t.eni.as_deref().unwrap_or("?"),
                t.kept.len(),
                t.moved.len(),
                t.error
                    .as_deref()
                    .map(|e| format!(", error: {e}"))
                    .unwrap_or_default()
            ));
            if let Some(e) = &t.error {
                let unreachable = e.contains("dispatch failure") || e.contains("timed out");
                return check(
                    id,
                    Verdict::Fail,
                    "active, but the VPC routes were not moved here: VPC traffic to the overlay goes to the other router".into(),
                    evidence,
                    Some(if unreachable {
                        "the EC2 API does not answer from here: check the router's way to it (a NAT or internet gateway, or an interface VPC endpoint for ec2) and AWS_ENDPOINT_URL_EC2 if set"
                    } else {
                        "the router role needs ec2:DescribeRouteTables and ec2:ReplaceRoute on the cluster's route tables (overlayctl iam-policy --for router); the error above names the call"
                    }),
                );
            }
        }
        return match peer_up {
            Some(false) => check(
                id,
                Verdict::Warn,
                format!("active (holds {vip}), but peer {peer} does not answer: no standby, the next failure cuts the overlay off the VPC"),
                evidence,
                Some("bring the other router back (overlayd and keepalived on it); it rejoins as backup"),
            ),
            _ => check(
                id,
                Verdict::Ok,
                format!("active: holds {vip}; peer {peer} is the standby"),
                evidence,
                None,
            ),
        };
    }
    match (&f.ha_vip_ping, peer_up) {
        (Some(Ok(_)), _) => check(
            id,
            Verdict::Ok,
            format!("standby: {vip} answers from the active router"),
            evidence,
            None,
        ),
        (Some(Err(e)), _) => {
            evidence.push(format!("VIP {vip}: {e}"));
            check(
                id,
                Verdict::Fail,
                format!("standby, and nobody holds {vip}: both routers are out of service (peer {peer} {}) — nothing carries the hosts' traffic to the VPC", if peer_up == Some(true) { "answers but does not hold it" } else { "is down" }),
                evidence,
                Some("check the peer (overlayd, keepalived: journalctl -u overlayd there); this router takes the VIP within a second when its keepalived sees no adverts — if it does not, its underlay is down (FAULT): ip link show"),
            )
        }
        (None, _) => check(
            id,
            Verdict::Unknown,
            format!("standby; {vip} not pinged"),
            evidence,
            None,
        ),
    }
}

/// Whether replies to VPC clients leave through the gateway (the VPC drops a packet from an
/// overlay address on the underlay: source/destination check).
fn return_path(d: &Desired, f: &Facts) -> Check {
    let id = "gateway.return-path";
    if d.role.forwards() {
        let key = "net/ipv4/ip_forward";
        let on = sysctl(f, key) == Some("1");
        return check(
            id,
            if on { Verdict::Ok } else { Verdict::Fail },
            if on {
                format!("{} forwards between overlay and VPC", d.role)
            } else {
                format!(
                    "{} does not forward: overlay traffic to the VPC stops here",
                    d.role
                )
            },
            vec![format!("{key} = {}", sysctl(f, key).unwrap_or("(missing)"))],
            Some("overlayd sets ip_forward while it runs: check `systemctl status overlayd`"),
        );
    }
    let Some(mode) = d.gateway_mode else {
        return check(
            id,
            Verdict::Ok,
            "no gateway configured: overlay-only node".into(),
            vec![],
            None,
        );
    };
    let src = d.bridge.address.addr();
    let Some((dst, lookup)) = &f.return_path else {
        return check(
            id,
            Verdict::Unknown,
            format!("no VPC address known on {} to look up", d.underlay),
            vec![],
            None,
        );
    };
    let name = |i: Option<u32>| {
        i.and_then(|i| f.observed.link_by_index(i))
            .map(|l| l.name.clone())
            .unwrap_or_else(|| "?".into())
    };
    match lookup {
        Err(e) => check(
            id,
            Verdict::Fail,
            format!("no route from {src} to VPC address {dst}"),
            vec![e.clone()],
            Some("overlayd installs the overlay-sourced rule and table while it runs"),
        ),
        Ok(r) => {
            let r = r.clone().unwrap_or(Route {
                dst: Default::default(),
                gateway: None,
                oif: None,
                metric: 0,
                protocol: 0,
                table: 0,
                scope: 0,
                kind: 0,
                prefsrc: None,
            });
            let dev = name(r.oif);
            let evidence = vec![format!(
                "gateway_mode {}; route get {dst} from {src}: dev {dev}{}",
                mode.as_str(),
                r.gateway.map(|g| format!(" via {g}")).unwrap_or_default()
            )];
            if dev == d.bridge.name {
                check(
                    id,
                    Verdict::Ok,
                    format!(
                        "replies from {src} to the VPC go through the gateway ({} mode)",
                        mode.as_str()
                    ),
                    evidence,
                    None,
                )
            } else {
                check(
                    id,
                    Verdict::Fail,
                    format!(
                        "replies from {src} to the VPC leave via {dev}: the VPC drops them \
                         (source/destination check){}",
                        if mode == GatewayMode::OverlaySourced {
                            "; the overlay-sourced rule is missing"
                        } else {
                            ""
                        }
                    ),
                    evidence,
                    Some("overlayd installs `from <overlay address> lookup <route_table>` while it runs; check `ip rule` for a rule of higher priority that sends it elsewhere"),
                )
            }
        }
    }
}

fn tx_checksum(d: &Desired, f: &Facts) -> Check {
    let id = "vtep.tx-checksum";
    let Some(t) = &d.vtep else {
        return check(id, Verdict::Ok, "no VTEP on this role".into(), vec![], None);
    };
    let kernel = f.kernel.clone().unwrap_or_else(|| "?".into());
    let buggy = f
        .kernel
        .as_deref()
        .and_then(crate::ethtool::kernel_has_nat_checksum_bug);
    let evidence = vec![format!(
        "{} tx checksum offload {}; kernel {kernel}; vtep_tx_checksum = {}",
        t.name,
        match f.observed.vtep_tx_checksum {
            Some(true) => "on",
            Some(false) => "off",
            None => "unknown",
        },
        if t.tx_checksum_off { "off" } else { "keep" }
    )];
    match f.observed.vtep_tx_checksum {
        None => check(
            id,
            Verdict::Unknown,
            format!("{}'s offload settings not readable", t.name),
            evidence,
            None,
        ),
        Some(true) if t.tx_checksum_off => check(
            id,
            Verdict::Fail,
            format!(
                "{} offloads tx checksums although vtep_tx_checksum = off",
                t.name
            ),
            evidence,
            Some("overlayd switches it off while it runs (re-created VTEPs start with it on)"),
        ),
        Some(true) if buggy == Some(true) => check(
            id,
            Verdict::Warn,
            format!(
                "{} offloads tx checksums on kernel {kernel} (< 5.7): after NAT such VXLAN \
                 packets carry bad checksums and TCP stalls for about 63 s",
                t.name
            ),
            evidence,
            Some(
                "set vtep_tx_checksum = \"off\" (costs some CPU per packet), or run a kernel ≥ 5.7",
            ),
        ),
        Some(on) => check(
            id,
            Verdict::Ok,
            if on {
                format!("{} offloads tx checksums; kernel {kernel} is not affected by the NAT checksum bug", t.name)
            } else {
                format!("{} computes tx checksums in software", t.name)
            },
            evidence,
            None,
        ),
    }
}

fn managers(f: &Facts) -> Check {
    let id = "managers";
    if !f.claims.is_empty() {
        let who: Vec<String> = f
            .claims
            .iter()
            .map(|c| format!("{} manages {} ({})", c.manager, c.device, c.state))
            .collect();
        let nd = f
            .claims
            .iter()
            .any(|c| c.manager == crate::network_managers::NETWORKD);
        return check(
            id,
            Verdict::Fail,
            format!("{}: two owners fight over one device", who.join(", ")),
            who.clone(),
            Some(if nd {
                "the package's /usr/lib/systemd/network/05-overlayd-unmanaged.network must be the first .network file matching overlayd's devices: remove or rename the one named above (or copy the package's to /etc/systemd/network/ with your device names), then `networkctl reload`"
            } else {
                "the package's /usr/lib/NetworkManager/conf.d/90-overlayd-unmanaged.conf lists overlayd's devices as unmanaged: check that no conf.d file overrides unmanaged-devices (and that the names match yours), then `nmcli general reload conf`"
            }),
        );
    }
    check(
        id,
        Verdict::Ok,
        if f.managers_running.is_empty() {
            "neither NetworkManager nor systemd-networkd runs here".into()
        } else {
            format!(
                "{} runs and leaves overlayd's devices alone",
                f.managers_running.join(" and ")
            )
        },
        vec![],
        None,
    )
}

fn bridge(d: &Desired, f: &Facts) -> Check {
    let b = &d.bridge;
    let Some(l) = f.observed.link(&b.name) else {
        return check(
            "bridge",
            Verdict::Fail,
            format!("bridge {} does not exist", b.name),
            vec![],
            Some("start overlayd (systemctl start overlayd) or run `overlayd apply`"),
        );
    };
    let mut problems = Vec::new();
    if l.kind.as_deref() != Some("bridge") {
        problems.push(format!(
            "is a {} device, not a bridge",
            l.kind.as_deref().unwrap_or("plain")
        ));
    }
    if !l.up {
        problems.push("is down".to_string());
    }
    let has_addr = f.observed.addrs_of(l.index).any(|a| a.addr == b.address);
    if !has_addr {
        problems.push(format!("lacks its address {}", b.address));
    }
    let evidence = vec![format!(
        "{}: kind {}, {}, mtu {}, addresses {}",
        l.name,
        l.kind.as_deref().unwrap_or("-"),
        if l.up { "up" } else { "down" },
        l.mtu,
        f.observed
            .addrs_of(l.index)
            .map(|a| a.addr.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    )];
    if problems.is_empty() {
        check(
            "bridge",
            Verdict::Ok,
            format!("{} up with {}", b.name, b.address),
            evidence,
            None,
        )
    } else {
        check(
            "bridge",
            Verdict::Fail,
            format!("{} {}", b.name, problems.join(", ")),
            evidence,
            Some("overlayd repairs this while it runs: check `systemctl status overlayd` and `overlayd plan`"),
        )
    }
}

fn vtep(d: &Desired, f: &Facts) -> Check {
    let Some(t) = &d.vtep else {
        return check(
            "vtep",
            Verdict::Ok,
            "no VTEP on this role".into(),
            vec![],
            None,
        );
    };
    let Some(l) = f.observed.link(&t.name) else {
        return check(
            "vtep",
            Verdict::Fail,
            format!("VTEP {} does not exist", t.name),
            vec![],
            Some("start overlayd (systemctl start overlayd) or run `overlayd apply`"),
        );
    };
    let mut problems = Vec::new();
    let x = l.vxlan.clone().unwrap_or_default();
    if l.kind.as_deref() != Some("vxlan") {
        problems.push("is not a vxlan device".to_string());
    }
    if x.vni != Some(t.vni) {
        problems.push(format!("VNI {}, want {}", shown(x.vni), t.vni));
    }
    if x.port != Some(t.port) {
        problems.push(format!("UDP port {}, want {}", shown(x.port), t.port));
    }
    if x.group != t.group {
        problems.push(format!("group {}, want {}", shown(x.group), shown(t.group)));
    }
    let underlay = f.observed.link(&t.underlay).map(|u| u.index);
    if x.dev != underlay {
        problems.push(format!("not bound to underlay {}", t.underlay));
    }
    let bridge = f.observed.link(&d.bridge.name).map(|b| b.index);
    if l.master.is_none() || l.master != bridge {
        problems.push(format!("not a port of {}", d.bridge.name));
    }
    if !l.up {
        problems.push("is down".to_string());
    }
    let name_of = |i: Option<u32>| {
        i.map(|i| {
            f.observed
                .link_by_index(i)
                .map(|l| l.name.clone())
                .unwrap_or_else(|| format!("index {i}"))
        })
    };
    let evidence = vec![format!(
        "{}: vni {}, port {}, group {}, underlay {}, master {}",
        l.name,
        shown(x.vni),
        shown(x.port),
        shown(x.group),
        shown(name_of(x.dev)),
        shown(name_of(l.master))
    )];
    if problems.is_empty() {
        check(
            "vtep",
            Verdict::Ok,
            format!(
                "{} (VNI {}, port {}) in {}",
                t.name, t.vni, t.port, d.bridge.name
            ),
            evidence,
            None,
        )
    } else {
        check(
            "vtep",
            Verdict::Fail,
            format!("{}: {}", t.name, problems.join("; ")),
            evidence,
            Some("overlayd repairs this while it runs; a device it does not own is refused: `overlayd plan` names it"),
        )
    }
}

fn mtu(d: &Desired, f: &Facts) -> Check {
    let (Some(b), Some(u)) = (
        f.observed.link(&d.bridge.name),
        f.observed.link(&d.underlay),
    ) else {
        return check(
            "mtu",
            Verdict::Unknown,
            "bridge or underlay missing: MTU not checked".into(),
            vec![],
            None,
        );
    };
    let evidence = vec![format!(
        "{} mtu {}, {} mtu {}",
        u.name, u.mtu, b.name, b.mtu
    )];
    let Some(t) = &d.vtep else {
        return check(
            "mtu",
            Verdict::Ok,
            format!("{} mtu {}", b.name, b.mtu),
            evidence,
            None,
        );
    };
    if b.mtu + VXLAN_OVERHEAD > u.mtu {
        return check(
            "mtu",
            Verdict::Fail,
            format!(
                "{} mtu {} needs an underlay of {} (VXLAN adds {VXLAN_OVERHEAD}); {} has {}: \
                 full-size frames are dropped",
                b.name,
                b.mtu,
                b.mtu + VXLAN_OVERHEAD,
                u.name,
                u.mtu
            ),
            evidence,
            Some("remove the mtu key (overlayd then takes the underlay's − 50) or lower it"),
        );
    }
    if t.group.is_some() && b.mtu + VXLAN_OVERHEAD > TGW_MULTICAST_MTU {
        return check(
            "mtu",
            Verdict::Fail,
            format!(
                "{} mtu {}: multicast-flooded frames of {} bytes exceed the Transit Gateway's \
                 {TGW_MULTICAST_MTU}",
                b.name,
                b.mtu,
                b.mtu + VXLAN_OVERHEAD
            ),
            evidence,
            Some("set mtu = 8450 or less with multicast flooding"),
        );
    }
    check(
        "mtu",
        Verdict::Ok,
        format!("{} mtu {} fits {} mtu {}", b.name, b.mtu, u.name, u.mtu),
        evidence,
        None,
    )
}

fn force_igmp_version(d: &Desired, f: &Facts) -> Check {
    let key = format!("net/ipv4/conf/{}/force_igmp_version", d.underlay);
    let cur = sysctl(f, &key);
    let evidence = vec![format!("{key} = {}", cur.unwrap_or("(missing)"))];
    if cur == Some("2") {
        check(
            "igmp.force-version",
            Verdict::Ok,
            format!("IGMPv2 forced on {}", d.underlay),
            evidence,
            None,
        )
    } else {
        check(
            "igmp.force-version",
            Verdict::Fail,
            format!(
                "IGMP version not forced to 2 on {}: the kernel may send IGMPv3 reports, which a \
                 Transit Gateway ignores",
                d.underlay
            ),
            evidence,
            Some("overlayd sets it while it runs; something resets it (another sysctl.d file?)"),
        )
    }
}

fn igmp_membership(d: &Desired, f: &Facts, group: Ipv4Addr) -> Check {
    let dev = f.igmp.iter().find(|i| i.name == d.underlay);
    let evidence = vec![match dev {
        Some(i) => format!(
            "/proc/net/igmp {}: V{}, groups {}",
            i.name,
            i.version,
            i.groups
                .iter()
                .map(|g| g.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        ),
        None => format!("/proc/net/igmp: no entry for {}", d.underlay),
    }];
    match dev {
        Some(i) if i.groups.contains(&group) && i.version == 2 => check(
            "igmp.membership",
            Verdict::Ok,
            format!("{} joined {group} with IGMPv2", d.underlay),
            evidence,
            None,
        ),
        Some(i) if i.groups.contains(&group) => check(
            "igmp.membership",
            Verdict::Fail,
            format!(
                "{} joined {group} with IGMPv{}: a Transit Gateway sees only IGMPv2 joins",
                d.underlay, i.version
            ),
            evidence,
            Some("force_igmp_version = 2 on the underlay, then re-join (restart overlayd)"),
        ),
        _ => check(
            "igmp.membership",
            Verdict::Fail,
            format!("{} has not joined {group}: no multicast flood reaches this node", d.underlay),
            evidence,
            Some("the VTEP joins when it is up on the underlay: check the vtep check, then `systemctl restart overlayd`"),
        ),
    }
}

fn igmp_queries(f: &Facts) -> Check {
    let id = "igmp.queries";
    let interval = f.query_interval_secs.max(1);
    let log = match &f.daemon {
        Daemon::NotRunning => {
            return check(
                id,
                Verdict::Unknown,
                "no daemon answers on the control socket: no history of IGMP queries".into(),
                vec![],
                None,
            )
        }
        Daemon::Running { queries: None } => {
            return check(
                id,
                Verdict::Unknown,
                "the daemon does not listen for IGMP queries".into(),
                vec![],
                None,
            )
        }
        Daemon::Running { queries: Some(l) } => l,
    };
    let mut evidence = vec![format!(
        "{} queries heard on {}{}",
        log.count,
        log.device,
        match (log.last_from, log.last_version) {
            (Some(a), Some(v)) => format!(", the last from {a} (IGMPv{v})"),
            _ => String::new(),
        }
    )];
    if let Some(e) = &log.error {
        evidence.push(e.clone());
    }
    let fix = "overlayctl doctor checks the multicast domain's association with this subnet and the security group's IGMP rule (from 0.0.0.0/32)";
    match crate::igmp_queries::age_secs(log, f.now_unix_ms) {
        None => check(
            id,
            Verdict::Unknown,
            "the daemon's IGMP listener is not running".into(),
            evidence,
            None,
        ),
        Some((age, true)) if age <= 2 * interval => check(
            id,
            Verdict::Ok,
            format!("last IGMP query {age} s ago"),
            evidence,
            None,
        ),
        Some((age, true)) => check(
            id,
            Verdict::Fail,
            format!(
                "no IGMP query for {age} s (expected every {interval} s): the \
                 subnet is no longer associated with the multicast domain, or IGMP from \
                 0.0.0.0/32 is blocked"
            ),
            evidence,
            Some(fix),
        ),
        Some((age, false)) if age > 2 * interval => check(
            id,
            Verdict::Fail,
            format!(
                "no IGMP query in the {age} s the daemon has listened (expected every \
                 {interval} s): the subnet is not associated with the multicast domain, \
                 or IGMP from 0.0.0.0/32 is blocked"
            ),
            evidence,
            Some(fix),
        ),
        Some((age, false)) => check(
            id,
            Verdict::Unknown,
            format!("no IGMP query yet in the {age} s the daemon has listened (asked every {interval} s)"),
            evidence,
            None,
        ),
    }
}

fn igmp_max_memberships(f: &Facts) -> Check {
    let key = "net/ipv4/igmp_max_memberships";
    let max: Option<usize> = sysctl(f, key).and_then(|v| v.parse().ok());
    // CloudStack's guest VXLANs join their groups on the traffic bridge (and their devices)
    let joined: BTreeSet<Ipv4Addr> = f
        .igmp
        .iter()
        .filter(|i| i.name != "lo")
        .flat_map(|i| i.groups.iter().copied())
        .filter(|g| !is_local_network_control(*g))
        .collect();
    let evidence = vec![format!(
        "{key} = {}, {} groups joined on this node",
        max.map(|m| m.to_string()).unwrap_or("(missing)".into()),
        joined.len()
    )];
    match max {
        Some(m) if joined.len() >= m => check(
            "igmp.max-memberships",
            Verdict::Fail,
            format!(
                "{} groups joined, the limit is {m}: the next guest network's join fails",
                joined.len()
            ),
            evidence,
            Some("raise igmp_max_memberships in overlayd's configuration"),
        ),
        Some(m) if joined.len() * 10 >= m * 8 => check(
            "igmp.max-memberships",
            Verdict::Warn,
            format!("{} of {m} IGMP memberships used", joined.len()),
            evidence,
            Some("raise igmp_max_memberships before more guest networks start"),
        ),
        Some(m) => check(
            "igmp.max-memberships",
            Verdict::Ok,
            format!("{} of {m} IGMP memberships used", joined.len()),
            evidence,
            None,
        ),
        None => check(
            "igmp.max-memberships",
            Verdict::Unknown,
            format!("{key} not readable"),
            evidence,
            None,
        ),
    }
}

fn remote_vteps(d: &Desired, f: &Facts) -> Check {
    let id = "fdb.remotes";
    let Some(t) = &d.vtep else {
        return check(id, Verdict::Ok, "no VTEP on this role".into(), vec![], None);
    };
    let Some(learned) = &f.learned else {
        return check(
            id,
            Verdict::Unknown,
            format!("{}'s forwarding database not read", t.name),
            vec![],
            None,
        );
    };
    let list = |it: &mut dyn Iterator<Item = String>| {
        let v: Vec<String> = it.collect();
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(" ")
        }
    };
    let mut evidence = vec![format!(
        "learned: {}",
        list(
            &mut learned
                .iter()
                .map(|(a, n)| format!("{a} ({n} MAC{})", if *n == 1 { "" } else { "s" }))
        )
    )];
    let flood = d.flood_list.as_ref().map(|_| &f.observed.flood_list);
    if let Some(fl) = flood {
        evidence.push(format!(
            "flood list: {}",
            list(&mut fl.iter().map(|a| a.to_string()))
        ));
    }
    let known: BTreeSet<Ipv4Addr> = learned
        .keys()
        .copied()
        .chain(flood.into_iter().flatten().copied())
        .collect();
    if known.is_empty() {
        return check(
            id,
            Verdict::Warn,
            format!(
                "{} knows no remote VTEP: no frame from another node has arrived{}",
                t.name,
                if t.group.is_some() {
                    " (multicast flooding may not reach this node)"
                } else {
                    " (empty flood list)"
                }
            ),
            evidence,
            Some("on a new cluster this is normal until traffic flows; else see the igmp.* checks (multicast) or the peers in `overlayd status` (unicast)"),
        );
    }
    check(
        id,
        Verdict::Ok,
        format!(
            "{} remote VTEP(s) known ({} learned from traffic)",
            known.len(),
            learned.len()
        ),
        evidence,
        None,
    )
}

/// flood = evpn: the node's BGP sessions to the reflectors (a reflector: from its clients)
/// and what they brought: the VNI, its remote VTEPs (type-3) and MACs (type-2).
fn evpn_bgp(d: &Desired, f: &Facts) -> Check {
    let id = "evpn.bgp";
    let Some(spec) = &d.evpn else {
        return check(id, Verdict::Ok, "flood is not evpn".into(), vec![], None);
    };
    let fix_frr = match spec.frr {
        crate::config::FrrMode::Systemd => {
            "overlayd writes FRR's files and starts frr.service: `systemctl status frr`, `journalctl -u frr -u overlayd`"
        }
        crate::config::FrrMode::Spawn => {
            "`overlayd run` runs zebra and bgpd: is it running? its log names FRR's errors"
        }
    };
    let Some(st) = &f.evpn else {
        return check(
            id,
            Verdict::Unknown,
            "FRR's state not read".into(),
            vec![],
            None,
        );
    };
    let mut evidence = vec![format!(
        "AS {}, {}; {}/{} sessions Established; {} VNI(s), {} remote VTEP(s), {} local and {} remote MAC(s)",
        st.asn,
        if st.reflector { "route reflector" } else { "client" },
        st.sessions_up,
        st.sessions,
        st.vnis,
        st.remote_vteps,
        st.local_macs,
        st.remote_macs
    )];
    if !st.down.is_empty() {
        evidence.push(format!("not Established: {}", st.down.join(", ")));
    }
    if let Some(e) = &st.error {
        evidence.push(e.clone());
        return check(
            id,
            Verdict::Fail,
            "FRR does not answer: this node learns no MAC and floods to nobody".into(),
            evidence,
            Some(fix_frr),
        );
    }
    let tcp179 = "TCP 179 must pass between the nodes and the reflectors (security group: overlayctl doctor's sg.vtep.bgp); check evpn_reflectors here and evpn_listen on the reflectors";
    if st.sessions_up == 0 {
        let summary = if st.reflector && spec.reflectors.is_empty() && st.sessions == 0 {
            "route reflector without clients: no node has connected".to_string()
        } else {
            format!(
                "no BGP session Established ({} configured or accepted): no MAC or flood list from the fabric",
                st.sessions
            )
        };
        let verdict = if st.reflector && st.sessions == 0 {
            Verdict::Warn
        } else {
            Verdict::Fail
        };
        return check(id, verdict, summary, evidence, Some(tcp179));
    }
    if st.vnis == 0 {
        return check(
            id,
            Verdict::Fail,
            format!(
                "zebra knows no VNI: {} is not seen as VNI {} of {} (advertise-all-vni)",
                spec.vtep, spec.vni, spec.bridge
            ),
            evidence,
            Some(
                "the vtep check says why the VTEP is not right; overlayd repairs it while it runs",
            ),
        );
    }
    let missing: Vec<String> = spec
        .reflectors
        .iter()
        .map(|r| r.to_string())
        .filter(|r| st.down.iter().any(|d| d.starts_with(&format!("{r}:"))))
        .collect();
    if !missing.is_empty() {
        return check(
            id,
            Verdict::Warn,
            format!(
                "reflector {} not reachable over BGP: the fabric converges through the other(s), without redundancy",
                missing.join(", ")
            ),
            evidence,
            Some(tcp179),
        );
    }
    if st.remote_vteps == 0 {
        return check(
            id,
            Verdict::Warn,
            "sessions up, but no remote VTEP advertised yet: a fabric of one node".into(),
            evidence,
            Some("normal while this is the only node; else the other nodes' evpn.bgp"),
        );
    }
    check(
        id,
        Verdict::Ok,
        format!(
            "{}/{} BGP session(s) Established; {} remote VTEP(s), {} remote MAC(s) from BGP",
            st.sessions_up, st.sessions, st.remote_vteps, st.remote_macs
        ),
        evidence,
        None,
    )
}

fn link_local_routes(d: &Desired, f: &Facts) -> Check {
    let wanted: Vec<_> = d
        .routes
        .iter()
        .filter(|r| r.dst.prefix_len() == 32 && r.dst.addr().is_link_local())
        .collect();
    if wanted.is_empty() {
        return check(
            "routes.link-local",
            Verdict::Ok,
            "no link-local service routes configured".into(),
            vec![],
            None,
        );
    }
    let mut missing = Vec::new();
    let mut evidence = Vec::new();
    for w in &wanted {
        let dev = f.observed.link(&w.dev).map(|l| l.index);
        let found = f
            .observed
            .routes
            .iter()
            .any(|r| r.table == w.table && r.dst == w.dst && r.oif.is_some() && r.oif == dev);
        evidence.push(format!(
            "{} dev {}: {}",
            w.dst,
            w.dev,
            if found { "present" } else { "missing" }
        ));
        if !found {
            missing.push(w.dst.addr().to_string());
        }
    }
    if missing.is_empty() {
        check(
            "routes.link-local",
            Verdict::Ok,
            format!("IMDS, DNS and NTP stay on {}", d.underlay),
            evidence,
            None,
        )
    } else {
        check(
            "routes.link-local",
            Verdict::Fail,
            format!(
                "no underlay route for {}: they may leave through the overlay",
                missing.join(", ")
            ),
            evidence,
            Some("overlayd adds them while it runs (link_local_routes)"),
        )
    }
}

/// 0 when nothing fails, 1 when something does (warnings and unknowns alone: 0).
pub fn exit_code(checks: &[Check]) -> u8 {
    u8::from(checks.iter().any(|c| c.verdict == Verdict::Fail))
}

/// The text report: one line per check, evidence and fix indented below it.
pub fn render(checks: &[Check]) -> String {
    let mut s = String::new();
    for c in checks {
        s.push_str(&format!(
            "{:<7} {:<22} {}\n",
            c.verdict.as_str(),
            c.id,
            c.summary
        ));
        for e in &c.evidence {
            s.push_str(&format!("        evidence: {e}\n"));
        }
        if let Some(fix) = &c.fix {
            s.push_str(&format!("        fix: {fix}\n"));
        }
    }
    let n = |v: Verdict| checks.iter().filter(|c| c.verdict == v).count();
    s.push_str(&format!(
        "{} checks: {} ok, {} warn, {} fail, {} unknown\n",
        checks.len(),
        n(Verdict::Ok),
        n(Verdict::Warn),
        n(Verdict::Fail),
        n(Verdict::Unknown)
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const IGMP: &str = "Idx\tDevice    : Count Querier\tGroup    Users Timer\tReporter\n\
1\tlo        :     1      V3\n\
\t\t\t\t010000E0     1 0:00000000\t\t0\n\
2\teth0      :     2      V2\n\
\t\t\t\t0100FFEF     1 0:00000000\t\t1\n\
\t\t\t\t010000E0     1 0:00000000\t\t0\n\
3\tcloudbr0  :     1      V3\n\
\t\t\t\t010000E0     1 0:00000000\t\t0\n";

    #[test]
    fn proc_net_igmp_is_parsed_with_versions_and_groups() {
        let v = parse_proc_igmp(IGMP);
        assert_eq!(v.len(), 3);
        assert_eq!(v[1].name, "eth0");
        assert_eq!(v[1].version, 2);
        let want: BTreeSet<Ipv4Addr> = ["239.255.0.1", "224.0.0.1"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        // (little-endian hosts: these machines)
        if cfg!(target_endian = "little") {
            assert_eq!(v[1].groups, want);
        }
        assert_eq!(v[2].version, 3);
    }

    #[test]
    fn verdicts_order_and_exit_code() {
        let c = |v| check("x", v, String::new(), vec![], Some("fix"));
        assert_eq!(
            exit_code(&[c(Verdict::Ok), c(Verdict::Warn), c(Verdict::Unknown)]),
            0
        );
        assert_eq!(exit_code(&[c(Verdict::Ok), c(Verdict::Fail)]), 1);
        assert_eq!(c(Verdict::Ok).fix, None, "an ok check has no fix");
        assert!(Verdict::Fail > Verdict::Warn && Verdict::Warn > Verdict::Ok);
    }

    use crate::config::Role;
    use crate::plan_tests::{bare, cfg_with, converged, role_cfg};

    /// A converged host with every fact a healthy node shows.
    fn healthy(role: Role, extra: &[(&'static str, &str)]) -> (Desired, Facts) {
        let c = if extra.is_empty() {
            role_cfg(role)
        } else {
            cfg_with(role, extra)
        };
        let d = crate::desired::desired(&c, &bare()).unwrap();
        let mut o = converged(&d);
        o.vtep_tx_checksum = d.vtep.as_ref().map(|t| !t.tx_checksum_off);
        o.sysctls
            .insert("net/ipv4/ip_forward".into(), Some("1".into()));
        o.sysctls
            .entry("net/ipv4/igmp_max_memberships".into())
            .or_insert(Some("20".into()));
        let mut groups = BTreeSet::new();
        groups.insert("239.255.0.1".parse().unwrap());
        let f = Facts {
            igmp: vec![IgmpDevice {
                name: "eth0".into(),
                version: 2,
                groups,
            }],
            learned: Some([("10.0.1.6".parse().unwrap(), 2)].into_iter().collect()),
            daemon: Daemon::Running {
                queries: Some(QueryLog {
                    device: "eth0".into(),
                    listening_since_unix_ms: 1_000,
                    count: 3,
                    last_unix_ms: Some(100_000),
                    last_from: Some(Ipv4Addr::UNSPECIFIED),
                    last_version: Some(2),
                    error: None,
                }),
            },
            now_unix_ms: 130_000,
            query_interval_secs: 120,
            gateway: c.gateway,
            gateway_ping: c.gateway.map(|_| Ok(Duration::from_micros(300))),
            return_path: Some((
                "10.0.1.1".parse().unwrap(),
                Ok(Some(Route {
                    dst: "10.0.1.1/32".parse().unwrap(),
                    gateway: c.gateway,
                    oif: o.link("cloudbr0").map(|l| l.index),
                    metric: 0,
                    protocol: 0,
                    table: 79,
                    scope: 0,
                    kind: 1,
                    prefsrc: None,
                })),
            )),
            kernel: Some("6.1.0-27-cloud-amd64".into()),
            managers_running: vec![],
            claims: vec![],
            observed: o,
            ha: None,
            ha_peer_ping: None,
            ha_vip_ping: None,
            evpn: d.evpn.as_ref().map(|e| crate::evpn::EvpnStatus {
                asn: e.asn,
                reflector: e.reflector,
                frr: "spawn".into(),
                reflectors: e.reflectors.clone(),
                sessions_up: e.reflectors.len().max(1) as u32,
                sessions: e.reflectors.len().max(1) as u32,
                vnis: 1,
                remote_vteps: 3,
                local_macs: 1,
                remote_macs: 3,
                ..Default::default()
            }),
        };
        (d, f)
    }

    #[test]
    fn evpn_bgp_names_frr_down_no_session_a_lost_reflector_and_no_vni() {
        let evpn = [("flood", "evpn"), ("evpn_reflectors", "10.0.1.4,10.0.1.6")];
        let (d, f) = healthy(Role::Host, &evpn);
        assert!(d.evpn.is_some());
        let (v, s) = verdict_of(&d, &f, "evpn.bgp");
        assert_eq!(v, Verdict::Ok, "{s}");
        let (d0, f0) = healthy(Role::Host, &[]);
        assert!(diagnose(&d0, &f0).iter().all(|c| c.id != "evpn.bgp"));

        let mut g = f.clone();
        g.evpn.as_mut().unwrap().error = Some("vtysh: failed to connect to any daemons".into());
        let (v, s) = verdict_of(&d, &g, "evpn.bgp");
        assert_eq!(v, Verdict::Fail);
        assert!(s.contains("FRR does not answer"), "{s}");

        let mut g = f.clone();
        {
            let e = g.evpn.as_mut().unwrap();
            e.sessions_up = 0;
            e.down = vec!["10.0.1.4: Active".into(), "10.0.1.6: Connect".into()];
        }
        let (v, s) = verdict_of(&d, &g, "evpn.bgp");
        assert_eq!(v, Verdict::Fail);
        assert!(s.contains("no BGP session Established"), "{s}");

        let mut g = f.clone();
        {
            let e = g.evpn.as_mut().unwrap();
            e.sessions_up = 1;
            e.down = vec!["10.0.1.6: Active".into()];
        }
        let (v, s) = verdict_of(&d, &g, "evpn.bgp");
        assert_eq!(v, Verdict::Warn);
        assert!(s.contains("reflector 10.0.1.6"), "{s}");

        let mut g = f.clone();
        g.evpn.as_mut().unwrap().vnis = 0;
        let (v, s) = verdict_of(&d, &g, "evpn.bgp");
        assert_eq!(v, Verdict::Fail);
        assert!(s.contains("zebra knows no VNI"), "{s}");

        let mut g = f.clone();
        g.evpn = None;
        assert_eq!(verdict_of(&d, &g, "evpn.bgp").0, Verdict::Unknown);

        // a reflector nobody has connected to yet: a warning, not a failure
        let (d, mut f) = healthy(Role::Router, &[("flood", "evpn")]);
        {
            let e = f.evpn.as_mut().unwrap();
            e.sessions_up = 0;
            e.sessions = 0;
        }
        assert_eq!(verdict_of(&d, &f, "evpn.bgp").0, Verdict::Warn);
    }

    /// A router of a pair (10.101.0.3, peer .4, VIP .1), healthy: keepalived running, the
    /// peer answering; `active`: the VIP on its bridge.
    fn pair_router(active: bool) -> (Desired, Facts) {
        let (d, mut f) = healthy(
            Role::Router,
            &[("address", "10.101.0.3/16"), ("ha_peer", "10.101.0.4")],
        );
        if active {
            let b = f.observed.link("cloudbr0").unwrap().index;
            f.observed.addrs.push(crate::model::Addr {
                index: b,
                addr: "10.101.0.1/16".parse().unwrap(),
            });
        }
        f.ha = Some(crate::ha::HaStatus {
            state: if active { "active" } else { "backup" }.into(),
            keepalived_pid: Some(42),
            ..Default::default()
        });
        f.ha_peer_ping = Some(Ok(Duration::from_micros(400)));
        f.ha_vip_ping = (!active).then_some(Ok(Duration::from_micros(400)));
        (d, f)
    }

    #[test]
    fn router_pair_names_the_standby_loss_and_the_double_failure() {
        // only on a router of a pair
        let (d, f) = healthy(Role::Router, &[]);
        assert!(diagnose(&d, &f).iter().all(|c| c.id != "router.pair"));
        for active in [true, false] {
            let (d, f) = pair_router(active);
            let (v, s) = verdict_of(&d, &f, "router.pair");
            assert_eq!(v, Verdict::Ok, "{s}");
            assert!(
                s.starts_with(if active { "active" } else { "standby" }),
                "{s}"
            );
        }
        // the active one alone: a warning (single point of failure again)
        let (d, mut f) = pair_router(true);
        f.ha_peer_ping = Some(Err("no echo reply".into()));
        let (v, s) = verdict_of(&d, &f, "router.pair");
        assert_eq!(v, Verdict::Warn, "{s}");
        assert!(s.contains("no standby"), "{s}");
        // the active one whose takeover failed
        let (d, mut f) = pair_router(true);
        f.ha.as_mut().unwrap().takeover = Some(crate::takeover::TakeoverReport {
            error: Some("ReplaceRoute rtb-1: UnauthorizedOperation".into()),
            ..Default::default()
        });
        assert_eq!(verdict_of(&d, &f, "router.pair").0, Verdict::Fail);
        // a standby that sees nobody holding the VIP: the double failure
        let (d, mut f) = pair_router(false);
        f.ha_peer_ping = Some(Err("no echo reply".into()));
        f.ha_vip_ping = Some(Err("no echo reply".into()));
        let (v, s) = verdict_of(&d, &f, "router.pair");
        assert_eq!(v, Verdict::Fail, "{s}");
        assert!(s.contains("both routers"), "{s}");
        // no packet socket for the gratuitous ARP (the unit without the drop-in)
        let (d, mut f) = pair_router(true);
        f.ha.as_mut().unwrap().garp_error = Some("no packet socket".into());
        let (v, s) = verdict_of(&d, &f, "router.pair");
        assert_eq!(v, Verdict::Fail, "{s}");
        assert!(s.contains("gratuitous ARP"), "{s}");
        // keepalived not running, or no daemon at all
        let (d, mut f) = pair_router(false);
        f.ha.as_mut().unwrap().keepalived_pid = None;
        assert_eq!(verdict_of(&d, &f, "router.pair").0, Verdict::Fail);
        f.ha = None;
        assert_eq!(verdict_of(&d, &f, "router.pair").0, Verdict::Fail);
    }

    fn verdict_of(d: &Desired, f: &Facts, id: &str) -> (Verdict, String) {
        let c = diagnose(d, f);
        let c = c
            .iter()
            .find(|c| c.id == id)
            .unwrap_or_else(|| panic!("no {id}"));
        (c.verdict, c.summary.clone())
    }

    #[test]
    fn a_healthy_node_of_every_role_passes_every_check() {
        for r in [Role::Host, Role::Management, Role::Router, Role::Standalone] {
            // standalone's bridge defaults to 1500 (guests then get 1450: a warning)
            let extra: &[(&'static str, &str)] = if r == Role::Standalone {
                &[("mtu", "8950")]
            } else {
                &[]
            };
            let (d, f) = healthy(r, extra);
            for c in diagnose(&d, &f) {
                assert_eq!(c.verdict, Verdict::Ok, "{r}: {c:?}");
            }
        }
    }

    #[test]
    fn query_history_decides_igmp_queries() {
        let (d, mut f) = healthy(Role::Host, &[]);
        f.now_unix_ms = 100_000 + 241_000;
        let (v, s) = verdict_of(&d, &f, "igmp.queries");
        assert_eq!(v, Verdict::Fail, "{s}");
        assert!(s.contains("241 s"), "{s}");
        // none heard: unknown while listening shorter than two intervals, then fail
        f.daemon = Daemon::Running {
            queries: Some(QueryLog {
                device: "eth0".into(),
                listening_since_unix_ms: 100_000,
                ..Default::default()
            }),
        };
        f.now_unix_ms = 200_000;
        assert_eq!(verdict_of(&d, &f, "igmp.queries").0, Verdict::Unknown);
        f.now_unix_ms = 400_000;
        assert_eq!(verdict_of(&d, &f, "igmp.queries").0, Verdict::Fail);
        f.daemon = Daemon::NotRunning;
        assert_eq!(verdict_of(&d, &f, "igmp.queries").0, Verdict::Unknown);
    }

    #[test]
    fn old_kernels_with_offload_are_warned_and_the_key_is_checked() {
        let (d, mut f) = healthy(Role::Host, &[]);
        f.kernel = Some("5.4.0-1103-aws".into());
        let (v, s) = verdict_of(&d, &f, "vtep.tx-checksum");
        assert_eq!(v, Verdict::Warn, "{s}");
        assert!(s.contains("63 s"), "{s}");
        let (d, mut f) = healthy(Role::Host, &[("vtep_tx_checksum", "off")]);
        f.kernel = Some("5.4.0-1103-aws".into());
        assert_eq!(verdict_of(&d, &f, "vtep.tx-checksum").0, Verdict::Ok);
        f.observed.vtep_tx_checksum = Some(true);
        assert_eq!(verdict_of(&d, &f, "vtep.tx-checksum").0, Verdict::Fail);
    }

    #[test]
    fn return_path_via_the_underlay_and_a_router_that_does_not_forward_fail() {
        let (d, mut f) = healthy(Role::Host, &[]);
        if let Some((_, Ok(Some(r)))) = &mut f.return_path {
            r.oif = f.observed.link("eth0").map(|l| l.index);
            r.gateway = Some("10.0.1.1".parse().unwrap());
        }
        let (v, s) = verdict_of(&d, &f, "gateway.return-path");
        assert_eq!(v, Verdict::Fail, "{s}");
        assert!(s.contains("leave via eth0"), "{s}");
        let (d, mut f) = healthy(Role::Router, &[]);
        f.observed
            .sysctls
            .insert("net/ipv4/ip_forward".into(), Some("0".into()));
        assert_eq!(verdict_of(&d, &f, "gateway.return-path").0, Verdict::Fail);
    }

    #[test]
    fn mtu_limits_guest_mtu_managers_and_an_unanswered_gateway() {
        let (d, mut f) = healthy(Role::Host, &[]);
        // bridge above the TGW's multicast limit
        let b = f
            .observed
            .links
            .iter_mut()
            .find(|l| l.name == "cloudbr0")
            .unwrap();
        b.mtu = 8900;
        let (v, s) = verdict_of(&d, &f, "mtu");
        assert_eq!(v, Verdict::Fail);
        assert!(s.contains("8500"), "{s}");
        // a 1500 underlay: guests get 1400
        let b = f
            .observed
            .links
            .iter_mut()
            .find(|l| l.name == "cloudbr0")
            .unwrap();
        b.mtu = 1450;
        assert_eq!(verdict_of(&d, &f, "mtu.guest").0, Verdict::Warn);
        f.claims.push(Claim {
            manager: crate::network_managers::NETWORKD,
            device: "cloudbr0".into(),
            state: "configured by /etc/systemd/network/50-br.network".into(),
        });
        let (v, s) = verdict_of(&d, &f, "managers");
        assert_eq!(v, Verdict::Fail);
        assert!(s.contains("systemd-networkd manages cloudbr0"), "{s}");
        f.gateway_ping = Some(Err("no answer".into()));
        assert_eq!(verdict_of(&d, &f, "gateway.reachable").0, Verdict::Fail);
        f.learned = Some(BTreeMap::new());
        assert_eq!(verdict_of(&d, &f, "fdb.remotes").0, Verdict::Warn);
    }
}
