//! `up --instances --cloud-init`: real cloud-init (Debian's 22.4, in the node image) provisions
//! the product nodes from their user data, as on EC2, instead of the lab installing overlayd.
//!
//! Before a node boots, [`enable`] removes the image's `/etc/cloud/cloud-init.disabled` in the
//! node's upper layer and gives the node's systemd manager `AWS_ENDPOINT_URL` = the lab's AWS
//! API relay (every unit, cloud-init's user scripts included, inherits it). After the boots,
//! [`wait_all`] waits for every node's cloud-init to finish (`/run/cloud-init/result.json`,
//! written at the end of the final stage, read from the host through `/proc/PID/root`) and
//! reports per node: status (done / error / failed / disabled / timeout), cloud-init's errors,
//! seconds from the container's boot start to the end of the final stage, the system state
//! and `systemctl is-active overlayd`.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::Value;

use crate::instances::Container;

/// In a node, relative to its root: the systemd manager drop-in `up --cloud-init` writes.
pub const AWS_DROPIN: &str = "etc/systemd/system.conf.d/90-overlay-lab-aws.conf";
/// In a node (its /run): written by cloud-init at the end of the final stage.
pub const RESULT: &str = "run/cloud-init/result.json";
/// In a node (its /run): cloud-init's per-stage progress.
pub const STATUS: &str = "run/cloud-init/status.json";
/// In a node (its /run): written by cloud-init's systemd generator when it disabled cloud-init.
const GENERATOR_DISABLED: &str = "run/cloud-init/disabled";
const GENERATOR_LOG: &str = "run/cloud-init/cloud-init-generator.log";

/// The drop-in's text: `AWS_ENDPOINT_URL` for every unit of the node.
pub fn aws_dropin(aws_endpoint_url: &str) -> String {
    format!(
        "# overlay-lab (up --cloud-init): every AWS API through the lab's relay to moto\n\
         [Manager]\n\
         DefaultEnvironment=AWS_ENDPOINT_URL={aws_endpoint_url}\n"
    )
}

/// Switches cloud-init on in the (mounted, not yet booted) node root `root` and points the
/// node's AWS SDKs and tools at `aws_endpoint_url`. Idempotent.
pub fn enable(root: &Path, aws_endpoint_url: &str) -> Result<()> {
    let off = root.join(crate::rootfs::CLOUD_INIT_DISABLED);
    match fs::remove_file(&off) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", off.display())),
    }
    let d = root.join(AWS_DROPIN);
    if let Some(p) = d.parent() {
        fs::create_dir_all(p)?;
    }
    fs::write(&d, aws_dropin(aws_endpoint_url)).with_context(|| format!("writing {}", d.display()))
}

/// What `result.json` says: the datasource and every stage's errors.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    pub datasource: Option<String>,
    pub errors: Vec<String>,
}

