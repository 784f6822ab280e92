//! The metrics of `overlayd run`, exposed with the maintained Prometheus client
//! (`prometheus-client`, OpenMetrics text): counters and the reconcile histogram live in
//! [`Metrics`]' registry; what is read from the kernel at scrape time arrives as a
//! [`KernelSample`] and is encoded from a registry made for that scrape (so absent values
//! are absent, not 0). [`serve`] is a minimal HTTP/1.1 server for `GET /metrics`, kept
//! hand-written on purpose: one loopback path, bounded (request size, connections,
//! timeouts, all tested), where hyper would add its dependency tree to the static binary
//! whose cold start every `overlayd apply` pays. Helpers read the kernel's view of the
//! overlay: [`igmp_membership`] (`/proc/net/igmp`) and [`fdb_count`] (AF_BRIDGE dump).

use crate::netlink::{nl_err, NlError};
use futures::TryStreamExt;
use netlink_packet_route::link::LinkFlags;
use netlink_packet_route::neighbour::{
    NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::AddressFamily;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Upper bounds (seconds) of the reconcile duration histogram buckets; `+Inf` is implied.
pub const DURATION_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Content type of the OpenMetrics text format (what prometheus-client encodes).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The daemon's own metrics. Cheap to update from any thread; `render` encodes a snapshot.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconciles: Family<Labels, Counter>,
    duration: Histogram,
    /// When the last reconcile ended (Unix seconds) and whether it succeeded.
    last: Mutex<Option<(f64, bool)>>,
    repairs: Family<Labels, Counter>,
    netlink_errors: Counter,
    events: Counter,
    overruns: Counter,
    paused: Gauge,
    peer_discoveries: Family<Labels, Counter>,
    peers: Gauge,
    peer_last_success: Gauge,
    /// flood = evpn: FRR's state as last read.
    evpn: Mutex<Option<crate::evpn::EvpnStatus>>,
}

/// What the kernel looks like at scrape time. `None` fields are left out of the exposition
/// (a standalone node has no VTEP, hence no `vtep_up`, IGMP or FDB metrics).
#[derive(Debug, Clone, Default)]
pub struct KernelSample {
    /// `overlayd_vtep_up`: the VTEP exists, is administratively up and running.
    pub vtep_up: Option<bool>,
    /// `group` label of `overlayd_igmp_group_member`.
    pub group: Option<Ipv4Addr>,
    /// `underlay` label of the IGMP metrics.
    pub underlay: Option<String>,
    /// `overlayd_igmp_group_member`: the underlay has joined `group` (from /proc/net/igmp).
    pub igmp_member: Option<bool>,
    /// `overlayd_igmp_querier_version`: IGMP version the underlay speaks (1, 2 or 3).
    pub igmp_querier_version: Option<u8>,
    /// `overlayd_fdb_entries`: bridge FDB entries whose port is the VTEP.
    pub fdb_entries: Option<u64>,
    /// `overlayd_converged`: the last reconcile found nothing to change.
    pub converged: Option<bool>,
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain counters behind: still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// prometheus-client adds the final period of a HELP text itself.
fn help(h: &str) -> &str {
    h.strip_suffix('.').unwrap_or(h)
}

impl Metrics {
    pub fn new(role: &str) -> Metrics {
        let mut registry = Registry::default();
        let build: Family<Labels, Gauge> = Family::default();
        build
            .get_or_create(&labels(&[
                ("version", env!("CARGO_PKG_VERSION")),
                ("role", role),
            ]))
            .set(1);
        registry.register(
            "overlayd_build_info",
            help("Build and role of this overlayd; always 1."),
            build,
        );
        registry.register(
            "process_start_time_seconds",
            help("Start time of the process since the Unix epoch in seconds."),
            ConstGauge::new(unix_now()),
        );
        let reconciles: Family<Labels, Counter> = Family::default();
        for r in ["ok", "error"] {
            let _ = reconciles.get_or_create(&labels(&[("result", r)]));
        }
        registry.register(
            "overlayd_reconcile",
            help("Reconcile passes completed, by result."),
            reconciles.clone(),
        );
        let duration = Histogram::new(DURATION_BUCKETS);
        registry.register(
            "overlayd_reconcile_duration_seconds",
            help("Duration of reconcile passes in seconds."),
            duration.clone(),
        );
        let repairs: Family<Labels, Counter> = Family::default();
        registry.register(
            "overlayd_repairs",
            help("Kernel state changes made to repair drift, by kind."),
            repairs.clone(),
        );
        let counter = |registry: &mut Registry, name: &str, h: &str| {
            let c = Counter::default();
            registry.register(name, help(h), c.clone());
            c
        };
        let netlink_errors = counter(
            &mut registry,
            "overlayd_netlink_errors",
            "Netlink requests that failed.",
        );
        let events = counter(
            &mut registry,
            "overlayd_netlink_events",
            "Netlink notifications received.",
        );
        let overruns = counter(
            &mut registry,
            "overlayd_netlink_overruns",
            "Netlink notification socket overruns (ENOBUFS), each followed by a full resync.",
        );
        let paused = Gauge::default();
        registry.register(
            "overlayd_paused",
            help("1 while reconciling is paused (SIGUSR1 or the control socket)."),
            paused.clone(),
        );
        let peer_discoveries: Family<Labels, Counter> = Family::default();
        registry.register(
            "overlayd_peer_discovery",
            help("EC2 peer discovery answers (DescribeInstances), by result; an error keeps the last good peers."),
            peer_discoveries.clone(),
        );
        let peers = Gauge::default();
        registry.register(
            "overlayd_peers",
            help("Unicast flooding peers in force (0 until EC2 discovery first answers)."),
            peers.clone(),
        );
        let peer_last_success = Gauge::default();
        registry.register(
            "overlayd_peer_discovery_last_success_timestamp_seconds",
            help("When EC2 peer discovery last answered, seconds since the Unix epoch."),
            peer_last_success.clone(),
        );
        Metrics {
            evpn: Mutex::new(None),
            peer_discoveries,
            peers,
            peer_last_success,
            registry,
            reconciles,
            duration,
            last: Mutex::new(None),
            repairs,
            netlink_errors,
            events,
            overruns,
            paused,
        }
    }

