//! Subprocess helpers (with timeouts), bounded parallelism and namespace bookkeeping.

use anyhow::{anyhow, bail, Context, Result};
use std::io::{Read, Write};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const NETNS_DIR: &str = "/run/netns";

/// Run a command to completion, feeding `stdin`, killing it after `timeout`.
pub fn run_timeout(cmd: &mut Command, stdin: Option<&str>, timeout: Duration) -> Result<Output> {
    let desc = describe(cmd);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {desc}"))?;
    if let Some(input) = stdin {
        let mut si = child.stdin.take().expect("piped stdin");
        let input = input.to_string();
        // A writer thread, so a child that does not read cannot block us.
        std::thread::spawn(move || {
            let _ = si.write_all(input.as_bytes());
        });
    }
    let mut so = child.stdout.take().expect("piped stdout");
    let mut se = child.stderr.take().expect("piped stderr");
    let out_t = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = so.read_to_end(&mut b);
        b
    });
    let err_t = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = se.read_to_end(&mut b);
        b
    });
    let start = Instant::now();
    let mut sleep = Duration::from_micros(200);
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "{desc} did not finish within {}s (killed)",
                timeout.as_secs()
            );
        }
        std::thread::sleep(sleep);
        sleep = (sleep * 2).min(Duration::from_millis(20));
    };
    Ok(Output {
        status,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
    })
}

/// Run and require exit status 0; the error carries stderr.
pub fn run_ok(cmd: &mut Command, stdin: Option<&str>) -> Result<String> {
    let desc = describe(cmd);
    let out = run_timeout(cmd, stdin, Duration::from_secs(60))?;
    if !out.status.success() {
        let mut msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if msg.is_empty() {
            msg = String::from_utf8_lossy(&out.stdout).trim().to_string();
        }
        bail!("{desc} failed ({}): {msg}", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip -batch -` (optionally inside namespace `ns`), with the lines on stdin. `-force` is not
/// used: the first failing line aborts and is reported.
pub fn ip_batch(ns: Option<&str>, lines: &str) -> Result<()> {
    let mut c = Command::new("ip");
    if let Some(ns) = ns {
        c.args(["-n", ns]);
    }
    c.args(["-batch", "-"]);
    run_ok(&mut c, Some(lines))
        .with_context(|| format!("configuring namespace {}", ns.unwrap_or("<root>")))?;
    Ok(())
}

pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    if s.len() > 160 {
        s.truncate(160);
        s.push_str("...");
    }
    s
}

/// Map `f` over `items` with at most `jobs` threads; results keep the input order.
pub fn par_map<T: Sync, R: Send>(items: &[T], jobs: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    let jobs = jobs.clamp(1, items.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= items.len() {
                    break;
                }
                let r = f(&items[i]);
                results.lock().unwrap()[i] = Some(r);
            });
        }
    });
    results
        .into_inner()
        .unwrap()
        .into_iter()
        .map(|r| r.expect("every item mapped"))
        .collect()
}

/// Like `par_map` for fallible work: the first error (in input order) wins.
pub fn par_try<T: Sync>(
    items: &[T],
    jobs: usize,
    f: impl Fn(&T) -> Result<()> + Sync,
) -> Result<()> {
    par_map(items, jobs, f).into_iter().collect()
}

/// Named network namespaces (as `ip netns` sees them) that start with `prefix-`.
pub fn lab_namespaces(prefix: &str) -> Vec<String> {
    let want = format!("{prefix}-");
    let mut v: Vec<String> = std::fs::read_dir(NETNS_DIR)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.starts_with(&want))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Create namespaces with one `ip -batch` process (about 2 ms per namespace).
pub fn create_namespaces(names: &[String]) -> Result<()> {
    for chunk in names.chunks(500) {
        let lines: String = chunk.iter().map(|n| format!("netns add {n}\n")).collect();
        ip_batch(None, &lines).context("creating network namespaces")?;
    }
    Ok(())
}

/// Delete namespaces; already-missing ones are fine (idempotent).
pub fn delete_namespaces(names: &[String]) -> Result<()> {
    let existing: Vec<&String> = names
        .iter()
        .filter(|n| std::path::Path::new(NETNS_DIR).join(n).exists())
        .collect();
    for chunk in existing.chunks(500) {
        let lines: String = chunk.iter().map(|n| format!("netns del {n}\n")).collect();
        ip_batch(None, &lines).context("deleting network namespaces")?;
    }
    Ok(())
}

pub fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(anyhow!(
            "overlay-lab needs root (network namespaces, veths, bridges): run it with sudo"
        ));
    }
    Ok(())
}

/// Enter the network namespace `ns` on the calling thread only.
pub fn enter_netns(ns: &str) -> Result<()> {
    use std::os::fd::AsFd;
    let f = std::fs::File::open(format!("{NETNS_DIR}/{ns}"))
        .with_context(|| format!("namespace {ns} does not exist"))?;
    nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("setns({ns})"))
}

/// `program` as a child that enters network namespace `ns` itself, right before exec
/// (setns in `pre_exec`): no `ip netns exec`, no private mount namespace.
pub fn command_in_netns(ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Result<Command> {
    use std::os::unix::process::CommandExt;
    let f = std::fs::File::open(format!("{NETNS_DIR}/{ns}"))
        .with_context(|| format!("namespace {ns} does not exist"))?;
    let mut c = Command::new(program);
    // the namespace file stays open as long as the closure, i.e. the Command
    let keep = std::sync::Arc::new(f);
    // SAFETY: the closure only calls setns(2), which is async-signal-safe.
    unsafe {
        c.pre_exec(move || {
            use std::os::fd::AsFd;
            nix::sched::setns(keep.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(std::io::Error::from)
        });
    }
    Ok(c)
}

/// FNV-1a 64 of `parts` joined by NUL bytes: stable, dependency-free keys and ids (the node
/// image's cache key, the lab's AWS-shaped ids and credentials).
pub fn fnv64(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, p) in parts.iter().enumerate() {
        let sep: &[u8] = if i > 0 { &[0] } else { &[] };
        for &b in sep.iter().chain(p.as_bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}
