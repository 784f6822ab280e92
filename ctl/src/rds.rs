//! Secrets Manager credentials and the RDS MySQL 8.0 database.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{anyhow, bail, Result};
use aws_sdk_rds::types::{ApplyMethod, Parameter, Tag as RdsTag};
use aws_sdk_secretsmanager::types::Tag as SmTag;

use crate::aws::{code, err};
use crate::config::CLUSTER_TAG;
use crate::ctx::{Action, Ctx};
use crate::model::{self, DbSettings};

pub const ADMIN_USER: &str = "admin";
pub const SERVICE_USER: &str = "cloud";

/// A password that refuses to be printed.
pub struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A secret as Secrets Manager has it (never its value).
#[derive(Debug, Clone)]
pub struct FoundSecret {
    pub arn: String,
    /// Tagged as this cluster's.
    pub ours: bool,
    /// Scheduled for deletion.
    pub deleted: bool,
}

pub async fn describe_secret(ctx: &Ctx, name: &str) -> Result<Option<FoundSecret>> {
    match ctx
        .clients
        .sm
        .describe_secret()
        .secret_id(name)
        .send()
        .await
    {
        Ok(out) => {
            let ours = out
                .tags()
                .iter()
                .any(|t| t.key() == Some(CLUSTER_TAG) && t.value() == Some(ctx.name()));
            Ok(Some(FoundSecret {
                arn: out.arn().unwrap_or_default().to_string(),
                ours,
                deleted: out.deleted_date().is_some(),
            }))
        }
        Err(e) if code(&e).as_deref() == Some("ResourceNotFoundException") => Ok(None),
        Err(e) => Err(err("DescribeSecret", e)),
    }
}

/// Creates or adopts the admin and service credentials. Returns (which, arn) pairs.
pub async fn secrets(ctx: &Ctx) -> Result<Vec<(String, Option<String>)>> {
    let mut arns = Vec::new();
    for (which, user) in [("admin", ADMIN_USER), ("service", SERVICE_USER)] {
        let name = ctx.cluster.secret_name(which);
        let res = format!("secret/{which}");
        match describe_secret(ctx, &name).await? {
            Some(FoundSecret { arn, ours, deleted }) => {
                if !ours {
                    bail!("secret {name} exists but is not tagged {CLUSTER_TAG}={}; refusing to adopt it", ctx.name());
                }
                if deleted {
                    if ctx.apply() {
                        ctx.clients
                            .sm
                            .restore_secret()
                            .secret_id(&name)
                            .send()
                            .await
                            .map_err(|e| err("RestoreSecret", e))?;
                    }
                    ctx.record(
                        &res,
                        Some(&arn),
                        "scheduled for deletion",
                        Action::Change,
                        "restore",
                    );
                } else {
                    ctx.record(&res, Some(&arn), "ok", Action::Keep, &name);
                }
                arns.push((which.to_string(), Some(arn)));
            }
            None if ctx.apply() => {
                let password = model::generate_password(32)?;
                let value = serde_json::json!({
                    "engine": "mysql",
                    "port": 3306,
                    "username": user,
                    "password": password,
                    "dbInstanceIdentifier": ctx.cluster.db_instance_id(),
                })
                .to_string();
                drop(password);
                let tags = ctx
                    .tags(&format!("db-{which}"))
                    .into_iter()
                    .map(|(k, v)| SmTag::builder().key(k).value(v).build())
                    .collect();
                let out = ctx
                    .clients
                    .sm
                    .create_secret()
                    .name(&name)
                    .description(format!(
                        "overlay {} database {which} credentials",
                        ctx.name()
                    ))
                    .secret_string(value)
                    .set_tags(Some(tags))
                    .send()
                    .await
                    .map_err(|e| err("CreateSecret", e))?;
                let arn = out.arn().unwrap_or_default().to_string();
                ctx.record(&res, Some(&arn), "created", Action::Create, &name);
                arns.push((which.to_string(), Some(arn)));
            }
            None => {
                ctx.record(&res, None, "absent", Action::Create, &name);
                arns.push((which.to_string(), None));
            }
        }
    }
    Ok(arns)
}