    /// One reconcile pass finished, successfully or not, after `dur`.
    pub fn reconcile_done(&self, dur: Duration, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.reconciles
            .get_or_create(&labels(&[("result", result)]))
            .inc();
        self.duration.observe(dur.as_secs_f64());
        *lock(&self.last) = Some((unix_now(), ok));
    }

    /// A repair of drifted kernel state (`kind` e.g. "create_vtep", "mtu", "set_up").
    pub fn repair(&self, kind: &str) {
        self.repairs.get_or_create(&labels(&[("kind", kind)])).inc();
    }

    pub fn netlink_error(&self) {
        self.netlink_errors.inc();
    }

    /// A netlink multicast notification arrived; `overrun` when the socket reported
    /// ENOBUFS (events were lost and a full resync is due).
    pub fn event(&self, overrun: bool) {
        self.events.inc();
        if overrun {
            self.overruns.inc();
        }
    }

    /// One EC2 peer discovery finished (`count`: the peers found when it succeeded).
    pub fn peer_discovery(&self, ok: bool, count: Option<usize>, _took: Duration) {
        let result = if ok { "ok" } else { "error" };
        self.peer_discoveries
            .get_or_create(&labels(&[("result", result)]))
            .inc();
        if let Some(n) = count {
            self.peers.set(n as i64);
            self.peer_last_success.set(unix_now() as i64);
        }
    }

    /// flood = evpn: FRR's state, exposed from the next scrape on.
    pub fn evpn(&self, st: &crate::evpn::EvpnStatus) {
        *lock(&self.evpn) = Some(st.clone());
    }

    pub fn set_paused(&self, paused: bool) {
        self.paused.set(i64::from(paused));
    }

    /// The full exposition: the daemon's registry, then what this scrape read from the kernel.
    pub fn render(&self, k: &KernelSample) -> String {
        let mut out = String::new();
        let _ = encode_registry(&mut out, &self.registry);
        let _ = encode_registry(&mut out, &scrape_registry(*lock(&self.last), k));
        if let Some(e) = lock(&self.evpn).as_ref() {
            let _ = encode_registry(&mut out, &evpn_registry(e));
        }
        let _ = encode_eof(&mut out);
        out
    }
}

/// flood = evpn: FRR's sessions, flood list and MACs.
fn evpn_registry(e: &crate::evpn::EvpnStatus) -> Registry {
    let mut r = Registry::default();
    for (name, h, v) in [
        (
            "overlayd_evpn_sessions_up",
            "BGP EVPN sessions Established.",
            e.sessions_up,
        ),
        (
            "overlayd_evpn_sessions",
            "BGP EVPN sessions configured or accepted (dynamic).",
            e.sessions,
        ),
        ("overlayd_evpn_vnis", "VNIs FRR's zebra knows.", e.vnis),
        (
            "overlayd_evpn_remote_vteps",
            "Remote VTEPs in the VNI's flood list (type-3 routes).",
            e.remote_vteps,
        ),
        (
            "overlayd_evpn_local_macs",
            "Local MACs of the VNI advertised (type-2).",
            e.local_macs,
        ),
        (
            "overlayd_evpn_remote_macs",
            "Remote MACs of the VNI installed from BGP (type-2).",
            e.remote_macs,
        ),
    ] {
        r.register(name, help(h), ConstGauge::new(i64::from(v)));
    }
    r.register(
        "overlayd_evpn_svi_readvertised",
        help("Times overlayd had bgpd advertise the bridge's own MAC/IP again (FRR had lost advertise-svi-ip)."),
        ConstGauge::new(e.svi_readvertised as i64),
    );
    r.register(
        "overlayd_evpn_reflector_resets",
        help("Times overlayd reset a reflector's session that was Established but sent no route (FRR had lost this node as a peer)."),
        ConstGauge::new(e.reflector_resets as i64),
    );
    r.register(
        "overlayd_evpn_frr_restarts",
        help("Times overlayd restarted FRR after the first start."),
        ConstGauge::new(e.frr_restarts as i64),
    );
    r
}

/// The metrics of one scrape: only what is known (a standalone node has no VTEP).
fn scrape_registry(last: Option<(f64, bool)>, k: &KernelSample) -> Registry {
    let mut r = Registry::default();
    let flag = |b: bool| ConstGauge::new(i64::from(b));
    if let Some((ts, ok)) = last {
        r.register(
            "overlayd_last_reconcile_timestamp_seconds",
            help("When the last reconcile pass ended, seconds since the Unix epoch."),
            ConstGauge::new(ts),
        );
        r.register(
            "overlayd_last_reconcile_success",
            help("1 if the last reconcile pass succeeded, 0 if it failed."),
            flag(ok),
        );
    }
    if let Some(up) = k.vtep_up {
        r.register(
            "overlayd_vtep_up",
            help("1 if the VXLAN VTEP exists, is up and running."),
            flag(up),
        );
    }
    let mut igmp: Labels = Vec::new();
    if let Some(g) = k.group {
        igmp.push(("group".into(), g.to_string()));
    }
    if let Some(u) = &k.underlay {
        igmp.push(("underlay".into(), u.clone()));
    }
    if let Some(m) = k.igmp_member {
        let f: Family<Labels, Gauge> = Family::default();
        f.get_or_create(&igmp).set(i64::from(m));
        r.register(
            "overlayd_igmp_group_member",
            help("1 if the underlay interface has joined the VXLAN multicast group (/proc/net/igmp)."),
            f,
        );
    }
    if let Some(v) = k.igmp_querier_version {
        let f: Family<Labels, Gauge> = Family::default();
        let l: Labels = k
            .underlay
            .iter()
            .map(|u| ("underlay".to_string(), u.clone()))
            .collect();
        f.get_or_create(&l).set(i64::from(v));
        r.register(
            "overlayd_igmp_querier_version",
            help("IGMP version the underlay interface uses (2 when force_igmp_version=2 is in effect)."),
            f,
        );
    }
    if let Some(n) = k.fdb_entries {
        r.register(
            "overlayd_fdb_entries",
            help("Bridge FDB entries (learned or static, not the port's own address) on the VTEP port."),
            ConstGauge::new(n as i64),
        );
    }
    if let Some(c) = k.converged {
        r.register(
            "overlayd_converged",
            help("1 if the last reconcile pass succeeded: the kernel matches the configuration."),
            flag(c),
        );
    }
    r
}

/// Multicast membership of one interface, as `/proc/net/igmp` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IgmpInfo {
    /// The group is listed under the device.
    pub member: bool,
    /// The device's "Querier" column ("V1", "V2" or "V3"); `None` if the device is absent.
    pub querier: Option<String>,
}

