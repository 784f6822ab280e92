//! `overlay-lab bench`: the benchmarks of BENCHMARKS.md, side by side in one run.
//!
//! 1. converge: cold converge of one node, `overlayd apply` vs the seed article's iproute2
//!    recipe (one process per step) vs the same as `ip -batch`
//! 2. repair: VTEP deleted -> recreated, enslaved, up (netlink events) and traffic passing
//!    again (1 ms ICMP stream), with `overlayd run` repairing
//! 3. throughput: iperf3 over the overlayd overlay vs the underlay vs a hand-made overlay
//! 4. scale: `overlay-lab up --hosts N --daemon`, time to full reachability, daemon RSS
//! 5. fdb: unicast flood list, 1,000 peers programmed from empty in one netlink batch and a
//!    one-peer change on a 1,000-peer FDB (overlayd's library code, and `overlayd apply`)
//! 6. failover (only with `--only failover`): router HA in a two-AZ lab with moto, the
//!    active router failed N times per mode; outages, overlay-internal loss, a TCP flow
//! 7. evpn (only with `--only evpn`): BGP EVPN through FRR, 120 hosts and the router pair as
//!    reflectors: FDB from BGP, unknown-unicast copies, joins, leaves, reflector failure,
//!    memory, cold converge of 250 hosts
//!
//! Every namespace it creates is named `<prefix><c|r|t|s|f>-...`; all of them (and the daemons
//! and child processes it started) are removed at the end, on errors and on SIGINT/SIGTERM.

use crate::daemons as bench_daemon;
use crate::lab::{self, UsageError};
use crate::nl::{self, Nl};
use crate::node_cmd;
use crate::sys;
use nl_raw::{NlSock, RTMGRP_LINK};
use stream::Stream;

mod converge;
mod evpn;
mod failover;
mod fdb;
mod nl_raw;
mod repair;
mod scale;
mod stream;
mod throughput;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use converge::converge;
use evpn::evpn;
use failover::failover;
use fdb::fdb;
use repair::repair;
use scale::scale;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use throughput::throughput;

const GROUP: &str = "239.255.0.1";
const UNDERLAY_MTU: u32 = 9001;
const ALL: [&str; 7] = [
    "converge",
    "repair",
    "throughput",
    "scale",
    "fdb",
    "failover",
    "evpn",
];

#[derive(Args)]
pub struct BenchArgs {
    /// Benchmarks to run, comma-separated: converge, repair, throughput, scale, fdb,
    /// failover (router HA; not in the default set: it needs keepalived, iperf3 and moto, and
    /// takes ~13 s per failover), evpn (BGP EVPN; not in the default set: it needs FRR and
    /// keepalived, and ~10 GB of memory for 250 hosts).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "converge,repair,throughput,scale,fdb"
    )]
    pub only: Vec<String>,
    /// Drift repairs to time (repair benchmark).
    #[arg(long, default_value_t = 200)]
    pub repairs: usize,
    /// Lab sizes (hosts) for the scale benchmark, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "10,50,100,250")]
    pub scale: Vec<usize>,
    /// Runs per variant of the converge benchmark.
    #[arg(long, default_value_t = 30)]
    pub runs: usize,
    /// Rounds of the fdb benchmark (each: every library and `overlayd apply` measurement).
    #[arg(long, default_value_t = 30)]
    pub fdb_runs: usize,
    /// `up` runs per lab size (scale benchmark).
    #[arg(long, default_value_t = 3)]
    pub scale_repeats: usize,
    /// Seconds per iperf3 run (throughput benchmark).
    #[arg(long, default_value_t = 5)]
    pub iperf_seconds: u32,
    /// iperf3 runs per path (throughput benchmark).
    #[arg(long, default_value_t = 5)]
    pub iperf_repeats: usize,
    /// Failovers per mode (link-cut, kill-9, power-off) of the failover benchmark.
    #[arg(long, default_value_t = 10)]
    pub failovers: usize,
    /// Failure modes of the failover benchmark, comma-separated: link-cut (the router's VPC
    /// link down), kill-9 (every process in it; its kernel still forwards), power-off (both).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "link-cut,kill-9,power-off"
    )]
    pub failover_modes: Vec<String>,
    /// Failover benchmark: milliseconds between moto's route changing and the lab's VPC
    /// router following it (AWS applies a replaced route after a delay of its own).
    #[arg(long, default_value_t = 500, value_name = "MS")]
    pub vpc_route_delay_ms: u64,
    /// Failover benchmark: moto behind the shim (started on a free loopback port).
    #[arg(long, value_name = "PATH", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/aws-emulator"))]
    pub aws_emulator: PathBuf,
    /// evpn benchmark: hosts of the lab (plus the router pair as route reflectors and mgmt).
    #[arg(long, default_value_t = 120)]
    pub evpn_hosts: usize,
    /// evpn benchmark: host joins to time (each: `overlayd down`, then `overlayd run`).
    #[arg(long, default_value_t = 10)]
    pub evpn_joins: usize,
    /// evpn benchmark: hosts powered off (link cut + kill -9) to time the withdrawal.
    #[arg(long, default_value_t = 2)]
    pub evpn_power_offs: usize,
    /// evpn benchmark: lab sizes (hosts) for the cold converge, comma-separated; 0 for none.
    #[arg(long, value_delimiter = ',', default_value = "250")]
    pub evpn_cold: Vec<usize>,
    /// One JSON document on stdout instead of the tables (progress stays on stderr).
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON document (all samples) to this file.
    #[arg(long, value_name = "FILE")]
    pub json_out: Option<PathBuf>,
    /// Namespace prefix; the benchmarks use PREFIX{c,r,t,s,f}-*. [a-z0-9], at most 15 chars.
    #[arg(long, short = 'p', default_value = "obench")]
    pub prefix: String,
    /// overlayd binary (default: `overlayd` next to this executable, else PATH). Use a
    /// release build.
    #[arg(long, env = "OVERLAY_LAB_OVERLAYD")]
    pub overlayd: Option<PathBuf>,
    /// Remove leftovers of an earlier bench with the same prefix first (else refuse).
    #[arg(long)]
    pub replace: bool,
}