async fn admin_password(ctx: &Ctx) -> Result<Secret> {
    let out = ctx
        .clients
        .sm
        .get_secret_value()
        .secret_id(ctx.cluster.secret_name("admin"))
        .send()
        .await
        .map_err(|e| err("GetSecretValue", e))?;
    let v: serde_json::Value = serde_json::from_str(out.secret_string().unwrap_or("{}"))
        .map_err(|_| anyhow!("secret {} is not JSON", ctx.cluster.secret_name("admin")))?;
    v.get("password")
        .and_then(|p| p.as_str())
        .map(|p| Secret(p.to_string()))
        .ok_or_else(|| {
            anyhow!(
                "secret {} has no password field",
                ctx.cluster.secret_name("admin")
            )
        })
}

fn rds_tags(ctx: &Ctx, role: &str) -> Vec<RdsTag> {
    ctx.tags(role)
        .into_iter()
        .map(|(k, v)| RdsTag::builder().key(k).value(v).build())
        .collect()
}

fn has_tag(tags: &[RdsTag], ctx: &Ctx) -> bool {
    tags.iter()
        .any(|t| t.key() == Some(CLUSTER_TAG) && t.value() == Some(ctx.name()))
}

/// The DB subnet group as RDS has it.
#[derive(Debug, Clone)]
pub struct FoundSubnetGroup {
    pub arn: String,
    pub subnets: Vec<String>,
}

/// The DB subnet group; None when absent.
pub async fn find_subnet_group(ctx: &Ctx) -> Result<Option<FoundSubnetGroup>> {
    let name = ctx.cluster.db_subnet_group();
    match ctx
        .clients
        .rds
        .describe_db_subnet_groups()
        .db_subnet_group_name(&name)
        .send()
        .await
    {
        Ok(out) => Ok(out.db_subnet_groups().first().map(|g| FoundSubnetGroup {
            arn: g.db_subnet_group_arn().unwrap_or_default().to_string(),
            subnets: g
                .subnets()
                .iter()
                .filter_map(|s| s.subnet_identifier().map(str::to_string))
                .collect(),
        })),
        Err(e) if code(&e).as_deref() == Some("DBSubnetGroupNotFoundFault") => Ok(None),
        Err(e) => Err(err("DescribeDBSubnetGroups", e)),
    }
}

pub async fn find_parameter_group(ctx: &Ctx) -> Result<Option<String>> {
    let name = ctx.cluster.db_parameter_group();
    match ctx
        .clients
        .rds
        .describe_db_parameter_groups()
        .db_parameter_group_name(&name)
        .send()
        .await
    {
        Ok(out) => Ok(out
            .db_parameter_groups()
            .first()
            .map(|g| g.db_parameter_group_arn().unwrap_or_default().to_string())),
        Err(e) if code(&e).as_deref() == Some("DBParameterGroupNotFound") => Ok(None),
        Err(e) => Err(err("DescribeDBParameterGroups", e)),
    }
}

async fn user_parameters(ctx: &Ctx) -> Result<BTreeMap<String, String>> {
    let mut out_map = BTreeMap::new();
    let mut marker: Option<String> = None;
    loop {
        let out = ctx
            .clients
            .rds
            .describe_db_parameters()
            .db_parameter_group_name(ctx.cluster.db_parameter_group())
            .source("user")
            .set_marker(marker.clone())
            .send()
            .await
            .map_err(|e| err("DescribeDBParameters", e))?;
        for p in out.parameters() {
            if let (Some(n), Some(v)) = (p.parameter_name(), p.parameter_value()) {
                out_map.insert(n.to_string(), v.to_string());
            }
        }
        marker = out.marker().map(str::to_string);
        if marker.is_none() {
            return Ok(out_map);
        }
    }
}

#[derive(Debug, Clone)]
pub struct Db {
    pub id: String,
    pub arn: String,
    pub status: String,
    pub endpoint: Option<(String, i32)>,
    pub settings: DbSettings,
    pub ours: bool,
}

