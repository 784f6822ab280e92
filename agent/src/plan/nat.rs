//! NAT of router/standalone: the nftables table `ip overlayd`, whole or not at all.

use super::{Op, Plan};
use crate::model::*;
use overlay_router::nat::NatObserved;

pub(super) fn plan_nat(p: &mut Plan, d: &Desired, o: &Observed) {
    match (&d.nat, &o.nat) {
        (Some(spec), Some(NatObserved::Matches)) => {
            let _ = spec;
        }
        (Some(spec), obs) => p.ops.push(Op::EnsureNat {
            spec: spec.clone(),
            why: match obs {
                Some(NatObserved::Differs(r)) => format!("drifted: {r}"),
                _ => "absent".into(),
            },
        }),
        (None, Some(NatObserved::Matches)) | (None, Some(NatObserved::Differs(_))) => {
            p.ops.push(Op::RemoveNat)
        }
        (None, _) => {}
    }
}
