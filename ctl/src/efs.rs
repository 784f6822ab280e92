//! EFS: encrypted file system with provisioned throughput and a mount target in each overlay
//! subnet (one per AZ).

use anyhow::{bail, Result};
use aws_sdk_efs::operation::create_file_system::CreateFileSystemError;
use aws_sdk_efs::types::{PerformanceMode, Tag, ThroughputMode};

use crate::aws::err;
use crate::config::CLUSTER_TAG;
use crate::ctx::{Action, Ctx, Done, Item};

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

/// A mount target as EFS has it.
#[derive(Debug, Clone, PartialEq)]
pub struct MountTarget {
    pub id: String,
    pub subnet: String,
    pub state: String,
}

pub async fn mount_targets(ctx: &Ctx, fs: &str) -> Result<Vec<MountTarget>> {
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
        .map(|m| MountTarget {
            id: m.mount_target_id().to_string(),
            subnet: m.subnet_id().to_string(),
            state: m.life_cycle_state().as_str().to_string(),
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

/// What the cluster file asks of EFS.
#[derive(Debug, Clone, PartialEq)]
pub struct Want {
    pub mibps: f64,
    pub subnet: String,
    /// The EFS security group (None while it does not exist yet: plan mode).
    pub security_group: Option<String>,
}

/// The mount target in our subnet, with its security groups.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedMountTarget {
    pub target: MountTarget,
    pub security_groups: Vec<String>,
}

/// One step of the EFS part of a bootstrap, decided by [`plan_fs`] / [`plan_mount_target`]
/// (pure), printed by `plan` and carried out by `bootstrap` ([`converge`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    KeepFs {
        id: String,
        state: String,
    },
    CreateFs,
    UpdateThroughput {
        id: String,
        state: String,
        was: String,
    },
    KeepMountTarget {
        id: String,
        state: String,
    },
    CreateMountTarget,
    SetMountTargetGroups {
        id: String,
        state: String,
        from: Vec<String>,
        to: String,
    },
}

fn fs_detail(w: &Want) -> String {
    format!("encrypted, provisioned {} MiB/s", w.mibps)
}

/// The file system: keep, change its throughput in place, or create it. Encryption cannot be
/// turned on afterwards: an unencrypted one of ours is an error.
pub fn plan_fs(w: &Want, fs: Option<&Fs>, cluster: &str) -> Result<Op> {
    let Some(fs) = fs else {
        return Ok(Op::CreateFs);
    };
    if !fs.encrypted {
        bail!(
            "file system {} (tagged {CLUSTER_TAG}={cluster}) is not encrypted; encryption cannot be \
             turned on: tear it down and bootstrap again",
            fs.id
        );
    }
    Ok(if fs.mode != "provisioned" || fs.mibps != Some(w.mibps) {
        Op::UpdateThroughput {
            id: fs.id.clone(),
            state: fs.state.clone(),
            was: format!("{} {:?}", fs.mode, fs.mibps),
        }
    } else {
        Op::KeepFs {
            id: fs.id.clone(),
            state: fs.state.clone(),
        }
    })
}

/// The mount target in our subnet: keep, re-point its security groups, or create it.
pub fn plan_mount_target(w: &Want, mt: Option<&ObservedMountTarget>) -> Op {
    match (mt, &w.security_group) {
        (None, _) => Op::CreateMountTarget,
        (Some(m), Some(sg)) if m.security_groups != [sg.clone()] => Op::SetMountTargetGroups {
            id: m.target.id.clone(),
            state: m.target.state.clone(),
            from: m.security_groups.clone(),
            to: sg.clone(),
        },
        (Some(m), _) => Op::KeepMountTarget {
            id: m.target.id.clone(),
            state: m.target.state.clone(),
        },
    }
}