pub async fn find_instance(ctx: &Ctx) -> Result<Option<Db>> {
    let id = ctx.cluster.db_instance_id();
    match ctx
        .clients
        .rds
        .describe_db_instances()
        .db_instance_identifier(&id)
        .send()
        .await
    {
        Ok(out) => Ok(out.db_instances().first().map(|d| Db {
            id: id.clone(),
            arn: d.db_instance_arn().unwrap_or_default().to_string(),
            status: d.db_instance_status().unwrap_or_default().to_string(),
            endpoint: d
                .endpoint()
                .and_then(|e| Some((e.address()?.to_string(), e.port().unwrap_or(3306)))),
            settings: DbSettings {
                class: d.db_instance_class().unwrap_or_default().to_string(),
                storage_gib: d.allocated_storage().unwrap_or_default(),
                max_storage_gib: d.max_allocated_storage().unwrap_or_default(),
                parameter_group: d
                    .db_parameter_groups()
                    .first()
                    .and_then(|g| g.db_parameter_group_name())
                    .unwrap_or_default()
                    .to_string(),
                security_groups: d
                    .vpc_security_groups()
                    .iter()
                    .filter_map(|g| g.vpc_security_group_id().map(str::to_string))
                    .collect(),
            },
            ours: has_tag(d.tag_list(), ctx),
        })),
        Err(e)
            if code(&e).as_deref() == Some("DBInstanceNotFound")
                || code(&e).as_deref() == Some("DBInstanceNotFoundFault") =>
        {
            Ok(None)
        }
        Err(e) => Err(err("DescribeDBInstances", e)),
    }
}

/// What to do with the DB subnet group.
#[derive(Debug, Clone, PartialEq)]
pub enum SubnetGroupOp {
    Keep,
    SetSubnets { arn: String, have: BTreeSet<String> },
    Create,
}

pub fn plan_subnet_group(
    want: &BTreeSet<String>,
    found: Option<FoundSubnetGroup>,
) -> SubnetGroupOp {
    match found {
        None => SubnetGroupOp::Create,
        Some(FoundSubnetGroup { arn, subnets }) => {
            let have: BTreeSet<String> = subnets.into_iter().collect();
            if &have == want {
                SubnetGroupOp::Keep
            } else {
                SubnetGroupOp::SetSubnets { arn, have }
            }
        }
    }
}

/// What to do with the DB instance.
#[derive(Debug, Clone, PartialEq)]
pub enum InstanceOp {
    Keep {
        status: String,
    },
    /// Bring the settings to `want` in place (storage never shrinks).
    Modify {
        want: DbSettings,
        status: String,
        storage_gib: i32,
        diffs: Vec<String>,
    },
    Create,
}

/// Keep, modify in place or create the instance; one with our name that is not tagged as ours
/// is an error. Without a known security group (plan mode before it exists) the observed ones
/// count as wanted.
pub fn plan_instance(
    want: &DbSettings,
    security_group_known: bool,
    found: Option<Db>,
    id: &str,
    cluster: &str,
) -> Result<InstanceOp> {
    let Some(db) = found else {
        return Ok(InstanceOp::Create);
    };
    if !db.ours {
        bail!("DB instance {id} exists but is not tagged {CLUSTER_TAG}={cluster}; refusing to adopt it");
    }
    let mut want = want.clone();
    if !security_group_known {
        want.security_groups = db.settings.security_groups.clone();
    }
    let diffs = model::db_changes(&want, &db.settings);
    Ok(if diffs.is_empty() {
        InstanceOp::Keep { status: db.status }
    } else {
        InstanceOp::Modify {
            storage_gib: want.storage_gib.max(db.settings.storage_gib),
            want,
            status: db.status,
            diffs,
        }
    })
}