// ------------------------------------------------------------------ statistics and tables

/// Nearest-rank percentile of ascending `sorted` (p in 0..=100); NaN when empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub n: usize,
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

pub fn summarize(v: &[f64]) -> Summary {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    Summary {
        n,
        min: s.first().copied().unwrap_or(f64::NAN),
        p50: percentile(&s, 50.0),
        p90: percentile(&s, 90.0),
        p99: percentile(&s, 99.0),
        max: s.last().copied().unwrap_or(f64::NAN),
        mean: if n == 0 {
            f64::NAN
        } else {
            s.iter().sum::<f64>() / n as f64
        },
    }
}

impl Summary {
    fn to_json(self) -> Value {
        json!({"n": self.n, "min": self.min, "p50": self.p50, "p90": self.p90, "p99": self.p99,
               "max": self.max, "mean": self.mean})
    }
}

/// A text table: the first `left` columns left-aligned, the others right-aligned.
#[derive(Default, Clone)]
pub struct Table {
    pub head: Vec<String>,
    pub rows: Vec<Vec<String>>,
    pub left: usize,
}

impl Table {
    pub fn new(head: &[&str]) -> Table {
        Table {
            head: head.iter().map(|s| s.to_string()).collect(),
            rows: vec![],
            left: 1,
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let cols = self
            .rows
            .iter()
            .map(Vec::len)
            .chain([self.head.len()])
            .max()
            .unwrap_or(0);
        let mut w = vec![0usize; cols];
        for r in std::iter::once(&self.head).chain(&self.rows) {
            for (i, c) in r.iter().enumerate() {
                w[i] = w[i].max(c.chars().count());
            }
        }
        let line = |r: &Vec<String>| {
            let mut s = String::from(" ");
            for (i, width) in w.iter().enumerate() {
                let c = r.get(i).map(String::as_str).unwrap_or("");
                if i < self.left {
                    let _ = write!(
                        s,
                        "{} {c:<width$}",
                        if i == 0 { "" } else { " " },
                        width = *width
                    );
                } else {
                    let _ = write!(s, "  {c:>width$}", width = *width);
                }
            }
            s.trim_end().to_string()
        };
        let mut out = line(&self.head);
        out.push('\n');
        let total: usize = w.iter().sum::<usize>() + 2 * cols.saturating_sub(1) + 1;
        out.push_str(&format!("  {}\n", "-".repeat(total.saturating_sub(1))));
        for r in &self.rows {
            out.push_str(&line(r));
            out.push('\n');
        }
        out
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn f2(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.2}")
    } else {
        "-".into()
    }
}

fn f1(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.1}")
    } else {
        "-".into()
    }
}

