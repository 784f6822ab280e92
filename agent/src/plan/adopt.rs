//! `overlayd adopt`: take over devices made by hand or by the original scripts (a live cloud
//! migrating to overlayd) without re-creating them. A device with a configured name that
//! matches the configuration in everything the kernel cannot change in place (its kind, and
//! for the VTEP its VNI, port, group, underlay and learning) is marked as overlayd's (device
//! group 79); anything else is refused, naming the difference, and nothing is marked. What
//! `apply` would still change afterwards (MTU, MAC, STP, routes …) is left to `apply`.

use super::port::{is_dummy_port, vtep_mismatch};
use super::{conflict, Op, Plan};
use crate::config::ConfigError;
use crate::model::*;

fn wrong_kind(key: &str, l: &Link, want: &str) -> ConfigError {
    conflict(
        key,
        &l.name,
        format!(
            "cannot adopt: a {} link, not {want}",
            l.kind.as_deref().unwrap_or("physical")
        ),
    )
}

pub fn plan_adopt(d: &Desired, o: &Observed) -> Result<Plan, ConfigError> {
    let mut p = Plan::default();
    let foreign = |name: &str| o.link(name).filter(|l| !l.owned());
    if let Some(l) = foreign(&d.bridge.name) {
        if l.kind.as_deref() != Some("bridge") {
            return Err(wrong_kind("bridge", l, "a bridge"));
        }
        p.ops.push(Op::SetOwner {
            name: l.name.clone(),
        });
    }
    if let Some(v) = &d.vtep {
        if let Some(l) = foreign(&v.name) {
            let ul = o.link(&d.underlay).map(|u| u.index);
            if let Some(why) = vtep_mismatch(l, v, ul) {
                return Err(conflict("vtep", &l.name, format!("cannot adopt: {why}")));
            }
            p.ops.push(Op::SetOwner {
                name: l.name.clone(),
            });
        }
    }
    if let Some(dm) = &d.dummy {
        if let Some(l) = foreign(&dm.name) {
            if !is_dummy_port(l) {
                return Err(wrong_kind("dummy", l, "a dummy or veth"));
            }
            p.ops.push(Op::SetOwner {
                name: l.name.clone(),
            });
            if let Some(peer) = l.link.and_then(|i| o.link_by_index(i)) {
                if !peer.owned() {
                    p.ops.push(Op::SetOwner {
                        name: peer.name.clone(),
                    });
                }
            }
        }
    }
    Ok(p)
}