impl IgmpInfo {
    /// The querier column as a number (`"V2"` → 2).
    pub fn querier_version(&self) -> Option<u8> {
        self.querier.as_deref()?.strip_prefix('V')?.parse().ok()
    }
}

/// Parse /proc/net/igmp text: is `group` joined on interface `dev`? Device lines are
/// `IDX\tNAME<padding>: COUNT VERSION`; the group lines under them start with a tab and
/// carry the group as 8 hex digits of the address's in-memory (network order) bytes read
/// as a native-endian u32, so `0100FFEF` is 239.255.0.1 on a little-endian host.
pub fn igmp_membership(proc_net_igmp: &str, dev: &str, group: Ipv4Addr) -> IgmpInfo {
    let mut info = IgmpInfo::default();
    let mut in_dev = false;
    for line in proc_net_igmp.lines() {
        if line.trim().is_empty() || line.starts_with("Idx") {
            continue;
        }
        if line.starts_with(|c: char| c.is_ascii_digit()) {
            // Device line. Interface names cannot contain ':' or whitespace.
            let rest = line.split_once('\t').map(|(_, r)| r).unwrap_or("");
            let (name, tail) = rest.split_once(':').unwrap_or((rest, ""));
            in_dev = name.trim() == dev;
            if in_dev {
                info.querier = tail.split_whitespace().nth(1).map(str::to_string);
            }
        } else if in_dev {
            let Some(hex) = line.split_whitespace().next() else {
                continue;
            };
            if let Ok(raw) = u32::from_str_radix(hex, 16) {
                if Ipv4Addr::from(raw.to_ne_bytes()) == group {
                    info.member = true;
                }
            }
        }
    }
    info
}

/// Does this AF_BRIDGE neighbour message describe a bridge FDB entry on port `port`?
/// Bridge entries carry NDA_MASTER; entries of the port driver's own table (the VXLAN
/// remote list, shown as "self" by `bridge fdb`) carry NTF_SELF instead. The port's own
/// address (a permanent "local" entry) is not counted.
fn is_bridge_fdb_entry_on(m: &NeighbourMessage, port: u32) -> bool {
    m.header.family == AddressFamily::Bridge
        && m.header.ifindex == port
        && !m.header.flags.contains(NeighbourFlags::Own)
        && m.header.state != NeighbourState::Permanent
        && m.attributes
            .iter()
            .any(|a| matches!(a, NeighbourAttribute::Controller(_)))
}

/// Count bridge FDB entries whose port is `vtep_index` (AF_BRIDGE neighbour dump): MACs
/// learned from the overlay plus static entries, without the VTEP's own address and
/// without the VXLAN driver's remote list.
pub async fn fdb_count(h: &rtnetlink::Handle, vtep_index: u32) -> Result<u64, NlError> {
    let mut s = h
        .neighbours()
        .get()
        .set_address_family(AddressFamily::Bridge)
        .execute();
    let mut n = 0u64;
    while let Some(m) = s
        .try_next()
        .await
        .map_err(|e| nl_err("dump bridge fdb", e))?
    {
        if is_bridge_fdb_entry_on(&m, vtep_index) {
            n += 1;
        }
    }
    Ok(n)
}

