//! `overlayd run`: the same spine as `apply`, run whenever the kernel changes.
//!
//! Level-triggered: an event only says "look again"; every reconcile re-reads the kernel.
//! The netlink subscription is made before the first reconcile so nothing between the
//! first dump and the first event is missed. Events are drained and coalesced (our own
//! echoes included) into one reconcile. A netlink overrun (ENOBUFS) forces a full resync;
//! a periodic full resync also covers what sends no events (sysctls, files, nftables).
//! SIGTERM stops reconciling and leaves the network up; only `overlayd down` tears down.

use crate::apply::{self, AgentError};
use crate::config::Config;
use crate::model::Desired;
use crate::netlink;
use crate::plan::Op;
use futures::StreamExt;
use netlink_packet_core::NetlinkPayload;
use overlay_router::nat::NatObserved;
use rtnetlink::{Handle, MulticastGroup};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::signal::unix::{signal, SignalKind};

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Serialize, Default)]
pub struct ReconcileInfo {
    pub at_unix_ms: u128,
    pub duration_us: u128,
    pub full: bool,
    pub trigger: String,
    pub changes: Vec<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub pid: u32,
    pub role: String,
    pub paused: bool,
    pub converged: bool,
    pub reconciles: u64,
    pub repairs: u64,
    /// Netlink overruns (ENOBUFS) seen; each forced a full resync.
    pub overruns: u64,
    pub started_unix_ms: u128,
    pub last: Option<ReconcileInfo>,
    pub last_change: Option<ReconcileInfo>,
    pub desired: Option<Desired>,
    pub pending: Vec<String>,
    /// Unicast flooding's peers (None with multicast flooding).
    pub peers: Option<crate::peers::PeerStatus>,
    /// IGMP queries heard on the underlay (multicast flooding only; see `igmp_queries`).
    pub igmp_queries: Option<crate::igmp_queries::QueryLog>,
    /// Router HA (None without `ha_peer`).
    pub ha: Option<crate::ha::HaStatus>,
    /// flood = evpn: the BGP EVPN speaker as FRR reports it (read every
    /// [`EVPN_READ_EVERY`]).
    pub evpn: Option<crate::evpn::EvpnStatus>,
}

/// How often `overlayd run` asks FRR for its state (three vtysh calls).
pub const EVPN_READ_EVERY: Duration = Duration::from_secs(10);

pub struct Shared {
    pub status: Mutex<Status>,
    pub metrics: crate::metrics::Metrics,
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// systemd notification (sd_notify protocol) without libsystemd.
pub fn sd_notify(msg: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sock = match std::os::unix::net::UnixDatagram::unbound() {
        Ok(s) => s,
        Err(_) => return,
    };
    let p = path.to_string_lossy().to_string();
    let r = if let Some(abs) = p.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(abs.as_bytes())
            .and_then(|a| sock.send_to_addr(msg.as_bytes(), &a))
    } else {
        sock.send_to(msg.as_bytes(), &p)
    };
    if let Err(e) = r {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2))
}

struct Loop {
    cfg: Config,
    h: Handle,
    shared: Arc<Shared>,
    /// NAT state as of the last full resync (nft is not read on event-driven passes).
    nat_known: Option<NatObserved>,
    backoff: Option<(Instant, Duration)>,
    last_error: Option<String>,
    ready_sent: bool,
    /// The last good EC2 peer set (None until discovery first answers).
    peers: Option<std::collections::BTreeSet<std::net::Ipv4Addr>>,
    /// Router HA: whether the VIP was on the bridge at the last reconcile.
    ha_active: Option<bool>,
    /// The underlay's carrier at the last reconcile (None before the first).
    underlay_carrier: Option<bool>,
    /// Router HA: whether keepalived may send gratuitous ARP (probed once).
    garp: Option<Result<(), String>>,
    keepalived: Option<crate::ha::Supervisor>,
    /// While active: the route takeover task's flag (cleared on becoming backup) and report.
    takeover: Option<Takeover>,
    /// flood = evpn: FRR, and when its state was last read (a read in flight: Some(None)).
    frr: Option<crate::evpn::Supervisor>,
    frr_read: Option<Instant>,
    frr_reading: Arc<std::sync::atomic::AtomicBool>,
}

