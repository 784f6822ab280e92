//! teardown: deletes, in reverse order, only resources tagged with the cluster; re-runnable.

use anyhow::Result;

use crate::aws::{code, err};
use crate::config::CLUSTER_TAG;
use crate::ctx::{Action, Ctx};
use crate::{ec2, efs, model, rds};

async fn rds_tagged(ctx: &Ctx, arn: &str) -> Result<bool> {
    let out = ctx
        .clients
        .rds
        .list_tags_for_resource()
        .resource_name(arn)
        .send()
        .await
        .map_err(|e| err("ListTagsForResource", e))?;
    Ok(out
        .tag_list()
        .iter()
        .any(|t| t.key() == Some(CLUSTER_TAG) && t.value() == Some(ctx.name())))
}

async fn database(ctx: &Ctx) -> Result<()> {
    let rdsc = &ctx.clients.rds;
    if let Some(db) = rds::find_instance(ctx).await? {
        if !db.ours {
            ctx.record(
                "db-instance",
                Some(&db.id),
                &db.status,
                Action::Keep,
                "not tagged for this cluster",
            );
        } else {
            if db.status != "deleting" {
                rdsc.delete_db_instance()
                    .db_instance_identifier(&db.id)
                    .skip_final_snapshot(true)
                    .delete_automated_backups(true)
                    .send()
                    .await
                    .map_err(|e| err("DeleteDBInstance", e))?;
            }
            ctx.record("db-instance", Some(&db.id), &db.status, Action::Delete, "");
            ctx.wait_gone(&format!("deletion of database {}", db.id), || async {
                Ok(rds::find_instance(ctx).await?.map(|d| d.status))
            })
            .await?;
        }
    }
    // The parameter group of every MySQL major (one left from before a major version upgrade
    // goes too).
    for mysql in crate::model::MYSQL_MAJORS {
        let pg = ctx.cluster.db_parameter_group_for(&mysql);
        if let Some(arn) = rds::find_parameter_group(ctx, &pg).await? {
            if rds_tagged(ctx, &arn).await? {
                rdsc.delete_db_parameter_group()
                    .db_parameter_group_name(&pg)
                    .send()
                    .await
                    .map_err(|e| err("DeleteDBParameterGroup", e))?;
                ctx.record("db-parameter-group", Some(&pg), "ok", Action::Delete, "");
            }
        }
    }
    let sg = ctx.cluster.db_subnet_group();
    if let Some(rds::FoundSubnetGroup { arn, .. }) = rds::find_subnet_group(ctx).await? {
        if rds_tagged(ctx, &arn).await? {
            rdsc.delete_db_subnet_group()
                .db_subnet_group_name(&sg)
                .send()
                .await
                .map_err(|e| err("DeleteDBSubnetGroup", e))?;
            ctx.record("db-subnet-group", Some(&sg), "ok", Action::Delete, "");
        }
    }
    for which in ["service", "admin"] {
        let name = ctx.cluster.secret_name(which);
        if let Some(rds::FoundSecret { arn, ours, deleted }) =
            rds::describe_secret(ctx, &name).await?
        {
            if ours {
                match ctx
                    .clients
                    .sm
                    .delete_secret()
                    .secret_id(&name)
                    .force_delete_without_recovery(true)
                    .send()
                    .await
                {
                    Ok(_) => {}
                    Err(e) if code(&e).as_deref() == Some("ResourceNotFoundException") => {}
                    Err(e) => return Err(err("DeleteSecret", e)),
                }
                let state = if deleted {
                    "scheduled for deletion"
                } else {
                    "ok"
                };
                ctx.record(
                    &format!("secret/{which}"),
                    Some(&arn),
                    state,
                    Action::Delete,
                    "without recovery window",
                );
            }
        }
    }
    Ok(())
}