/// Subnet group, parameter group and instance.
pub async fn converge(ctx: &Ctx, db_sg: Option<&str>, router_az: &str) -> Result<Option<Db>> {
    let rds = &ctx.clients.rds;
    let cfg = &ctx.cluster.cfg;
    let want_subnets: BTreeSet<String> = [cfg.subnet_id.clone(), cfg.second_subnet_id.clone()]
        .into_iter()
        .collect();

    // subnet group
    let sg_name = ctx.cluster.db_subnet_group();
    match plan_subnet_group(&want_subnets, find_subnet_group(ctx).await?) {
        SubnetGroupOp::Keep => ctx.record(
            "db-subnet-group",
            Some(&sg_name),
            "ok",
            Action::Keep,
            &format!("{want_subnets:?}"),
        ),
        SubnetGroupOp::SetSubnets { arn, have } => {
            if ctx.apply() {
                rds.modify_db_subnet_group()
                    .db_subnet_group_name(&sg_name)
                    .set_subnet_ids(Some(want_subnets.iter().cloned().collect()))
                    .send()
                    .await
                    .map_err(|e| err("ModifyDBSubnetGroup", e))?;
            }
            ctx.record(
                "db-subnet-group",
                Some(&sg_name),
                &arn,
                Action::Change,
                &format!("{have:?} -> {want_subnets:?}"),
            );
        }
        SubnetGroupOp::Create => {
            if ctx.apply() {
                rds.create_db_subnet_group()
                    .db_subnet_group_name(&sg_name)
                    .db_subnet_group_description(format!("overlay {} database", ctx.name()))
                    .set_subnet_ids(Some(want_subnets.iter().cloned().collect()))
                    .set_tags(Some(rds_tags(ctx, "db-subnet-group")))
                    .send()
                    .await
                    .map_err(|e| err("CreateDBSubnetGroup", e))?;
            }
            ctx.record(
                "db-subnet-group",
                Some(&sg_name),
                "absent",
                Action::Create,
                &format!("{want_subnets:?}"),
            );
        }
    }

    // parameter group
    let pg_name = ctx.cluster.db_parameter_group();
    let pg_exists = find_parameter_group(ctx).await?.is_some();
    if !pg_exists {
        if ctx.apply() {
            rds.create_db_parameter_group()
                .db_parameter_group_name(&pg_name)
                .db_parameter_group_family("mysql8.0")
                .description(format!("overlay {} CloudStack settings", ctx.name()))
                .set_tags(Some(rds_tags(ctx, "db-parameter-group")))
                .send()
                .await
                .map_err(|e| err("CreateDBParameterGroup", e))?;
        }
        ctx.record(
            "db-parameter-group",
            Some(&pg_name),
            "absent",
            Action::Create,
            "mysql8.0",
        );
    } else {
        ctx.record(
            "db-parameter-group",
            Some(&pg_name),
            "ok",
            Action::Keep,
            "mysql8.0",
        );
    }
    let have = if pg_exists || ctx.apply() {
        user_parameters(ctx).await?
    } else {
        BTreeMap::new()
    };
    let changes = model::param_changes(&have);
    let res = "db-parameter-group/parameters";
    if changes.is_empty() {
        ctx.record(
            res,
            Some(&pg_name),
            "ok",
            Action::Keep,
            "CloudStack settings",
        );
    } else {
        let detail: Vec<String> = changes.iter().map(|(n, v, _)| format!("{n}={v}")).collect();
        if ctx.apply() {
            let params = changes
                .iter()
                .map(|(n, v, st)| {
                    Parameter::builder()
                        .parameter_name(*n)
                        .parameter_value(*v)
                        .apply_method(if *st {
                            ApplyMethod::PendingReboot
                        } else {
                            ApplyMethod::Immediate
                        })
                        .build()
                })
                .collect();
            rds.modify_db_parameter_group()
                .db_parameter_group_name(&pg_name)
                .set_parameters(Some(params))
                .send()
                .await
                .map_err(|e| err("ModifyDBParameterGroup", e))?;
        }
        let action = if have.is_empty() {
            Action::Create
        } else {
            Action::Change
        };
        ctx.record(res, Some(&pg_name), "drift", action, &detail.join(", "));
    }

    // instance
    let want = DbSettings {
        class: cfg.db_instance_class.clone(),
        storage_gib: cfg.db_allocated_storage_gib,
        max_storage_gib: cfg.db_max_storage_gib,
        parameter_group: pg_name.clone(),
        security_groups: db_sg.map(|s| s.to_string()).into_iter().collect(),
    };
    let detail = format!(
        "mysql 8.0 {} {}-{} GiB encrypted in {router_az}",
        want.class, want.storage_gib, want.max_storage_gib
    );
    let id = ctx.cluster.db_instance_id();
    match plan_instance(
        &want,
        db_sg.is_some(),
        find_instance(ctx).await?,
        &id,
        ctx.name(),
    )? {
        InstanceOp::Keep { status } => {
            ctx.record("db-instance", Some(&id), &status, Action::Keep, &detail)
        }
        InstanceOp::Modify {
            want,
            status,
            storage_gib,
            diffs,
        } => {
            if ctx.apply() {
                rds.modify_db_instance()
                    .db_instance_identifier(&id)
                    .db_instance_class(&want.class)
                    .allocated_storage(storage_gib)
                    .max_allocated_storage(want.max_storage_gib)
                    .db_parameter_group_name(&want.parameter_group)
                    .set_vpc_security_group_ids(Some(
                        want.security_groups.iter().cloned().collect(),
                    ))
                    .apply_immediately(true)
                    .send()
                    .await
                    .map_err(|e| err("ModifyDBInstance", e))?;
            }
            ctx.record(
                "db-instance",
                Some(&id),
                &status,
                Action::Change,
                &diffs.join("; "),
            );
        }
        InstanceOp::Create => {
            if ctx.apply() {
                let Some(sg) = db_sg else {
                    bail!("DB security group missing")
                };
                let password = admin_password(ctx).await?;
                rds.create_db_instance()
                    .db_instance_identifier(&id)
                    .engine("mysql")
                    .engine_version("8.0")
                    .db_instance_class(&want.class)
                    .allocated_storage(want.storage_gib)
                    .max_allocated_storage(want.max_storage_gib)
                    .storage_type("gp3")
                    .storage_encrypted(true)
                    .db_subnet_group_name(&sg_name)
                    .db_parameter_group_name(&pg_name)
                    .vpc_security_group_ids(sg)
                    .availability_zone(router_az)
                    .multi_az(false)
                    .publicly_accessible(false)
                    .backup_retention_period(7)
                    .copy_tags_to_snapshot(true)
                    .master_username(ADMIN_USER)
                    .master_user_password(password.0)
                    .set_tags(Some(rds_tags(ctx, "db")))
                    .send()
                    .await
                    .map_err(|e| err("CreateDBInstance", e))?;
            }
            ctx.record("db-instance", Some(&id), "absent", Action::Create, &detail);
        }
    }
    if !ctx.apply() {
        return Ok(None);
    }
    let db = ctx
        .wait_for(&format!("database {id}"), || async {
            match find_instance(ctx).await? {
                Some(db) if db.status == "available" => Ok(Ok(db)),
                Some(db) => Ok(Err(db.status)),
                None => Ok(Err("missing".to_string())),
            }
        })
        .await?;
    Ok(Some(db))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn settings(class: &str, storage: i32, sgs: &[&str]) -> DbSettings {
        DbSettings {
            class: class.into(),
            storage_gib: storage,
            max_storage_gib: 100,
            parameter_group: "pg".into(),
            security_groups: set(sgs),
        }
    }

    fn db(ours: bool, s: DbSettings) -> Db {
        Db {
            id: "db".into(),
            arn: "arn:db".into(),
            status: "available".into(),
            endpoint: None,
            settings: s,
            ours,
        }
    }

    #[test]
    fn subnet_group_is_created_kept_or_re_pointed() {
        let want = set(&["subnet-a", "subnet-b"]);
        assert_eq!(plan_subnet_group(&want, None), SubnetGroupOp::Create);
        let found = |s: &[&str]| FoundSubnetGroup {
            arn: "arn:sg".into(),
            subnets: s.iter().map(|x| x.to_string()).collect(),
        };
        assert_eq!(
            plan_subnet_group(&want, Some(found(&["subnet-b", "subnet-a"]))),
            SubnetGroupOp::Keep
        );
        assert_eq!(
            plan_subnet_group(&want, Some(found(&["subnet-a"]))),
            SubnetGroupOp::SetSubnets {
                arn: "arn:sg".into(),
                have: set(&["subnet-a"])
            }
        );
    }

    #[test]
    fn instance_is_created_kept_modified_or_refused() {
        let want = settings("db.t3.medium", 20, &["sg-db"]);
        assert_eq!(
            plan_instance(&want, true, None, "db", "c").unwrap(),
            InstanceOp::Create
        );
        assert!(matches!(
            plan_instance(&want, true, Some(db(true, want.clone())), "db", "c").unwrap(),
            InstanceOp::Keep { .. }
        ));
        // bigger class wanted; storage never shrinks below what the instance has
        let have = settings("db.t3.small", 50, &["sg-db"]);
        let InstanceOp::Modify {
            storage_gib, diffs, ..
        } = plan_instance(&want, true, Some(db(true, have)), "db", "c").unwrap()
        else {
            panic!()
        };
        assert_eq!(storage_gib, 50);
        assert!(!diffs.is_empty());
        // plan mode before the security group exists: the observed ones count as wanted
        let other = settings("db.t3.medium", 20, &["sg-other"]);
        assert!(matches!(
            plan_instance(&want, false, Some(db(true, other)), "db", "c").unwrap(),
            InstanceOp::Keep { .. }
        ));
        let e = plan_instance(&want, true, Some(db(false, want.clone())), "db", "c").unwrap_err();
        assert!(e.to_string().contains("refusing to adopt"), "{e}");
    }
}