impl Loop {
    /// flood = evpn: FRR running with the current configuration; its state read now and then
    /// (off the loop: vtysh is a child process).
    fn evpn_tick(&mut self) {
        let spec = self
            .shared
            .status
            .lock()
            .unwrap()
            .desired
            .as_ref()
            .and_then(|d| d.evpn.clone());
        let Some(spec) = spec else {
            if let Some(mut f) = self.frr.take() {
                f.stop();
            }
            self.shared.status.lock().unwrap().evpn = None;
            return;
        };
        let f = self.frr.get_or_insert_with(crate::evpn::Supervisor::new);
        let error = f.ensure(&spec).err();
        if let Some(e) = &error {
            tracing::error!(error = %e, "evpn: FRR not running");
        }
        let (restarts, pids) = (f.starts.saturating_sub(1), f.pids());
        {
            let mut s = self.shared.status.lock().unwrap();
            let st = s.evpn.get_or_insert_with(Default::default);
            st.frr_restarts = restarts;
            st.frr_pids = pids;
            if error.is_some() {
                st.error = error.clone();
            }
        }
        let due = self.frr_read.is_none_or(|t| t.elapsed() >= EVPN_READ_EVERY);
        use std::sync::atomic::Ordering::SeqCst;
        if due && error.is_none() && !self.frr_reading.swap(true, SeqCst) {
            self.frr_read = Some(Instant::now());
            let shared = self.shared.clone();
            let flag = self.frr_reading.clone();
            tokio::task::spawn_blocking(move || {
                let mut st = crate::evpn::EvpnStatus::default();
                crate::evpn::read_status(&spec, &mut st);
                let prev = shared.status.lock().unwrap().evpn.clone();
                crate::evpn::repair_svi(&spec, prev.as_ref(), &mut st);
                crate::evpn::repair_reflectors(&spec, prev.as_ref(), &mut st);
                let mut s = shared.status.lock().unwrap();
                if let Some(old) = &s.evpn {
                    st.frr_restarts = old.frr_restarts;
                    st.frr_pids = old.frr_pids.clone();
                }
                shared.metrics.evpn(&st);
                s.evpn = Some(st);
                flag.store(false, SeqCst);
            });
        }
    }

    /// Router HA: keepalived running with the current configuration, and the status.
    async fn ha_tick(&mut self) {
        let spec = self
            .shared
            .status
            .lock()
            .unwrap()
            .desired
            .as_ref()
            .and_then(|d| d.ha.clone());
        let Some(spec) = spec else {
            if let Some(mut k) = self.keepalived.take() {
                k.stop();
            }
            self.shared.status.lock().unwrap().ha = None;
            return;
        };
        let dir = self
            .cfg
            .control_socket
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/run/overlayd"));
        let k = self
            .keepalived
            .get_or_insert_with(|| crate::ha::Supervisor::new(&dir));
        if k.needs_start() {
            // Not master without a running keepalived: a VIP still on the bridge was left by
            // one that was killed (or by a crash of ours): it goes before keepalived starts,
            // so two routers never answer for the gateway.
            let index = netlink::link_index(&self.h, &spec.bridge).await.ok();
            if let Some(i) = index {
                match netlink::del_address(&self.h, i, spec.vip).await {
                    Ok(true) => {
                        tracing::warn!(vip = %spec.vip, "router HA: stale VIP removed before keepalived starts")
                    }
                    Ok(false) => {}
                    Err(e) => tracing::error!(error = %e, "router HA: stale VIP not removed"),
                }
            }
        }
        let error = k.ensure(&spec).err();
        if let Some(e) = &error {
            tracing::error!(error = %e, "router HA: keepalived not running");
        }
        let garp_error = self
            .garp
            .get_or_insert_with(|| {
                let r = crate::ha::probe_packet_socket();
                if let Err(e) = &r {
                    tracing::error!(error = %e, "router HA");
                }
                r
            })
            .clone()
            .err();
        let st = crate::ha::HaStatus {
            vip: Some(spec.vip),
            peer: Some(spec.peer),
            state: match self.ha_active {
                Some(true) => "active",
                Some(false) => "backup",
                None => "unknown",
            }
            .into(),
            keepalived_pid: k.pid(),
            keepalived_restarts: k.starts.saturating_sub(1),
            error,
            garp_error,
            takeover: None,
        };
        let active = self.ha_active == Some(true);
        match (&self.takeover, active) {
            (None, true) => self.takeover = Some(spawn_takeover(&self.cfg)),
            (Some((run, _)), false) => {
                run.store(false, std::sync::atomic::Ordering::Relaxed);
                self.takeover = None;
            }
            _ => {}
        }
        let mut st = st;
        st.takeover = self
            .takeover
            .as_ref()
            .and_then(|(_, r)| r.lock().unwrap().clone());
        let mut s = self.shared.status.lock().unwrap();
        if s.ha.as_ref().map(|h| h.state.as_str()) != Some(st.state.as_str()) {
            tracing::info!(state = %st.state, vip = %spec.vip, "router HA");
        }
        s.ha = Some(st);
    }