/// Parses cloud-init's `result.json` (`{"v1": {"datasource": ..., "errors": [...]}}`).
pub fn parse_result(text: &str) -> Result<Finished> {
    let v: Value = serde_json::from_str(text).context("result.json is not JSON")?;
    let v1 = v.get("v1").context("result.json has no v1")?;
    let errors = match &v1["errors"] {
        Value::Array(a) => a
            .iter()
            .map(|e| match e {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect(),
        Value::Null => Vec::new(),
        other => anyhow::bail!("result.json: errors is {other}"),
    };
    Ok(Finished {
        datasource: v1["datasource"].as_str().map(str::to_string),
        errors,
    })
}

/// What `status.json` says: the stage running now (None between stages and at the end) and
/// when the final stage finished (seconds since the epoch).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Progress {
    pub stage: Option<String>,
    pub final_finished: Option<f64>,
    /// Stages that have finished, in the order cloud-init runs them.
    pub finished: Vec<String>,
}

/// cloud-init's stages in the order a boot runs them (the keys of status.json's v1).
pub const STAGES: [&str; 4] = ["init-local", "init", "modules-config", "modules-final"];

pub fn parse_status(text: &str) -> Result<Progress> {
    let v: Value = serde_json::from_str(text).context("status.json is not JSON")?;
    let v1 = v.get("v1").context("status.json has no v1")?;
    Ok(Progress {
        stage: v1["stage"].as_str().map(str::to_string),
        final_finished: v1["modules-final"]["finished"].as_f64(),
        finished: STAGES
            .iter()
            .filter(|s| v1[**s]["finished"].as_f64().is_some())
            .map(|s| s.to_string())
            .collect(),
    })
}

/// One node's cloud-init, as `up` reports it.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub node: String,
    /// `done` (final stage finished, no errors), `error` (finished with errors), `failed` (the
    /// final stage's unit failed or the container stopped without a result), `disabled`
    /// (cloud-init's generator did not enable it), `timeout`.
    pub status: String,
    pub datasource: Option<String>,
    pub errors: Vec<String>,
    /// Container boot start (seconds since the epoch; also in /run/overlay-lab/P/NODE/boot-started).
    pub boot_started: f64,
    /// End of cloud-init's final stage (seconds since the epoch).
    pub final_finished: Option<f64>,
    /// final_finished - boot_started.
    pub seconds: Option<f64>,
    /// The stage cloud-init was in when the wait ended without a result.
    pub stage: Option<String>,
    /// `systemctl is-system-running` after cloud-init (running / degraded / ...).
    pub system: String,
    /// Failed units when degraded.
    pub failed_units: Vec<String>,
    /// `systemctl is-active overlayd`.
    pub overlayd: String,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.status == "done"
    }

    /// The one line `up` prints for the node (without the node name).
    pub fn line(&self) -> String {
        let mut s = format!("cloud-init {}", self.status);
        match (self.seconds, &self.stage) {
            (Some(t), _) => s.push_str(&format!(" {t:.2} s after boot start")),
            (None, Some(st)) => s.push_str(&format!(" (in stage {st})")),
            _ => {}
        }
        if let Some(d) = &self.datasource {
            s.push_str(&format!(" ({d})"));
        }
        if !self.errors.is_empty() {
            s.push_str(&format!("; errors: {}", self.errors.join(" | ")));
        }
        s.push_str(&format!("; system {}", self.system));
        if !self.failed_units.is_empty() {
            s.push_str(&format!(" (failed: {})", self.failed_units.join(" ")));
        }
        s.push_str(&format!("; overlayd {}", self.overlayd));
        s
    }
}

/// The node's own view of `rel` (its mount namespace's root, so its /run too).
fn inside(c: &Container, rel: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{}/root", c.init_pid)).join(rel)
}

/// The journal tail of `unit` in the node (for a failure without result.json).
fn journal_tail(c: &Container, unit: &str) -> String {
    c.probe(
        &[
            "journalctl",
            "-u",
            unit,
            "--no-pager",
            "-q",
            "-n",
            "15",
            "-o",
            "cat",
        ],
        Duration::from_secs(10),
    )
    .map(|(_, s)| s)
    .unwrap_or_default()
}

