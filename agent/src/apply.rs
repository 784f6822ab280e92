//! The thin part: read the kernel into [`Observed`] and run a [`Plan`]'s operations in order.
//! Decisions live in `plan`; this module only carries them out.

use crate::config::{Config, ConfigError};
use crate::desired;
use crate::files;
use crate::model::*;
use crate::netlink;
use crate::plan::{self, Op, Plan};
use crate::state::{self, State};
use crate::sysctl;
use overlay_router::nat::{self, NatObserved, NatSpec};
use rtnetlink::Handle;
use std::path::Path;

pub use crate::error::AgentError;

/// Dump links, addresses and routes.
pub async fn observe_kernel(h: &Handle) -> Result<Observed, AgentError> {
    Ok(Observed {
        links: netlink::dump_links(h).await?,
        addrs: netlink::dump_addrs(h).await?,
        routes: netlink::dump_routes(h).await?,
        rules: netlink::dump_rules(h).await?,
        ..Default::default()
    })
}

fn io(what: &str, e: std::io::Error) -> AgentError {
    AgentError::io(what, e)
}

/// Read the sysctls, files and NAT table the plan compares against.
pub fn observe_extras(
    o: &mut Observed,
    keys: &[String],
    hosts: &Path,
    resolv: &Path,
    nat_spec: Option<&NatSpec>,
) -> Result<(), AgentError> {
    observe_extras_with(o, keys, hosts, resolv, nat_spec, None)
}

/// As [`observe_extras`]; with `assume_nat` the nft table is not read (it sends no netlink
/// events, so the event-driven path trusts the last full resync for it).
pub fn observe_extras_with(
    o: &mut Observed,
    keys: &[String],
    hosts: &Path,
    resolv: &Path,
    nat_spec: Option<&NatSpec>,
    assume_nat: Option<NatObserved>,
) -> Result<(), AgentError> {
    for k in keys {
        o.sysctls.insert(
            k.clone(),
            sysctl::read(k).map_err(|e| io(&format!("read sysctl {k}"), e))?,
        );
    }
    o.hosts =
        files::read_optional(hosts).map_err(|e| io(&format!("read {}", hosts.display()), e))?;
    o.resolv = if std::fs::symlink_metadata(resolv).is_ok_and(|m| m.file_type().is_symlink()) {
        None
    } else {
        files::read_optional(resolv).map_err(|e| io(&format!("read {}", resolv.display()), e))?
    };
    if let Some(n) = assume_nat {
        o.nat = Some(n);
        return Ok(());
    }
    o.nat = match nat_spec {
        Some(s) => Some(nat::observe(s)?),
        None => {
            // Only presence matters when no NAT is wanted (missing nft = no table).
            let probe = NatSpec {
                overlay: "10.0.0.0/8".parse().unwrap(),
                underlay: "lo".into(),
                exceptions: vec![],
            };
            Some(nat::observe(&probe).unwrap_or(NatObserved::Absent))
        }
    };
    Ok(())
}

/// config → desired → observed → plan, without changing anything.
pub async fn compute(h: &Handle, cfg: &Config) -> Result<(Desired, Observed, Plan), AgentError> {
    compute_with(h, cfg, None, None).await
}

/// [`compute`], optionally trusting a known NAT state instead of running `nft`.
/// `discovered`: the peers EC2 discovery found (None = not known yet: the flood list is
/// left as it is).
pub async fn compute_with(
    h: &Handle,
    cfg: &Config,
    assume_nat: Option<NatObserved>,
    discovered: Option<&std::collections::BTreeSet<std::net::Ipv4Addr>>,
) -> Result<(Desired, Observed, Plan), AgentError> {
    let (d, o) = observe_node(h, cfg, assume_nat, discovered).await?;
    let mut p = plan::plan_apply(&d, &o)?;
    if !d.dns.is_empty() && o.resolv.is_none() && cfg.resolv_conf.exists() {
        p.warnings.push(format!(
            "{} is a symlink (systemd-resolved?); DNS not written — configure the resolver for {} instead (see README)",
            cfg.resolv_conf.display(),
            cfg.bridge
        ));
        p.ops.retain(|op| !matches!(op, Op::WriteResolv { .. }));
    }
    Ok((d, o, p))
}