/// Gather a [`KernelSample`] for a node with a VTEP: link state of `vtep`, its FDB size and
/// the IGMP membership of `underlay` in `group`. `converged` is left for the caller. A
/// field the kernel could not answer stays `None` (a missing VTEP is `vtep_up = false`).
pub async fn kernel_sample(
    h: &rtnetlink::Handle,
    vtep: &str,
    underlay: &str,
    group: Option<Ipv4Addr>,
) -> KernelSample {
    let mut k = KernelSample {
        group,
        underlay: Some(underlay.to_string()),
        ..KernelSample::default()
    };
    let mut s = h.link().get().match_name(vtep.to_string()).execute();
    match s.try_next().await {
        Ok(Some(m)) => {
            let f = m.header.flags;
            k.vtep_up = Some(f.contains(LinkFlags::Up) && f.contains(LinkFlags::Running));
            k.fdb_entries = fdb_count(h, m.header.index).await.ok();
        }
        Ok(None) => k.vtep_up = Some(false),
        Err(e) => {
            if nl_err("find vtep", e).errno == Some(libc::ENODEV) {
                k.vtep_up = Some(false);
            }
        }
    }
    // thread-self: /proc/net follows the thread group leader's namespace, not this thread's.
    let text = std::fs::read_to_string("/proc/thread-self/net/igmp")
        .or_else(|_| std::fs::read_to_string("/proc/net/igmp"));
    // Unicast flooding joins no group: no IGMP gauges.
    if let (Ok(text), Some(group)) = (text, group) {
        let info = igmp_membership(&text, underlay, group);
        k.igmp_member = Some(info.member);
        k.igmp_querier_version = info.querier_version();
    }
    k
}