/// One target and how the result compares.
struct Check {
    target: String,
    result: String,
    pass: bool,
    reason: Option<String>,
}

struct Section {
    key: &'static str,
    title: String,
    tables: Vec<Table>,
    checks: Vec<Check>,
    notes: Vec<String>,
    data: Value,
    error: Option<String>,
}

impl Section {
    fn new(key: &'static str, title: &str) -> Section {
        Section {
            key,
            title: title.into(),
            tables: vec![],
            checks: vec![],
            notes: vec![],
            data: Value::Null,
            error: None,
        }
    }

    fn check(&mut self, target: &str, result: String, pass: bool, reason: Option<String>) {
        self.checks.push(Check {
            target: target.into(),
            result,
            pass,
            reason,
        });
    }

    fn render(&self) -> String {
        let mut s = format!("== {}: {}\n", self.key, self.title);
        for t in &self.tables {
            s.push_str(&t.render());
        }
        if let Some(e) = &self.error {
            let _ = writeln!(s, "  FAILED: {e}");
        }
        for c in &self.checks {
            let _ = writeln!(
                s,
                "  target {}: {} -> {}",
                c.target,
                c.result,
                if c.pass { "PASS" } else { "MISS" }
            );
            if let Some(r) = &c.reason {
                let _ = writeln!(s, "    why: {r}");
            }
        }
        for n in &self.notes {
            let _ = writeln!(s, "  note: {n}");
        }
        s
    }

    fn to_json(&self) -> Value {
        json!({
            "benchmark": self.key,
            "title": self.title,
            "tables": self.tables.iter().map(|t| json!({"head": t.head, "rows": t.rows})).collect::<Vec<_>>(),
            "checks": self.checks.iter().map(|c| json!({"target": c.target, "result": c.result,
                "pass": c.pass, "reason": c.reason})).collect::<Vec<_>>(),
            "notes": self.notes,
            "data": self.data,
            "error": self.error,
        })
    }
}

// ------------------------------------------------------------------ processes and cleanup

/// Children that must die with the bench (iperf3 servers, `overlay-lab up` runs).
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn track(pid: u32) {
    CHILDREN.lock().unwrap().push(pid);
}

fn untrack(pid: u32) {
    CHILDREN.lock().unwrap().retain(|p| *p != pid);
}

fn kill_tracked() {
    for pid in CHILDREN.lock().unwrap().drain(..) {
        // SAFETY: kill(2) of a child we started.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
}

fn subs(prefix: &str) -> Vec<String> {
    ["c", "r", "t", "s", "f", "h", "e"]
        .iter()
        .map(|s| format!("{prefix}{s}"))
        .collect()
}

fn cleanup_all(prefix: &str) {
    kill_tracked();
    for p in subs(prefix) {
        if let Err(e) = lab::teardown(&p) {
            eprintln!("overlay-lab bench: cleanup of {p}: {e:#}");
        }
    }
}

/// Block SIGINT/SIGTERM/SIGHUP in this (still single-threaded) process and let one thread
/// wait for them: it cleans up and exits 130. Threads spawned later inherit the mask; child
/// processes get a clean mask from std.
fn install_signal_cleanup(prefix: String) {
    // SAFETY: sigset manipulation on a local set; pthread_sigmask on the current thread.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    std::thread::spawn(move || {
        let mut sig = 0;
        // SAFETY: valid set and output pointer.
        unsafe { libc::sigwait(&set, &mut sig) };
        eprintln!("overlay-lab bench: signal {sig}: stopping and cleaning up");
        cleanup_all(&prefix);
        std::process::exit(130);
    });
}

/// Run to completion with stdout/stderr captured, tracked for cleanup.
fn run_tracked(c: &mut Command, stdin: Option<&str>) -> Result<Output> {
    let desc = sys::describe(c);
    c.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = c.spawn().with_context(|| format!("cannot start {desc}"))?;
    let pid = child.id();
    track(pid);
    if let (Some(input), Some(mut si)) = (stdin, child.stdin.take()) {
        let _ = si.write_all(input.as_bytes());
    }
    let out = child.wait_with_output();
    untrack(pid);
    Ok(out?)
}

fn in_ns_cmd(ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Result<Command> {
    sys::command_in_netns(ns, program)
}

fn strip_overlayd_env(c: &mut Command) {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("OVERLAYD_") {
            c.env_remove(k);
        }
    }
}

