//! EFS: encrypted file system with provisioned throughput and a mount target in the overlay subnet.

use anyhow::{bail, Result};
use aws_sdk_efs::operation::create_file_system::CreateFileSystemError;
use aws_sdk_efs::types::{PerformanceMode, Tag, ThroughputMode};

use crate::aws::err;
use crate::config::CLUSTER_TAG;
use crate::ctx::{Action, Ctx};

pub const MOUNT_OPTIONS: &str =
    "nfsvers=4.1,rsize=1048576,wsize=1048576,hard,timeo=600,retrans=2,noresvport,_netdev";

#[derive(Debug, Clone)]
pub struct Fs {
    pub id: String,
    pub state: String,
    pub encrypted: bool,
    pub mode: String,
    pub mibps: Option<f64>,
}

/// The cluster's file system, found by tag.
pub async fn find(ctx: &Ctx) -> Result<Option<Fs>> {
    let mut marker: Option<String> = None;
    loop {
        let out = ctx
            .clients
            .efs
            .describe_file_systems()
            .set_marker(marker.clone())
            .send()
            .await
            .map_err(|e| err("DescribeFileSystems", e))?;
        for f in out.file_systems() {
            let ours = f
                .tags()
                .iter()
                .any(|t| t.key() == CLUSTER_TAG && t.value() == ctx.name());
            let state = f.life_cycle_state().as_str().to_string();
            if ours && !matches!(state.as_str(), "deleted" | "deleting" | "error") {
                return Ok(Some(Fs {
                    id: f.file_system_id().to_string(),
                    state,
                    encrypted: f.encrypted().unwrap_or(false),
                    mode: f
                        .throughput_mode()
                        .map(|m| m.as_str().to_string())
                        .unwrap_or_default(),
                    mibps: f.provisioned_throughput_in_mibps(),
                }));
            }
        }
        marker = out.next_marker().map(str::to_string);
        if marker.is_none() {
            return Ok(None);
        }
    }
}

async fn fs_state(ctx: &Ctx, id: &str) -> Result<String> {
    let out = ctx
        .clients
        .efs
        .describe_file_systems()
        .file_system_id(id)
        .send()
        .await
        .map_err(|e| err("DescribeFileSystems", e))?;
    Ok(out
        .file_systems()
        .first()
        .map(|f| f.life_cycle_state().as_str().to_string())
        .unwrap_or_else(|| "missing".into()))
}

/// (mount target id, subnet, state)
pub async fn mount_targets(ctx: &Ctx, fs: &str) -> Result<Vec<(String, String, String)>> {
    let out = ctx
        .clients
        .efs
        .describe_mount_targets()
        .file_system_id(fs)
        .send()
        .await
        .map_err(|e| err("DescribeMountTargets", e))?;
    Ok(out
        .mount_targets()
        .iter()
        .map(|m| {
            (
                m.mount_target_id().to_string(),
                m.subnet_id().to_string(),
                m.life_cycle_state().as_str().to_string(),
            )
        })
        .collect())
}

fn tags(ctx: &Ctx) -> Result<Vec<Tag>> {
    ctx.tags("efs")
        .into_iter()
        .map(|(k, v)| {
            Tag::builder()
                .key(k)
                .value(v)
                .build()
                .map_err(anyhow::Error::from)
        })
        .collect()
}

