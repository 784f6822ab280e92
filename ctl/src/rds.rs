//! Secrets Manager credentials and the RDS for MySQL database (the major version is
//! [`model::DB_MYSQL`]; an existing instance keeps its own, [`model::db_mysql_for`]).

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{anyhow, bail, Result};
use aws_sdk_rds::types::{ApplyMethod, Parameter, Tag as RdsTag};
use aws_sdk_secretsmanager::types::Tag as SmTag;

use crate::aws::{code, err};
use crate::config::CLUSTER_TAG;
use crate::ctx::{Action, Ctx, Done, Item};
use crate::model::{self, DbSettings, MysqlMajor};

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

/// What to do with one database credential.
#[derive(Debug, Clone, PartialEq)]
pub enum SecretOp {
    Keep {
        arn: String,
    },
    /// Ours, scheduled for deletion by an earlier teardown: restore it (same password).
    Restore {
        arn: String,
    },
    Create,
}

/// Keep, restore or create a credential; one with our name that is not tagged as ours is an
/// error (never adopted, never overwritten).
pub fn plan_secret(found: Option<&FoundSecret>, name: &str, cluster: &str) -> Result<SecretOp> {
    Ok(match found {
        None => SecretOp::Create,
        Some(s) if !s.ours => bail!(
            "secret {name} exists but is not tagged {CLUSTER_TAG}={cluster}; refusing to adopt it"
        ),
        Some(s) if s.deleted => SecretOp::Restore { arn: s.arn.clone() },
        Some(s) => SecretOp::Keep { arn: s.arn.clone() },
    })
}

impl SecretOp {
    pub fn item(&self, which: &str, name: &str) -> Item {
        let res = format!("secret/{which}");
        match self {
            SecretOp::Keep { arn } => Item::new(&res, Some(arn), "ok", Action::Keep, name),
            SecretOp::Restore { arn } => Item::new(
                &res,
                Some(arn),
                "scheduled for deletion",
                Action::Change,
                "restore",
            ),
            SecretOp::Create => Item::new(&res, None, "absent", Action::Create, name),
        }
    }
}