/// The mount target of `fs` in `subnet` that is not going away, with its security groups.
pub async fn observe_mount_target(
    ctx: &Ctx,
    fs: &str,
    subnet: &str,
) -> Result<Option<ObservedMountTarget>> {
    let Some(target) = mount_targets(ctx, fs)
        .await?
        .into_iter()
        .find(|m| m.subnet == subnet && m.state != "deleting" && m.state != "deleted")
    else {
        return Ok(None);
    };
    let have = ctx
        .clients
        .efs
        .describe_mount_target_security_groups()
        .mount_target_id(&target.id)
        .send()
        .await
        .map_err(|e| err("DescribeMountTargetSecurityGroups", e))?;
    Ok(Some(ObservedMountTarget {
        target,
        security_groups: have.security_groups().to_vec(),
    }))
}

impl Op {
    /// The report line of this step.
    pub fn item(&self, w: &Want) -> Item {
        let detail = fs_detail(w);
        match self {
            Op::KeepFs { id, state } => Item::new("efs", Some(id), state, Action::Keep, &detail),
            Op::UpdateThroughput { id, state, was } => Item::new(
                "efs",
                Some(id),
                state,
                Action::Change,
                &format!("{detail} (was {was})"),
            ),
            Op::CreateFs => Item::new("efs", None, "absent", Action::Create, &detail),
            Op::KeepMountTarget { id, state } => {
                Item::new("efs-mount-target", Some(id), state, Action::Keep, &w.subnet)
            }
            Op::SetMountTargetGroups {
                id,
                state,
                from,
                to,
            } => Item::new(
                "efs-mount-target",
                Some(id),
                state,
                Action::Change,
                &format!("{} security groups {from:?} -> [{to}]", w.subnet),
            ),
            Op::CreateMountTarget => Item::new(
                "efs-mount-target",
                None,
                "absent",
                Action::Create,
                &w.subnet,
            ),
        }
    }
}

/// Converges the file system: observe, plan (pure), record each step and carry it out (in apply
/// mode). Returns its id (None in plan mode when it does not exist).
pub async fn converge(ctx: &Ctx, efs_sg: Option<&str>) -> Result<Option<String>> {
    let cfg = &ctx.cluster.cfg;
    // One Want per overlay subnet (EFS allows one mount target per AZ, the subnets are one per
    // AZ); the file system steps use the first.
    let wants: Vec<Want> = ctx
        .cluster
        .subnets
        .iter()
        .map(|s| Want {
            mibps: cfg.efs_throughput_mibps,
            subnet: s.clone(),
            security_group: efs_sg.map(str::to_string),
        })
        .collect();
    let want = &wants[0];
    let op = plan_fs(want, find(ctx).await?.as_ref(), ctx.name())?;
    let Some(id) = execute(ctx, want, None, &op).await? else {
        // plan mode: the mount targets come with the file system
        for w in &wants {
            execute(ctx, w, None, &Op::CreateMountTarget).await?;
        }
        return Ok(None);
    };
    ctx.settle(&format!("file system {id}"), || async {
        let s = fs_state(ctx, &id).await?;
        Ok(if s == "available" { Ok(()) } else { Err(s) })
    })
    .await?;
    for w in &wants {
        let mt = observe_mount_target(ctx, &id, &w.subnet).await?;
        let op = plan_mount_target(w, mt.as_ref());
        execute(ctx, w, Some(&id), &op).await?;
    }
    for w in &wants {
        ctx.settle(&format!("mount target of {id} in {}", w.subnet), || async {
            let st = mount_targets(ctx, &id)
                .await?
                .into_iter()
                .find(|m| m.subnet == w.subnet)
                .map(|m| m.state)
                .unwrap_or_else(|| "missing".into());
            Ok(if st == "available" { Ok(()) } else { Err(st) })
        })
        .await?;
    }
    Ok(Some(id))
}

