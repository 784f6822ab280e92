//! Where the peers of unicast flooding come from. `peer_discovery = static`: the `peers`
//! key (nothing to do at run time). `peer_discovery = ec2`: the running instances of this
//! VPC tagged `overlay:cluster=<cluster>` (`DescribeInstances`, every page), asked every
//! `peer_interval` and on SIGHUP by a task of its own, so a slow or failing API never delays a
//! kernel repair. A failure is reported and the last good set stays in force: an API outage
//! never flushes the flood list.

use crate::config::{Config, PeerDiscovery};
use serde::Serialize;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

/// One answer of the discovery task.
#[derive(Debug, Clone)]
pub struct Report {
    pub result: Result<BTreeSet<Ipv4Addr>, String>,
    pub took: Duration,
}

/// What `overlayd status` shows about the peers.
#[derive(Debug, Clone, Serialize, Default)]
pub struct PeerStatus {
    /// static | ec2
    pub discovery: String,
    /// Peers in force (None: EC2 has not answered yet, the flood list is left as it is).
    pub count: Option<usize>,
    pub refreshes: u64,
    pub failures: u64,
    pub last_ok_unix_ms: Option<u128>,
    /// The last failure, while it lasts (cleared by the next success).
    pub last_error: Option<String>,
}

/// Is this configuration's peer set found by EC2 discovery?
pub fn uses_ec2(cfg: &Config) -> bool {
    cfg.peer_discovery == Some(PeerDiscovery::Ec2)
}

/// (region, VPC id, cluster) for EC2 discovery; the configuration guarantees them.
fn target(cfg: &Config) -> Result<(String, String, String), String> {
    let f = cfg
        .instance
        .as_ref()
        .ok_or("peer_discovery = ec2 needs the instance's VPC and region from IMDS")?;
    let cluster = cfg
        .cluster
        .clone()
        .ok_or("peer_discovery = ec2 needs cluster")?;
    Ok((f.region.clone(), f.vpc_id.clone(), cluster))
}

/// One discovery, for the one-shot commands (`apply`, `plan`, `validate`).
#[cfg(feature = "ec2")]
pub async fn discover_once(cfg: &Config) -> Result<BTreeSet<Ipv4Addr>, String> {
    let (region, vpc, cluster) = target(cfg)?;
    let c = crate::instance::ec2::client(&region).await;
    crate::instance::ec2::describe_peers(&c, &vpc, &cluster).await
}

#[cfg(not(feature = "ec2"))]
pub async fn discover_once(cfg: &Config) -> Result<BTreeSet<Ipv4Addr>, String> {
    target(cfg)?;
    Err("this overlayd is built without the EC2 API (feature ec2)".into())
}

/// The discovery task of `overlayd run`: a report now, then every `peer_interval` and
/// whenever `kick` is notified (SIGHUP). Ends when the receiver is dropped.
pub fn spawn(
    cfg: &Config,
    tx: tokio::sync::mpsc::UnboundedSender<Report>,
    kick: std::sync::Arc<tokio::sync::Notify>,
) -> tokio::task::JoinHandle<()> {
    let every = Duration::from_secs(cfg.peer_interval_secs);
    let target = target(cfg);
    tokio::spawn(async move {
        #[cfg(feature = "ec2")]
        let client = match &target {
            Ok((region, _, _)) => Some(crate::instance::ec2::client(region).await),
            Err(_) => None,
        };
        loop {
            let t0 = std::time::Instant::now();
            let result = match &target {
                Err(e) => Err(e.clone()),
                #[cfg(feature = "ec2")]
                Ok((_, vpc, cluster)) => {
                    let c = client.as_ref().expect("client made with the target");
                    crate::instance::ec2::describe_peers(c, vpc, cluster).await
                }
                #[cfg(not(feature = "ec2"))]
                Ok(_) => Err("this overlayd is built without the EC2 API (feature ec2)".into()),
            };
            if tx
                .send(Report {
                    result,
                    took: t0.elapsed(),
                })
                .is_err()
            {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = kick.notified() => {}
            }
        }
    })
}