/// Creates, restores or adopts the admin and service credentials. Returns (which, arn) pairs
/// (no arn in plan mode for one still to be created).
pub async fn secrets(ctx: &Ctx) -> Result<Vec<(String, Option<String>)>> {
    let mut arns = Vec::new();
    for (which, user) in [("admin", ADMIN_USER), ("service", SERVICE_USER)] {
        let name = ctx.cluster.secret_name(which);
        let op = plan_secret(
            describe_secret(ctx, &name).await?.as_ref(),
            &name,
            ctx.name(),
        )?;
        let sm = &ctx.clients.sm;
        let call = async {
            Ok(match &op {
                SecretOp::Keep { .. } => Done::nothing(),
                SecretOp::Restore { .. } => {
                    sm.restore_secret()
                        .secret_id(&name)
                        .send()
                        .await
                        .map_err(|e| err("RestoreSecret", e))?;
                    Done::nothing()
                }
                SecretOp::Create => {
                    let password = model::generate_password(model::PASSWORD_LEN)?;
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
                    let out = sm
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
                    Done::created(out.arn().unwrap_or_default(), "created")
                }
            })
        };
        let arn = ctx.carry_out(op.item(which, &name), call).await?;
        arns.push((which.to_string(), arn));
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

/// The parameter group `name`'s ARN; None when absent.
pub async fn find_parameter_group(ctx: &Ctx, name: &str) -> Result<Option<String>> {
    match ctx
        .clients
        .rds
        .describe_db_parameter_groups()
        .db_parameter_group_name(name)
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

/// The parameters of group `name` set by the user (source "user"), by name.
pub async fn user_parameters(ctx: &Ctx, name: &str) -> Result<BTreeMap<String, String>> {
    let mut out_map = BTreeMap::new();
    let mut marker: Option<String> = None;
    loop {
        let out = ctx
            .clients
            .rds
            .describe_db_parameters()
            .db_parameter_group_name(name)
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
    /// As RDS reports it, e.g. "8.4.8".
    pub engine_version: String,
    pub endpoint: Option<(String, i32)>,
    pub settings: DbSettings,
    pub ours: bool,
    /// `ParameterApplyStatus` of its parameter group (in-sync, pending-reboot, applying, ...).
    pub parameter_apply_status: String,
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
            engine_version: d.engine_version().unwrap_or_default().to_string(),
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
            parameter_apply_status: d
                .db_parameter_groups()
                .first()
                .and_then(|g| g.parameter_apply_status())
                .unwrap_or_default()
                .to_string(),
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

/// What to do with the parameter group (its parameters are [`ParametersOp`]).
#[derive(Debug, Clone, PartialEq)]
pub enum ParameterGroupOp {
    Keep,
    Create,
}

/// What to do with the parameter group's CloudStack settings.
#[derive(Debug, Clone, PartialEq)]
pub enum ParametersOp {
    Keep,
    /// Set these (name, value, static?); `fresh`: the group has no user parameters yet.
    Set {
        changes: Vec<(&'static str, &'static str, bool)>,
        fresh: bool,
    },
}

pub fn plan_parameter_group(exists: bool) -> ParameterGroupOp {
    if exists {
        ParameterGroupOp::Keep
    } else {
        ParameterGroupOp::Create
    }
}

/// The user parameters `have` against what CloudStack needs ([`model::DB_PARAMETERS`]).
pub fn plan_parameters(have: &BTreeMap<String, String>) -> ParametersOp {
    let changes = model::param_changes(have);
    if changes.is_empty() {
        ParametersOp::Keep
    } else {
        ParametersOp::Set {
            changes,
            fresh: have.is_empty(),
        }
    }
}

impl SubnetGroupOp {
    pub fn item(&self, name: &str, want: &BTreeSet<String>) -> Item {
        let res = "db-subnet-group";
        match self {
            SubnetGroupOp::Keep => {
                Item::new(res, Some(name), "ok", Action::Keep, &format!("{want:?}"))
            }
            SubnetGroupOp::SetSubnets { arn, have } => Item::new(
                res,
                Some(name),
                arn,
                Action::Change,
                &format!("{have:?} -> {want:?}"),
            ),
            SubnetGroupOp::Create => Item::new(
                res,
                Some(name),
                "absent",
                Action::Create,
                &format!("{want:?}"),
            ),
        }
    }
}

impl ParameterGroupOp {
    pub fn item(&self, name: &str, family: &str) -> Item {
        let (state, action) = match self {
            ParameterGroupOp::Keep => ("ok", Action::Keep),
            ParameterGroupOp::Create => ("absent", Action::Create),
        };
        Item::new("db-parameter-group", Some(name), state, action, family)
    }
}

impl ParametersOp {
    pub fn item(&self, name: &str) -> Item {
        let res = "db-parameter-group/parameters";
        match self {
            ParametersOp::Keep => {
                Item::new(res, Some(name), "ok", Action::Keep, "CloudStack settings")
            }
            ParametersOp::Set { changes, fresh } => {
                let detail: Vec<String> =
                    changes.iter().map(|(n, v, _)| format!("{n}={v}")).collect();
                let action = if *fresh {
                    Action::Create
                } else {
                    Action::Change
                };
                Item::new(res, Some(name), "drift", action, &detail.join(", "))
            }
        }
    }
}

impl InstanceOp {
    pub fn item(&self, id: &str, detail: &str) -> Item {
        match self {
            InstanceOp::Keep { status } => {
                Item::new("db-instance", Some(id), status, Action::Keep, detail)
            }
            InstanceOp::Modify { status, diffs, .. } => Item::new(
                "db-instance",
                Some(id),
                status,
                Action::Change,
                &diffs.join("; "),
            ),
            InstanceOp::Create => {
                Item::new("db-instance", Some(id), "absent", Action::Create, detail)
            }
        }
    }
}

/// The database after [`converge`], and the MySQL major it runs (or will).
#[derive(Debug, Clone)]
pub struct Converged {
    pub db: Option<Db>,
    pub mysql: MysqlMajor,
}

/// Subnet group, parameter group (and its parameters) and instance, in that order: each is
/// observed, planned (pure) and carried out before the next, which names it. The instance is
/// observed first: its MySQL major picks the parameter group ([`model::db_mysql_for`]).
pub async fn converge(ctx: &Ctx, db_sg: Option<&str>, router_az: &str) -> Result<Converged> {
    let found = find_instance(ctx).await?;
    let mysql = model::db_mysql_for(found.as_ref().map(|d| d.engine_version.as_str()));
    let sg_name = subnet_group(ctx).await?;
    let pg_name = parameter_group(ctx, &mysql).await?;
    let db = instance(ctx, db_sg, router_az, &sg_name, &pg_name, &mysql, found).await?;
    Ok(Converged { db, mysql })
}

/// The DB subnet group over the overlay subnets and `second_subnet_id`. Returns its name.
async fn subnet_group(ctx: &Ctx) -> Result<String> {
    let rds = &ctx.clients.rds;
    let want_subnets: BTreeSet<String> = ctx.cluster.db_subnets().into_iter().collect();
    let sg_name = ctx.cluster.db_subnet_group();
    let op = plan_subnet_group(&want_subnets, find_subnet_group(ctx).await?);
    let call = async {
        match &op {
            SubnetGroupOp::Keep => {}
            SubnetGroupOp::SetSubnets { .. } => {
                rds.modify_db_subnet_group()
                    .db_subnet_group_name(&sg_name)
                    .set_subnet_ids(Some(want_subnets.iter().cloned().collect()))
                    .send()
                    .await
                    .map_err(|e| err("ModifyDBSubnetGroup", e))?;
            }
            SubnetGroupOp::Create => {
                rds.create_db_subnet_group()
                    .db_subnet_group_name(&sg_name)
                    .db_subnet_group_description(format!("overlay {} database", ctx.name()))
                    .set_subnet_ids(Some(want_subnets.iter().cloned().collect()))
                    .set_tags(Some(rds_tags(ctx, "db-subnet-group")))
                    .send()
                    .await
                    .map_err(|e| err("CreateDBSubnetGroup", e))?;
            }
        }
        Ok(Done::nothing())
    };
    ctx.carry_out(op.item(&sg_name, &want_subnets), call)
        .await?;
    Ok(sg_name)
}

/// The parameter group of MySQL major `mysql` and CloudStack's settings in it. Returns its name.
async fn parameter_group(ctx: &Ctx, mysql: &MysqlMajor) -> Result<String> {
    let rds = &ctx.clients.rds;
    let pg_name = ctx.cluster.db_parameter_group_for(mysql);
    let pg_exists = find_parameter_group(ctx, &pg_name).await?.is_some();
    let op = plan_parameter_group(pg_exists);
    let call = async {
        if op == ParameterGroupOp::Create {
            rds.create_db_parameter_group()
                .db_parameter_group_name(&pg_name)
                .db_parameter_group_family(mysql.family)
                .description(format!("overlay {} CloudStack settings", ctx.name()))
                .set_tags(Some(rds_tags(ctx, "db-parameter-group")))
                .send()
                .await
                .map_err(|e| err("CreateDBParameterGroup", e))?;
        }
        Ok(Done::nothing())
    };
    ctx.carry_out(op.item(&pg_name, mysql.family), call).await?;
    // observe the parameters: in plan mode a group still to be created has none to read
    let have = if pg_exists || ctx.apply() {
        user_parameters(ctx, &pg_name).await?
    } else {
        BTreeMap::new()
    };
    let op = plan_parameters(&have);
    let call = async {
        if let ParametersOp::Set { changes, .. } = &op {
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
        Ok(Done::nothing())
    };
    ctx.carry_out(op.item(&pg_name), call).await?;
    Ok(pg_name)
}

/// The instance (`found`: as observed before the parameter group step); waits for it to be
/// available when applying.
async fn instance(
    ctx: &Ctx,
    db_sg: Option<&str>,
    router_az: &str,
    sg_name: &str,
    pg_name: &str,
    mysql: &MysqlMajor,
    found: Option<Db>,
) -> Result<Option<Db>> {
    let rds = &ctx.clients.rds;
    let cfg = &ctx.cluster.cfg;
    let want = DbSettings {
        class: cfg.db_instance_class.clone(),
        storage_gib: cfg.db_allocated_storage_gib,
        max_storage_gib: cfg.db_max_storage_gib,
        parameter_group: pg_name.to_string(),
        security_groups: db_sg.map(|s| s.to_string()).into_iter().collect(),
    };
    let detail = format!(
        "{} {} {} {}-{} GiB encrypted in {router_az}",
        model::DB_ENGINE,
        mysql.engine_version,
        want.class,
        want.storage_gib,
        want.max_storage_gib
    );
    let id = ctx.cluster.db_instance_id();
    let op = plan_instance(&want, db_sg.is_some(), found, &id, ctx.name())?;
    let call = async {
        match &op {
            InstanceOp::Keep { .. } => {}
            InstanceOp::Modify {
                want, storage_gib, ..
            } => {
                rds.modify_db_instance()
                    .db_instance_identifier(&id)
                    .db_instance_class(&want.class)
                    .allocated_storage(*storage_gib)
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
            InstanceOp::Create => {
                let Some(sg) = db_sg else {
                    bail!("DB security group missing")
                };
                let password = admin_password(ctx).await?;
                rds.create_db_instance()
                    .db_instance_identifier(&id)
                    .engine(model::DB_ENGINE)
                    .engine_version(mysql.engine_version)
                    .db_instance_class(&want.class)
                    .allocated_storage(want.storage_gib)
                    .max_allocated_storage(want.max_storage_gib)
                    .storage_type("gp3")
                    .storage_encrypted(true)
                    .db_subnet_group_name(sg_name)
                    .db_parameter_group_name(pg_name)
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
        }
        Ok(Done::nothing())
    };
    ctx.carry_out(op.item(&id, &detail), call).await?;
    ctx.settle(&format!("database {id}"), || async {
        match find_instance(ctx).await? {
            Some(db) if db.status == "available" => Ok(Ok(db)),
            Some(db) => Ok(Err(db.status)),
            None => Ok(Err("missing".to_string())),
        }
    })
    .await
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
            engine_version: "8.4.8".into(),
            endpoint: None,
            settings: s,
            ours,
            parameter_apply_status: "in-sync".into(),
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

    #[test]
    fn secret_is_kept_restored_created_or_refused() {
        let found = |ours: bool, deleted: bool| FoundSecret {
            arn: "arn:s".into(),
            ours,
            deleted,
        };
        assert_eq!(plan_secret(None, "n", "c").unwrap(), SecretOp::Create);
        assert_eq!(
            plan_secret(Some(&found(true, false)), "n", "c").unwrap(),
            SecretOp::Keep {
                arn: "arn:s".into()
            }
        );
        assert_eq!(
            plan_secret(Some(&found(true, true)), "n", "c").unwrap(),
            SecretOp::Restore {
                arn: "arn:s".into()
            }
        );
        let e = plan_secret(Some(&found(false, false)), "n", "c").unwrap_err();
        assert!(e.to_string().contains("refusing to adopt"), "{e}");
        assert_eq!(SecretOp::Create.item("admin", "n").id, None);
    }

    #[test]
    fn parameters_are_set_only_where_they_differ() {
        assert_eq!(plan_parameter_group(false), ParameterGroupOp::Create);
        let ParametersOp::Set { changes, fresh } = plan_parameters(&BTreeMap::new()) else {
            panic!()
        };
        assert!(fresh);
        assert_eq!(changes.len(), model::DB_PARAMETERS.len());
        let mut have: BTreeMap<String, String> = model::DB_PARAMETERS
            .iter()
            .map(|(n, v, _)| (n.to_string(), v.to_string()))
            .collect();
        assert_eq!(plan_parameters(&have), ParametersOp::Keep);
        assert_eq!(
            ParameterGroupOp::Create
                .item("pg", model::DB_PARAMETER_GROUP_FAMILY)
                .detail,
            "mysql8.4"
        );
        have.insert("max_connections".into(), "100".into());
        let op = plan_parameters(&have);
        let it = op.item("pg");
        assert_eq!(
            (it.action, it.detail.as_str()),
            (Action::Change, "max_connections=350")
        );
    }
}
