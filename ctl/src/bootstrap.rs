//! bootstrap / plan / status: one code path, run in Apply or Plan mode.

use std::collections::BTreeMap;

use anyhow::Result;
use serde::Serialize;

use crate::config::validate_facts;
use crate::ctx::{Ctx, Item};
use crate::ec2::{self, Env, TgwIds};
use crate::{efs, rds};

/// What an operator needs after bootstrap.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Outputs {
    pub cluster: String,
    pub region: String,
    /// multicast | unicast | evpn (the cluster file's `flood`).
    pub flood: String,
    /// ec2 | static with unicast and evpn flooding; None with multicast.
    pub peer_discovery: Option<String>,
    /// None with unicast and evpn flooding (no transit gateway).
    pub transit_gateway_id: Option<String>,
    pub tgw_attachment_id: Option<String>,
    pub multicast_domain_id: Option<String>,
    /// None with unicast/evpn flooding and no multicast_group in the cluster file.
    pub multicast_group: Option<String>,
    pub security_groups: BTreeMap<String, String>,
    /// The first router's primary interface (where bootstrap points new routes).
    pub router_eni: String,
    /// Every router's primary interface (with an HA pair: the first, then its standby).
    pub router_enis: Vec<String>,
    /// Every router's primary private (underlay) address, in the same order.
    pub router_ips: Vec<String>,
    pub efs_id: Option<String>,
    pub efs_dns_name: Option<String>,
    pub efs_mount_options: String,
    pub db_endpoint: Option<String>,
    pub db_port: Option<i32>,
    pub secret_arns: BTreeMap<String, String>,
    pub cloudstack_url: String,
    pub overlayd: BTreeMap<String, BTreeMap<String, String>>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub items: Vec<Item>,
    pub outputs: Outputs,
    pub errors: Vec<String>,
    /// What was left out and why (e.g. the transit gateway with flood = unicast).
    pub notes: Vec<String>,
}

/// Reads the environment and runs the bad-input checks that need AWS (no mutation).
pub async fn preflight(ctx: &Ctx) -> Result<Env> {
    let env = ec2::gather(ctx).await?;
    validate_facts(&ctx.cluster, &env.facts)?;
    Ok(env)
}