/// The kernel frees deleted network namespaces asynchronously, and while it does, creating
/// new ones is slow (seconds after a 750-namespace lab). Wait until creating a namespace is
/// fast again (twice below 20 ms), so one benchmark's teardown does not bill the next one.
/// Returns the seconds waited.
fn wait_netns_settled(max: Duration) -> f64 {
    let t0 = Instant::now();
    let mut fast = 0;
    while t0.elapsed() < max && fast < 2 {
        let d = std::thread::spawn(|| {
            let s = Instant::now();
            // on this short-lived thread only (CLONE_NEWNET is per thread)
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .ok()
                .map(|_| s.elapsed())
        })
        .join()
        .ok()
        .flatten();
        match d {
            Some(d) if d < Duration::from_millis(20) => fast += 1,
            Some(_) => fast = 0,
            None => return t0.elapsed().as_secs_f64(),
        }
        if fast < 2 {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    t0.elapsed().as_secs_f64()
}

// ------------------------------------------------------------------ entry

struct Ctx {
    prefix: String,
    overlayd: PathBuf,
    me: PathBuf,
    a: BenchArgs,
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_default();
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map(|kib| kib / 1048576.0);
    json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": cpu,
        "mem_gib": mem_gib,
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "loadavg_start": loadavg(),
    })
}