const MAX_REQUEST_HEAD: usize = 8 * 1024;
const MAX_CONNECTIONS: usize = 32;
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// Serve `GET /metrics` (and a pointer page at `/`; 404 elsewhere, 405 for methods other
/// than GET/HEAD) on `listener` until the future is dropped; connections still open are
/// aborted with it. `render` produces the body of each scrape.
pub async fn serve<F, Fut>(listener: TcpListener, render: F)
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = String> + Send + 'static,
{
    let render = Arc::new(render);
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    if conns.len() >= MAX_CONNECTIONS {
                        drop(stream);
                        continue;
                    }
                    let render = Arc::clone(&render);
                    conns.spawn(async move {
                        let _ = tokio::time::timeout(
                            CONNECTION_TIMEOUT,
                            handle_connection(stream, render),
                        )
                        .await;
                    });
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!("metrics: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn handle_connection<F, Fut>(mut stream: TcpStream, render: Arc<F>)
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = String> + Send + 'static,
{
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => return,
        }
        let end_of_head =
            buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n");
        if end_of_head || buf.len() > MAX_REQUEST_HEAD {
            break;
        }
    }
    let head = String::from_utf8_lossy(&buf);
    let first = head.lines().next().unwrap_or("");
    let mut parts = first.split_whitespace();
    let (method, target) = (parts.next(), parts.next());
    let (status, ctype, body, extra) = match (method, target) {
        (Some(m), Some(t)) if m == "GET" || m == "HEAD" => {
            let path = t.split(['?', '#']).next().unwrap_or(t);
            match path {
                "/metrics" => ("200 OK", CONTENT_TYPE, render().await, ""),
                "/" => (
                    "200 OK",
                    "text/html; charset=utf-8",
                    "<html><head><title>overlayd</title></head><body>\
                     <p>overlayd exporter: <a href=\"/metrics\">/metrics</a></p></body></html>\n"
                        .to_string(),
                    "",
                ),
                _ => (
                    "404 Not Found",
                    "text/plain; charset=utf-8",
                    "not found; metrics are at /metrics\n".to_string(),
                    "",
                ),
            }
        }
        (Some(_), Some(_)) => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "method not allowed\n".to_string(),
            "Allow: GET, HEAD\r\n",
        ),
        _ => (
            "400 Bad Request",
            "text/plain; charset=utf-8",
            "bad request\n".to_string(),
            "",
        ),
    };
    let head_only = method == Some("HEAD");
    let mut resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    );
    if !head_only {
        resp.push_str(&body);
    }
    if stream.write_all(resp.as_bytes()).await.is_ok() {
        let _ = stream.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Captured from a network namespace (x86_64, Linux 6.x): veth `eth0` with a VXLAN
    /// `ethvxlan0` (group 239.255.0.1 dev eth0) up, default IGMP settings.
    const IGMP_DEFAULT: &str = "Idx\tDevice    : Count Querier\tGroup    Users Timer\tReporter\n\
2\tp0        :     1      V3\n\
\t\t\t\t010000E0     1 0:00000000\t\t0\n\
3\teth0      :     2      V3\n\
\t\t\t\t0100FFEF     1 0:00000000\t\t0\n\
\t\t\t\t010000E0     1 0:00000000\t\t0\n\
4\tethvxlan0 :     1      V3\n\
\t\t\t\t010000E0     1 0:00000000\t\t0\n";

    /// The same namespace after `force_igmp_version=2` on eth0 and a VTEP down/up.
    const IGMP_FORCED_V2: &str = "Idx\tDevice    : Count Querier\tGroup    Users Timer\tReporter\n\
2\tp0        :     1      V3\n\
\t\t\t\t010000E0     1 0:00000000\t\t0\n\
3\teth0      :     2      V2\n\
\t\t\t\t0100FFEF     1 1:00000000\t\t0\n\
\t\t\t\t010000E0     1 0:00000000\t\t0\n\
4\tethvxlan0 :     1      V3\n\
\t\t\t\t010000E0     1 0:00000000\t\t0\n";

    const GROUP: Ipv4Addr = Ipv4Addr::new(239, 255, 0, 1);

    #[cfg(target_endian = "little")]
    #[test]
    fn igmp_default_host_is_v3_member() {
        let i = igmp_membership(IGMP_DEFAULT, "eth0", GROUP);
        assert!(i.member);
        assert_eq!(i.querier.as_deref(), Some("V3"));
        assert_eq!(i.querier_version(), Some(3));
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn igmp_forced_v2_is_seen() {
        let i = igmp_membership(IGMP_FORCED_V2, "eth0", GROUP);
        assert_eq!(
            i,
            IgmpInfo {
                member: true,
                querier: Some("V2".into())
            }
        );
        assert_eq!(i.querier_version(), Some(2));
        // all-hosts is joined everywhere; our group only on the underlay
        let p0 = igmp_membership(IGMP_FORCED_V2, "p0", GROUP);
        assert!(!p0.member);
        assert_eq!(p0.querier_version(), Some(3));
        assert!(igmp_membership(IGMP_FORCED_V2, "p0", Ipv4Addr::new(224, 0, 0, 1)).member);
    }

    #[test]
    fn igmp_absent_device_or_group() {
        let i = igmp_membership(IGMP_DEFAULT, "eth1", GROUP);
        assert_eq!(i, IgmpInfo::default());
        assert_eq!(i.querier_version(), None);
        let other = igmp_membership(IGMP_DEFAULT, "eth0", Ipv4Addr::new(239, 255, 0, 2));
        assert!(!other.member);
        // "eth0" must not match a device merely starting with it
        let long = "Idx\tDevice    : Count Querier\tGroup    Users Timer\tReporter\n\
5\teth0vlan100long:     1      V2\n\
\t\t\t\t0100FFEF     1 0:00000000\t\t0\n";
        assert!(!igmp_membership(long, "eth0", GROUP).member);
        let i = igmp_membership(long, "eth0vlan100long", GROUP);
        assert_eq!(i.querier_version(), Some(2));
        assert_eq!(i.member, cfg!(target_endian = "little"));
        assert_eq!(igmp_membership("", "eth0", GROUP), IgmpInfo::default());
    }

    /// One parsed sample line.
    #[derive(Debug)]
    struct Sample {
        name: String,
        labels: Vec<(String, String)>,
        value: f64,
    }

    fn parse_labels(s: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut chars = s.chars().peekable();
        loop {
            let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=')).collect();
            if key.is_empty() {
                break;
            }
            assert!(
                key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "label name {key:?}"
            );
            assert_eq!(chars.next(), Some('='));
            assert_eq!(
                chars.next(),
                Some('"'),
                "label value must be quoted in {s:?}"
            );
            let mut val = String::new();
            loop {
                match chars.next().expect("unterminated label value") {
                    '\\' => match chars.next().expect("dangling escape") {
                        'n' => val.push('\n'),
                        c @ ('\\' | '"') => val.push(c),
                        c => panic!("bad escape \\{c}"),
                    },
                    '"' => break,
                    c => val.push(c),
                }
            }
            out.push((key, val));
            match chars.next() {
                Some(',') => continue,
                None => break,
                Some(c) => panic!("unexpected {c:?} after label in {s:?}"),
            }
        }
        out
    }

    fn parse_value(v: &str) -> f64 {
        match v {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value {v:?}")),
        }
    }

    /// Parse the exposition strictly; returns (TYPE per family, samples).
    fn parse(text: &str) -> (BTreeMap<String, String>, Vec<Sample>) {
        assert!(text.ends_with("\n# EOF\n"), "OpenMetrics ends with # EOF");
        let text = text.strip_suffix("# EOF\n").unwrap();
        let mut types = BTreeMap::new();
        let mut helps = BTreeMap::new();
        let mut samples = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').expect("HELP text");
                assert!(!help.is_empty());
                assert!(
                    helps.insert(name.to_string(), ()).is_none(),
                    "dup HELP {name}"
                );
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, t) = rest.split_once(' ').expect("TYPE kind");
                assert!(["counter", "gauge", "histogram"].contains(&t), "{line}");
                assert!(helps.contains_key(name), "TYPE before HELP for {name}");
                assert!(types.insert(name.to_string(), t.to_string()).is_none());
            } else {
                assert!(!line.starts_with('#'), "stray comment {line}");
                let (series, value) = line.rsplit_once(' ').expect("value");
                let (name, labels) = match series.split_once('{') {
                    Some((n, l)) => (n, parse_labels(l.strip_suffix('}').expect("}"))),
                    None => (series, vec![]),
                };
                assert!(
                    name.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
                    "metric name {name:?}"
                );
                samples.push(Sample {
                    name: name.to_string(),
                    labels,
                    value: parse_value(value),
                });
            }
        }
        for s in &samples {
            let fam = [
                ("_bucket", "histogram"),
                ("_sum", "histogram"),
                ("_count", "histogram"),
                ("_total", "counter"),
            ]
            .iter()
            .find_map(|(suf, kind)| {
                s.name
                    .strip_suffix(suf)
                    .filter(|b| types.get(*b).map(String::as_str) == Some(*kind))
            })
            .unwrap_or(&s.name);
            assert!(types.contains_key(fam), "sample {} without TYPE", s.name);
            if types[fam] == "counter" {
                assert!(s.name.ends_with("_total"), "{}", s.name);
            }
        }
        (types, samples)
    }

    fn find<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
        samples.iter().find(|s| {
            s.name == name
                && s.labels.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(a, b)| a == k && b == v))
        })
    }

    fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
        find(samples, name, labels)
            .unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
            .value
    }

    #[test]
    fn render_parses_back_with_everything() {
        let m = Metrics::new("router");
        m.reconcile_done(Duration::from_micros(50), true);
        m.reconcile_done(Duration::from_micros(300), true);
        m.reconcile_done(Duration::from_millis(30), false);
        m.reconcile_done(Duration::from_secs(60), true);
        m.repair("create_vtep");
        m.repair("mtu");
        m.repair("mtu");
        m.netlink_error();
        m.event(false);
        m.event(true);
        m.set_paused(true);
        let k = KernelSample {
            vtep_up: Some(true),
            group: Some(GROUP),
            underlay: Some("eth0".into()),
            igmp_member: Some(true),
            igmp_querier_version: Some(2),
            fdb_entries: Some(7),
            converged: Some(false),
        };
        let text = m.render(&k);
        let (types, s) = parse(&text);

        let version = env!("CARGO_PKG_VERSION");
        assert_eq!(
            value(
                &s,
                "overlayd_build_info",
                &[("version", version), ("role", "router")]
            ),
            1.0
        );
        assert_eq!(types["overlayd_reconcile_duration_seconds"], "histogram");
        assert_eq!(
            value(&s, "overlayd_reconcile_total", &[("result", "ok")]),
            3.0
        );
        assert_eq!(
            value(&s, "overlayd_reconcile_total", &[("result", "error")]),
            1.0
        );
        assert_eq!(value(&s, "overlayd_repairs_total", &[("kind", "mtu")]), 2.0);
        assert_eq!(
            value(&s, "overlayd_repairs_total", &[("kind", "create_vtep")]),
            1.0
        );
        assert_eq!(value(&s, "overlayd_netlink_errors_total", &[]), 1.0);
        assert_eq!(value(&s, "overlayd_netlink_events_total", &[]), 2.0);
        assert_eq!(value(&s, "overlayd_netlink_overruns_total", &[]), 1.0);
        assert_eq!(value(&s, "overlayd_paused", &[]), 1.0);
        assert_eq!(value(&s, "overlayd_vtep_up", &[]), 1.0);
        assert_eq!(
            value(
                &s,
                "overlayd_igmp_group_member",
                &[("group", "239.255.0.1"), ("underlay", "eth0")]
            ),
            1.0
        );
        assert_eq!(
            value(&s, "overlayd_igmp_querier_version", &[("underlay", "eth0")]),
            2.0
        );
        assert_eq!(value(&s, "overlayd_fdb_entries", &[]), 7.0);
        assert_eq!(value(&s, "overlayd_converged", &[]), 0.0);
        assert_eq!(value(&s, "overlayd_last_reconcile_success", &[]), 1.0);
        assert!(value(&s, "overlayd_last_reconcile_timestamp_seconds", &[]) > 1.6e9);
        assert!(value(&s, "process_start_time_seconds", &[]) > 1.6e9);

        // histogram: buckets in order, cumulative, +Inf == count, sum adds up
        let buckets: Vec<(f64, f64)> = s
            .iter()
            .filter(|x| x.name == "overlayd_reconcile_duration_seconds_bucket")
            .map(|x| {
                assert_eq!(x.labels.len(), 1);
                assert_eq!(x.labels[0].0, "le");
                (parse_value(&x.labels[0].1), x.value)
            })
            .collect();
        assert_eq!(buckets.len(), DURATION_BUCKETS.len() + 1);
        for w in buckets.windows(2) {
            assert!(w[0].0 < w[1].0, "bounds ascending");
            assert!(w[0].1 <= w[1].1, "cumulative");
        }
        assert_eq!(buckets[0], (0.0001, 1.0));
        assert_eq!(buckets[1], (0.00025, 1.0));
        assert_eq!(buckets[2], (0.0005, 2.0));
        assert_eq!(
            find(
                &s,
                "overlayd_reconcile_duration_seconds_bucket",
                &[("le", "0.025")]
            )
            .unwrap()
            .value,
            2.0
        );
        assert_eq!(
            find(
                &s,
                "overlayd_reconcile_duration_seconds_bucket",
                &[("le", "0.05")]
            )
            .unwrap()
            .value,
            3.0
        );
        assert_eq!(
            find(
                &s,
                "overlayd_reconcile_duration_seconds_bucket",
                &[("le", "10.0")]
            )
            .unwrap()
            .value,
            3.0
        );
        let inf = buckets.last().unwrap();
        assert_eq!(inf.0, f64::INFINITY);
        let count = value(&s, "overlayd_reconcile_duration_seconds_count", &[]);
        assert_eq!(inf.1, count);
        assert_eq!(count, 4.0);
        let sum = value(&s, "overlayd_reconcile_duration_seconds_sum", &[]);
        assert!((sum - 60.03035).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn render_standalone_omits_kernel_metrics() {
        let m = Metrics::new("standalone");
        let text = m.render(&KernelSample::default());
        let (types, s) = parse(&text);
        for absent in [
            "overlayd_vtep_up",
            "overlayd_igmp_group_member",
            "overlayd_igmp_querier_version",
            "overlayd_fdb_entries",
            "overlayd_converged",
            "overlayd_last_reconcile_success",
        ] {
            assert!(!text.contains(absent), "{absent} should be absent");
        }
        // an empty family is left out (OpenMetrics); the first repair brings it
        assert!(!types.contains_key("overlayd_repairs"));
        m.repair("mtu");
        assert!(parse(&m.render(&KernelSample::default()))
            .0
            .contains_key("overlayd_repairs"));
        assert_eq!(value(&s, "overlayd_paused", &[]), 0.0);
        assert_eq!(
            value(&s, "overlayd_reconcile_duration_seconds_count", &[]),
            0.0
        );
        assert_eq!(
            value(
                &s,
                "overlayd_reconcile_duration_seconds_bucket",
                &[("le", "+Inf")]
            ),
            0.0
        );
        m.set_paused(true);
        m.set_paused(false);
        assert!(m
            .render(&KernelSample::default())
            .contains("\noverlayd_paused 0\n"));
    }

    #[test]
    fn evpn_gauges_appear_once_frr_was_read() {
        let m = Metrics::new("host");
        let k = KernelSample::default();
        assert!(!m.render(&k).contains("overlayd_evpn"));
        m.evpn(&crate::evpn::EvpnStatus {
            sessions_up: 2,
            sessions: 2,
            vnis: 1,
            remote_vteps: 121,
            local_macs: 3,
            remote_macs: 240,
            frr_restarts: 1,
            svi_readvertised: 1,
            reflector_resets: 2,
            ..Default::default()
        });
        let out = m.render(&k);
        for want in [
            "overlayd_evpn_sessions_up 2",
            "overlayd_evpn_sessions 2",
            "overlayd_evpn_vnis 1",
            "overlayd_evpn_remote_vteps 121",
            "overlayd_evpn_remote_macs 240",
            "overlayd_evpn_local_macs 3",
            "overlayd_evpn_frr_restarts 1",
            "overlayd_evpn_svi_readvertised 1",
            "overlayd_evpn_reflector_resets 2",
        ] {
            assert!(out.contains(want), "{want} missing:\n{out}");
        }
        assert!(out.ends_with("# EOF\n"), "one exposition: {out}");
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::new("r\"o\\le\nx");
        m.repair("we\"ird");
        let (_, s) = parse(&m.render(&KernelSample::default()));
        assert!(find(
            &s,
            "overlayd_build_info",
            &[
                ("version", env!("CARGO_PKG_VERSION")),
                ("role", "r\"o\\le\nx")
            ]
        )
        .is_some());
        assert_eq!(
            value(&s, "overlayd_repairs_total", &[("kind", "we\"ird")]),
            1.0
        );
    }

    #[test]
    fn bucket_boundaries_are_inclusive() {
        let m = Metrics::new("host");
        m.reconcile_done(Duration::from_millis(1), true);
        let (_, s) = parse(&m.render(&KernelSample::default()));
        assert_eq!(
            value(
                &s,
                "overlayd_reconcile_duration_seconds_bucket",
                &[("le", "0.0005")]
            ),
            0.0
        );
        assert_eq!(
            value(
                &s,
                "overlayd_reconcile_duration_seconds_bucket",
                &[("le", "0.001")]
            ),
            1.0
        );
    }

    fn http(addr: std::net::SocketAddr, request: &str) -> String {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        out
    }

    fn split_response(resp: &str) -> (&str, &str, &str) {
        let (head, body) = resp.split_once("\r\n\r\n").expect("head/body separator");
        let status = head.lines().next().unwrap();
        (status, head, body)
    }

    #[test]
    fn http_round_trip() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = Arc::new(Metrics::new("host"));
        metrics.repair("mtu");
        let m2 = Arc::clone(&metrics);
        let server = serve(listener, move || {
            let m = Arc::clone(&m2);
            async move {
                m.render(&KernelSample {
                    converged: Some(true),
                    ..KernelSample::default()
                })
            }
        });
        let client = std::thread::spawn(move || {
            let get = |path: &str| {
                http(
                    addr,
                    &format!("GET {path} HTTP/1.1\r\nHost: x\r\nUser-Agent: t\r\n\r\n"),
                )
            };
            let mut out = vec![
                get("/metrics"),
                get("/metrics?name[]=x"),
                get("/"),
                get("/nope"),
            ];
            out.push(http(
                addr,
                "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            ));
            out.push(http(addr, "HEAD /metrics HTTP/1.0\r\n\r\n"));
            out.push(http(addr, "\r\n\r\n"));
            out.push(http(addr, "GET /metrics HTTP/1.0\n\n"));
            out
        });
        let responses = rt.block_on(async move {
            tokio::select! {
                _ = server => unreachable!("serve returned"),
                r = tokio::task::spawn_blocking(move || client.join().unwrap()) => r.unwrap(),
            }
        });

        let (status, head, body) = split_response(&responses[0]);
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(
            head.contains(&format!("Content-Type: {CONTENT_TYPE}")),
            "{head}"
        );
        assert!(
            head.contains(&format!("Content-Length: {}", body.len())),
            "{head}"
        );
        let (_, s) = parse(body);
        assert_eq!(value(&s, "overlayd_converged", &[]), 1.0);
        assert_eq!(value(&s, "overlayd_repairs_total", &[("kind", "mtu")]), 1.0);

        assert_eq!(split_response(&responses[1]).0, "HTTP/1.1 200 OK");
        let (status, _, body) = split_response(&responses[2]);
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(body.contains("href=\"/metrics\""));
        assert_eq!(split_response(&responses[3]).0, "HTTP/1.1 404 Not Found");
        let (status, head, _) = split_response(&responses[4]);
        assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
        assert!(head.contains("Allow: GET, HEAD"));
        let (status, head, body) = split_response(&responses[5]);
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(body.is_empty());
        assert!(
            !head.contains("Content-Length: 0"),
            "HEAD reports the GET length"
        );
        assert_eq!(split_response(&responses[6]).0, "HTTP/1.1 400 Bad Request");
        // bare-LF request heads are answered too, not left to time out
        assert_eq!(split_response(&responses[7]).0, "HTTP/1.1 200 OK");
    }

    /// A network namespace for the test (the shared fixture), deleted on drop.
    struct Netns(overlay_testkit::NsGuard);

    impl Netns {
        fn new(tag: &str) -> Netns {
            let name = overlay_testkit::unique_name(&format!("omet{tag}"));
            Netns(overlay_testkit::NsGuard::with_ipv6(&[&name], true))
        }
        fn name(&self) -> &str {
            &self.0.names[0]
        }
        fn ip(&self, args: &str) {
            overlay_testkit::ip(self.name(), args);
        }
        fn exec(&self, cmd: &str) {
            let mut a = vec!["ip", "netns", "exec", self.name()];
            a.extend(cmd.split_whitespace());
            overlay_testkit::sh(&a);
        }
    }

    /// Root + iproute2 available? The one gate: under CI=true a missing prerequisite fails.
    fn privileged(test: &str) -> bool {
        overlay_testkit::gate(test, &["ip", "bridge"], || Ok(()))
    }

    /// Run `f` on a fresh thread that has entered namespace `ns`, inside its own
    /// current-thread runtime: the netlink socket must be opened after setns().
    fn in_netns<T: Send + 'static>(
        ns: &str,
        f: impl FnOnce(rtnetlink::Handle) -> std::pin::Pin<Box<dyn std::future::Future<Output = T>>>
            + Send
            + 'static,
    ) -> T {
        let ns = ns.to_string();
        std::thread::spawn(move || {
            overlay_testkit::enter_netns(&ns).expect("enter netns");
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let h = crate::netlink::connect().expect("netlink socket");
                f(h).await
            })
        })
        .join()
        .expect("netns thread panicked")
    }

    #[test]
    fn fdb_count_in_netns() {
        if !privileged("fdb_count_in_netns") {
            return;
        }
        let ns = Netns::new("f");
        ns.ip("link add br0 type bridge");
        ns.ip("link add eth0 type veth peer name p0");
        ns.ip("addr add 192.0.2.1/24 dev eth0");
        ns.ip("link set eth0 up");
        ns.ip("link add vx0 type vxlan id 42 dstport 4789 local 192.0.2.1 dev eth0 nolearning");
        ns.ip("link set vx0 master br0");
        ns.ip("link add vx1 type vxlan id 43 dstport 4790 local 192.0.2.1 dev eth0");
        ns.ip("link set vx1 master br0");
        for l in ["br0", "vx0", "vx1"] {
            ns.ip(&format!("link set {l} up"));
        }
        for i in 1..=3 {
            ns.exec(&format!(
                "bridge fdb add 02:00:00:00:00:0{i} dev vx0 master static"
            ));
        }
        ns.exec("bridge fdb add 02:00:00:00:01:01 dev vx1 master static");
        // the VXLAN driver's own table ("self"): not a bridge entry
        ns.exec("bridge fdb append 00:00:00:00:00:00 dev vx0 dst 192.0.2.9 self permanent");
        ns.exec("bridge fdb add 02:00:00:00:02:02 dev vx0 dst 192.0.2.10 self permanent");

        let (n0, n1, missing) = in_netns(ns.name(), |h| {
            Box::pin(async move {
                let i0 = crate::netlink::link_index(&h, "vx0").await.unwrap();
                let i1 = crate::netlink::link_index(&h, "vx1").await.unwrap();
                (
                    fdb_count(&h, i0).await.unwrap(),
                    fdb_count(&h, i1).await.unwrap(),
                    fdb_count(&h, 999_999).await.unwrap(),
                )
            })
        });
        assert_eq!((n0, n1, missing), (3, 1, 0));

        ns.exec("bridge fdb del 02:00:00:00:00:02 dev vx0 master");
        let n0 = in_netns(ns.name(), |h| {
            Box::pin(async move {
                let i0 = crate::netlink::link_index(&h, "vx0").await.unwrap();
                fdb_count(&h, i0).await.unwrap()
            })
        });
        assert_eq!(n0, 2);
    }

    #[test]
    fn kernel_sample_in_netns() {
        if !privileged("kernel_sample_in_netns") {
            return;
        }
        let ns = Netns::new("k");
        ns.ip("link add eth0 type veth peer name p0");
        ns.ip("addr add 198.51.100.1/24 dev eth0");
        ns.ip("link set eth0 up");
        ns.ip("link set p0 up");
        ns.exec("sysctl -qw net.ipv4.conf.eth0.force_igmp_version=2");
        ns.ip("link add br0 type bridge");
        ns.ip("link add ethvxlan0 type vxlan id 7 dstport 4789 group 239.255.0.1 dev eth0");
        ns.ip("link set ethvxlan0 master br0");
        ns.ip("link set br0 up");
        let before = in_netns(ns.name(), |h| {
            Box::pin(async move { kernel_sample(&h, "ethvxlan0", "eth0", Some(GROUP)).await })
        });
        assert_eq!(before.vtep_up, Some(false));
        assert_eq!(before.igmp_member, Some(false));
        assert_eq!(before.fdb_entries, Some(0));

        ns.ip("link set ethvxlan0 up");
        ns.exec("bridge fdb add 02:00:00:00:00:01 dev ethvxlan0 master static");
        let k = in_netns(ns.name(), |h| {
            Box::pin(async move { kernel_sample(&h, "ethvxlan0", "eth0", Some(GROUP)).await })
        });
        assert_eq!(k.vtep_up, Some(true));
        assert_eq!(k.igmp_member, Some(true));
        assert_eq!(k.igmp_querier_version, Some(2));
        assert_eq!(k.fdb_entries, Some(1));
        assert_eq!(k.group, Some(GROUP));
        assert_eq!(k.underlay.as_deref(), Some("eth0"));

        let gone = in_netns(ns.name(), |h| {
            Box::pin(async move { kernel_sample(&h, "nosuchvtep", "eth0", Some(GROUP)).await })
        });
        assert_eq!(gone.vtep_up, Some(false));
        assert_eq!(gone.fdb_entries, None);
    }
}
