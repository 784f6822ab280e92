//! `overlay-lab up --daemon`: `overlayd run` in every node instead of `overlayd apply`, each
//! with its own control socket, state dir and log in /run/overlay-lab/P/NODE/, metrics off.
//! `up` waits until every daemon reports `converged` over its control socket; `down` stops
//! them (SIGTERM, SIGKILL after a grace period) before deleting the namespaces. Daemons are
//! found by their command line (a path under /run/overlay-lab/P/), so a crashed `up` or bench
//! cannot leave one behind.

use crate::node_cmd::{node_dir, overlayd_cmd, RUN_ROOT};
use crate::topo::Topology;
use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

pub const SOCKET: &str = "overlayd.sock";
pub const LOG: &str = "overlayd.log";
pub const PID_FILE: &str = "overlayd.pid";

/// One request over a daemon's control socket; the JSON reply.
pub fn control(sock: &Path, req: &str) -> Result<serde_json::Value> {
    let mut s = UnixStream::connect(sock).with_context(|| format!("connect {}", sock.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(format!("{req}\n").as_bytes())?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    serde_json::from_str(&line).with_context(|| format!("reply of {}: {line:?}", sock.display()))
}

fn log_tail(p: &Path) -> String {
    let s = std::fs::read_to_string(p).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

/// Start `overlayd run` in every node and wait until all report converged. Returns
/// (node, pid) per node.
pub fn start_all(
    overlayd: &Path,
    t: &Topology,
    jobs: usize,
    timeout: Duration,
) -> Result<Vec<(String, u32)>> {
    let spawned = crate::sys::par_map(&t.nodes, jobs, |n| spawn_one(overlayd, t, n, false));
    let mut children = Vec::new();
    for (n, r) in t.nodes.iter().zip(spawned) {
        children.push((n, r?));
    }
    let deadline = Instant::now() + timeout;
    let mut pending: Vec<usize> = (0..children.len()).collect();
    while !pending.is_empty() {
        let mut still = Vec::new();
        for &i in &pending {
            let (n, child) = &mut children[i];
            let dir = node_dir(&t.prefix, &n.name);
            if let Some(st) = child.try_wait()? {
                bail!(
                    "overlayd run on {} exited with {st}:\n{}",
                    n.name,
                    log_tail(&dir.join(LOG))
                );
            }
            let ok = control(&dir.join(SOCKET), "status")
                .map(|v| v["converged"].as_bool() == Some(true))
                .unwrap_or(false);
            if !ok {
                still.push(i);
            }
        }
        pending = still;
        if pending.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            let names: Vec<&str> = pending
                .iter()
                .map(|&i| children[i].0.name.as_str())
                .collect();
            bail!(
                "overlayd run did not report converged within {:.0} s on: {}",
                timeout.as_secs_f64(),
                names.join(" ")
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(children
        .iter()
        .map(|(n, c)| (n.name.clone(), c.id()))
        .collect())
}

/// Start `overlayd run` on node `n` (its log in /run/overlay-lab/P/NODE/overlayd.log,
/// appended to with `append`: a restart, as systemd's `Restart=` would do after a crash).
pub fn spawn_one(
    overlayd: &Path,
    t: &Topology,
    n: &crate::topo::Node,
    append: bool,
) -> Result<Child> {
    let dir = node_dir(&t.prefix, &n.name);
    let sock = dir.join(SOCKET);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(dir.join(LOG))?;
    let mut c = overlayd_cmd(overlayd, t, n, &["run"])?;
    c.arg("--control-socket")
        .arg(&sock)
        .args(["--metrics-address", "off"])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // own process group: a ctrl-C meant for `overlay-lab up` does not hit the daemons
        .process_group(0);
    // A clean signal mask: `overlay-lab bench` blocks SIGTERM/SIGINT/SIGHUP in itself (its
    // cleanup thread waits for them), and a mask survives fork and exec — a daemon started
    // under it would never see its SIGTERM (or SIGHUP reload).
    // SAFETY: sigprocmask only, async-signal-safe.
    unsafe {
        c.pre_exec(|| {
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            Ok(())
        });
    }
    let child = c
        .spawn()
        .with_context(|| format!("starting overlayd run on {}", n.name))?;
    std::fs::write(dir.join(PID_FILE), format!("{}\n", child.id()))?;
    Ok(child)
}

/// `overlayd` processes whose command line names a path under /run/overlay-lab/PREFIX/:
/// (pid, node name taken from that path).
pub fn daemons_of(prefix: &str) -> Vec<(u32, String)> {
    let want = format!("{RUN_ROOT}/{prefix}/");
    let mut v = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return v;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        if let Some(node) = lab_daemon_node(&raw, &want) {
            v.push((pid, node));
        }
    }
    v.sort();
    v
}

/// If NUL-separated `cmdline` is an `overlayd ... run ...` with an argument under `want`
/// (".../P/"), the node name (first path component after it).
pub fn lab_daemon_node(cmdline: &[u8], want: &str) -> Option<String> {
    let args: Vec<&str> = cmdline
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .filter_map(|a| std::str::from_utf8(a).ok())
        .collect();
    let exe = Path::new(args.first()?).file_name()?.to_str()?;
    // any binary named overlayd* (a renamed build under test, e.g. overlayd.new, counts too)
    if !exe.starts_with("overlayd") || !args.contains(&"run") {
        return None;
    }
    args.iter()
        .find_map(|a| a.strip_prefix(want))
        .and_then(|rest| rest.split('/').next())
        .filter(|n| !n.is_empty())
        .map(str::to_string)
}

/// The process exists and is not a zombie.
pub(crate) fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // state is the field after the ")" that closes the command name
        Ok(s) => s
            .rsplit_once(')')
            .map(|(_, r)| !r.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// Stop every daemon of lab `prefix`: SIGTERM, then SIGKILL after 3 s. Returns how many.
pub fn stop_daemons(prefix: &str) -> usize {
    let pids: Vec<u32> = daemons_of(prefix).into_iter().map(|(p, _)| p).collect();
    terminate(&pids, Duration::from_secs(3));
    pids.len()
}

/// SIGTERM to each of `pids` (processes the caller identified by their command line), SIGKILL
/// to those still alive after `grace`.
pub fn terminate(pids: &[u32], grace: Duration) {
    for &pid in pids {
        // SAFETY: kill(2) on a pid the caller just identified by its command line.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    }
    let deadline = Instant::now() + grace;
    while pids.iter().any(|&p| alive(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    for &pid in pids {
        if alive(pid) {
            // SAFETY: as above.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

/// VmRSS (KiB) from the text of /proc/PID/status.
pub fn parse_vm_rss_kib(status: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        let rest = l.strip_prefix("VmRSS:")?;
        let mut it = rest.split_whitespace();
        let v: u64 = it.next()?.parse().ok()?;
        match it.next() {
            Some("kB") | None => Some(v),
            _ => None,
        }
    })
}

pub fn rss_kib(pid: u32) -> Option<u64> {
    parse_vm_rss_kib(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_parsed() {
        let s = "Name:\toverlayd\nVmPeak:\t  20000 kB\nVmRSS:\t    3412 kB\nRssAnon:\t 1000 kB\n";
        assert_eq!(parse_vm_rss_kib(s), Some(3412));
        assert_eq!(parse_vm_rss_kib("Name: x\n"), None);
        assert_eq!(parse_vm_rss_kib("VmRSS: 12 MB\n"), None);
    }

    #[test]
    fn daemons_are_recognised_by_command_line() {
        let want = "/run/overlay-lab/obs/";
        let cl =
            b"/x/target/release/overlayd\0run\0--config\0/run/overlay-lab/obs/h12/overlayd.toml\0";
        assert_eq!(lab_daemon_node(cl, want).as_deref(), Some("h12"));
        let other_lab = b"/x/overlayd\0run\0--config\0/run/overlay-lab/obsx/h1/overlayd.toml\0";
        assert_eq!(lab_daemon_node(other_lab, want), None);
        let apply = b"/x/overlayd\0apply\0--config\0/run/overlay-lab/obs/h1/overlayd.toml\0";
        assert_eq!(lab_daemon_node(apply, want), None);
        let not_od = b"/bin/sleep\0run\0/run/overlay-lab/obs/h1/x\0";
        assert_eq!(lab_daemon_node(not_od, want), None);
    }
}