    /// Multicast flooding: the group membership announced again (two unsolicited IGMPv2
    /// reports, 200 ms apart) when the underlay has carrier again, and at start — a switch
    /// that dropped this member while its link was down would otherwise leave it out of
    /// the group's traffic until its next query ([`crate::igmp_report`]).
    fn announce_membership(&mut self, d: &Desired, o: &crate::model::Observed) {
        let link = o.link(&d.underlay);
        let carrier = link.map(|l| l.up && l.carrier);
        let group = d.vtep.as_ref().and_then(|t| t.group);
        if let (Some(true), Some(g), Some(l)) = (carrier, group, link) {
            if self.underlay_carrier != Some(true) {
                let (dev, index, back) = (l.name.clone(), l.index, self.underlay_carrier.is_some());
                tracing::info!(group = %g, device = %dev, "{}: IGMPv2 membership announced", if back { "underlay carrier back" } else { "start" });
                std::thread::spawn(move || {
                    for _ in 0..2 {
                        if let Err(e) = crate::igmp_report::send(&dev, index, g) {
                            tracing::warn!(error = %e, "IGMPv2 report not sent");
                        }
                        std::thread::sleep(Duration::from_millis(200));
                    }
                });
            }
        }
        self.underlay_carrier = carrier;
    }

    async fn reconcile(&mut self, full: bool, trigger: &str) {
        let t0 = Instant::now();
        let assume = if full { None } else { self.nat_known.clone() };
        let res = self.reconcile_inner(assume).await;
        let dur = t0.elapsed();
        let ok = res.is_ok();
        self.shared.metrics.reconcile_done(dur, ok);
        let mut info = ReconcileInfo {
            at_unix_ms: now_ms(),
            duration_us: dur.as_micros(),
            full,
            trigger: trigger.to_string(),
            ..Default::default()
        };
        match res {
            Ok((d, done)) => {
                if self.last_error.take().is_some() {
                    tracing::info!("reconcile succeeded again");
                }
                self.backoff = None;
                for op in &done {
                    tracing::info!(change = %op, kind = op.kind(), trigger, "repaired");
                    self.shared.metrics.repair(op.kind());
                }
                info.changes = done.iter().map(|o| o.to_string()).collect();
                let mut st = self.shared.status.lock().unwrap();
                st.reconciles += 1;
                st.repairs += done.len() as u64;
                st.converged = true;
                st.desired = Some(d);
                st.pending.clear();
                if !done.is_empty() {
                    st.last_change = Some(info.clone());
                }
                st.last = Some(info);
                let line = format!(
                    "STATUS=converged; {} reconciles, {} repairs",
                    st.reconciles, st.repairs
                );
                drop(st);
                if !self.ready_sent {
                    self.ready_sent = true;
                    sd_notify(&format!("READY=1\n{line}"));
                    tracing::info!("converged; ready");
                } else if !done.is_empty() {
                    sd_notify(&line);
                }
            }
            Err((done, e)) => {
                let msg = e.to_string();
                if self.last_error.as_deref() != Some(msg.as_str()) {
                    tracing::error!(error = %msg, "reconcile failed; backing off");
                    self.last_error = Some(msg.clone());
                }
                if e.kind() == "netlink" {
                    self.shared.metrics.netlink_error();
                }
                let next = match self.backoff {
                    None => BACKOFF_MIN,
                    Some((_, d)) => (d * 2).min(BACKOFF_MAX),
                };
                self.backoff = Some((Instant::now() + next, next));
                info.changes = done.iter().map(|o| o.to_string()).collect();
                info.error = Some(msg.clone());
                let mut st = self.shared.status.lock().unwrap();
                st.reconciles += 1;
                st.repairs += done.len() as u64;
                st.converged = false;
                st.last = Some(info);
                drop(st);
                sd_notify(&format!("STATUS=not converged: {msg}"));
            }
        }
    }