pub async fn run(ctx: &Ctx) -> Result<Report> {
    let env = preflight(ctx).await?;
    let mut errors = Vec::new();

    let tgw_branch = async {
        let r = if ctx.cluster.flood.needs_multicast_domain() {
            ec2::tgw::converge(ctx).await.map(|ids| (ids, None))
        } else {
            // Unicast and evpn flooding: no link of the chain is created, planned or reported.
            ec2::tgw::unused(ctx)
                .await
                .map(|note| (TgwIds::default(), Some(note)))
        };
        r.map_err(|e| format!("transit gateway: {e:#}"))
    };
    let rest_branch = async {
        let groups = ec2::security_group::converge(ctx, &env)
            .await
            .map_err(|e| vec![format!("security groups: {e:#}")])?;
        let router = ec2::router::converge(ctx, &env)
            .await
            .map_err(|e| format!("router: {e:#}"));
        let efs_branch = async {
            efs::converge(ctx, groups.get("efs").map(String::as_str))
                .await
                .map_err(|e| format!("efs: {e:#}"))
        };
        let db_branch = async {
            let arns = rds::secrets(ctx)
                .await
                .map_err(|e| format!("secrets: {e:#}"))?;
            let db = rds::converge(ctx, groups.get("db").map(String::as_str), &env.router_az())
                .await
                .map_err(|e| format!("database: {e:#}"))?;
            Ok::<_, String>((arns, db))
        };
        let (efs_r, db_r) = futures::join!(efs_branch, db_branch);
        Ok::<_, Vec<String>>((groups, router, efs_r, db_r))
    };
    let (tgw_r, rest_r) = futures::join!(tgw_branch, rest_branch);

    let mut out = Outputs {
        cluster: ctx.name().to_string(),
        region: ctx.clients.region.clone(),
        flood: ctx.cluster.flood.as_str().to_string(),
        peer_discovery: ctx
            .cluster
            .flood
            .peer_discovery()
            .map(|p| p.as_str().to_string()),
        multicast_group: ctx.cluster.cfg.multicast_group.clone(),
        router_eni: env.router_eni(),
        router_enis: env.router_enis(),
        router_ips: env.router_ips(),
        efs_mount_options: efs::MOUNT_OPTIONS.to_string(),
        ..Default::default()
    };
    let mut notes = Vec::new();
    let tgw = match tgw_r {
        Ok((ids, note)) => {
            notes.extend(note);
            ids
        }
        Err(e) => {
            errors.push(e);
            TgwIds::default()
        }
    };
    out.transit_gateway_id = tgw.tgw;
    out.tgw_attachment_id = tgw.attachment;
    out.multicast_domain_id = tgw.domain;
    match rest_r {
        Err(es) => errors.extend(es),
        Ok((groups, router, efs_r, db_r)) => {
            out.security_groups = groups;
            if let Err(e) = router {
                errors.push(e);
            }
            match efs_r {
                Ok(id) => {
                    out.efs_dns_name = id.as_deref().map(|i| efs::dns_name(i, &ctx.clients.region));
                    out.efs_id = id;
                }
                Err(e) => errors.push(e),
            }
            match db_r {
                Ok((arns, rds::Converged { db, mysql })) => {
                    for (which, arn) in arns {
                        if let Some(a) = arn {
                            out.secret_arns.insert(which, a);
                        }
                    }
                    // What the MySQL major costs once out of RDS standard support.
                    notes.extend(crate::model::db_cost_note(&mysql));
                    if let Some(db) = db {
                        if let Some((addr, port)) = db.endpoint {
                            out.db_endpoint = Some(addr);
                            out.db_port = Some(port);
                        }
                    }
                }
                Err(e) => errors.push(e),
            }
        }
    }
    out.cloudstack_url = format!(
        "http://<router public address>:8080/client (router {})",
        ctx.cluster.routers.join(" or ")
    );
    out.overlayd = overlayd_settings(ctx, &out, &env.subnet_cidrs);
    Ok(Report {
        items: ctx.take_items(),
        outputs: out,
        errors,
        notes,
    })
}

fn overlayd_settings(
    ctx: &Ctx,
    out: &Outputs,
    subnet_cidrs: &[String],
) -> BTreeMap<String, BTreeMap<String, String>> {
    let cfg = &ctx.cluster.cfg;
    let mut m = BTreeMap::new();
    for role in ["router", "host", "management"] {
        let mut s = BTreeMap::new();
        s.insert("role".to_string(), role.to_string());
        s.insert("cluster".to_string(), cfg.name.clone());
        s.insert("overlay_cidr".to_string(), cfg.overlay_cidr.clone());
        s.insert("flood".to_string(), ctx.cluster.flood.as_str().to_string());
        match ctx.cluster.flood.peer_discovery() {
            // IGMPv2 and the group are for the transit gateway's multicast domain only.
            None => {
                if let Some(g) = &cfg.multicast_group {
                    s.insert("multicast_group".to_string(), g.clone());
                }
                s.insert("force_igmp_version".to_string(), "2".to_string());
            }
            Some(p) => {
                s.insert("peer_discovery".to_string(), p.as_str().to_string());
            }
        }
        // EVPN: every node peers with the route reflectors (the routers' underlay addresses);
        // the reflectors accept BGP clients from the overlay subnets.
        if ctx.cluster.flood.needs_bgp() {
            s.insert("evpn_reflectors".to_string(), out.router_ips.join(","));
            if role == "router" {
                s.insert("evpn_listen".to_string(), subnet_cidrs.join(","));
            }
        }
        s.insert("vxlan_port".to_string(), "4789".to_string());
        s.insert("mtu".to_string(), "8450".to_string());
        s.insert("zones".to_string(), cfg.zones.join(","));
        let mut groups = vec![out.security_groups.get("vtep").cloned().unwrap_or_default()];
        match role {
            "router" => groups.push(
                out.security_groups
                    .get("router")
                    .cloned()
                    .unwrap_or_default(),
            ),
            "management" => {
                groups.push(out.security_groups.get("mgmt").cloned().unwrap_or_default())
            }
            _ => {}
        }
        s.insert("security_groups".to_string(), groups.join(","));
        if role != "router" {
            if let Some(d) = &out.efs_dns_name {
                s.insert("nfs".to_string(), format!("{d}:/ ({})", efs::MOUNT_OPTIONS));
            }
        }
        m.insert(role.to_string(), s);
    }
    m
}

