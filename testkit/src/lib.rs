//! Fixtures every crate's tests share (dev-dependency of agent, router, lab and tests):
//! - [`gate`]: the one check of whether a root/namespace test can run here; it **fails**
//!   the test under `CI=true` and skips it with a printed reason otherwise;
//! - [`NsGuard`]: network namespaces with unique names, deleted on drop (also on panic);
//! - [`run`], [`sh`], [`ip`], [`ip_batch`]: commands with timeouts that say what failed;
//! - [`in_netns`] / [`enter_netns`]: setns (nix) on a thread of its own.
//!
//! Tests only create namespaces of their own and use addresses inside them.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const NETNS_DIR: &str = "/run/netns";

/// `CI=true` in the environment.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// What a privileged test needs beyond root: these commands must be on PATH.
pub fn have(tools: &[&str]) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    for t in tools {
        let found = std::env::split_paths(&path).any(|d| {
            std::fs::metadata(d.join(t))
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        });
        if !found {
            return Err(format!("{t} is not installed (not on PATH)"));
        }
    }
    Ok(())
}

/// Can `test` run here? Needs root, network namespaces and `tools` (plus `extra`, a check
/// of the caller's). False (with a printed reason) means skip; under `CI=true` it panics
/// instead: in CI a test that cannot run is a failure, never a skip.
pub fn gate(test: &str, tools: &[&str], extra: impl FnOnce() -> Result<(), String>) -> bool {
    let why = if !nix::unistd::geteuid().is_root() {
        Err("needs root (network namespaces)".to_string())
    } else {
        have(tools).and_then(|_| extra())
    };
    match why {
        Ok(()) => true,
        Err(w) => {
            if in_ci() {
                panic!("{test}: cannot run ({w}) and CI=true: failing instead of skipping");
            }
            // straight to stderr: the harness captures eprintln! of passing tests
            let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {w}");
            false
        }
    }
}

/// A name unique to this process and call: `<tag><pid % 100000>n<seq>` (namespaces).
pub fn unique_name(tag: &str) -> String {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    format!(
        "{tag}{}n{}",
        std::process::id() % 100_000,
        SEQ.fetch_add(1, Ordering::SeqCst)
    )
}

/// Run to completion with a timeout (the child is killed when it expires); stdout and
/// stderr captured.
pub fn run(cmd: &mut Command, timeout: Duration) -> std::io::Result<Output> {
    let desc = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| std::io::Error::new(e.kind(), format!("spawning {desc}: {e}")))?;
    let mut so = child.stdout.take().expect("piped");
    let mut se = child.stderr.take().expect("piped");
    let t1 = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = so.read_to_end(&mut b);
        b
    });
    let t2 = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = se.read_to_end(&mut b);
        b
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("{desc} timed out after {timeout:?}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Ok(Output {
        status,
        stdout: t1.join().unwrap_or_default(),
        stderr: t2.join().unwrap_or_default(),
    })
}

/// Run `args` (60 s at most) and require success; returns stdout.
pub fn sh(args: &[&str]) -> String {
    let o = run(
        Command::new(args[0]).args(&args[1..]),
        Duration::from_secs(60),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        o.status.success(),
        "{args:?} failed ({}): {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `ip -n NS ARGS...` (split on whitespace); panics on failure, returns stdout.
pub fn ip(ns: &str, args: &str) -> String {
    let mut v = vec!["ip", "-n", ns];
    v.extend(args.split_whitespace());
    sh(&v)
}

/// `ip -n NS -batch -` with `lines`; panics on failure.
pub fn ip_batch(ns: &str, lines: &str) {
    let mut c = Command::new("ip")
        .args(["-n", ns, "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ip");
    c.stdin
        .take()
        .expect("piped")
        .write_all(lines.as_bytes())
        .expect("write ip -batch input");
    let o = c.wait_with_output().expect("ip -batch");
    assert!(
        o.status.success(),
        "ip -n {ns} -batch failed: {}\n{lines}",
        String::from_utf8_lossy(&o.stderr)
    );
}

pub fn ns_exists(ns: &str) -> bool {
    Path::new(NETNS_DIR).join(ns).exists()
}

/// Network namespaces created now (a leftover of a crashed run with the same name is
/// replaced) and deleted on drop — processes still inside them are killed first — also
/// when the test panics. IPv6 is off in them unless `keep_ipv6` (link-local addresses make
/// dumps racy).
pub struct NsGuard {
    pub names: Vec<String>,
}

impl NsGuard {
    pub fn new(names: &[&str]) -> NsGuard {
        Self::with_ipv6(names, false)
    }

    pub fn with_ipv6(names: &[&str], keep_ipv6: bool) -> NsGuard {
        let g = NsGuard {
            names: names.iter().map(|s| s.to_string()).collect(),
        };
        for n in &g.names {
            if ns_exists(n) {
                let _ = Command::new("ip")
                    .args(["netns", "del", n])
                    .stderr(Stdio::null())
                    .status();
            }
            sh(&["ip", "netns", "add", n]);
            if !keep_ipv6 {
                sh(&[
                    "ip",
                    "netns",
                    "exec",
                    n,
                    "sysctl",
                    "-qw",
                    "net.ipv6.conf.all.disable_ipv6=1",
                    "net.ipv6.conf.default.disable_ipv6=1",
                ]);
            }
        }
        g
    }
}

impl Drop for NsGuard {
    fn drop(&mut self) {
        for n in &self.names {
            if let Ok(o) = Command::new("ip").args(["netns", "pids", n]).output() {
                for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            }
            let _ = Command::new("ip")
                .args(["netns", "del", n])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Move the calling thread (only it) into network namespace `ns`.
pub fn enter_netns(ns: &str) -> std::io::Result<()> {
    let f = std::fs::File::open(Path::new(NETNS_DIR).join(ns))
        .map_err(|e| std::io::Error::new(e.kind(), format!("namespace {ns}: {e}")))?;
    nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
        std::io::Error::new(std::io::Error::from(e).kind(), format!("setns({ns}): {e}"))
    })
}

/// Run `f` on a fresh thread inside namespace `ns` (the caller's thread is not moved).
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            enter_netns(ns).unwrap_or_else(|e| panic!("{e}"));
            f()
        })
        .join()
        .unwrap_or_else(|_| panic!("thread in namespace {ns} panicked"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_short() {
        let a = unique_name("t");
        let b = unique_name("t");
        assert_ne!(a, b);
        assert!(a.len() <= 15, "{a}");
    }

    #[test]
    fn run_times_out_and_reports() {
        let e = run(Command::new("sleep").arg("5"), Duration::from_millis(100)).unwrap_err();
        assert!(e.to_string().contains("timed out"), "{e}");
        let o = run(&mut Command::new("true"), Duration::from_secs(5)).unwrap();
        assert!(o.status.success());
    }
}
