//! `overlay-lab bench`: the four benchmarks of BENCHMARKS.md, side by side in one run.
//!
//! 1. converge: cold converge of one node, `overlayd apply` vs the seed article's iproute2
//!    recipe (one process per step) vs the same as `ip -batch`
//! 2. repair: VTEP deleted -> recreated, enslaved, up (netlink events) and traffic passing
//!    again (1 ms ICMP stream), with `overlayd run` repairing
//! 3. throughput: iperf3 over the overlayd overlay vs the underlay vs a hand-made overlay
//! 4. scale: `overlay-lab up --hosts N --daemon`, time to full reachability, daemon RSS
//!
//! Every namespace it creates is named `<prefix><c|r|t|s>-...`; all of them (and the daemons
//! and child processes it started) are removed at the end, on errors and on SIGINT/SIGTERM.

use crate::bench_daemon;
use crate::bench_nl::{NlSock, RTMGRP_LINK};
use crate::bench_probe::Stream;
use crate::lab::{self, UsageError};
use crate::nl::{self, Nl};
use crate::sys;
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const GROUP: &str = "239.255.0.1";
const UNDERLAY_MTU: u32 = 9001;
const ALL: [&str; 4] = ["converge", "repair", "throughput", "scale"];

#[derive(Args)]
pub struct BenchArgs {
    /// Benchmarks to run, comma-separated: converge, repair, throughput, scale.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "converge,repair,throughput,scale"
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
    /// `up` runs per lab size (scale benchmark).
    #[arg(long, default_value_t = 3)]
    pub scale_repeats: usize,
    /// Seconds per iperf3 run (throughput benchmark).
    #[arg(long, default_value_t = 5)]
    pub iperf_seconds: u32,
    /// iperf3 runs per path (throughput benchmark).
    #[arg(long, default_value_t = 5)]
    pub iperf_repeats: usize,
    /// One JSON document on stdout instead of the tables (progress stays on stderr).
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON document (all samples) to this file.
    #[arg(long, value_name = "FILE")]
    pub json_out: Option<PathBuf>,
    /// Namespace prefix; the benchmarks use PREFIX{c,r,t,s}-*. [a-z0-9], at most 15 chars.
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
    ["c", "r", "t", "s"]
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
    let f = std::fs::File::open(Path::new(sys::NETNS_DIR).join(ns))
        .with_context(|| format!("namespace {ns}"))?;
    let mut c = Command::new(program);
    let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
    let keep = std::sync::Arc::new(f);
    // SAFETY: setns(2) is async-signal-safe; the fd lives as long as the closure.
    unsafe {
        c.pre_exec(move || {
            let _ = &keep;
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(c)
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
            // SAFETY: unshare on this short-lived thread only (CLONE_NEWNET is per thread).
            let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            (rc == 0).then(|| s.elapsed())
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
    {
        return Err(usage(
            "--repairs, --runs, --iperf-repeats, --iperf-seconds and --scale-repeats must be at \
             least 1"
                .into(),
        ));
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
            if lab::run_dir(p).exists() {
                v.push(lab::run_dir(p).display().to_string());
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

// ------------------------------------------------------------------ 1. converge

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Variant {
    Recipe,
    Batch,
    OverlaydSetns,
    OverlaydIpNetnsExec,
    OverlaydThread,
    FloorTrue,
    FloorTrueSetns,
    FloorIpN,
    FloorNetnsExec,
    OverlaydVersion,
    OverlaydPlanConverged,
    OverlaydApplyConverged,
}

const VARIANTS: [Variant; 12] = [
    Variant::Recipe,
    Variant::Batch,
    Variant::OverlaydSetns,
    Variant::OverlaydIpNetnsExec,
    Variant::OverlaydThread,
    Variant::FloorTrue,
    Variant::FloorTrueSetns,
    Variant::FloorIpN,
    Variant::FloorNetnsExec,
    Variant::OverlaydVersion,
    Variant::OverlaydPlanConverged,
    Variant::OverlaydApplyConverged,
];

impl Variant {
    fn label(self) -> &'static str {
        match self {
            Variant::Recipe => "iproute2 recipe (9 processes: 8x ip -n, 1x ip netns exec sysctl)",
            Variant::Batch => "ip -n NS -batch - + ip netns exec sysctl (2 processes)",
            Variant::OverlaydSetns => "overlayd apply, entered by setns (1 process)",
            Variant::OverlaydIpNetnsExec => "ip netns exec NS overlayd apply (1 process + ip)",
            Variant::OverlaydThread => {
                "overlayd apply, spawned from a thread in NS (1 process, no pre_exec)"
            }
            Variant::FloorTrue => "floor: spawn /bin/true",
            Variant::FloorTrueSetns => "floor: spawn /bin/true entered by setns (pre_exec)",
            Variant::FloorIpN => "floor: ip -n NS link show dev lo",
            Variant::FloorNetnsExec => "floor: ip netns exec NS true",
            Variant::OverlaydVersion => "profile: overlayd --version (setns)",
            Variant::OverlaydPlanConverged => "profile: overlayd plan, converged node (setns)",
            Variant::OverlaydApplyConverged => "profile: overlayd apply, converged node (setns)",
        }
    }
    fn converges(self) -> bool {
        matches!(
            self,
            Variant::Recipe
                | Variant::Batch
                | Variant::OverlaydSetns
                | Variant::OverlaydIpNetnsExec
                | Variant::OverlaydThread
        )
    }
}

/// The seed article's steps for a host, as `ip` argument lists (`ip -n NS` prepended), made
/// to work on an EC2-shaped node: the article's `route add default via GW dev cloudbr0` fails
/// with EEXIST next to the instance's DHCP default route, so the gateway goes where overlayd
/// puts it, the minimal hand-made way: a default in table 79 and a rule for the overlay address.
fn recipe_steps(addr: &str, gw: &str) -> Vec<Vec<String>> {
    let ip = addr.split('/').next().unwrap_or(addr);
    let s = |x: &str| x.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    vec![
        s("link add cloudbr0 type bridge"),
        s(&format!("addr add {addr} dev cloudbr0")),
        s("link set cloudbr0 up"),
        s(&format!(
            "link add ethvxlan0 type vxlan id 100 dstport 4789 group {GROUP} dev eth0"
        )),
        s("link set ethvxlan0 master cloudbr0"),
        s("link set ethvxlan0 up"),
        s(&format!("route add default via {gw} dev cloudbr0 table 79")),
        s(&format!("rule add from {ip} lookup 79 priority 1079")),
    ]
}

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

/// One timed run: wall time from spawning the first process to the last one exiting.
fn run_variant(v: Variant, ns: &str, dir: &Path, overlayd: &Path) -> Result<Duration> {
    let addr = "10.101.0.10/16";
    let gw = "10.101.0.1";
    let sysctl = |c: &mut Command| {
        c.args([
            "netns",
            "exec",
            ns,
            "sysctl",
            "-w",
            "net.ipv4.conf.eth0.force_igmp_version=2",
        ]);
    };
    let t0 = Instant::now();
    match v {
        Variant::Recipe => {
            let steps = recipe_steps(addr, gw);
            // the article's order: bridge, VTEP, then the sysctl, then the gateway
            for (i, s) in steps.iter().enumerate() {
                if i == 6 {
                    let mut c = Command::new("ip");
                    sysctl(&mut c);
                    spawn_checked(&mut c, None)?;
                }
                spawn_checked(Command::new("ip").args(["-n", ns]).args(s), None)?;
            }
        }
        Variant::Batch => {
            let lines: String = recipe_steps(addr, gw)
                .iter()
                .map(|s| s.join(" ") + "\n")
                .collect();
            spawn_checked(
                Command::new("ip").args(["-n", ns, "-batch", "-"]),
                Some(&lines),
            )?;
            let mut c = Command::new("ip");
            sysctl(&mut c);
            spawn_checked(&mut c, None)?;
        }
        Variant::OverlaydSetns => {
            let mut c = in_ns_cmd(ns, overlayd)?;
            c.args(od_apply_args(dir, addr, gw));
            strip_overlayd_env(&mut c);
            spawn_checked(&mut c, None)?;
        }
        Variant::OverlaydIpNetnsExec => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns])
                .arg(overlayd)
                .args(od_apply_args(dir, addr, gw));
            strip_overlayd_env(&mut c);
            spawn_checked(&mut c, None)?;
        }
        Variant::OverlaydThread => {
            // the child inherits the namespace of the spawning thread: std can use
            // posix_spawn (vfork) instead of fork + pre_exec
            let args = od_apply_args(dir, addr, gw);
            std::thread::scope(|sc| {
                sc.spawn(|| -> Result<()> {
                    sys::enter_netns(ns)?;
                    let mut c = Command::new(overlayd);
                    c.args(&args);
                    strip_overlayd_env(&mut c);
                    spawn_checked(&mut c, None)
                })
                .join()
                .map_err(|_| anyhow!("spawning thread panicked"))?
            })?;
        }
        Variant::FloorTrue => spawn_checked(&mut Command::new("true"), None)?,
        Variant::FloorTrueSetns => spawn_checked(&mut in_ns_cmd(ns, "true")?, None)?,
        Variant::FloorIpN => spawn_checked(
            Command::new("ip").args(["-n", ns, "link", "show", "dev", "lo"]),
            None,
        )?,
        Variant::FloorNetnsExec => {
            spawn_checked(Command::new("ip").args(["netns", "exec", ns, "true"]), None)?
        }
        Variant::OverlaydVersion => {
            let mut c = in_ns_cmd(ns, overlayd)?;
            c.arg("--version");
            spawn_checked(&mut c, None)?;
        }
        Variant::OverlaydPlanConverged | Variant::OverlaydApplyConverged => {
            let mut c = in_ns_cmd(ns, overlayd)?;
            let mut args = od_apply_args(dir, addr, gw);
            if v == Variant::OverlaydPlanConverged {
                args[0] = "plan".into();
            }
            c.args(args);
            strip_overlayd_env(&mut c);
            spawn_checked(&mut c, None)?;
        }
    }
    Ok(t0.elapsed())
}

/// The node is converged: VTEP up and enslaved, gateway route and rule, IGMPv2 forced.
fn verify_converged(ns: &str) -> Result<()> {
    let link = sys::run_ok(
        Command::new("ip").args(["-n", ns, "-o", "link", "show", "dev", "ethvxlan0"]),
        None,
    )?;
    if !link.contains("master cloudbr0") || !link.contains(",UP") {
        bail!("{ns}: ethvxlan0 not up/enslaved: {}", link.trim());
    }
    let route = sys::run_ok(
        Command::new("ip").args(["-n", ns, "-4", "route", "show", "default", "table", "79"]),
        None,
    )?;
    if !route.contains("via 10.101.0.1") {
        bail!("{ns}: no table-79 default via 10.101.0.1: {}", route.trim());
    }
    let rules = sys::run_ok(
        Command::new("ip").args(["-n", ns, "-4", "rule", "show"]),
        None,
    )?;
    if !rules.contains("from 10.101.0.10 lookup 79") {
        bail!("{ns}: no rule for the overlay address: {}", rules.trim());
    }
    let v = nl::in_netns(ns, || {
        Ok(
            std::fs::read_to_string("/proc/sys/net/ipv4/conf/eth0/force_igmp_version")?
                .trim()
                .to_string(),
        )
    })?;
    if v != "2" {
        bail!("{ns}: force_igmp_version is {v}");
    }
    Ok(())
}

/// Back to the pristine node: no bridge, no VTEP (table 79 goes with the bridge), no rule, no
/// link-local routes, sysctls at the kernel's defaults. The DHCP default route stays.
fn reset_node(ns: &str) -> Result<()> {
    let _ = sys::run_timeout(
        Command::new("ip").args(["-n", ns, "rule", "del", "priority", "1079"]),
        None,
        Duration::from_secs(10),
    );
    let _ = sys::run_timeout(
        Command::new("ip").args(["-n", ns, "route", "flush", "table", "all", "proto", "79"]),
        None,
        Duration::from_secs(10),
    );
    nl::in_netns(ns, || {
        let mut s = NlSock::new(0)?;
        for name in ["ethvxlan0", "cloudbr0"] {
            if let Ok(i) = nl::ifindex(name) {
                s.del_link(i as i32)?;
            }
        }
        std::fs::write("/proc/sys/net/ipv4/conf/eth0/force_igmp_version", "0")?;
        std::fs::write("/proc/sys/net/ipv4/igmp_max_memberships", "20")?;
        Ok(())
    })
}

fn mounts() -> usize {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

fn converge(ctx: &Ctx, sec: &mut Section) -> Result<()> {
    let p = format!("{}c", ctx.prefix);
    let rd = lab::run_dir(&p);
    std::fs::create_dir_all(&rd)?;
    let ul = format!("{p}-ul");
    let node_ns: Vec<String> = (0..VARIANTS.len()).map(|k| format!("{p}-v{k}")).collect();
    let mut all = vec![ul.clone()];
    all.extend(node_ns.iter().cloned());
    sys::create_namespaces(&all)?;
    let ul_file = std::fs::File::open(Path::new(sys::NETNS_DIR).join(&ul))?;
    for (k, ns) in node_ns.iter().enumerate() {
        nl::in_netns(ns, || {
            let mut n = Nl::new()?;
            n.link_up("lo")?;
            n.add_veth("eth0", None, UNDERLAY_MTU, &format!("c{k}"), &ul_file)?;
            n.add_addr("eth0", Ipv4Addr::new(10, 0, 0, 10), 22)?;
            // an EC2 instance's DHCP default route
            n.link_up("eth0")?;
            n.add_default_route(Ipv4Addr::new(10, 0, 0, 1), crate::topo::RTPROT_DHCP)?;
            Ok(())
        })
        .with_context(|| format!("underlay of {ns}"))?;
    }
    nl::in_netns(&ul, || {
        let mut n = Nl::new()?;
        n.link_up("lo")?;
        for k in 0..node_ns.len() {
            n.link_up(&format!("c{k}"))?;
        }
        Ok(())
    })?;
    for (k, v) in VARIANTS.iter().enumerate() {
        if matches!(
            v,
            Variant::OverlaydPlanConverged | Variant::OverlaydApplyConverged
        ) {
            let dir = rd.join(format!("v{k}"));
            fresh_node_files(&dir)?;
            run_variant(Variant::OverlaydSetns, &node_ns[k], &dir, &ctx.overlayd)?;
            verify_converged(&node_ns[k])?;
        }
    }
    let runs = ctx.a.runs;
    let mut times: Vec<Vec<f64>> = vec![vec![]; VARIANTS.len()];
    // interleaved, start rotating, so drifting background load hits every variant alike
    for i in 0..runs {
        for j in 0..VARIANTS.len() {
            let k = (i + j) % VARIANTS.len();
            let v = VARIANTS[k];
            let ns = &node_ns[k];
            let dir = rd.join(format!("v{k}"));
            if v.converges() {
                reset_node(ns)?;
                fresh_node_files(&dir)?;
                std::thread::sleep(Duration::from_millis(15));
            }
            let d = run_variant(v, ns, &dir, &ctx.overlayd)
                .with_context(|| format!("{} (run {})", v.label(), i + 1))?;
            if v.converges() {
                verify_converged(ns).with_context(|| format!("after {}", v.label()))?;
            }
            times[k].push(ms(d));
        }
    }
    let sums: Vec<Summary> = times.iter().map(|t| summarize(t)).collect();
    let mut t = Table::new(&["variant", "median ms", "p90 ms", "min ms", "max ms"]);
    for (k, v) in VARIANTS.iter().enumerate() {
        let s = sums[k];
        t.row(vec![
            v.label().into(),
            f2(s.p50),
            f2(s.p90),
            f2(s.min),
            f2(s.max),
        ]);
    }
    sec.tables.push(t);
    let idx = |v: Variant| VARIANTS.iter().position(|x| *x == v).unwrap();
    let med = |v: Variant| sums[idx(v)].p50;
    let recipe = med(Variant::Recipe);
    let batch = med(Variant::Batch);
    for (od, how) in [
        (Variant::OverlaydSetns, "setns"),
        (Variant::OverlaydIpNetnsExec, "ip netns exec"),
    ] {
        let o = med(od);
        let r1 = o / recipe;
        let why = |limit: f64, base: &str, bv: f64| {
            (r1.is_nan() || o / bv > limit).then(|| {
                format!(
                    "overlayd ({how}) median {o:.2} ms vs {base} {bv:.2} ms; see BENCHMARKS.md for \
                     where overlayd's time goes"
                )
            })
        };
        sec.check(
            &format!("overlayd apply ({how}) <= 1/4 of the recipe"),
            format!("{o:.2} ms / {recipe:.2} ms = {:.3}", r1),
            r1 <= 0.25,
            why(0.25, "recipe", recipe),
        );
        let r2 = o / batch;
        sec.check(
            &format!("overlayd apply ({how}) <= 2/3 of ip -batch"),
            format!("{o:.2} ms / {batch:.2} ms = {:.3}", r2),
            r2 <= 2.0 / 3.0,
            why(2.0 / 3.0, "ip -batch", batch),
        );
    }
    sec.notes.push(format!(
        "{runs} runs per variant, interleaved; each converging run starts from the same pristine \
         node (namespace with eth0 {}/22, MTU {UNDERLAY_MTU}; bridge and VTEP deleted, \
         force_igmp_version=0, empty state dir); every run is verified (VTEP up + enslaved, \
         default route, force_igmp_version=2) outside the timed window",
        Ipv4Addr::new(10, 0, 0, 10)
    ));
    sec.notes.push(
        "the primary comparison is overlayd entered by setns from the bench process: `ip -n NS` \
         (every recipe step) also enters the namespace itself, with setns plus a private mount \
         namespace and a /sys remount; `ip netns exec NS overlayd` adds one more exec of ip and \
         the same mount work"
            .into(),
    );
    sec.notes.push(format!(
        "overlayd does more than the recipe: pinned bridge MAC, STP off, IPv6 off on the bridge, \
         MTU (auto, capped 8450), owner mark (device group) on owned links, state file, hosts/resolv.conf checks; \
         {} mounts visible while measuring (each `ip -n`/`ip netns exec` copies them)",
        mounts()
    ));
    sec.data = json!({
        "runs": runs,
        "variants": VARIANTS.iter().enumerate().map(|(k, v)| json!({
            "variant": format!("{v:?}"), "label": v.label(), "ms": sums[k].to_json(), "samples_ms": times[k],
        })).collect::<Vec<_>>(),
        "recipe_steps": recipe_steps("10.101.0.10/16", "10.101.0.1").iter().map(|s| s.join(" ")).collect::<Vec<_>>(),
    });
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

// ------------------------------------------------------------------ 2. repair

struct RepairSample {
    t0: Instant,
    acked: Instant,
    /// RTM_DELLINK notification of the old device received
    gone: Option<Instant>,
    repaired: Option<Instant>,
    passing: Option<Instant>,
}

fn repair(ctx: &Ctx, sec: &mut Section) -> Result<()> {
    let p = format!("{}r", ctx.prefix);
    let (up, _, ok) = lab_up(ctx, &p, 1, 0)?;
    if !ok {
        bail!(
            "the 1-host lab is not fully reachable: {}",
            up["reachability"]
        );
    }
    let node_ns = format!("{p}-h1");
    let peer_ns = format!("{p}-mgmt");
    let target = Ipv4Addr::new(10, 101, 0, 10);
    let n = ctx.a.repairs;
    let interval = Duration::from_millis(1);
    let mut stream = Stream::start(&peer_ns, target, interval, n * 400 + 120_000)?;
    if !stream.wait_steady(100, Instant::now() + Duration::from_secs(10)) {
        bail!("no steady echo replies from h1 ({target}) to mgmt before the first repair");
    }
    let stream_ref = &stream;
    let samples: Vec<RepairSample> = nl::in_netns(&node_ns, || {
        // The monitor runs on its own thread, blocked in recv(), so every event is stamped when
        // it arrives (deleting a VXLAN device keeps the deleting thread in the kernel for tens
        // of ms after the RTM_DELLINK notification went out).
        let mut mon = NlSock::new(RTMGRP_LINK)?;
        let mut req = NlSock::new(0)?;
        let stop = std::sync::atomic::AtomicBool::new(false);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|sc| {
            let stop = &stop;
            sc.spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Some(ev) = mon.recv_events() {
                        if tx.send(ev).is_err() {
                            break;
                        }
                    }
                }
            });
            let r = (|| -> Result<Vec<RepairSample>> {
                let mut v = Vec::with_capacity(n);
                for i in 0..n {
                    if !stream_ref.wait_steady(20, Instant::now() + Duration::from_secs(5)) {
                        bail!(
                            "traffic did not become steady again before repair {}",
                            i + 1
                        );
                    }
                    let br = nl::ifindex("cloudbr0")?;
                    let old = nl::ifindex("ethvxlan0")? as i32;
                    while rx.try_recv().is_ok() {}
                    let t0 = Instant::now();
                    req.del_link(old)?;
                    let acked = Instant::now();
                    let deadline = t0 + Duration::from_secs(3);
                    let (mut gone, mut repaired) = (None, None);
                    while repaired.is_none() {
                        let left = deadline.saturating_duration_since(Instant::now());
                        let Ok((at, evs)) = rx.recv_timeout(left) else {
                            break;
                        };
                        for e in evs {
                            if gone.is_none() && !e.new && e.index == old {
                                gone = Some(at);
                            }
                            if e.is_repaired("ethvxlan0", old, br) {
                                repaired = Some(at);
                            }
                        }
                    }
                    // probes sent after the old VTEP was closed (its RTM_DELLINK went out)
                    // can only pass through the new one
                    let passing = stream_ref.wait_answer_after(gone.unwrap_or(acked), deadline);
                    v.push(RepairSample {
                        t0,
                        acked,
                        gone,
                        repaired,
                        passing,
                    });
                    // a little jitter, so repairs do not lock to the probe clock
                    std::thread::sleep(Duration::from_micros(5_000 + (i as u64 * 7919) % 5_000));
                }
                Ok(v)
            })();
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            r
        })
    })?;
    // let the last answers arrive, then account
    std::thread::sleep(Duration::from_millis(300));
    let end = Instant::now() - Duration::from_millis(250);
    stream.stop();
    let first = samples.first().map(|s| s.t0).unwrap_or(end);
    let total_sent = stream.first_sent_after(end) - stream.first_sent_after(first);
    let total_lost = stream.lost_between(first, end);
    let mut lost_per = Vec::new();
    for s in &samples {
        let until = s.passing.unwrap_or(s.t0 + Duration::from_secs(3));
        lost_per.push(stream.lost_between(s.t0, until + Duration::from_millis(1)) as f64);
    }
    let in_windows: f64 = lost_per.iter().sum();
    let rep: Vec<f64> = samples
        .iter()
        .filter_map(|s| s.repaired.map(|r| ms(r - s.t0)))
        .collect();
    let pass: Vec<f64> = samples
        .iter()
        .filter_map(|s| s.passing.map(|r| ms(r - s.t0)))
        .collect();
    let ack: Vec<f64> = samples.iter().map(|s| ms(s.acked - s.t0)).collect();
    let gone: Vec<f64> = samples
        .iter()
        .filter_map(|s| s.gone.map(|g| ms(g - s.t0)))
        .collect();
    let after_gone: Vec<f64> = samples
        .iter()
        .filter_map(|s| Some(ms(s.repaired?.saturating_duration_since(s.gone?))))
        .collect();
    let failed_rep = samples.iter().filter(|s| s.repaired.is_none()).count();
    let failed_pass = samples.iter().filter(|s| s.passing.is_none()).count();
    let (sr, sp, sl) = (summarize(&rep), summarize(&pass), summarize(&lost_per));
    let mut t = Table::new(&[
        "measure (per repair)",
        "n",
        "p50",
        "p90",
        "p99",
        "max",
        "mean",
    ]);
    let row = |name: &str, s: Summary, unit: &str| {
        let f = |x: f64| {
            if unit == "ms" {
                f2(x)
            } else {
                format!("{x:.0}")
            }
        };
        vec![
            name.to_string(),
            s.n.to_string(),
            f(s.p50),
            f(s.p90),
            f(s.p99),
            f(s.max),
            f(s.mean),
        ]
    };
    t.row(row(
        "repair: RTM_DELLINK sent -> RTM_NEWLINK up+enslaved (ms)",
        sr,
        "ms",
    ));
    t.row(row(
        "  RTM_DELLINK sent -> its notification (old VTEP gone) (ms)",
        summarize(&gone),
        "ms",
    ));
    t.row(row(
        "  notification -> RTM_NEWLINK up+enslaved (overlayd) (ms)",
        summarize(&after_gone),
        "ms",
    ));
    t.row(row(
        "  RTM_DELLINK sent -> its ack (kernel done deleting) (ms)",
        summarize(&ack),
        "ms",
    ));
    t.row(row(
        "traffic passing: RTM_DELLINK sent -> first echo reply (ms)",
        sp,
        "ms",
    ));
    t.row(row("lost 1 ms probes per repair", sl, "n"));
    sec.tables.push(t);
    sec.check(
        "repair p99 <= 5 ms",
        format!(
            "p99 {:.2} ms over {} repairs{}",
            sr.p99,
            sr.n,
            if failed_rep > 0 {
                format!(", {failed_rep} NOT repaired within 3 s")
            } else {
                String::new()
            }
        ),
        sr.p99 <= 5.0 && failed_rep == 0 && sr.n >= 200.min(n),
        (sr.p99 > 5.0).then(|| {
            format!(
                "split of the time: kernel, RTM_DELLINK sent -> its notification p50 {:.2} / p99 \
                 {:.2} ms (the old device is torn down before anyone hears of it); overlayd, \
                 notification -> new VTEP up and enslaved p50 {:.2} / p99 {:.2} ms",
                summarize(&gone).p50,
                summarize(&gone).p99,
                summarize(&after_gone).p50,
                summarize(&after_gone).p99
            )
        }),
    );
    let status = bench_daemon::control(
        &lab::node_dir(&p, "h1").join(bench_daemon::SOCKET),
        "status",
    )
    .unwrap_or(Value::Null);
    sec.notes.push(format!(
        "{n} repairs of {node_ns}: ethvxlan0 deleted by RTM_DELLINK from a thread in the node's \
         namespace; a link-event socket timestamps the RTM_NEWLINK of the new ethvxlan0 with \
         IFF_UP and master cloudbr0; `overlayd run` (release, --metrics-address off) repaired it"
    ));
    sec.notes.push(format!(
        "probe stream: ICMP echo every 1 ms from {peer_ns} to {target} (h1's overlay address), \
         64-bit sequence numbers; {total_sent} sent during the repairs, {total_lost} lost, \
         {in_windows:.0} of them inside repair windows (delete -> traffic passing); \
         {failed_pass} repairs without traffic within 3 s"
    ));
    sec.notes.push(format!(
        "daemon on h1 says: {} reconciles, {} repairs",
        status["reconciles"], status["repairs"]
    ));
    sec.data = json!({
        "repairs": n,
        "repair_ms": sr.to_json(),
        "traffic_passing_ms": sp.to_json(),
        "delete_acked_ms": summarize(&ack).to_json(),
        "gone_notification_ms": summarize(&gone).to_json(),
        "repaired_after_notification_ms": summarize(&after_gone).to_json(),
        "lost_per_repair": sl.to_json(),
        "probes_sent": total_sent,
        "probes_lost": total_lost,
        "probes_lost_in_repair_windows": in_windows,
        "not_repaired": failed_rep,
        "no_traffic": failed_pass,
        "daemon_status": {"reconciles": status["reconciles"], "repairs": status["repairs"]},
        "samples_repair_ms": rep,
        "samples_passing_ms": pass,
    });
    Ok(())
}

