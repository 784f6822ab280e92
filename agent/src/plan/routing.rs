//! Routes and policy rules: which of overlayd's routes (protocol 79) and rules to add,
//! re-point or remove, and what to do with a foreign route that has the same key.
//!
//! The kernel keys an IPv4 route by table, destination, TOS and metric: adding a second
//! route with the same key fails with EEXIST. A foreign route with the key of one of ours
//! is an expected situation on an EC2 instance (DHCP clients, cloud-init, ec2-net-utils,
//! the original automation's IMDS route), decided here, never left to a failing request:
//! - it already does what ours would (same device and gateway): it is kept, untouched and
//!   not ours — no operation, and `down` leaves it;
//! - it does something else: ours replaces it in one step (NLM_F_REPLACE) and the foreign
//!   route is recorded in the state file; `down` puts it back exactly.

use super::{Op, Plan};
use crate::model::*;
use crate::state::State;

fn same_key(w: &RouteSpec, r: &Route) -> bool {
    r.table == w.table && r.dst == w.dst && r.metric == w.metric
}

/// Does the observed route do what `w` asks (device, gateway, source)?
fn satisfies(w: &RouteSpec, r: &Route, dev_index: Option<u32>) -> bool {
    dev_index.is_some()
        && r.oif == dev_index
        && r.gateway == w.gateway
        && r.kind == 1
        && (w.src.is_none() || r.prefsrc == w.src)
}

/// A default route in `table` that is not ours (e.g. the instance's DHCP route).
fn foreign_default(o: &Observed, table: u32) -> Option<&Route> {
    o.routes
        .iter()
        .find(|r| r.table == table && r.dst.prefix_len() == 0 && !r.owned() && r.kind == 1)
}

pub(super) fn plan_routes(p: &mut Plan, d: &Desired, o: &Observed, bridge_created: bool) {
    let dev_index = |dev: &str| -> Option<u32> {
        if bridge_created && dev == d.bridge.name {
            None
        } else {
            o.link(dev).map(|l| l.index)
        }
    };
    let wanted: Vec<&RouteSpec> = d
        .routes
        .iter()
        .filter(|w| !(w.fallback && foreign_default(o, w.table).is_some()))
        .collect();

    // Ours that are no longer wanted go first, so nothing below can collide with them.
    for r in o.routes.iter().filter(|r| r.owned()) {
        if wanted.iter().any(|w| same_key(w, r)) {
            continue; // re-pointed in place below
        }
        let why = match d.routes.iter().find(|w| same_key(w, r)) {
            Some(w) if w.fallback => "the node has a default route of its own now".to_string(),
            _ => "not in the configuration".to_string(),
        };
        p.ops.push(Op::DelRoute {
            route: SavedRoute::from_observed(r, o),
            why,
        });
    }

    for w in wanted {
        let idx = dev_index(&w.dev);
        let same: Vec<&Route> = o.routes.iter().filter(|r| same_key(w, r)).collect();
        if same.iter().any(|r| satisfies(w, r, idx)) {
            continue;
        }
        match same.first() {
            None => p.ops.push(Op::AddRoute {
                route: w.clone(),
                replace: false,
                replaces: None,
            }),
            Some(r) if r.owned() => p.ops.push(Op::AddRoute {
                route: w.clone(),
                replace: true,
                replaces: None,
            }),
            Some(r) => p.ops.push(Op::AddRoute {
                route: w.clone(),
                replace: true,
                replaces: Some(SavedRoute::from_observed(r, o)),
            }),
        }
    }
}

pub(super) fn plan_rules(p: &mut Plan, d: &Desired, o: &Observed) {
    for r in o.rules.iter().filter(|r| r.owned()) {
        if !d.rules.iter().any(|w| r.matches(w)) {
            p.ops.push(Op::DelRule {
                priority: r.priority,
                from: r.src,
                table: r.table,
            });
        }
    }
    for w in &d.rules {
        // An identical rule of someone else's already does the job.
        if !o.rules.iter().any(|r| r.matches(w)) {
            p.ops.push(Op::AddRule { rule: w.clone() });
        }
    }
}

/// `down`: remove every rule and route of ours, putting back the foreign routes ours
/// replaced. Routes on links that are being deleted vanish with them.
pub(super) fn plan_down(
    o: &Observed,
    st: &State,
    deleted_links: &[u32],
    warnings: &mut Vec<String>,
) -> Vec<Op> {
    let mut ops = Vec::new();
    for r in o.rules.iter().filter(|r| r.owned()) {
        ops.push(Op::DelRule {
            priority: r.priority,
            from: r.src,
            table: r.table,
        });
    }
    let mut restored = Vec::new();
    for r in o.routes.iter().filter(|r| r.owned()) {
        if let Some(saved) = st
            .replaced_routes
            .iter()
            .find(|s| s.same_key(r.table, r.dst, r.metric))
        {
            restored.push(saved.clone());
            continue;
        }
        if r.oif.is_some_and(|x| deleted_links.contains(&x)) {
            continue;
        }
        ops.push(Op::DelRoute {
            route: SavedRoute::from_observed(r, o),
            why: "down".into(),
        });
    }
    // Replaced routes whose replacement is already gone (its link was deleted, or someone
    // removed it) are put back too, unless that key is taken by someone else meanwhile.
    for s in &st.replaced_routes {
        if restored.contains(s) {
            continue;
        }
        let taken = o
            .routes
            .iter()
            .any(|r| !r.owned() && s.same_key(r.table, r.dst, r.metric));
        if !taken {
            restored.push(s.clone());
        }
    }
    for s in restored {
        if o.link(&s.dev)
            .is_none_or(|l| deleted_links.contains(&l.index))
        {
            warnings.push(format!(
                "cannot restore route {s}: device {} is gone",
                s.dev
            ));
            continue;
        }
        ops.push(Op::RestoreRoute { route: s });
    }
    ops
}