/// config → desired, and everything observed that a plan compares against (kernel dumps,
/// sysctls, files, NAT table).
async fn observe_node(
    h: &Handle,
    cfg: &Config,
    assume_nat: Option<NatObserved>,
    discovered: Option<&std::collections::BTreeSet<std::net::Ipv4Addr>>,
) -> Result<(Desired, Observed), AgentError> {
    let mut o = observe_kernel(h).await?;
    let d = desired::desired_with(cfg, &o, discovered)?;
    if let Some(fl) = &d.flood_list {
        if let Some(l) = o
            .link(&fl.vtep)
            .filter(|l| l.kind.as_deref() == Some("vxlan"))
        {
            o.flood_list = netlink::dump_flood_list(h, l.index).await?;
            let st = load_state(&cfg.state_dir)?;
            o.flood_list_owned = st.flood_list.intersection(&o.flood_list).copied().collect();
        }
    }
    if let Some(v) = &d.vtep {
        if o.link(&v.name).is_some() {
            o.vtep_tx_checksum = crate::ethtool::tx_checksum(&v.name).ok();
        }
    }
    // Hosts and management never own a NAT table: don't spawn nft for them.
    let assume_nat = if d.nat.is_none() && !cfg.role.forwards() {
        Some(NatObserved::Absent)
    } else {
        assume_nat
    };
    if d.nat.is_some() && assume_nat.is_none() && !nat::nft_available() {
        return Err(AgentError::Config(ConfigError {
            key: "nat".into(),
            value: "true".into(),
            source: None,
            reason: "the nft command (package nftables) is not installed".into(),
        }));
    }
    observe_extras_with(
        &mut o,
        &plan::sysctl_keys(&d),
        &cfg.hosts_file,
        &cfg.resolv_conf,
        d.nat.as_ref(),
        assume_nat,
    )?;
    Ok((d, o))
}

/// `adopt`: the marks to set, and what `apply` would still do once they are set.
pub async fn compute_adopt(
    h: &Handle,
    cfg: &Config,
) -> Result<(Observed, Plan, Vec<Op>), AgentError> {
    let (d, o) = observe_node(h, cfg, None, None).await?;
    let p = plan::plan_adopt(&d, &o)?;
    // What apply would do after the marks: plan against the observation as if marked.
    let mut marked = o.clone();
    for op in &p.ops {
        if let Op::SetOwner { name } = op {
            if let Some(l) = marked.links.iter_mut().find(|l| &l.name == name) {
                l.group = OWNER_GROUP;
            }
        }
    }
    let rest = plan::plan_apply(&d, &marked)?.ops;
    Ok((o, p, rest))
}