/// The notes under a plan / status table or a bootstrap summary.
pub fn print_notes(notes: &[String]) {
    for n in notes {
        println!("{n}");
    }
}

pub fn print_items(items: &[Item], status: bool) {
    if status {
        println!("{:<34} {:<28} {:<16} DETAIL", "RESOURCE", "ID", "STATE");
        for i in items {
            println!(
                "{:<34} {:<28} {:<16} {}",
                i.resource,
                i.id.as_deref().unwrap_or("-"),
                i.state,
                i.detail
            );
        }
    } else {
        println!("{:<8} {:<34} {:<28} DETAIL", "ACTION", "RESOURCE", "ID");
        for i in items {
            println!(
                "{:<8} {:<34} {:<28} {}",
                i.action.as_str(),
                i.resource,
                i.id.as_deref().unwrap_or("-"),
                i.detail
            );
        }
    }
}

/// One line of counts per action (the per-resource lines went to stderr as they happened).
pub fn print_summary(what: &str, items: &[Item]) {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for i in items {
        *counts.entry(i.action.as_str()).or_default() += 1;
    }
    let parts: Vec<String> = counts.iter().map(|(a, n)| format!("{a} {n}")).collect();
    println!("{what}: {} resources ({})", items.len(), parts.join(", "));
}

pub fn print_outputs(o: &Outputs) {
    let s = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    println!();
    println!("Next steps for cluster {} ({}):", o.cluster, o.region);
    match (o.flood.as_str(), o.peer_discovery.as_deref()) {
        ("unicast", peers) => {
            let peers = peers.unwrap_or("ec2");
            println!(
                "  flood                unicast (head-end replication over UDP 4789), peer discovery {peers}"
            );
            println!("  transit gateway      not used (flood = unicast)");
            tag_note(o, peers);
        }
        ("evpn", peers) => {
            let peers = peers.unwrap_or("ec2");
            let reflectors = if o.router_ips.is_empty() {
                "-".to_string()
            } else {
                o.router_ips.join(", ")
            };
            println!(
                "  flood                evpn (BGP EVPN over TCP 179 to the route reflector(s) {reflectors}), peer discovery {peers}"
            );
            println!("  transit gateway      not used (flood = evpn)");
            tag_note(o, peers);
        }
        _ => {
            println!("  flood                multicast");
            println!("  transit gateway      {}", s(&o.transit_gateway_id));
            println!("  tgw attachment       {}", s(&o.tgw_attachment_id));
            println!(
                "  multicast domain     {}  group {}",
                s(&o.multicast_domain_id),
                s(&o.multicast_group)
            );
        }
    }
    for (role, id) in &o.security_groups {
        println!("  {:<21}{id}", format!("security group {role}"));
    }
    println!(
        "  EFS                  {}  dns {}",
        s(&o.efs_id),
        s(&o.efs_dns_name)
    );
    println!("  EFS mount options    {}", o.efs_mount_options);
    println!(
        "  RDS endpoint         {}:{}",
        s(&o.db_endpoint),
        o.db_port
            .map(|p| p.to_string())
            .unwrap_or_else(|| "-".into())
    );
    for (which, arn) in &o.secret_arns {
        println!(
            "  secret {which:<14}{arn}  (aws secretsmanager get-secret-value --secret-id ...)"
        );
    }
    println!("  CloudStack URL       {}", o.cloudstack_url);
    for (role, settings) in &o.overlayd {
        println!("  overlayd [{role}]");
        for (k, v) in settings {
            println!("    {k} = {v}");
        }
    }
}

/// The hint of the modes whose peers come from EC2: tag the nodes, give them the roles.
fn tag_note(o: &Outputs, peers: &str) {
    if peers == "ec2" {
        println!(
            "  overlay nodes        tag each instance {}={}; their instance roles: \
             overlayctl iam-policy --for host|management|router -c <cluster file>",
            crate::config::CLUSTER_TAG,
            o.cluster
        );
    }
}
