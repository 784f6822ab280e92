//! Where the peers come from: unicast flooding's (every other node) and flood = evpn's (the
//! route reflectors). `peer_discovery = static`: the `peers` / `evpn_reflectors` keys
//! (nothing to do at run time). `peer_discovery = ec2`: the running instances of this VPC
//! tagged `overlay:cluster=<cluster>` (`DescribeInstances`, every page; for evpn those also
//! tagged `overlay:role=router`), asked every
//! `peer_interval` and on SIGHUP by a task of its own, so a slow or failing API never delays a
//! kernel repair. A failure is reported and the last good set stays in force: an API outage
//! never flushes the flood list.

use crate::config::{Config, PeerDiscovery};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

/// One answer of the discovery task.
#[derive(Debug, Clone)]
pub struct Report {
    /// Which task sent it (a report of a task replaced by a reload is dropped).
    pub generation: u64,
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

/// Where to look: region, VPC, cluster, and this instance's own address.
#[derive(Debug, Clone)]
#[cfg_attr(not(feature = "ec2"), allow(dead_code))]
struct Target {
    region: String,
    vpc: String,
    cluster: String,
    own: Ipv4Addr,
    /// flood = evpn: only the instances with this `overlay:role` (the route reflectors).
    only_role: Option<&'static str>,
}

/// The configuration guarantees these for EC2 discovery.
fn target(cfg: &Config) -> Result<Target, String> {
    let f = cfg
        .instance
        .as_ref()
        .ok_or("peer_discovery = ec2 needs the instance's VPC and region from IMDS")?;
    let cluster = cfg
        .cluster
        .clone()
        .ok_or("peer_discovery = ec2 needs cluster")?;
    Ok(Target {
        region: f.region.clone(),
        vpc: f.vpc_id.clone(),
        cluster,
        own: f.local_ipv4,
        only_role: (cfg.flood == crate::config::Flood::Evpn).then_some("router"),
    })
}

/// An answer is believed only if it has this instance in it: an empty or foreign answer (a
/// mistyped cluster, a removed tag, an eventually consistent API) would otherwise empty the
/// flood list. The node itself is then taken out (it is no peer of its own). For evpn the
/// routers are kept, and an answer with none is not believed either (a node that is no
/// reflector would lose its every session).
#[cfg_attr(not(feature = "ec2"), allow(dead_code))]
fn sane(
    t: &Target,
    found: Result<BTreeMap<Ipv4Addr, String>, String>,
) -> Result<BTreeSet<Ipv4Addr>, String> {
    let mut all = found?;
    let mine = all.remove(&t.own);
    if mine.is_none() {
        return Err(format!(
            "DescribeInstances found {} running instance(s) tagged overlay:cluster={} in {}, \
             but not this one ({}): the answer is not believed (wrong cluster or tag?)",
            all.len(),
            t.cluster,
            t.vpc,
            t.own
        ));
    }
    let Some(role) = t.only_role else {
        return Ok(all.into_keys().collect());
    };
    let set: BTreeSet<Ipv4Addr> = all
        .into_iter()
        .filter(|(_, r)| r == role)
        .map(|(ip, _)| ip)
        .collect();
    if set.is_empty() && mine.as_deref() != Some(role) {
        return Err(format!(
            "DescribeInstances found no other running instance tagged overlay:cluster={} and \
             overlay:role={role} in {}: no route reflector (the last good set stays)",
            t.cluster, t.vpc
        ));
    }
    Ok(set)
}

#[cfg(feature = "ec2")]
async fn ask(c: &aws_sdk_ec2::Client, t: &Target) -> Result<BTreeSet<Ipv4Addr>, String> {
    sane(
        t,
        crate::instance::ec2::describe_peers(c, &t.vpc, &t.cluster).await,
    )
}

/// One discovery, for the one-shot commands (`apply`, `plan`, `validate`).
#[cfg(feature = "ec2")]
pub async fn discover_once(cfg: &Config) -> Result<BTreeSet<Ipv4Addr>, String> {
    let t = target(cfg)?;
    let c = crate::instance::ec2::client(&t.region).await;
    ask(&c, &t).await
}

#[cfg(not(feature = "ec2"))]
pub async fn discover_once(cfg: &Config) -> Result<BTreeSet<Ipv4Addr>, String> {
    target(cfg)?;
    Err("this overlayd is built without the EC2 API (feature ec2)".into())
}

/// The discovery task of `overlayd run`: a report now, then every `peer_interval` and
/// whenever `kick` is notified (SIGHUP). Ends when the receiver is dropped. Its reports carry
/// `generation`, so those of a task replaced by a reload can be told apart.
pub fn spawn(
    cfg: &Config,
    generation: u64,
    tx: tokio::sync::mpsc::UnboundedSender<Report>,
    kick: std::sync::Arc<tokio::sync::Notify>,
) -> tokio::task::JoinHandle<()> {
    let every = Duration::from_secs(cfg.peer_interval_secs);
    let target = target(cfg);
    tokio::spawn(async move {
        #[cfg(feature = "ec2")]
        let client = match &target {
            Ok(t) => Some(crate::instance::ec2::client(&t.region).await),
            Err(_) => None,
        };
        loop {
            let t0 = std::time::Instant::now();
            let result = match &target {
                Err(e) => Err(e.clone()),
                #[cfg(feature = "ec2")]
                Ok(t) => ask(client.as_ref().expect("client made with the target"), t).await,
                #[cfg(not(feature = "ec2"))]
                Ok(_) => Err("this overlayd is built without the EC2 API (feature ec2)".into()),
            };
            if tx
                .send(Report {
                    generation,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_without_this_instance_is_not_believed_and_self_is_no_peer() {
        let t = Target {
            region: "eu-west-1".into(),
            vpc: "vpc-1".into(),
            cluster: "prod".into(),
            own: "10.0.0.10".parse().unwrap(),
            only_role: None,
        };
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let m = |v: &[(&str, &str)]| -> BTreeMap<Ipv4Addr, String> {
            v.iter().map(|(a, r)| (ip(a), r.to_string())).collect()
        };
        let ok = sane(&t, Ok(m(&[("10.0.0.10", "host"), ("10.0.0.11", "")]))).unwrap();
        assert_eq!(ok, [ip("10.0.0.11")].into());
        let e = sane(&t, Ok(BTreeMap::new())).unwrap_err();
        assert!(e.contains("not this one (10.0.0.10)"), "{e}");
        assert!(sane(&t, Ok(m(&[("10.0.0.11", "host")]))).is_err());
        assert_eq!(sane(&t, Err("down".into())).unwrap_err(), "down");
    }

    #[test]
    fn evpn_keeps_the_routers_and_never_believes_none() {
        let t = Target {
            region: "eu-west-1".into(),
            vpc: "vpc-1".into(),
            cluster: "prod".into(),
            own: "10.0.0.10".parse().unwrap(),
            only_role: Some("router"),
        };
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let m = |v: &[(&str, &str)]| -> BTreeMap<Ipv4Addr, String> {
            v.iter().map(|(a, r)| (ip(a), r.to_string())).collect()
        };
        let all = m(&[
            ("10.0.0.4", "router"),
            ("10.0.4.4", "router"),
            ("10.0.0.5", "management"),
            ("10.0.0.10", "host"),
            ("10.0.0.11", "host"),
        ]);
        assert_eq!(
            sane(&t, Ok(all)).unwrap(),
            [ip("10.0.0.4"), ip("10.0.4.4")].into()
        );
        let e = sane(&t, Ok(m(&[("10.0.0.10", "host"), ("10.0.0.11", "host")]))).unwrap_err();
        assert!(e.contains("no route reflector"), "{e}");
        // a router alone in its cluster: no other reflector is a fine answer
        let r = Target {
            own: ip("10.0.0.4"),
            ..t
        };
        assert!(sane(&r, Ok(m(&[("10.0.0.4", "router")])))
            .unwrap()
            .is_empty());
    }
}