pub fn bench(a: BenchArgs) -> Result<u8> {
    let usage = |m: String| anyhow::Error::new(UsageError(m));
    crate::topo::validate_prefix(&a.prefix).map_err(usage)?;
    if a.prefix.len() > 15 {
        return Err(usage(format!(
            "--prefix {:?}: at most 15 characters (a letter is appended per benchmark)",
            a.prefix
        )));
    }
    for o in &a.only {
        if !ALL.contains(&o.as_str()) {
            return Err(usage(format!(
                "--only {o:?}: expected a comma-separated subset of {}",
                ALL.join(",")
            )));
        }
    }
    if a.repairs == 0
        || a.runs == 0
        || a.iperf_repeats == 0
        || a.iperf_seconds == 0
        || a.scale_repeats == 0
        || a.fdb_runs == 0
        || a.failovers == 0
    {
        return Err(usage(
            "--repairs, --runs, --iperf-repeats, --iperf-seconds, --scale-repeats, --fdb-runs and \
             --failovers must be at least 1"
                .into(),
        ));
    }
    if let Some(m) = a
        .failover_modes
        .iter()
        .find(|m| !["link-cut", "kill-9", "power-off"].contains(&m.as_str()))
    {
        return Err(usage(format!(
            "--failover-modes {m:?}: expected a comma-separated subset of link-cut,kill-9,power-off"
        )));
    }
    if a.scale
        .iter()
        .any(|&n| n == 0 || n > crate::topo::MAX_HOSTS)
    {
        return Err(usage(format!(
            "--scale: every size must be 1..={}",
            crate::topo::MAX_HOSTS
        )));
    }
    let overlayd = lab::find_overlayd(a.overlayd.clone())?;
    sys::require_root()?;
    for tool in ["ip", "iperf3"] {
        if !a.only.iter().any(|o| o == "throughput") && tool == "iperf3" {
            continue;
        }
        if Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err()
        {
            bail!("{tool} is not installed");
        }
    }
    let leftovers: Vec<String> = subs(&a.prefix)
        .iter()
        .flat_map(|p| {
            let mut v = sys::lab_namespaces(p);
            if node_cmd::run_dir(p).exists() {
                v.push(node_cmd::run_dir(p).display().to_string());
            }
            v
        })
        .collect();
    if !leftovers.is_empty() {
        if !a.replace {
            return Err(usage(format!(
                "leftovers of an earlier bench with prefix {:?} exist ({} namespaces/dirs, e.g. \
                 {}): pass --replace to remove them, or pick another --prefix",
                a.prefix,
                leftovers.len(),
                leftovers[0]
            )));
        }
        cleanup_all(&a.prefix);
    }
    install_signal_cleanup(a.prefix.clone());
    let me = std::env::current_exe().context("locating overlay-lab itself")?;
    let ctx = Ctx {
        prefix: a.prefix.clone(),
        overlayd,
        me,
        a,
    };
    let mach = machine();
    let cmdline: Vec<String> = std::env::args().collect();
    eprintln!(
        "overlay-lab bench: overlayd {}, {} CPUs, kernel {}, load {}",
        ctx.overlayd.display(),
        mach["nproc"],
        mach["kernel"].as_str().unwrap_or(""),
        loadavg()
    );
    if !ctx.overlayd.to_string_lossy().contains("/release/") {
        eprintln!("overlay-lab bench: WARNING: overlayd does not look like a release build");
    }
    let t0 = Instant::now();
    let mut sections = Vec::new();
    for key in ALL {
        if !ctx.a.only.iter().any(|o| o == key) {
            continue;
        }
        eprintln!("overlay-lab bench: {key} ...");
        let st = Instant::now();
        let (sub, title) = match key {
            "converge" => ("c", "cold converge of one node"),
            "repair" => ("r", "drift repair latency (overlayd run)"),
            "throughput" => ("t", "overlay TCP throughput (iperf3)"),
            "fdb" => (
                "f",
                "unicast flood list: 1,000 peers in one batch, one-peer change",
            ),
            "failover" => (
                "h",
                "router HA: the active router failed (link cut, kill -9, both), two AZs",
            ),
            "evpn" => (
                "e",
                "BGP EVPN (FRR): route reflectors on the router pair, two AZs",
            ),
            _ => (
                "s",
                "overlay-lab up --hosts N --daemon: time to full reachability, daemon RSS",
            ),
        };
        let mut sec = Section::new(key, title);
        let waited = wait_netns_settled(Duration::from_secs(60));
        if waited > 0.5 {
            eprintln!("overlay-lab bench: waited {waited:.1} s for the kernel to free namespaces");
        }
        let r = match key {
            "converge" => converge(&ctx, &mut sec),
            "repair" => repair(&ctx, &mut sec),
            "throughput" => throughput(&ctx, &mut sec),
            "fdb" => fdb(&ctx, &mut sec),
            "failover" => failover(&ctx, &mut sec),
            "evpn" => evpn(&ctx, &mut sec),
            _ => scale(&ctx, &mut sec),
        };
        if let Err(e) = r {
            sec.error = Some(format!("{e:#}"));
            sec.check(
                "benchmark ran",
                "failed".into(),
                false,
                Some(format!("{e:#}")),
            );
        }
        kill_tracked();
        let p = format!("{}{sub}", ctx.prefix);
        if let Err(e) = lab::teardown(&p) {
            sec.notes.push(format!("cleanup of {p} failed: {e:#}"));
        }
        eprintln!(
            "overlay-lab bench: {key} done in {:.1} s",
            st.elapsed().as_secs_f64()
        );
        if !ctx.a.json {
            println!("{}", sec.render());
            let _ = std::io::stdout().flush();
        }
        sections.push(sec);
    }
    cleanup_all(&ctx.prefix);
    let total = t0.elapsed().as_secs_f64();
    let failed = sections.iter().any(|s| s.error.is_some());
    let verdicts: Vec<Value> = sections
        .iter()
        .flat_map(|s| {
            s.checks
                .iter()
                .map(|c| json!({"benchmark": s.key, "target": c.target, "pass": c.pass}))
        })
        .collect();
    let mut m = mach;
    m["loadavg_end"] = json!(loadavg());
    let doc = serde_json::to_string_pretty(&json!({
        "command": cmdline.join(" "),
        "overlayd": ctx.overlayd,
        "machine": m,
        "seconds": total,
        "sections": sections.iter().map(Section::to_json).collect::<Vec<_>>(),
        "verdicts": verdicts,
    }))?;
    if let Some(f) = &ctx.a.json_out {
        std::fs::write(f, &doc).with_context(|| format!("writing {}", f.display()))?;
    }
    if ctx.a.json {
        println!("{doc}");
    } else {
        let mut t = Table::new(&["benchmark", "target", "result"]);
        t.left = 2;
        for s in &sections {
            for c in &s.checks {
                t.row(vec![
                    s.key.into(),
                    c.target.clone(),
                    if c.pass { "PASS" } else { "MISS" }.into(),
                ]);
            }
        }
        println!("== summary ({total:.0} s, load average now {})", loadavg());
        print!("{}", t.render());
    }
    Ok(if failed { 1 } else { 0 })
}

// ------------------------------------------------------------------ shared by the benchmarks