/// Carry out one operation.
pub async fn exec_one(h: &netlink::Nl, op: &Op, state_dir: &Path) -> Result<(), AgentError> {
    // What an operation changes is recorded in the state file by `record_plan`, once per
    // plan and before the first change; operations themselves only act.
    match op {
        Op::SetSysctl { key, value, .. } => {
            sysctl::write(key, value).map_err(|e| io(&format!("sysctl {key}"), e))?;
        }
        Op::DeleteLink { name, .. } => {
            netlink::delete_link(h, name).await?;
        }
        Op::CreateBridge {
            name,
            mac,
            mtu,
            mcast_snooping,
        } => {
            netlink::create_bridge(h, name, mac.0, *mtu, *mcast_snooping).await?;
        }
        Op::SetMcastSnooping { name, on } => netlink::set_mcast_snooping(h, name, *on).await?,
        Op::CreateVtep {
            name,
            vni,
            port,
            group,
            underlay,
            mtu,
            master,
            local,
            learning,
        } => {
            let v = netlink::VtepArgs {
                vni: *vni,
                port: *port,
                group: *group,
                local: *local,
                learning: *learning,
            };
            netlink::create_vtep(h, name, &v, underlay, *mtu, master).await?;
        }
        Op::SetBridgePort {
            name,
            neigh_suppress,
            learning,
        } => netlink::set_bridge_port(h, name, *neigh_suppress, *learning).await?,
        Op::SetFloodList { vtep, add, remove } => {
            netlink::set_flood_list(h, vtep, add, remove).await?;
        }
        Op::CreateDummy {
            name,
            veth_peer,
            mtu,
            master,
        } => {
            let kind = netlink::create_dummy(h, name, veth_peer, *mtu, master).await?;
            if kind == "veth" {
                tracing::info!(dummy = %name, peer = %veth_peer, "kernel has no dummy driver; using a veth pair");
            }
        }
        Op::SetOwner { name } => netlink::set_owner(h, name).await?,
        Op::SetMtu { name, mtu, .. } => netlink::set_mtu(h, name, *mtu).await?,
        Op::SetMac { name, mac, .. } => netlink::set_mac(h, name, mac.0).await?,
        Op::SetStpOff { name } => netlink::set_stp_off(h, name).await?,
        Op::SetTxChecksumOff { name } => crate::ethtool::set_tx_checksum(name, false)
            .map_err(|e| io(&format!("ethtool: tx checksum offload off on {name}"), e))?,
        Op::SetMaster { name, master } => netlink::set_master(h, name, master).await?,
        Op::SetUp { name } => netlink::set_up(h, name).await?,
        Op::AddAddress { dev, addr } => netlink::add_address(h, dev, *addr).await?,
        Op::AddRoute { route, replace, .. } => netlink::add_route(h, route, *replace).await?,
        Op::DelRoute { route, .. } => netlink::del_route(h, route).await?,
        Op::RestoreRoute { route } => netlink::restore_route(h, route).await?,
        Op::AddRule { rule } => netlink::add_rule(h, rule).await?,
        Op::DelRule {
            priority,
            from,
            table,
        } => netlink::del_rule(h, *priority, *from, *table).await?,
        Op::WriteHosts { path, line } => {
            let p = Path::new(path);
            let cur = files::read_optional(p)
                .map_err(|e| io(path, e))?
                .unwrap_or_default();
            files::write_atomic(p, &files::render_hosts(&cur, line.as_ref()))
                .map_err(|e| io(path, e))?;
        }
        Op::WriteResolv { path, servers } => {
            let p = Path::new(path);
            let cur = files::read_optional(p)
                .map_err(|e| io(path, e))?
                .unwrap_or_default();
            files::write_atomic(p, &files::render_resolv(&cur, servers))
                .map_err(|e| io(path, e))?;
        }
        Op::EnsureNat { spec, .. } => {
            nat::ensure(spec)?;
        }
        Op::RemoveNat => {
            nat::remove()?;
        }
        Op::ForgetState => {
            state::remove(state_dir).map_err(|e| io("remove state", e))?;
        }
    }
    Ok(())
}

pub fn load_state(dir: &Path) -> Result<State, AgentError> {
    Ok(state::load(dir)
        .map_err(|e| io("load state", e))?
        .unwrap_or_default())
}

/// Run the plan in order, stopping at the first failure (later steps depend on earlier ones).
/// Returns the operations that were carried out. `o` is the observation the plan came from.
pub async fn execute(
    h: &Handle,
    p: &Plan,
    o: &Observed,
    state_dir: &Path,
) -> Result<Vec<Op>, (Vec<Op>, AgentError)> {
    if p.ops.is_empty() {
        return Ok(vec![]);
    }
    let mut st = match load_state(state_dir) {
        Ok(s) => s,
        Err(e) => return Err((vec![], e)),
    };
    // Recorded flood entries that are gone (the VTEP was re-created, e.g. after a reboot,
    // or someone deleted one) are forgotten: a later entry with that address that someone
    // else adds is not ours. A VTEP this plan re-creates starts empty.
    let before = st.flood_list.len();
    st.flood_list.retain(|ip| o.flood_list.contains(ip));
    if p.ops.iter().any(|op| matches!(op, Op::CreateVtep { .. })) {
        st.flood_list.clear();
    }
    let pruned = st.flood_list.len() != before;
    // Record everything this plan will change in one write, before the first change:
    // a crash at any later point still leaves `down` what it needs.
    if record_plan(&mut st, p) || pruned {
        if let Err(e) = state::save(state_dir, &st) {
            return Err((vec![], io("save state", e)));
        }
    }
    let nl = netlink::Nl::seeded(h.clone(), &o.links);
    let mut done = Vec::new();
    for op in &p.ops {
        tracing::debug!(op = %op, "executing");
        if let Err(e) = exec_one(&nl, op, state_dir).await {
            return Err((
                done,
                AgentError::Op {
                    op: op.to_string(),
                    source: Box::new(e),
                },
            ));
        }
        if let Op::SetFloodList { remove, .. } = op {
            // Forget removed entries.
            let before = st.flood_list.len();
            st.flood_list.retain(|ip| !remove.contains(ip));
            if st.flood_list.len() != before {
                if let Err(e) = state::save(state_dir, &st) {
                    return Err((done, io("save state", e)));
                }
            }
        }
        done.push(op.clone());
    }
    Ok(done)
}