async fn file_system(ctx: &Ctx) -> Result<()> {
    let Some(fs) = efs::find(ctx).await? else {
        return Ok(());
    };
    for efs::MountTarget { id: mt, state, .. } in efs::mount_targets(ctx, &fs.id).await? {
        if state != "deleting" {
            ctx.clients
                .efs
                .delete_mount_target()
                .mount_target_id(&mt)
                .send()
                .await
                .map_err(|e| err("DeleteMountTarget", e))?;
        }
        ctx.record("efs-mount-target", Some(&mt), &state, Action::Delete, "");
    }
    ctx.wait_for(
        &format!("deletion of mount targets of {}", fs.id),
        || async {
            let n = efs::mount_targets(ctx, &fs.id).await?.len();
            Ok(if n == 0 {
                Ok(())
            } else {
                Err(format!("{n} left"))
            })
        },
    )
    .await?;
    if fs.state != "deleting" {
        ctx.clients
            .efs
            .delete_file_system()
            .file_system_id(&fs.id)
            .send()
            .await
            .map_err(|e| err("DeleteFileSystem", e))?;
    }
    ctx.record("efs", Some(&fs.id), &fs.state, Action::Delete, "");
    ctx.wait_gone(&format!("deletion of file system {}", fs.id), || async {
        Ok(efs::find(ctx).await?.map(|f| f.state))
    })
    .await
}

/// Every transit gateway tagged for the cluster, whatever the cluster file's `flood` says now
/// (one may be left from flood = multicast), with its multicast domain and our VPC attachment.
async fn transit_gateways(ctx: &Ctx) -> Result<()> {
    let mut done = std::collections::BTreeSet::new();
    while let Some(found) = ec2::find_tgw(ctx).await? {
        if !done.insert(found.id.clone()) {
            anyhow::bail!(
                "transit gateway {} is still there after its deletion",
                found.id
            );
        }
        tgw(ctx, found).await?;
    }
    Ok(())
}

async fn tgw(ctx: &Ctx, found: ec2::FoundTgw) -> Result<()> {
    let ec2c = &ctx.clients.ec2;
    let ec2::FoundTgw {
        id: tgw,
        state: tgw_state,
        ..
    } = found;
    if let Some(ec2::FoundDomain {
        id: domain,
        state: dstate,
        ..
    }) = ec2::find_domain(ctx, &tgw).await?
    {
        for ec2::Association {
            attachment: att,
            subnet,
            state,
        } in ec2::associations(ctx, &domain).await?
        {
            if state == "disassociating" || state == "disassociated" {
                continue;
            }
            ec2c.disassociate_transit_gateway_multicast_domain()
                .transit_gateway_multicast_domain_id(&domain)
                .transit_gateway_attachment_id(&att)
                .subnet_ids(&subnet)
                .send()
                .await
                .map_err(|e| err("DisassociateTransitGatewayMulticastDomain", e))?;
            ctx.record(
                "multicast-association",
                Some(&subnet),
                &state,
                Action::Delete,
                &domain,
            );
        }
        ctx.wait_for(&format!("disassociation from {domain}"), || async {
            let left: Vec<_> = ec2::associations(ctx, &domain)
                .await?
                .into_iter()
                .filter(|a| a.state != "disassociated")
                .collect();
            Ok(if left.is_empty() {
                Ok(())
            } else {
                Err(format!("{} left", left.len()))
            })
        })
        .await?;
        ec2c.delete_transit_gateway_multicast_domain()
            .transit_gateway_multicast_domain_id(&domain)
            .send()
            .await
            .map_err(|e| err("DeleteTransitGatewayMulticastDomain", e))?;
        ctx.record(
            "multicast-domain",
            Some(&domain),
            &dstate,
            Action::Delete,
            "",
        );
        ctx.wait_gone(&format!("deletion of {domain}"), || async {
            Ok(ec2::find_domain(ctx, &tgw).await?.map(|d| d.state))
        })
        .await?;
    }
    if let Some(ec2::FoundAttachment {
        id: att,
        state: astate,
        ..
    }) = ec2::find_attachment(ctx, &tgw).await?
    {
        ec2c.delete_transit_gateway_vpc_attachment()
            .transit_gateway_attachment_id(&att)
            .send()
            .await
            .map_err(|e| err("DeleteTransitGatewayVpcAttachment", e))?;
        ctx.record("tgw-attachment", Some(&att), &astate, Action::Delete, "");
        ctx.wait_gone(&format!("deletion of {att}"), || async {
            Ok(ec2::find_attachment(ctx, &tgw).await?.map(|a| a.state))
        })
        .await?;
    }
    ec2c.delete_transit_gateway()
        .transit_gateway_id(&tgw)
        .send()
        .await
        .map_err(|e| err("DeleteTransitGateway", e))?;
    ctx.record(
        "transit-gateway",
        Some(&tgw),
        &tgw_state,
        Action::Delete,
        "",
    );
    ctx.wait_gone(&format!("deletion of {tgw}"), || async {
        ec2::tgw::tgw_live_state(ctx, &tgw).await
    })
    .await
}