    async fn reconcile_inner(
        &mut self,
        assume_nat: Option<NatObserved>,
    ) -> Result<(Desired, Vec<Op>), (Vec<Op>, AgentError)> {
        let full = assume_nat.is_none();
        let (d, o, p) = apply::compute_with(&self.h, &self.cfg, assume_nat, self.peers.as_ref())
            .await
            .map_err(|e| (vec![], e))?;
        self.ha_active = d.ha.as_ref().map(|h| crate::ha::is_active(h, &o));
        self.announce_membership(&d, &o);
        if full {
            self.nat_known = o.nat.clone();
        }
        let done = apply::execute(&self.h, &p, &o, &self.cfg.state_dir).await?;
        if done.iter().any(|o| matches!(o, Op::EnsureNat { .. })) {
            self.nat_known = Some(NatObserved::Matches);
        }
        if done.iter().any(|o| matches!(o, Op::RemoveNat)) {
            self.nat_known = Some(NatObserved::Absent);
        }
        Ok((d, done))
    }
}

/// The route takeover task of an active router: its "still active" flag and last report.
type Takeover = (
    Arc<std::sync::atomic::AtomicBool>,
    Arc<Mutex<Option<crate::takeover::TakeoverReport>>>,
);

/// Router HA, active: move the cluster's route tables' overlay route to this router's ENI,
/// retried every 2 s until done, checked again every 30 s while active (a table added later,
/// a peer that took it meanwhile). Ends when `run` is cleared (backup).
fn spawn_takeover(cfg: &Config) -> Takeover {
    use std::sync::atomic::{AtomicBool, Ordering};
    let run = Arc::new(AtomicBool::new(true));
    let report: Arc<Mutex<Option<crate::takeover::TakeoverReport>>> = Default::default();
    let (r, rep) = (run.clone(), report.clone());
    let cluster = cfg.cluster.clone();
    let cidr = cfg.overlay_cidr.to_string();
    let facts = cfg.instance.clone();
    tokio::spawn(async move {
        while r.load(Ordering::Relaxed) {
            let t0 = Instant::now();
            let res = takeover_once(facts.clone(), cluster.clone(), &cidr, &r).await;
            let ok = res.is_ok();
            let mut out = res.unwrap_or_else(|e| crate::takeover::TakeoverReport {
                error: Some(e),
                ..Default::default()
            });
            out.took_ms = t0.elapsed().as_millis();
            if !out.moved.is_empty() {
                tracing::info!(moved = ?out.moved, eni = ?out.eni, ms = out.took_ms, "router HA: VPC routes moved to this router");
            }
            if let Some(e) = &out.error {
                tracing::error!(error = %e, "router HA: route takeover failed; retrying");
            }
            *rep.lock().unwrap() = Some(out);
            tokio::time::sleep(Duration::from_secs(if ok { 30 } else { 2 })).await;
        }
    });
    (run, report)
}

#[cfg(feature = "ec2")]
async fn takeover_once(
    facts: Option<crate::instance::InstanceFacts>,
    cluster: Option<String>,
    cidr: &str,
    still_active: &std::sync::atomic::AtomicBool,
) -> Result<crate::takeover::TakeoverReport, String> {
    use crate::takeover::{ec2, moves, select, TakeoverReport};
    let f = match facts {
        Some(f) => f,
        None => tokio::task::spawn_blocking(crate::instance::fetch)
            .await
            .map_err(|e| e.to_string())??,
    };
    let cluster = cluster
        .or_else(|| f.tags.get("overlay:cluster").cloned())
        .ok_or("router HA needs the cluster (key cluster, or the overlay:cluster tag) to find its route tables")?;
    let c = crate::instance::ec2::client(&f.region).await;
    let eni = ec2::own_eni(&c, &f.vpc_id, f.local_ipv4).await?;
    let tables = select(ec2::tables(&c, &f.vpc_id, &cluster, cidr).await?);
    let todo = moves(&tables, &eni, &f.instance_id);
    let mut rep = TakeoverReport {
        eni: Some(eni.clone()),
        kept: tables
            .iter()
            .filter(|t| !todo.iter().any(|(id, _)| *id == t.table))
            .map(|t| t.table.clone())
            .collect(),
        ..Default::default()
    };
    for (table, from) in todo {
        // a router that lost the VIP while its calls were under way (e.g. its link came back
        // after a cut and the peer is active now) must not pull the routes back
        if !still_active.load(std::sync::atomic::Ordering::Relaxed) {
            return Err("no longer active: routes left to the active router".into());
        }
        ec2::replace(&c, &table, cidr, &eni).await?;
        rep.moved.push(format!("{table}: from {from}"));
    }
    Ok(rep)
}

