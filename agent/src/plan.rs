//! desired × observed → an ordered list of operations. Pure: no kernel access, so every
//! drift case is unit-tested without root. Operations name links, never ifindexes: the
//! executor resolves names at the moment it runs each step (created links get new indexes).

use crate::config::ConfigError;
use crate::files;
use crate::model::*;
use crate::state::State;
use overlay_router::nat::NatObserved;

mod adopt;
mod bridge;
mod hosts_resolv;
mod nat;
mod op;
mod port;
mod routing;

pub use adopt::plan_adopt;
pub use op::{Op, Plan};

fn conflict(key: &str, name: &str, what: String) -> ConfigError {
    ConfigError {
        key: key.into(),
        value: name.into(),
        source: None,
        reason: what,
    }
}

/// A link with a configured name and the right kind that overlayd did not create (no device
/// group 79): never changed by `apply`, never deleted by `down`; `overlayd adopt` takes over
/// one that matches the configuration.
fn not_ours(key: &str, name: &str) -> ConfigError {
    conflict(
        key,
        name,
        format!(
            "{name} exists but overlayd did not create it (no device group {OWNER_GROUP}); \
             `overlayd adopt` takes over a matching device without re-creating it, or remove/rename it"
        ),
    )
}

fn sysctl_op(
    p: &mut Plan,
    o: &Observed,
    key: &str,
    value: &str,
    record: bool,
    device_created: bool,
) {
    let spec = SysctlSpec {
        key: key.into(),
        value: value.into(),
        restore: record,
        want: SysctlWant::Exact,
    };
    sysctl_spec_op(p, o, &spec, device_created);
}

fn sysctl_spec_op(p: &mut Plan, o: &Observed, s: &SysctlSpec, device_created: bool) {
    let cur = if device_created {
        None
    } else {
        o.sysctls.get(&s.key).cloned().flatten()
    };
    if device_created || !s.satisfied_by(cur.as_deref()) {
        p.ops.push(Op::SetSysctl {
            key: s.key.clone(),
            value: s.value.clone(),
            from: cur.map(|c| c.trim().to_string()),
            record: s.restore,
        });
    }
}

/// Plan the changes that turn `o` into `d`.
pub fn plan_apply(d: &Desired, o: &Observed) -> Result<Plan, ConfigError> {
    let mut p = Plan::default();

    // 1. Shared sysctls first: force_igmp_version must precede the VTEP's join.
    for s in d.sysctls.iter().filter(|s| s.restore) {
        sysctl_spec_op(&mut p, o, s, false);
    }

    // 2. Bridge, 3. its ports, 4. the bridge up after them.
    let bridge_created = bridge::plan_bridge(&mut p, d, o)?;
    port::plan_vtep(&mut p, d, o, bridge_created)?;
    port::plan_dummy(&mut p, d, o, bridge_created)?;
    bridge::plan_bridge_up(&mut p, d, o, bridge_created);
    port::plan_flood_list(&mut p, d, o);

    // 5. Routes and rules (see `routing`).
    routing::plan_routes(&mut p, d, o, bridge_created);
    routing::plan_rules(&mut p, d, o);

    // 6. Files, 7. NAT.
    hosts_resolv::plan_files(&mut p, d, o);
    nat::plan_nat(&mut p, d, o);

    Ok(p)
}

/// Names `down` considers: the configured ones plus any recorded in the state file.
pub struct DownInput<'a> {
    pub bridge: &'a str,
    pub vtep: &'a str,
    pub dummy: &'a str,
    pub hosts_file: &'a str,
    pub resolv_conf: &'a str,
}

/// Plan the removal of everything overlayd owns. Links not marked as ours are left alone.
pub fn plan_down(i: &DownInput, o: &Observed, st: &State) -> Plan {
    let mut p = Plan::default();
    let mut names: Vec<String> = vec![i.vtep.to_string(), i.dummy.to_string()];
    for n in &st.links {
        if !names.contains(n) && n != i.bridge {
            names.push(n.clone());
        }
    }
    names.push(i.bridge.to_string());
    for n in names {
        if let Some(l) = o.link(&n) {
            if l.owned() {
                p.ops.push(Op::DeleteLink {
                    name: n.clone(),
                    why: "down".into(),
                });
            } else {
                p.warnings.push(format!(
                    "{n} exists but is not marked as overlayd's; left alone"
                ));
            }
        }
    }
    // Routes we installed vanish with the links; rules and routes on other devices not.
    let deleted: Vec<u32> = p
        .ops
        .iter()
        .filter_map(|op| match op {
            Op::DeleteLink { name, .. } => o.link(name).map(|l| l.index),
            _ => None,
        })
        .collect();
    let routing_ops = routing::plan_down(o, st, &deleted, &mut p.warnings);
    p.ops.extend(routing_ops);
    if matches!(
        o.nat,
        Some(NatObserved::Matches) | Some(NatObserved::Differs(_))
    ) {
        p.ops.push(Op::RemoveNat);
    }
    for (k, orig) in &st.sysctls {
        let cur = o.sysctls.get(k).cloned().flatten();
        match cur {
            Some(c) if c.trim() != orig.trim() => p.ops.push(Op::SetSysctl {
                key: k.clone(),
                value: orig.clone(),
                from: Some(c.trim().to_string()),
                record: false,
            }),
            _ => {}
        }
    }
    if let Some(h) = &o.hosts {
        if files::render_hosts(h, None) != *h {
            p.ops.push(Op::WriteHosts {
                path: i.hosts_file.into(),
                line: None,
            });
        }
    }
    if let Some(r) = &o.resolv {
        if files::render_resolv(r, &[]) != *r {
            p.ops.push(Op::WriteResolv {
                path: i.resolv_conf.into(),
                servers: vec![],
            });
        }
    }
    p
}

/// Sysctl keys a plan needs observed values for.
pub fn sysctl_keys(d: &Desired) -> Vec<String> {
    d.sysctls.iter().map(|s| s.key.clone()).collect()
}
