//! The two files overlayd keeps a marked part of: the hosts line (CloudStack resolves its own
//! FQDN to pick its address) and the resolv.conf block.

use super::{Op, Plan};
use crate::files::{render_hosts, render_resolv};
use crate::model::*;

pub(super) fn plan_files(p: &mut Plan, d: &Desired, o: &Observed) {
    let hosts_now = o.hosts.clone().unwrap_or_default();
    if render_hosts(&hosts_now, d.hosts_line.as_ref()) != hosts_now
        && (d.hosts_line.is_some() || o.hosts.is_some())
    {
        p.ops.push(Op::WriteHosts {
            path: d.hosts_file.clone(),
            line: d.hosts_line.clone(),
        });
    }
    let resolv_now = o.resolv.clone().unwrap_or_default();
    if render_resolv(&resolv_now, &d.dns) != resolv_now && (!d.dns.is_empty() || o.resolv.is_some())
    {
        p.ops.push(Op::WriteResolv {
            path: d.resolv_conf.clone(),
            servers: d.dns.clone(),
        });
    }
}