// ------------------------------------------------------------------ 3. throughput

fn ip_json_mtu(ns: &str, dev: &str) -> Result<u32> {
    let out = sys::run_ok(
        Command::new("ip").args(["-n", ns, "-j", "link", "show", "dev", dev]),
        None,
    )?;
    let v: Value = serde_json::from_str(&out)?;
    v[0]["mtu"]
        .as_u64()
        .map(|m| m as u32)
        .ok_or_else(|| anyhow!("no mtu for {dev} in {ns}"))
}

fn vxlan_details(ns: &str) -> String {
    sys::run_ok(
        Command::new("ip").args(["-n", ns, "-d", "-o", "link", "show", "dev", "ethvxlan0"]),
        None,
    )
    .ok()
    .and_then(|s| {
        let i = s.find("vxlan id")?;
        let rest = &s[i..];
        Some(
            rest.split("bridge_slave")
                .next()
                .unwrap_or(rest)
                .trim()
                .trim_end_matches('\\')
                .trim()
                .to_string(),
        )
    })
    .unwrap_or_default()
}

/// Underlay: bridge `br` in `ul` and two nodes with eth0 10.0.0.10/.11, MTU 9001, each with
/// a DHCP default route via 10.0.0.1.
fn underlay_pair(ul: &str, a: &str, b: &str) -> Result<()> {
    let mut s = String::from("link set lo up\n");
    let _ = writeln!(
        s,
        "link add name ulbr mtu {UNDERLAY_MTU} type bridge mcast_snooping 0"
    );
    for (port, ns) in [("u-a", a), ("u-b", b)] {
        let _ = writeln!(
            s,
            "link add {port} mtu {UNDERLAY_MTU} type veth peer name eth0 netns {ns} mtu {UNDERLAY_MTU}"
        );
        let _ = writeln!(s, "link set {port} master ulbr");
        let _ = writeln!(s, "link set {port} up");
    }
    s.push_str("link set ulbr up\n");
    sys::ip_batch(Some(ul), &s)?;
    for (ns, ip) in [(a, "10.0.0.10"), (b, "10.0.0.11")] {
        sys::ip_batch(
            Some(ns),
            // with an EC2 instance's DHCP default route
            &format!(
                "link set lo up\naddr add {ip}/22 dev eth0\nlink set eth0 up\n\
                 route add default via 10.0.0.1 dev eth0 proto dhcp\n"
            ),
        )?;
    }
    Ok(())
}