/// The overlay routes that point at a router of the cluster (either of a pair) in the selected
/// route tables, then the cluster tag of every route table of the VPC tagged for the cluster.
async fn routes(ctx: &Ctx) -> Result<()> {
    let env = ec2::gather(ctx).await?;
    let enis = env.router_enis();
    let cfg = &ctx.cluster.cfg;
    let tables = ec2::route_tables(ctx, &env).await;
    let out = ctx
        .clients
        .ec2
        .describe_route_tables()
        .filters(ec2::filter("vpc-id", &cfg.vpc_id))
        .send()
        .await
        .map_err(|e| err("DescribeRouteTables", e))?;
    for rt in out.route_tables() {
        let Some(id) = rt.route_table_id() else {
            continue;
        };
        let tagged = rt
            .tags()
            .iter()
            .any(|t| t.key() == Some(CLUSTER_TAG) && t.value() == Some(ctx.name()));
        if !tagged && !tables.iter().any(|t| t == id) {
            continue;
        }
        let ours = rt.routes().iter().any(|r| {
            r.destination_cidr_block() == Some(cfg.overlay_cidr.as_str())
                && r.network_interface_id()
                    .is_some_and(|e| enis.iter().any(|x| x == e))
        });
        if ours {
            ctx.clients
                .ec2
                .delete_route()
                .route_table_id(id)
                .destination_cidr_block(&cfg.overlay_cidr)
                .send()
                .await
                .map_err(|e| err("DeleteRoute", e))?;
            ctx.record(
                &format!("route/{id}"),
                Some(id),
                "ok",
                Action::Delete,
                &cfg.overlay_cidr,
            );
        }
        if tagged {
            ctx.clients
                .ec2
                .delete_tags()
                .resources(id)
                .tags(
                    aws_sdk_ec2::types::Tag::builder()
                        .key(CLUSTER_TAG)
                        .value(ctx.name())
                        .build(),
                )
                .send()
                .await
                .map_err(|e| err("DeleteTags", e))?;
            ctx.record(
                &format!("route/{id}/tag"),
                Some(id),
                "ok",
                Action::Delete,
                &format!("{CLUSTER_TAG}={}", ctx.name()),
            );
        }
    }
    Ok(())
}

async fn security_groups(ctx: &Ctx) -> Result<()> {
    let groups = ec2::find_groups(ctx).await?;
    for role in model::SG_ROLES.iter().rev() {
        if let Some(ec2::FoundGroup { id, .. }) = groups.get(*role) {
            ctx.clients
                .ec2
                .delete_security_group()
                .group_id(id)
                .send()
                .await
                .map_err(|e| err("DeleteSecurityGroup", e))?;
            ctx.record(
                &format!("security-group/{role}"),
                Some(id),
                "ok",
                Action::Delete,
                "",
            );
        }
    }
    // Groups whose role tag is unknown but carry the cluster tag.
    for (role, ec2::FoundGroup { id, .. }) in &groups {
        if !model::SG_ROLES.contains(&role.as_str()) {
            ctx.clients
                .ec2
                .delete_security_group()
                .group_id(id)
                .send()
                .await
                .map_err(|e| err("DeleteSecurityGroup", e))?;
            ctx.record("security-group", Some(id), "ok", Action::Delete, "");
        }
    }
    Ok(())
}

/// Runs the teardown; returns the errors of the branches that failed.
pub async fn run(ctx: &Ctx) -> Vec<String> {
    let mut errors = Vec::new();
    let (db, fs, tg) = futures::join!(database(ctx), file_system(ctx), transit_gateways(ctx));
    for (what, r) in [("database", db), ("efs", fs), ("transit gateway", tg)] {
        if let Err(e) = r {
            errors.push(format!("{what}: {e:#}"));
        }
    }
    if let Err(e) = routes(ctx).await {
        errors.push(format!("routes: {e:#}"));
    }
    if errors.is_empty() {
        if let Err(e) = security_groups(ctx).await {
            errors.push(format!("security groups: {e:#}"));
        }
    } else {
        errors.push(
            "security groups kept until the resources using them are gone; re-run teardown".into(),
        );
    }
    errors
}