/// Records one step and carries it out in apply mode. Returns the id of the resource the step
/// is about where known (file system steps: the file system; mount target steps: the target).
async fn execute(ctx: &Ctx, w: &Want, fs: Option<&str>, op: &Op) -> Result<Option<String>> {
    let efs = &ctx.clients.efs;
    let call = async {
        Ok(match op {
            Op::KeepFs { .. } | Op::KeepMountTarget { .. } => Done::nothing(),
            Op::UpdateThroughput { id, .. } => {
                efs.update_file_system()
                    .file_system_id(id)
                    .throughput_mode(ThroughputMode::Provisioned)
                    .provisioned_throughput_in_mibps(w.mibps)
                    .send()
                    .await
                    .map_err(|e| err("UpdateFileSystem", e))?;
                Done::nothing()
            }
            Op::CreateFs => {
                let res = efs
                    .create_file_system()
                    .creation_token(ctx.cluster.efs_token())
                    .encrypted(true)
                    .performance_mode(PerformanceMode::GeneralPurpose)
                    .throughput_mode(ThroughputMode::Provisioned)
                    .provisioned_throughput_in_mibps(w.mibps)
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
                Done::created(id, "creating")
            }
            Op::SetMountTargetGroups { id, to, .. } => {
                efs.modify_mount_target_security_groups()
                    .mount_target_id(id)
                    .security_groups(to)
                    .send()
                    .await
                    .map_err(|e| err("ModifyMountTargetSecurityGroups", e))?;
                Done::nothing()
            }
            Op::CreateMountTarget => {
                let (Some(sg), Some(fs)) = (&w.security_group, fs) else {
                    bail!("EFS security group missing")
                };
                let out = efs
                    .create_mount_target()
                    .file_system_id(fs)
                    .subnet_id(&w.subnet)
                    .security_groups(sg)
                    .send()
                    .await
                    .map_err(|e| err("CreateMountTarget", e))?;
                Done {
                    id: Some(out.mount_target_id().to_string()),
                    state: None,
                }
            }
        })
    };
    ctx.carry_out(op.item(w), call).await
}

pub fn dns_name(fs: &str, region: &str) -> String {
    format!("{fs}.efs.{region}.amazonaws.com")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want() -> Want {
        Want {
            mibps: 10.0,
            subnet: "subnet-1".into(),
            security_group: Some("sg-efs".into()),
        }
    }

    fn fs(encrypted: bool, mode: &str, mibps: Option<f64>) -> Fs {
        Fs {
            id: "fs-1".into(),
            state: "available".into(),
            encrypted,
            mode: mode.into(),
            mibps,
        }
    }

    #[test]
    fn file_system_is_created_kept_or_changed_in_place() {
        assert_eq!(plan_fs(&want(), None, "c").unwrap(), Op::CreateFs);
        assert!(matches!(
            plan_fs(&want(), Some(&fs(true, "provisioned", Some(10.0))), "c").unwrap(),
            Op::KeepFs { .. }
        ));
        let Op::UpdateThroughput { was, .. } =
            plan_fs(&want(), Some(&fs(true, "bursting", None)), "c").unwrap()
        else {
            panic!()
        };
        assert_eq!(was, "bursting None");
        let e = plan_fs(&want(), Some(&fs(false, "provisioned", Some(10.0))), "c").unwrap_err();
        assert!(e.to_string().contains("not encrypted"), "{e}");
    }

    #[test]
    fn mount_target_is_created_kept_or_re_pointed() {
        assert_eq!(plan_mount_target(&want(), None), Op::CreateMountTarget);
        let mt = |sgs: &[&str]| ObservedMountTarget {
            target: MountTarget {
                id: "fsmt-1".into(),
                subnet: "subnet-1".into(),
                state: "available".into(),
            },
            security_groups: sgs.iter().map(|s| s.to_string()).collect(),
        };
        assert!(matches!(
            plan_mount_target(&want(), Some(&mt(&["sg-efs"]))),
            Op::KeepMountTarget { .. }
        ));
        assert!(matches!(
            plan_mount_target(&want(), Some(&mt(&["sg-other"]))),
            Op::SetMountTargetGroups { .. }
        ));
        // plan mode before the group exists: nothing to compare against
        let mut w = want();
        w.security_group = None;
        assert!(matches!(
            plan_mount_target(&w, Some(&mt(&["sg-other"]))),
            Op::KeepMountTarget { .. }
        ));
    }
}