fn spawn_checked(c: &mut Command, stdin: Option<&str>) -> Result<()> {
    c.stdout(Stdio::null()).stderr(Stdio::piped());
    c.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = c.spawn().with_context(|| sys::describe(c))?;
    if let (Some(input), Some(mut si)) = (stdin, child.stdin.take()) {
        si.write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{} failed ({}): {}",
            sys::describe(c),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn od_apply_args(dir: &Path, addr: &str, gw: &str) -> Vec<String> {
    let d = |f: &str| dir.join(f).to_string_lossy().into_owned();
    [
        "apply",
        "--config",
        &d("overlayd.toml"),
        "--role",
        "host",
        "--underlay",
        "eth0",
        "--address",
        addr,
        "--gateway",
        gw,
        "--group",
        GROUP,
        "--vni",
        "100",
        "--state-dir",
        &d("state"),
        "--hosts-file",
        &d("hosts"),
        "--resolv-conf",
        &d("resolv.conf"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn fresh_node_files(dir: &Path) -> Result<()> {
    if dir.join("state").exists() {
        std::fs::remove_dir_all(dir.join("state"))?;
    }
    std::fs::create_dir_all(dir.join("state"))?;
    std::fs::write(dir.join("overlayd.toml"), "# overlay-lab bench\n")?;
    std::fs::write(dir.join("hosts"), "127.0.0.1 localhost\n")?;
    std::fs::write(dir.join("resolv.conf"), "")?;
    Ok(())
}

// ------------------------------------------------------------------ lab via our own CLI

/// `overlay-lab up --daemon ...` as a subprocess (the command a user runs); its JSON.
fn lab_up(ctx: &Ctx, prefix: &str, hosts: usize, vms: usize) -> Result<(Value, f64, bool)> {
    let mut c = Command::new(&ctx.me);
    c.args(["up", "--json", "--daemon", "--prefix", prefix])
        .args(["--hosts", &hosts.to_string()])
        .args(["--vms-per-host", &vms.to_string()])
        .arg("--overlayd")
        .arg(&ctx.overlayd);
    let t0 = Instant::now();
    let out = run_tracked(&mut c, None)?;
    let wall = t0.elapsed().as_secs_f64();
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|_| {
        anyhow!(
            "overlay-lab up --hosts {hosts} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })?;
    Ok((v, wall, out.status.success()))
}

#[cfg(test)]
mod tests {
    use super::converge::recipe_steps;
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 100.0);
        assert_eq!(percentile(&v, 99.0), 198.0);
        assert_eq!(percentile(&v, 100.0), 200.0);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&[7.0], 90.0), 7.0);
        assert!(percentile(&[], 50.0).is_nan());
    }

    #[test]
    fn summary_sorts_and_ignores_nan() {
        let s = summarize(&[3.0, f64::NAN, 1.0, 2.0, 10.0]);
        assert_eq!(s.n, 4);
        assert_eq!(s.min, 1.0);
        assert_eq!(s.p50, 2.0);
        assert_eq!(s.max, 10.0);
        assert_eq!(s.mean, 4.0);
        assert!(summarize(&[]).p50.is_nan());
    }

    #[test]
    fn table_aligns_columns() {
        let mut t = Table::new(&["name", "ms"]);
        t.row(vec!["recipe".into(), "45.10".into()]);
        t.row(vec!["overlayd".into(), "3.20".into()]);
        let r = t.render();
        let lines: Vec<&str> = r.lines().collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0], "  name         ms");
        assert!(lines[1].trim().chars().all(|c| c == '-'));
        assert_eq!(lines[2], "  recipe    45.10");
        assert_eq!(lines[3], "  overlayd   3.20");
    }

    #[test]
    fn recipe_matches_the_seed_article() {
        let s = recipe_steps("10.101.0.10/16", "10.101.0.1");
        assert_eq!(s.len(), 8);
        assert_eq!(
            s[3].join(" "),
            "link add ethvxlan0 type vxlan id 100 dstport 4789 group 239.255.0.1 dev eth0"
        );
        assert_eq!(s[4].join(" "), "link set ethvxlan0 master cloudbr0");
        assert_eq!(
            s[6].join(" "),
            "route add default via 10.101.0.1 dev cloudbr0 table 79"
        );
        assert_eq!(
            s[7].join(" "),
            "rule add from 10.101.0.10 lookup 79 priority 1079"
        );
    }

    #[test]
    fn section_renders_verdicts() {
        let mut s = Section::new("repair", "drift repair");
        s.check("p99 <= 5 ms", "p99 1.2 ms".into(), true, None);
        s.check("x", "y".into(), false, Some("because".into()));
        let r = s.render();
        assert!(r.contains("p99 1.2 ms -> PASS"));
        assert!(r.contains("y -> MISS"));
        assert!(r.contains("why: because"));
    }
}