#[cfg(not(feature = "ec2"))]
async fn takeover_once(
    _facts: Option<crate::instance::InstanceFacts>,
    _cluster: Option<String>,
    _cidr: &str,
    _still_active: &std::sync::atomic::AtomicBool,
) -> Result<crate::takeover::TakeoverReport, String> {
    Err("this overlayd is built without the EC2 API (feature ec2): no route takeover".into())
}

/// With multicast flooding: the IGMP query listener on the underlay (its log is copied into
/// `status` on every request). Started once the underlay is known (the first reconcile that
/// computed the desired state).
fn listen_for_queries(shared: &Shared) -> Option<Arc<Mutex<crate::igmp_queries::QueryLog>>> {
    let underlay = {
        let st = shared.status.lock().unwrap();
        let d = st.desired.as_ref()?;
        d.vtep.as_ref()?.group?;
        d.underlay.clone()
    };
    let log = Arc::new(Mutex::new(crate::igmp_queries::QueryLog {
        device: underlay.clone(),
        ..Default::default()
    }));
    match crate::igmp_queries::spawn(underlay, log.clone(), || {}) {
        Ok(()) => Some(log),
        Err(e) => {
            tracing::warn!(error = %e, "IGMP query listener not started");
            None
        }
    }
}

/// Control socket requests: one line in, one JSON line out.
async fn serve_control(
    stream: UnixStream,
    shared: Arc<Shared>,
    tx: tokio::sync::mpsc::UnboundedSender<Control>,
    queries: Option<Arc<Mutex<crate::igmp_queries::QueryLog>>>,
) {
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    let mut br = BufReader::new(r);
    if br.read_line(&mut line).await.is_err() {
        return;
    }
    let reply = match line.trim() {
        "status" => {
            let mut st = shared.status.lock().unwrap();
            st.igmp_queries = queries.map(|q| q.lock().unwrap().clone());
            serde_json::to_string(&*st).unwrap()
        }
        "pause" => {
            let _ = tx.send(Control::Pause);
            r#"{"ok":true,"paused":true}"#.to_string()
        }
        "resume" => {
            let _ = tx.send(Control::Resume);
            r#"{"ok":true,"paused":false}"#.to_string()
        }
        "reconcile" => {
            let _ = tx.send(Control::Reconcile);
            r#"{"ok":true}"#.to_string()
        }
        other => serde_json::json!({"ok": false, "error": format!("unknown command {other:?}; expected status|pause|resume|reconcile")}).to_string(),
    };
    let _ = w.write_all(reply.as_bytes()).await;
    let _ = w.write_all(b"\n").await;
}

#[derive(Debug)]
enum Control {
    Pause,
    Resume,
    Reconcile,
}