/// Converges the file system; returns its id (None in plan mode when it does not exist).
pub async fn converge(ctx: &Ctx, efs_sg: Option<&str>) -> Result<Option<String>> {
    let efs = &ctx.clients.efs;
    let cfg = &ctx.cluster.cfg;
    let want = cfg.efs_throughput_mibps;
    let detail = format!("encrypted, provisioned {want} MiB/s");
    let id = match find(ctx).await? {
        Some(fs) => {
            if !fs.encrypted {
                bail!(
                    "file system {} (tagged {CLUSTER_TAG}={}) is not encrypted; encryption cannot be \
                     turned on: tear it down and bootstrap again",
                    fs.id,
                    ctx.name()
                );
            }
            if fs.mode != "provisioned" || fs.mibps != Some(want) {
                if ctx.apply() {
                    efs.update_file_system()
                        .file_system_id(&fs.id)
                        .throughput_mode(ThroughputMode::Provisioned)
                        .provisioned_throughput_in_mibps(want)
                        .send()
                        .await
                        .map_err(|e| err("UpdateFileSystem", e))?;
                }
                let was = format!("{} {:?}", fs.mode, fs.mibps);
                ctx.record(
                    "efs",
                    Some(&fs.id),
                    &fs.state,
                    Action::Change,
                    &format!("{detail} (was {was})"),
                );
            } else {
                ctx.record("efs", Some(&fs.id), &fs.state, Action::Keep, &detail);
            }
            Some(fs.id)
        }
        None if ctx.apply() => {
            let res = efs
                .create_file_system()
                .creation_token(ctx.cluster.efs_token())
                .encrypted(true)
                .performance_mode(PerformanceMode::GeneralPurpose)
                .throughput_mode(ThroughputMode::Provisioned)
                .provisioned_throughput_in_mibps(want)
                .set_tags(Some(tags(ctx)?))
                .send()
                .await;
            let id = match res {
                Ok(out) => out.file_system_id().to_string(),
                // The creation token makes the call idempotent: a file system created by an
                // earlier run whose tags are not visible yet is adopted, not duplicated.
                Err(e) => match e.as_service_error() {
                    Some(CreateFileSystemError::FileSystemAlreadyExists(x)) => {
                        x.file_system_id().to_string()
                    }
                    _ => return Err(err("CreateFileSystem", e)),
                },
            };
            ctx.record("efs", Some(&id), "creating", Action::Create, &detail);
            Some(id)
        }
        None => {
            ctx.record("efs", None, "absent", Action::Create, &detail);
            None
        }
    };
    let Some(id) = id else {
        ctx.record(
            "efs-mount-target",
            None,
            "absent",
            Action::Create,
            &cfg.subnet_id,
        );
        return Ok(None);
    };
    if ctx.apply() {
        ctx.wait_for(&format!("file system {id}"), || async {
            let s = fs_state(ctx, &id).await?;
            Ok(if s == "available" { Ok(()) } else { Err(s) })
        })
        .await?;
    }
    let mts = mount_targets(ctx, &id).await?;
    match mts
        .iter()
        .find(|(_, s, st)| s == &cfg.subnet_id && st != "deleting" && st != "deleted")
    {
        Some((mt, _, st)) => {
            let have = ctx
                .clients
                .efs
                .describe_mount_target_security_groups()
                .mount_target_id(mt)
                .send()
                .await
                .map_err(|e| err("DescribeMountTargetSecurityGroups", e))?;
            let have: Vec<String> = have.security_groups().to_vec();
            match efs_sg {
                Some(sg) if have != [sg.to_string()] => {
                    if ctx.apply() {
                        efs.modify_mount_target_security_groups()
                            .mount_target_id(mt)
                            .security_groups(sg)
                            .send()
                            .await
                            .map_err(|e| err("ModifyMountTargetSecurityGroups", e))?;
                    }
                    let detail = format!("{} security groups {have:?} -> [{sg}]", cfg.subnet_id);
                    ctx.record("efs-mount-target", Some(mt), st, Action::Change, &detail);
                }
                _ => ctx.record(
                    "efs-mount-target",
                    Some(mt),
                    st,
                    Action::Keep,
                    &cfg.subnet_id,
                ),
            }
        }
        None => {
            let mut mt_id = None;
            if ctx.apply() {
                let Some(sg) = efs_sg else {
                    bail!("EFS security group missing")
                };
                let out = efs
                    .create_mount_target()
                    .file_system_id(&id)
                    .subnet_id(&cfg.subnet_id)
                    .security_groups(sg)
                    .send()
                    .await
                    .map_err(|e| err("CreateMountTarget", e))?;
                mt_id = Some(out.mount_target_id().to_string());
            }
            ctx.record(
                "efs-mount-target",
                mt_id.as_deref(),
                "absent",
                Action::Create,
                &cfg.subnet_id,
            );
        }
    }
    if ctx.apply() {
        ctx.wait_for(&format!("mount target of {id}"), || async {
            let st = mount_targets(ctx, &id)
                .await?
                .into_iter()
                .find(|(_, s, _)| s == &cfg.subnet_id)
                .map(|(_, _, st)| st)
                .unwrap_or_else(|| "missing".into());
            Ok(if st == "available" { Ok(()) } else { Err(st) })
        })
        .await?;
    }
    Ok(Some(id))
}

pub fn dns_name(fs: &str, region: &str) -> String {
    format!("{fs}.efs.{region}.amazonaws.com")
}