/// Add to the state what `p` is about to change; true when something was added.
fn record_plan(st: &mut State, p: &Plan) -> bool {
    let before = st.clone();
    for op in &p.ops {
        match op {
            Op::SetSysctl {
                key,
                from: Some(f),
                record: true,
                ..
            } => {
                st.sysctls.entry(key.clone()).or_insert_with(|| f.clone());
            }
            Op::CreateBridge { name, .. } | Op::CreateVtep { name, .. } | Op::SetOwner { name } => {
                st.links.insert(name.clone());
            }
            Op::CreateDummy {
                name, veth_peer, ..
            } => {
                st.links.insert(name.clone());
                st.links.insert(veth_peer.clone());
            }
            Op::EnsureNat { .. } => st.nat = true,
            // Recorded before they exist; removals are forgotten after they ran.
            Op::SetFloodList { add, .. } => st.flood_list.extend(add.iter().copied()),
            Op::AddRoute {
                replaces: Some(r), ..
            } if !st
                .replaced_routes
                .iter()
                .any(|s| s.same_key(r.table, r.dst, r.metric)) =>
            {
                st.replaced_routes.push(r.clone());
            }
            _ => {}
        }
    }
    *st != before
}

/// Plan the teardown for this configuration.
pub async fn compute_down(h: &Handle, cfg: &Config) -> Result<(Observed, Plan, State), AgentError> {
    let mut o = observe_kernel(h).await?;
    let st = load_state(&cfg.state_dir)?;
    let keys: Vec<String> = st.sysctls.keys().cloned().collect();
    let assume = (!st.nat && !cfg.role.forwards()).then_some(NatObserved::Absent);
    observe_extras_with(
        &mut o,
        &keys,
        &cfg.hosts_file,
        &cfg.resolv_conf,
        None,
        assume,
    )?;
    let input = plan::DownInput {
        bridge: &cfg.bridge,
        vtep: &cfg.vtep,
        dummy: &cfg.dummy,
        hosts_file: &cfg.hosts_file.to_string_lossy(),
        resolv_conf: &cfg.resolv_conf.to_string_lossy(),
    };
    let mut p = plan::plan_down(&input, &o, &st);
    if state::path(&cfg.state_dir).exists() {
        p.ops.push(Op::ForgetState);
    }
    Ok((o, p, st))
}

/// Teardown runs every step even when one fails, and reports all failures.
pub async fn execute_all(h: &Handle, p: &Plan, state_dir: &Path) -> (Vec<Op>, Vec<String>) {
    let nl = netlink::Nl::new(h.clone());
    let mut done = Vec::new();
    let mut errors = Vec::new();
    for op in &p.ops {
        if matches!(op, Op::ForgetState) && !errors.is_empty() {
            errors.push(
                "state file kept because earlier steps failed (re-run `overlayd down`)".into(),
            );
            continue;
        }
        match exec_one(&nl, op, state_dir).await {
            Ok(()) => done.push(op.clone()),
            Err(e) => errors.push(format!("{op}: {e}")),
        }
    }
    (done, errors)
}