fn bind_control(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // A stale socket from a killed daemon: remove it only if nobody answers.
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!(
                    "another overlayd is running (control socket {} answers)",
                    path.display()
                ),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let old = unsafe { libc::umask(0o077) };
    let l = UnixListener::bind(path);
    unsafe { libc::umask(old) };
    let l = l?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// Send one command to a running daemon.
pub async fn control_request(path: &Path, cmd: &str) -> std::io::Result<serde_json::Value> {
    let mut s = UnixStream::connect(path).await?;
    s.write_all(format!("{cmd}\n").as_bytes()).await?;
    let mut br = BufReader::new(s);
    let mut line = String::new();
    br.read_line(&mut line).await?;
    serde_json::from_str(&line).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

pub struct RunOptions {
    /// Loads the configuration again (SIGHUP). It may wait on IMDS and the EC2 API, so it
    /// runs on a blocking thread, never on the loop.
    pub config_loader:
        Arc<dyn Fn() -> Result<Config, crate::config::ConfigError> + Send + Sync + 'static>,
}

/// Run until SIGTERM/SIGINT. Returns the exit status.
pub async fn run(cfg: Config, opts: RunOptions) -> Result<(), AgentError> {
    // 1. Subscribe before the first dump.
    let (mut conn, _ev_handle, mut events) = rtnetlink::new_multicast_connection(&[
        MulticastGroup::Link,
        MulticastGroup::Ipv4Ifaddr,
        MulticastGroup::Ipv4Route,
        MulticastGroup::Ipv4Rule,
    ])
    .map_err(|e| AgentError::setup("netlink subscribe", e))?;
    {
        use netlink_sys::AsyncSocket;
        // Room for bursts (a CloudStack host starting many VMs); an overrun is still safe
        // (full resync). OVERLAYD_NETLINK_RCVBUF tunes it (bytes, capped by net.core.rmem_max).
        let size = std::env::var("OVERLAYD_NETLINK_RCVBUF")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(4 << 20);
        let _ = conn.socket_mut().socket_mut().set_rx_buf_sz(size);
    }
    tokio::spawn(conn);
    let h = netlink::connect().map_err(|e| AgentError::setup("netlink socket", e))?;

    let shared = Arc::new(Shared {
        status: Mutex::new(Status {
            pid: std::process::id(),
            role: cfg.role.to_string(),
            paused: false,
            converged: false,
            reconciles: 0,
            repairs: 0,
            overruns: 0,
            started_unix_ms: now_ms(),
            last: None,
            last_change: None,
            desired: None,
            pending: vec![],
            peers: peer_status(&cfg),
            igmp_queries: None,
            ha: None,
            evpn: None,
        }),
        metrics: crate::metrics::Metrics::new(cfg.role.as_str()),
    });
    let mut queries = None;

    let ctl_path: PathBuf = cfg.control_socket.clone();
    let listener = bind_control(&ctl_path)
        .map_err(|e| AgentError::setup(format!("control socket {}", ctl_path.display()), e))?;
    let (ctl_tx, mut ctl_rx) = tokio::sync::mpsc::unbounded_channel::<Control>();

    let metrics_task = if cfg.metrics_address != "off" {
        // A literal IP:PORT (validated): no resolver involved, so a static build needs no NSS.
        let addr: std::net::SocketAddr = cfg.metrics_address.parse().map_err(|e| {
            AgentError::setup(format!("metrics address {}", cfg.metrics_address), e)
        })?;
        let l = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            AgentError::setup(format!("metrics listener {}", cfg.metrics_address), e)
        })?;
        let sh = shared.clone();
        let hh = h.clone();
        let vtep = cfg.role.has_vtep().then(|| cfg.vtep.clone());
        let group = cfg.group;
        Some(tokio::spawn(crate::metrics::serve(l, move || {
            let sh = sh.clone();
            let hh = hh.clone();
            let vtep = vtep.clone();
            async move { render_metrics(&sh, &hh, vtep.as_deref(), group).await }
        })))
    } else {
        None
    };

    let mut term =
        signal(SignalKind::terminate()).map_err(|e| AgentError::setup("signal handler", e))?;
    let mut int =
        signal(SignalKind::interrupt()).map_err(|e| AgentError::setup("signal handler", e))?;
    let mut usr1 =
        signal(SignalKind::user_defined1()).map_err(|e| AgentError::setup("signal handler", e))?;
    let mut usr2 =
        signal(SignalKind::user_defined2()).map_err(|e| AgentError::setup("signal handler", e))?;
    let mut hup =
        signal(SignalKind::hangup()).map_err(|e| AgentError::setup("signal handler", e))?;

    let mut resync = tokio::time::interval(Duration::from_secs(cfg.resync_interval_secs));
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    resync.tick().await; // first tick is immediate; the initial reconcile below covers it
    let wd = watchdog_interval();
    let mut wd_tick = tokio::time::interval(wd.unwrap_or(Duration::from_secs(3600)));

    let mut lp = Loop {
        cfg,
        h,
        shared: shared.clone(),
        nat_known: None,
        backoff: None,
        last_error: None,
        ready_sent: false,
        peers: None,
        ha_active: None,
        underlay_carrier: None,
        garp: None,
        keepalived: None,
        takeover: None,
        frr: None,
        frr_read: None,
        frr_reading: Arc::new(std::sync::atomic::AtomicBool::new(false)),
    };
    let (peer_tx, mut peer_rx) = tokio::sync::mpsc::unbounded_channel::<crate::peers::Report>();
    let kick = Arc::new(tokio::sync::Notify::new());
    // Reports of a task replaced by a reload carry an older generation and are dropped.
    let mut generation = 0u64;
    let mut discovery = crate::peers::uses_ec2(&lp.cfg)
        .then(|| crate::peers::spawn(&lp.cfg, generation, peer_tx.clone(), kick.clone()));
    let (reload_tx, mut reload_rx) =
        tokio::sync::mpsc::unbounded_channel::<Result<Config, crate::config::ConfigError>>();
    let mut reloading = false;
    tracing::info!(role = %lp.cfg.role, bridge = %lp.cfg.bridge, "overlayd run: starting");
    lp.reconcile(true, "start").await;
    lp.ha_tick().await;
    lp.evpn_tick();
    let mut ha_timer = tokio::time::interval(Duration::from_secs(1));
    ha_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut queries_tried = false;

    let mut paused = false;
    loop {
        if !queries_tried && lp.shared.status.lock().unwrap().desired.is_some() {
            queries_tried = true;
            queries = listen_for_queries(&lp.shared);
        }
        let backoff_at = lp.backoff.map(|(t, _)| tokio::time::Instant::from_std(t));
        let mut dirty: Option<(bool, &'static str)> = None;
        tokio::select! {
            ev = events.next() => {
                let Some((msg, _)) = ev else {
                    return Err(AgentError::setup("netlink events", "event stream closed"));
                };
                let mut overrun = matches!(msg.payload, NetlinkPayload::Overrun(_));
                lp.shared.metrics.event(overrun);
                // Coalesce everything already queued (bursts, our own echoes) into one
                // reconcile. No added delay: repair latency is the point.
                while let Ok((m, _)) = events.try_recv() {
                    let o = matches!(m.payload, NetlinkPayload::Overrun(_));
                    lp.shared.metrics.event(o);
                    overrun |= o;
                }
                if overrun {
                    tracing::warn!("netlink overrun: events were lost; full resync");
                    lp.shared.status.lock().unwrap().overruns += 1;
                }
                dirty = Some((overrun, if overrun { "overrun" } else { "event" }));
            }
            _ = resync.tick() => { dirty = Some((true, "resync")); }
            _ = ha_timer.tick() => { lp.ha_tick().await; lp.evpn_tick(); }
            _ = async { match backoff_at { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => {
                lp.backoff = lp.backoff.map(|(_, d)| (Instant::now(), d));
                dirty = Some((true, "retry"));
            }
            _ = wd_tick.tick(), if wd.is_some() => { sd_notify("WATCHDOG=1"); }
            c = listener.accept() => {
                if let Ok((s, _)) = c {
                    tokio::spawn(serve_control(s, shared.clone(), ctl_tx.clone(), queries.clone()));
                }
            }
            Some(c) = ctl_rx.recv() => match c {
                Control::Pause => { paused = set_paused(&lp, true); }
                Control::Resume => { paused = set_paused(&lp, false); dirty = Some((true, "resume")); }
                Control::Reconcile => { dirty = Some((true, "request")); }
            },
            _ = usr1.recv() => { paused = set_paused(&lp, true); }
            _ = usr2.recv() => { paused = set_paused(&lp, false); dirty = Some((true, "resume")); }
            Some(r) = peer_rx.recv() => {
                if r.generation == generation && lp.peer_report(r) {
                    dirty = Some((false, "peers"));
                }
            }
            _ = hup.recv() => {
                if !reloading {
                    reloading = true;
                    let load = opts.config_loader.clone();
                    let tx = reload_tx.clone();
                    tokio::task::spawn_blocking(move || {
                        let _ = tx.send(load());
                    });
                }
            }
            Some(r) = reload_rx.recv() => {
                reloading = false;
                match r {
                    Ok(c) => {
                        tracing::info!("configuration reloaded");
                        let same_peers = c.peer_discovery == lp.cfg.peer_discovery
                            && c.flood == lp.cfg.flood
                            && c.cluster == lp.cfg.cluster
                            && c.peer_interval_secs == lp.cfg.peer_interval_secs;
                        lp.cfg = c;
                        lp.backoff = None;
                        if same_peers && discovery.is_some() {
                            kick.notify_one();
                        } else {
                            if let Some(t) = discovery.take() {
                                t.abort();
                            }
                            // Another cluster or source: the old set is not this one's
                            // "last good" set. Until the new task answers, the flood list
                            // is left as it is (unknown peers never flush).
                            generation += 1;
                            lp.peers = None;
                            lp.shared.status.lock().unwrap().peers = peer_status(&lp.cfg);
                            discovery = crate::peers::uses_ec2(&lp.cfg).then(|| {
                                crate::peers::spawn(&lp.cfg, generation, peer_tx.clone(), kick.clone())
                            });
                        }
                        dirty = Some((true, "reload"));
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "reload refused; keeping the running configuration");
                        kick.notify_one();
                    }
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
        if let Some((full, trigger)) = dirty {
            let in_backoff = lp.backoff.is_some_and(|(t, _)| Instant::now() < t);
            if !paused && !in_backoff {
                lp.reconcile(full, trigger).await;
                lp.ha_tick().await;
                lp.evpn_tick();
            }
        }
    }
    if let Some(mut f) = lp.frr.take() {
        // spawned FRR stops with overlayd: its peers withdraw this node's routes at once
        f.stop();
    }
    tracing::info!("stopping; the overlay stays up (use `overlayd down` to remove it)");
    sd_notify("STOPPING=1");
    if let Some(t) = metrics_task {
        t.abort();
    }
    if let Some(t) = discovery {
        t.abort();
    }
    let _ = std::fs::remove_file(&ctl_path);
    Ok(())
}

fn peer_status(cfg: &Config) -> Option<crate::peers::PeerStatus> {
    let d = cfg.peer_discovery?;
    Some(crate::peers::PeerStatus {
        discovery: match d {
            crate::config::PeerDiscovery::Static => "static".into(),
            crate::config::PeerDiscovery::Ec2 => "ec2".into(),
        },
        count: (d == crate::config::PeerDiscovery::Static).then_some(cfg.peers.len()),
        ..Default::default()
    })
}

impl Loop {
    /// Take a discovery answer; true when the peer set in force changed. A failure keeps
    /// the last good set (never a flush) and is reported in status, log and metrics.
    fn peer_report(&mut self, r: crate::peers::Report) -> bool {
        let mut st = self.shared.status.lock().unwrap();
        let ps = st.peers.get_or_insert_with(Default::default);
        ps.refreshes += 1;
        match r.result {
            Ok(set) => {
                if ps.last_error.take().is_some() {
                    tracing::info!(peers = set.len(), "peer discovery answers again");
                }
                ps.count = Some(set.len());
                ps.last_ok_unix_ms = Some(now_ms());
                self.shared
                    .metrics
                    .peer_discovery(true, Some(set.len()), r.took);
                let changed = self.peers.as_ref() != Some(&set);
                if changed {
                    tracing::info!(
                        peers = set.len(),
                        took_ms = r.took.as_millis() as u64,
                        "peer set changed"
                    );
                    self.peers = Some(set);
                }
                changed
            }
            Err(e) => {
                ps.failures += 1;
                if ps.last_error.as_deref() != Some(e.as_str()) {
                    tracing::warn!(error = %e, kept = ?ps.count, "peer discovery failed; keeping the last good peer set");
                }
                ps.last_error = Some(e);
                self.shared.metrics.peer_discovery(false, None, r.took);
                false
            }
        }
    }
}

fn set_paused(lp: &Loop, p: bool) -> bool {
    let mut st = lp.shared.status.lock().unwrap();
    if st.paused != p {
        tracing::warn!(
            paused = p,
            "{}",
            if p {
                "paused: manual changes will not be repaired until resume"
            } else {
                "resumed"
            }
        );
    }
    st.paused = p;
    drop(st);
    lp.shared.metrics.set_paused(p);
    sd_notify(if p {
        "STATUS=paused by operator"
    } else {
        "STATUS=resumed"
    });
    p
}

async fn render_metrics(
    sh: &Shared,
    h: &Handle,
    vtep: Option<&str>,
    group: Option<std::net::Ipv4Addr>,
) -> String {
    let (converged, underlay) = {
        let st = sh.status.lock().unwrap();
        (
            st.converged,
            st.desired.as_ref().map(|d| d.underlay.clone()),
        )
    };
    // One path for the kernel sample, the tested one (metrics::kernel_sample).
    let mut k = match (vtep, &underlay) {
        (Some(v), Some(u)) => crate::metrics::kernel_sample(h, v, u, group).await,
        _ => crate::metrics::KernelSample {
            group,
            underlay: underlay.clone(),
            ..Default::default()
        },
    };
    k.converged = Some(converged);
    sh.metrics.render(&k)
}
