//! Shared context of one run: clients, cluster, mode, report and progress.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde::Serialize;

use crate::aws::Clients;
use crate::config::{Cluster, CLUSTER_TAG, ROLE_TAG};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Read only: report what would happen.
    Plan,
    /// Converge.
    Apply,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Keep,
    Change,
    Delete,
    Absent,
}

impl Action {
    pub fn as_str(&self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Keep => "keep",
            Action::Change => "change",
            Action::Delete => "delete",
            Action::Absent => "absent",
        }
    }
}

/// One line of a plan / status / bootstrap report.
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    pub resource: String,
    pub id: Option<String>,
    pub state: String,
    pub action: Action,
    pub detail: String,
}

impl Item {
    pub fn new(
        resource: &str,
        id: Option<&str>,
        state: &str,
        action: Action,
        detail: &str,
    ) -> Self {
        Item {
            resource: resource.to_string(),
            id: id.map(str::to_string),
            state: state.to_string(),
            action,
            detail: detail.to_string(),
        }
    }
}

/// What carrying out a step learned from AWS: the id of a resource it created and its state.
#[derive(Debug, Clone, Default)]
pub struct Done {
    pub id: Option<String>,
    pub state: Option<String>,
}

impl Done {
    /// Nothing new learned (changes to a resource whose id is known).
    pub fn nothing() -> Self {
        Done::default()
    }

    /// A resource was created with `id`, now in `state`.
    pub fn created(id: impl Into<String>, state: &str) -> Self {
        Done {
            id: Some(id.into()),
            state: Some(state.to_string()),
        }
    }
}

pub struct Ctx {
    pub clients: Clients,
    pub cluster: Cluster,
    pub mode: Mode,
    pub poll: Duration,
    pub timeout: Duration,
    pub items: Mutex<Vec<Item>>,
    pub quiet: bool,
}

impl Ctx {
    pub fn apply(&self) -> bool {
        self.mode == Mode::Apply
    }

    pub fn name(&self) -> &str {
        self.cluster.name()
    }

    pub fn record(
        &self,
        resource: &str,
        id: Option<&str>,
        state: &str,
        action: Action,
        detail: &str,
    ) {
        self.push(Item::new(resource, id, state, action, detail));
    }

    fn push(&self, item: Item) {
        if self.mode == Mode::Apply && !self.quiet && item.action != Action::Keep {
            let id = item.id.as_deref().unwrap_or("-");
            eprintln!(
                "{:<7} {:<28} {} {}",
                item.action.as_str(),
                item.resource,
                id,
                item.detail
            );
        }
        self.items.lock().unwrap().push(item);
    }

    /// Records one decided step and, in apply mode only, carries it out with `call` (futures
    /// are lazy: in plan mode `call` never runs). This is the one place the mode decides between
    /// printing a plan and executing it. A call that creates a resource returns what AWS said
    /// about it ([`Done`]); the recorded step then carries the new id and state.
    pub async fn carry_out<Fut>(&self, mut step: Item, call: Fut) -> Result<Option<String>>
    where
        Fut: std::future::Future<Output = Result<Done>>,
    {
        if self.apply() {
            let done = call.await?;
            if done.id.is_some() {
                step.id = done.id;
            }
            if let Some(state) = done.state {
                step.state = state;
            }
        }
        let id = step.id.clone();
        self.push(step);
        Ok(id)
    }

    /// Waits until a deleted resource is gone: `find` returns its state while it is still there.
    pub async fn wait_gone<F, Fut>(&self, what: &str, mut find: F) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<Option<String>>>,
    {
        self.wait_for(what, || {
            let f = find();
            async move { Ok(f.await?.map_or(Ok(()), Err)) }
        })
        .await
    }

    /// Waits for AWS to settle (see [`Ctx::wait_for`]) when applying; a plan does not wait.
    pub async fn settle<T, F, Fut>(&self, what: &str, probe: F) -> Result<Option<T>>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<std::result::Result<T, String>>>,
    {
        if !self.apply() {
            return Ok(None);
        }
        self.wait_for(what, probe).await.map(Some)
    }

    /// The recorded items in dependency order (parallel branches record in any order).
    pub fn take_items(&self) -> Vec<Item> {
        let mut items = std::mem::take(&mut *self.items.lock().unwrap());
        items.sort_by_key(|i| order(&i.resource));
        items
    }

    /// The tags every resource gets: cluster, role and Name.
    pub fn tags(&self, role: &str) -> Vec<(String, String)> {
        vec![
            (CLUSTER_TAG.to_string(), self.name().to_string()),
            (ROLE_TAG.to_string(), role.to_string()),
            ("Name".to_string(), self.cluster.res_name(role)),
        ]
    }

    /// Polls `probe` until it returns `Some`, showing progress for long waits.
    /// `probe` returns Ok(Err(state)) while waiting, Ok(Ok(v)) when done.
    pub async fn wait_for<T, F, Fut>(&self, what: &str, mut probe: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<std::result::Result<T, String>>>,
    {
        let start = Instant::now();
        let tty = std::io::stderr().is_terminal();
        let mut last_state = String::new();
        let mut last_print = Instant::now();
        loop {
            match probe().await? {
                Ok(v) => {
                    if !self.quiet && !last_state.is_empty() {
                        eprintln!(
                            "{}done    {what} after {}s",
                            if tty { "\r\x1b[K" } else { "" },
                            start.elapsed().as_secs()
                        );
                    }
                    return Ok(v);
                }
                Err(state) => {
                    let elapsed = start.elapsed();
                    if elapsed > self.timeout {
                        bail!(
                            "timed out after {}s waiting for {what} (last state: {state}); \
                             re-run to resume",
                            elapsed.as_secs()
                        );
                    }
                    if !self.quiet {
                        if tty {
                            eprint!("\r\x1b[Kwaiting {what}: {state} ({}s)", elapsed.as_secs());
                            let _ = std::io::stderr().flush();
                        } else if state != last_state
                            || last_print.elapsed() > Duration::from_secs(30)
                        {
                            eprintln!("waiting {what}: {state} ({}s)", elapsed.as_secs());
                            last_print = Instant::now();
                        }
                    }
                    last_state = state;
                }
            }
            tokio::time::sleep(self.poll).await;
        }
    }
}

/// Position of a resource kind in dependency order.
pub fn order(resource: &str) -> usize {
    const ORDER: [&str; 16] = [
        "transit-gateway",
        "tgw-attachment",
        "multicast-domain",
        "multicast-association",
        "security-group",
        "router/",
        "route/",
        "efs",
        "efs-mount-target",
        "secret/admin",
        "secret/service",
        "db-subnet-group",
        "db-parameter-group",
        "db-parameter-group/parameters",
        "db-instance",
        "",
    ];
    let kind = if resource.starts_with("security-group") {
        "security-group"
    } else if resource.starts_with("router/") {
        "router/"
    } else if resource.starts_with("route/") {
        "route/"
    } else {
        resource
    };
    ORDER.iter().position(|k| *k == kind).unwrap_or(ORDER.len())
}