fn iperf_once(client_ns: &str, dst: &str, secs: u32) -> Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut c = in_ns_cmd(client_ns, "iperf3")?;
        // -O 1: leave the first second (slow start, ARP/FDB learning) out of the result
        c.args([
            "-c",
            dst,
            "-p",
            "5201",
            "-J",
            "-O",
            "1",
            "-t",
            &secs.to_string(),
        ]);
        let out = run_tracked(&mut c, None)?;
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if let Some(bps) = v["end"]["sum_received"]["bits_per_second"].as_f64() {
            return Ok(bps / 1e9);
        }
        let err = v["error"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(&out.stderr).trim().to_string());
        if Instant::now() > deadline {
            bail!("iperf3 {client_ns} -> {dst}: {err}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn throughput(ctx: &Ctx, sec: &mut Section) -> Result<()> {
    let p = format!("{}t", ctx.prefix);
    let rd = lab::run_dir(&p);
    std::fs::create_dir_all(&rd)?;
    let ns = |x: &str| format!("{p}-{x}");
    sys::create_namespaces(&["ul", "a", "b", "ul2", "c", "d"].map(ns))?;
    underlay_pair(&ns("ul"), &ns("a"), &ns("b"))?;
    underlay_pair(&ns("ul2"), &ns("c"), &ns("d"))?;
    // overlayd-configured pair
    for (x, ip) in [("a", "10.101.0.10/16"), ("b", "10.101.0.11/16")] {
        let dir = rd.join(x);
        fresh_node_files(&dir)?;
        let mut c = in_ns_cmd(&ns(x), &ctx.overlayd)?;
        c.args(od_apply_args(&dir, ip, "10.101.0.1"));
        strip_overlayd_env(&mut c);
        sys::run_ok(&mut c, None).with_context(|| format!("overlayd apply in {}", ns(x)))?;
    }
    let mtu = ip_json_mtu(&ns("a"), "cloudbr0")?;
    // hand-made pair: plain ip, same VNI, port, group, underlay and MTU
    for (x, ip) in [("c", "10.101.0.10/16"), ("d", "10.101.0.11/16")] {
        let b = format!(
            "link add cloudbr0 mtu {mtu} type bridge stp_state 0\n\
             link add ethvxlan0 mtu {mtu} type vxlan id 100 dstport 4789 group {GROUP} dev eth0\n\
             link set ethvxlan0 master cloudbr0\n\
             addr add {ip} dev cloudbr0\n\
             link set ethvxlan0 up\n\
             link set cloudbr0 up\n"
        );
        nl::in_netns(&ns(x), || {
            std::fs::write("/proc/sys/net/ipv4/conf/eth0/force_igmp_version", "2")?;
            Ok(())
        })?;
        sys::ip_batch(Some(&ns(x)), &b)?;
    }
    let mtu_hand = ip_json_mtu(&ns("c"), "ethvxlan0")?;
    let mtu_od = ip_json_mtu(&ns("a"), "ethvxlan0")?;
    let mut servers = Vec::new();
    for x in ["b", "d"] {
        let mut c = in_ns_cmd(&ns(x), "iperf3")?;
        c.args(["-s", "-p", "5201"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = c.spawn().context("starting iperf3 -s")?;
        track(child.id());
        servers.push(child);
    }
    std::thread::sleep(Duration::from_millis(300));
    let paths = [
        ("overlay (overlayd)", ns("a"), "10.101.0.11"),
        ("underlay (eth0 <-> eth0)", ns("a"), "10.0.0.11"),
        ("hand-made overlay (ip)", ns("c"), "10.101.0.11"),
    ];
    let secs = ctx.a.iperf_seconds;
    let mut res: Vec<Vec<f64>> = vec![vec![]; paths.len()];
    let run = (|| -> Result<()> {
        for r in 0..ctx.a.iperf_repeats {
            for j in 0..paths.len() {
                let k = (r + j) % paths.len();
                let (_, cns, dst) = &paths[k];
                res[k].push(iperf_once(cns, dst, secs)?);
            }
        }
        Ok(())
    })();
    for mut s in servers {
        untrack(s.id());
        let _ = s.kill();
        let _ = s.wait();
    }
    run?;
    let sums: Vec<Summary> = res.iter().map(|v| summarize(v)).collect();
    let mut t = Table::new(&["path", "runs", "median Gbit/s", "min", "max"]);
    for (k, (name, _, _)) in paths.iter().enumerate() {
        t.row(vec![
            name.to_string(),
            sums[k].n.to_string(),
            f2(sums[k].p50),
            f2(sums[k].min),
            f2(sums[k].max),
        ]);
    }
    sec.tables.push(t);
    let ratio = sums[0].p50 / sums[2].p50;
    sec.check(
        "overlay >= 0.97 x hand-made overlay",
        format!(
            "{:.2} / {:.2} Gbit/s = {ratio:.3}",
            sums[0].p50, sums[2].p50
        ),
        ratio >= 0.97,
        (ratio < 0.97).then(|| {
            "both are the same kernel datapath; a gap means a configuration difference (see the \
             vxlan details note) or noise (see min/max)"
                .into()
        }),
    );
    sec.notes.push(format!(
        "overlay / underlay = {:.3}; MTU: underlay {UNDERLAY_MTU}, overlayd VTEP {mtu_od}, \
         hand-made VTEP {mtu_hand}; iperf3 -t {secs} -O 1, 1 stream, {} repeats, paths interleaved",
        sums[0].p50 / sums[1].p50,
        ctx.a.iperf_repeats
    ));
    sec.notes.push(format!(
        "vxlan details: overlayd [{}]; hand-made [{}]",
        vxlan_details(&ns("a")),
        vxlan_details(&ns("c"))
    ));
    sec.data = json!({
        "gbit_per_s": paths.iter().enumerate().map(|(k, (name, _, _))| json!({
            "path": name, "summary": sums[k].to_json(), "samples": res[k]})).collect::<Vec<_>>(),
        "overlay_over_handmade": ratio,
        "overlay_over_underlay": sums[0].p50 / sums[1].p50,
        "mtu": {"underlay": UNDERLAY_MTU, "overlayd": mtu_od, "handmade": mtu_hand},
    });
    Ok(())
}

// ------------------------------------------------------------------ 4. scale

/// Phases of one `up --json` run, as "name seconds" pairs.
fn phases(v: &Value) -> Vec<(String, f64)> {
    v["timings"]["phases"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["phase"].as_str().unwrap_or("?").to_string(),
                p["seconds"].as_f64().unwrap_or(f64::NAN),
            )
        })
        .collect()
}

fn scale(ctx: &Ctx, sec: &mut Section) -> Result<()> {
    let p = format!("{}s", ctx.prefix);
    let reps = ctx.a.scale_repeats;
    let mut t = Table::new(&[
        "hosts",
        "namespaces",
        "runs",
        "full reach. median s",
        "min s",
        "max s",
        "matrix (last run)",
        "daemons",
        "RSS median MiB",
        "RSS max MiB",
    ]);
    let mut rows = Vec::new();
    let mut worst_rss = 0.0f64;
    let mut res = Ok(());
    'sizes: for &n in &ctx.a.scale {
        let mut reach_s = Vec::new();
        let mut rss_all: Vec<f64> = Vec::new();
        let mut runs = Vec::new();
        let (mut nsc, mut mode, mut daemons) = (String::new(), String::new(), String::new());
        for rep in 0..reps {
            let waited = wait_netns_settled(Duration::from_secs(60));
            let r = (|| -> Result<()> {
                let (v, wall, ok) = lab_up(ctx, &p, n, 2)?;
                let reach = v["timings"]["reachable_seconds"].as_f64();
                mode = format!(
                    "{} {}/{}{}",
                    v["reachability"]["mode"].as_str().unwrap_or("?"),
                    v["reachability"]["ok"],
                    v["reachability"]["pairs_probed"],
                    if ok { "" } else { " INCOMPLETE" }
                );
                nsc = v["namespaces"]
                    .as_array()
                    .map(|a| a.len().to_string())
                    .unwrap_or_default();
                let ds = bench_daemon::daemons_of(&p);
                daemons = format!("{}/{}", ds.len(), n + 2);
                let rss: Vec<f64> = ds
                    .iter()
                    .filter_map(|(pid, _)| bench_daemon::rss_kib(*pid))
                    .map(|k| k as f64 / 1024.0)
                    .collect();
                rss_all.extend(&rss);
                reach_s.push(reach.unwrap_or(f64::INFINITY));
                let mut slow: Vec<&Value> = v["reachability"]["results"]
                    .as_array()
                    .map(|a| a.iter().collect())
                    .unwrap_or_default();
                slow.sort_by(|a, b| {
                    b["ms"]
                        .as_f64()
                        .unwrap_or(f64::INFINITY)
                        .total_cmp(&a["ms"].as_f64().unwrap_or(f64::INFINITY))
                });
                slow.truncate(3);
                runs.push(json!({
                    "run": rep + 1, "up_wall_s": wall, "full_reachability_s": reach, "all_ok": ok,
                    "waited_for_netns_cleanup_s": waited,
                    "reachability_mode": v["reachability"]["mode"],
                    "pairs_probed": v["reachability"]["pairs_probed"],
                    "slowest_pairs": slow,
                    "daemons": ds.len(), "rss_mib": summarize(&rss).to_json(),
                    "phases": v["timings"]["phases"],
                }));
                let ph: Vec<String> = phases(&v)
                    .iter()
                    .map(|(k, s)| format!("{k} {s:.2}"))
                    .collect();
                eprintln!(
                    "overlay-lab bench: scale {n} hosts run {}: full reachability {} s ({})",
                    rep + 1,
                    reach.map(f2).unwrap_or_else(|| "-".into()),
                    ph.join(", ")
                );
                Ok(())
            })();
            lab::teardown(&p)?;
            if let Err(e) = r {
                res = Err(e.context(format!("scale with {n} hosts")));
                break 'sizes;
            }
        }
        let sr = summarize(&reach_s);
        let sm = summarize(&rss_all);
        worst_rss = worst_rss.max(sm.max);
        t.row(vec![
            n.to_string(),
            nsc.clone(),
            reach_s.len().to_string(),
            f2(sr.p50),
            f2(sr.min),
            f2(sr.max),
            mode.clone(),
            daemons.clone(),
            f1(sm.p50),
            f1(sm.max),
        ]);
        if n == 250 {
            sec.check(
                "250 hosts: full reachability <= 10 s (median of runs)",
                format!(
                    "median {:.2} s (min {:.2}, max {:.2}, {} runs)",
                    sr.p50, sr.min, sr.max, sr.n
                ),
                sr.p50 <= 10.0,
                (sr.p50 > 10.0).then(|| {
                    "see the phases of each run (stderr, or `data` in --json) for where the time \
                     goes"
                        .into()
                }),
            );
        }
        rows.push(json!({"hosts": n, "full_reachability_s": sr.to_json(),
            "rss_mib": sm.to_json(), "runs": runs}));
    }
    sec.tables.push(t);
    if !rows.is_empty() {
        sec.check(
            "per-daemon RSS <= 8 MiB",
            format!("max {worst_rss:.1} MiB over all sizes and runs"),
            worst_rss <= 8.0,
            (worst_rss > 8.0).then(|| "VmRSS of an overlayd run daemon above 8 MiB".into()),
        );
    }
    sec.notes.push(format!(
        "each size, {reps} runs: `overlay-lab up --hosts N --daemon --json` (2 VMs per host; \
         `overlayd run` on every node, waited for until each reports converged over its control \
         socket), full reachability = `timings.reachable_seconds` of that run (sampled matrix \
         for big labs), then VmRSS of every overlayd daemon from /proc/PID/status, then down; \
         before each run the bench waits until the kernel has freed the namespaces of the \
         previous one (creating a namespace takes < 20 ms again)"
    ));
    sec.data = json!({"sizes": rows});
    res
}

#[cfg(test)]
mod tests {
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