/// Waits for the node's cloud-init to end (result.json), or for a sign it never will.
fn wait_one(c: &Container, boot_started: f64, deadline: Instant) -> Outcome {
    let mut o = Outcome {
        node: c.node.clone(),
        status: "timeout".into(),
        datasource: None,
        errors: Vec::new(),
        boot_started,
        final_finished: None,
        seconds: None,
        stage: None,
        system: String::new(),
        failed_units: Vec::new(),
        overlayd: String::new(),
    };
    let mut last_unit_check = Instant::now();
    loop {
        if let Ok(text) = fs::read_to_string(inside(c, RESULT)) {
            match parse_result(&text) {
                Ok(f) => {
                    o.status = if f.errors.is_empty() { "done" } else { "error" }.into();
                    o.datasource = f.datasource;
                    o.errors = f.errors;
                    o.final_finished = fs::read_to_string(inside(c, STATUS))
                        .ok()
                        .and_then(|s| parse_status(&s).ok())
                        .and_then(|p| p.final_finished);
                    o.seconds = o.final_finished.map(|f| f - boot_started);
                    break;
                }
                // written atomically by cloud-init; a bad one is a real fault
                Err(e) => {
                    o.status = "error".into();
                    o.errors = vec![format!("{e:#}: {}", text.trim())];
                    break;
                }
            }
        }
        if !crate::daemons::alive(c.init_pid) {
            o.status = "failed".into();
            o.errors = vec!["the container stopped before cloud-init finished".into()];
            break;
        }
        if inside(c, GENERATOR_DISABLED).exists() {
            o.status = "disabled".into();
            let log = fs::read_to_string(inside(c, GENERATOR_LOG)).unwrap_or_default();
            o.errors = vec![format!(
                "cloud-init's generator disabled it: {}",
                log.lines().rev().take(3).collect::<Vec<_>>().join(" / ")
            )];
            break;
        }
        if last_unit_check.elapsed() > Duration::from_secs(5) {
            last_unit_check = Instant::now();
            let failed: Vec<&str> = [
                "cloud-init-local",
                "cloud-init",
                "cloud-config",
                "cloud-final",
            ]
            .into_iter()
            .filter(|u| {
                c.probe(
                    &["systemctl", "show", "-p", "ActiveState", "--value", u],
                    Duration::from_secs(10),
                )
                .map(|(_, s)| s == "failed")
                .unwrap_or(false)
            })
            .collect();
            // a stage that failed without result.json (cloud-init itself crashed or was killed)
            if !failed.is_empty() && !inside(c, RESULT).exists() {
                o.status = "failed".into();
                o.errors = failed
                    .iter()
                    .map(|u| format!("{u}.service failed: {}", journal_tail(c, u)))
                    .collect();
                break;
            }
        }
        if Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if o.status == "timeout" || o.status == "failed" {
        o.stage = fs::read_to_string(inside(c, STATUS))
            .ok()
            .and_then(|s| parse_status(&s).ok())
            .and_then(|p| p.stage);
    }
    // the boot transaction ends with cloud-final: the system state is final now
    let wait = if o.status == "timeout" { 5 } else { 60 };
    o.system = c
        .probe(
            &["systemctl", "is-system-running", "--wait"],
            Duration::from_secs(wait),
        )
        .map(|(_, s)| s)
        .unwrap_or_else(|e| format!("unknown ({e:#})"));
    if o.system == "degraded" {
        o.failed_units = c
            .probe(
                &["systemctl", "--failed", "--no-legend", "--plain"],
                Duration::from_secs(10),
            )
            .map(|(_, s)| {
                s.lines()
                    .filter_map(|l| l.split_whitespace().next().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
    }
    o.overlayd = crate::instances::is_active(c);
    o
}

/// Waits, in parallel, for cloud-init in every container of `nodes` ((container, boot start in
/// seconds since the epoch)), at most `timeout` in all; progress on stderr every 10 s unless
/// `quiet`. Outcomes in the order of `nodes`.
pub fn wait_all(nodes: &[(&Container, f64)], timeout: Duration, quiet: bool) -> Vec<Outcome> {
    let deadline = Instant::now() + timeout;
    let t0 = Instant::now();
    let done: Mutex<Vec<Option<Outcome>>> = Mutex::new(vec![None; nodes.len()]);
    std::thread::scope(|s| {
        for (i, (c, started)) in nodes.iter().enumerate() {
            let done = &done;
            s.spawn(move || {
                let o = wait_one(c, *started, deadline);
                if !quiet && !o.ok() {
                    eprintln!("overlay-lab: {}: cloud-init {}", o.node, o.line());
                }
                done.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(o);
            });
        }
        let mut next = Duration::from_secs(10);
        loop {
            let n = done
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .filter(|o| o.is_some())
                .count();
            if n == nodes.len() {
                break;
            }
            if t0.elapsed() >= next {
                next += Duration::from_secs(10);
                if !quiet {
                    let pending: Vec<String> = {
                        let d = done.lock().unwrap_or_else(|e| e.into_inner());
                        nodes
                            .iter()
                            .zip(d.iter())
                            .filter(|(_, o)| o.is_none())
                            .map(|((c, _), _)| {
                                let st = fs::read_to_string(inside(c, STATUS))
                                    .ok()
                                    .and_then(|s| parse_status(&s).ok())
                                    .map(|p| {
                                        p.stage.unwrap_or_else(|| {
                                            p.finished
                                                .last()
                                                .map(|f| format!("after {f}"))
                                                .unwrap_or_else(|| "starting".into())
                                        })
                                    })
                                    .unwrap_or_else(|| "not started".into());
                                format!("{} ({st})", c.node)
                            })
                            .collect()
                    };
                    eprintln!(
                        "overlay-lab: waiting for cloud-init, {:.0} s: {n} of {} finished; \
                         running: {}",
                        t0.elapsed().as_secs_f64(),
                        nodes.len(),
                        pending.join(" ")
                    );
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    done.into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .flatten()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_json_done_and_error() {
        let ok = parse_result(r#"{"v1": {"datasource": "DataSourceEc2", "errors": []}}"#).unwrap();
        assert_eq!(
            ok,
            Finished {
                datasource: Some("DataSourceEc2".into()),
                errors: vec![]
            }
        );
        let bad = parse_result(
            r#"{"v1": {"datasource": null, "errors": ["('scripts_user', RuntimeError('Runparts: 1 failures (part-001) in 1 attempted commands'))"]}}"#,
        )
        .unwrap();
        assert_eq!(bad.datasource, None);
        assert_eq!(bad.errors.len(), 1);
        assert!(bad.errors[0].contains("scripts_user"));
        assert!(parse_result("{}").is_err());
        assert!(parse_result("not json").is_err());
        assert!(parse_result(r#"{"v1": {"errors": "x"}}"#).is_err());
    }

    #[test]
    fn status_json_stage_and_final_time() {
        let running = r#"{"v1": {"datasource": "DataSourceEc2", "stage": "modules-final",
            "init-local": {"errors": [], "start": 1.0, "finished": 1.5},
            "init": {"errors": [], "start": 2.0, "finished": 3.0},
            "modules-init": {"errors": [], "start": null, "finished": null},
            "modules-config": {"errors": [], "start": 3.5, "finished": 4.0},
            "modules-final": {"errors": [], "start": 4.5, "finished": null}}}"#;
        let p = parse_status(running).unwrap();
        assert_eq!(p.stage.as_deref(), Some("modules-final"));
        assert_eq!(p.final_finished, None);
        assert_eq!(p.finished, ["init-local", "init", "modules-config"]);
        let done = running
            .replace(r#""stage": "modules-final""#, r#""stage": null"#)
            .replace(
                r#""start": 4.5, "finished": null"#,
                r#""start": 4.5, "finished": 1796180645.25"#,
            );
        let p = parse_status(&done).unwrap();
        assert_eq!(p.stage, None);
        assert_eq!(p.final_finished, Some(1796180645.25));
        assert_eq!(p.finished.len(), 4);
    }

    #[test]
    fn dropin_sets_the_managers_default_environment() {
        let d = aws_dropin("http://169.254.169.254:8773");
        assert!(d.contains("[Manager]\n"));
        assert!(d.contains("\nDefaultEnvironment=AWS_ENDPOINT_URL=http://169.254.169.254:8773\n"));
    }

    #[test]
    fn enable_removes_the_switch_and_writes_the_dropin() {
        let dir = std::env::temp_dir().join(format!("ci-enable-{}", std::process::id()));
        let off = dir.join(crate::rootfs::CLOUD_INIT_DISABLED);
        fs::create_dir_all(off.parent().unwrap()).unwrap();
        fs::write(&off, "").unwrap();
        enable(&dir, "http://169.254.169.254:8773").unwrap();
        assert!(!off.exists());
        enable(&dir, "http://169.254.169.254:8773").unwrap();
        let d = fs::read_to_string(dir.join(AWS_DROPIN)).unwrap();
        assert!(d.contains("AWS_ENDPOINT_URL=http://169.254.169.254:8773"));
        fs::remove_dir_all(&dir).unwrap();
    }
}
