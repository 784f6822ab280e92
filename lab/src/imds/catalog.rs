//! What each instance of the lab is, as its instance metadata tells it: one [`Instance`] per
//! node and the VPC client, derived from the lab's topology, optionally overlaid with moto's
//! EC2 state (instances matched by private IPv4), so instance ids and tags agree with
//! `DescribeInstances`. The catalog is the JSON file `/run/overlay-lab/P/imds.json`; the
//! server reloads it when it changes, so a test or a trainer can edit tags, user data or the
//! token rule of one instance live.

use crate::topo::{self, Topology};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// The lab VPC's CIDR (nodes 10.0.0.0/22 and the client subnet 10.0.8.0/24 are inside it).
pub const VPC_CIDR: &str = "10.0.0.0/16";
/// Account id in identity documents and ARNs (moto's default account).
pub const ACCOUNT: &str = "123456789012";
/// Role name when the instance has no instance profile in moto.
pub const DEFAULT_ROLE: &str = "overlay-lab-node";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    pub prefix: String,
    pub vpc_ns: String,
    pub region: String,
    pub account: String,
    /// moto behind our shim (`scripts/aws-emulator`): merge `GET /_shim/instances` into the
    /// topology's instances.
    #[serde(default)]
    pub aws_endpoint: Option<String>,
    /// `up --instances`: the directory the package server (port 8775) serves.
    #[serde(default)]
    pub packages_dir: Option<std::path::PathBuf>,
    /// Router HA with moto: the lab's VPC router sends this CIDR where moto's route tables
    /// say (ReplaceRoute moves it), after a propagation delay.
    #[serde(default)]
    pub route_follow: Option<RouteFollow>,
    pub instances: Vec<Instance>,
}

/// See [`Catalog::route_follow`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteFollow {
    pub cidr: String,
    /// AWS applies a replaced route after a delay the emulator does not have.
    pub delay_ms: u64,
}

/// `HttpTokens` of the instance's metadata options.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HttpTokens {
    /// IMDSv2 only: a GET without a valid token gets 401.
    Required,
    /// IMDSv1 allowed too: a GET without a token is answered (an invalid token still gets 401).
    Optional,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// Lab node name ("router", "mgmt", "h1", ..., "client").
    pub node: String,
    pub private_ip: Ipv4Addr,
    pub instance_id: String,
    pub instance_type: String,
    pub image_id: String,
    pub availability_zone: String,
    /// MAC of the node's `eth0` (the lab sets it, see [`topo::eth0_mac`]); kept from the
    /// topology even when moto is merged, because the interface is the truth a node checks.
    pub mac: String,
    pub interface_id: String,
    pub subnet_id: String,
    pub subnet_cidr: String,
    pub vpc_id: String,
    pub vpc_cidrs: Vec<String>,
    pub tags: BTreeMap<String, String>,
    /// `InstanceMetadataTags`: `tags/instance/` exists only when enabled.
    pub metadata_tags: bool,
    pub http_tokens: HttpTokens,
    /// `HttpPutResponseHopLimit`: the IP TTL of every response (1 = the instance itself only).
    pub hop_limit: u8,
    /// Role of the instance profile: `iam/` exists only when there is one.
    pub iam_role: Option<String>,
    pub user_data: Option<String>,
    /// RFC 3339.
    pub launch_time: String,
}

pub use crate::sys::fnv64;

/// An AWS-shaped id: `kind-` + 17 hex digits, stable for (prefix, what).
fn aws_id(kind: &str, prefix: &str, what: &str) -> String {
    let h = fnv64(&[kind, prefix, what]);
    format!("{kind}-0{h:016x}")
}

fn node_type(role: topo::Role) -> &'static str {
    match role {
        // a KVM host on EC2 must be a metal instance (no nested virtualisation)
        topo::Role::Host => "c5.metal",
        topo::Role::Management => "m5.large",
        topo::Role::Router => "c5n.large",
    }
}

impl Catalog {
    /// The lab's own view: every node and the client, with tags `Name`, `overlay:cluster`
    /// (= prefix) and `overlay:role`; IMDSv2 required, hop limit 1, metadata tags on.
    pub fn from_topology(t: &Topology, region: &str, launch_time: &str) -> Catalog {
        let az = format!("{region}a");
        let p = &t.prefix;
        let vpc_id = aws_id("vpc", p, "vpc");
        let mut instances: Vec<Instance> = t
            .nodes
            .iter()
            .map(|n| {
                let mut tags = BTreeMap::new();
                tags.insert("Name".to_string(), format!("{p}-{}", n.name));
                tags.insert("overlay:cluster".to_string(), p.clone());
                tags.insert("overlay:role".to_string(), n.role.as_str().to_string());
                if t.flood.zero_config() {
                    tags.extend(t.zero_config_tags(n));
                }
                Instance {
                    node: n.name.clone(),
                    private_ip: n.underlay_ip,
                    instance_id: aws_id("i", p, &n.name),
                    instance_type: node_type(n.role).to_string(),
                    image_id: aws_id("ami", p, "image"),
                    availability_zone: if n.az == 0 {
                        az.clone()
                    } else {
                        format!("{region}b")
                    },
                    mac: topo::eth0_mac(n.underlay_ip),
                    interface_id: aws_id("eni", p, &n.name),
                    subnet_id: aws_id("subnet", p, if n.az == 0 { "nodes" } else { "nodes-b" }),
                    subnet_cidr: format!(
                        "{}/{}",
                        topo::network(n.underlay_ip, topo::UNDERLAY_LEN),
                        topo::UNDERLAY_LEN
                    ),
                    vpc_id: vpc_id.clone(),
                    vpc_cidrs: vec![VPC_CIDR.to_string()],
                    tags,
                    metadata_tags: true,
                    http_tokens: HttpTokens::Required,
                    hop_limit: 1,
                    iam_role: Some(DEFAULT_ROLE.to_string()),
                    user_data: None,
                    launch_time: launch_time.to_string(),
                }
            })
            .collect();
        let mut tags = BTreeMap::new();
        tags.insert("Name".to_string(), format!("{p}-client"));
        instances.push(Instance {
            node: "client".to_string(),
            private_ip: t.client_ip,
            instance_id: aws_id("i", p, "client"),
            instance_type: "t3.micro".to_string(),
            image_id: aws_id("ami", p, "image"),
            availability_zone: az,
            mac: topo::eth0_mac(t.client_ip),
            interface_id: aws_id("eni", p, "client"),
            subnet_id: aws_id("subnet", p, "client"),
            subnet_cidr: format!(
                "{}/{}",
                topo::network(t.client_ip, topo::CLIENT_LEN),
                topo::CLIENT_LEN
            ),
            vpc_id,
            vpc_cidrs: vec![VPC_CIDR.to_string()],
            tags,
            metadata_tags: true,
            http_tokens: HttpTokens::Required,
            hop_limit: 1,
            iam_role: None,
            user_data: None,
            launch_time: launch_time.to_string(),
        });
        Catalog {
            prefix: p.clone(),
            vpc_ns: t.vpc_ns.clone(),
            region: region.to_string(),
            account: ACCOUNT.to_string(),
            aws_endpoint: None,
            route_follow: None,
            packages_dir: None,
            instances,
        }
    }

    /// The instance whose private address is `ip`.
    pub fn by_ip(&self, ip: Ipv4Addr) -> Option<&Instance> {
        self.instances.iter().find(|i| i.private_ip == ip)
    }

    /// This catalog with moto's instances (the JSON of `GET /_shim/instances`) laid over the
    /// lab's: a running or pending moto instance whose private address is a lab node's
    /// supplies that node's ids, type, placement, network ids, tags, metadata options, role,
    /// user data and launch time.
    pub fn merged(&self, moto: &serde_json::Value) -> Catalog {
        let mut c = self.clone();
        let list = moto["instances"].as_array().cloned().unwrap_or_default();
        for m in &list {
            let state = m["state"].as_str().unwrap_or("");
            if state != "running" && state != "pending" {
                continue;
            }
            let Some(ip) = m["private_ip"]
                .as_str()
                .and_then(|s| s.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            let Some(i) = c.instances.iter_mut().find(|i| i.private_ip == ip) else {
                continue;
            };
            let s = |k: &str| m[k].as_str().filter(|v| !v.is_empty()).map(str::to_string);
            let set = |dst: &mut String, k: &str| {
                if let Some(v) = s(k) {
                    *dst = v;
                }
            };
            set(&mut i.instance_id, "instance_id");
            set(&mut i.instance_type, "instance_type");
            set(&mut i.image_id, "image_id");
            set(&mut i.availability_zone, "availability_zone");
            set(&mut i.interface_id, "interface_id");
            set(&mut i.subnet_id, "subnet_id");
            set(&mut i.subnet_cidr, "subnet_cidr");
            set(&mut i.vpc_id, "vpc_id");
            set(&mut i.launch_time, "launch_time");
            if let Some(v) = m["vpc_cidrs"].as_array() {
                let v: Vec<String> = v
                    .iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect();
                if !v.is_empty() {
                    i.vpc_cidrs = v;
                }
            }
            if let Some(t) = m["tags"].as_object() {
                i.tags = t
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                    .collect();
            }
            // an option moto reports as null (set by a partial ModifyInstanceMetadataOptions)
            // is unchanged, as on AWS
            if let Some(t) = s("instance_metadata_tags") {
                i.metadata_tags = t == "enabled";
            }
            match s("http_tokens").as_deref() {
                Some("optional") => i.http_tokens = HttpTokens::Optional,
                Some("required") => i.http_tokens = HttpTokens::Required,
                _ => {}
            }
            if let Some(h) = m["hop_limit"].as_u64() {
                i.hop_limit = h.clamp(1, 64) as u8;
            }
            i.iam_role = s("iam_role").or_else(|| i.iam_role.clone());
            if let Some(u) = s("user_data") {
                i.user_data = Some(u);
            }
        }
        c
    }
}

/// RFC 3339 (UTC, seconds) of `secs` since the epoch.
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // civil-from-days (proleptic Gregorian), days since 1970-01-01
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cat() -> Catalog {
        let t = Topology::new("t", 2, 1, "239.255.0.1".parse().unwrap(), 100, 1500);
        Catalog::from_topology(&t, "eu-west-1", "2026-12-02T00:00:00Z")
    }

    #[test]
    fn every_node_and_the_client_with_stable_aws_shaped_ids() {
        let c = cat();
        let names: Vec<&str> = c.instances.iter().map(|i| i.node.as_str()).collect();
        assert_eq!(names, ["router", "mgmt", "h1", "h2", "client"]);
        let h1 = c.by_ip("10.0.0.10".parse().unwrap()).unwrap();
        assert_eq!(h1.node, "h1");
        assert!(
            h1.instance_id.starts_with("i-") && h1.instance_id.len() == 19,
            "{}",
            h1.instance_id
        );
        assert_eq!(
            h1.instance_id,
            cat().by_ip(h1.private_ip).unwrap().instance_id
        );
        assert_ne!(h1.instance_id, c.instances[3].instance_id);
        assert_eq!(h1.mac, "02:00:0a:00:00:0a");
        assert_eq!(h1.subnet_cidr, "10.0.0.0/22");
        assert_eq!(h1.tags["overlay:role"], "host");
        assert_eq!(h1.tags["overlay:cluster"], "t");
        assert_eq!(c.instances[4].subnet_cidr, "10.0.8.0/24");
        assert_eq!(c.instances[4].iam_role, None);
    }

    #[test]
    fn moto_state_overrides_ids_tags_and_options_of_the_matching_instance_only() {
        let moto = json!({"instances": [
            {"instance_id": "i-0123456789abcdef0", "private_ip": "10.0.0.10", "state": "running",
             "tags": {"overlay:cluster": "prod"}, "instance_metadata_tags": "disabled",
             "http_tokens": "optional", "hop_limit": 2, "subnet_id": "subnet-1", "vpc_id": "vpc-1",
             "vpc_cidrs": ["10.0.0.0/16", "100.64.0.0/16"], "user_data": "#!/bin/sh\n"},
            {"instance_id": "i-0aaaaaaaaaaaaaaaa", "private_ip": "10.0.0.11", "state": "terminated"},
            {"instance_id": "i-0bbbbbbbbbbbbbbbb", "private_ip": "10.0.3.99", "state": "running"}
        ]});
        let c = cat().merged(&moto);
        let h1 = c.by_ip("10.0.0.10".parse().unwrap()).unwrap();
        assert_eq!(h1.instance_id, "i-0123456789abcdef0");
        assert_eq!(h1.tags.len(), 1);
        assert!(!h1.metadata_tags);
        assert_eq!(h1.http_tokens, HttpTokens::Optional);
        assert_eq!(h1.hop_limit, 2);
        assert_eq!(h1.vpc_cidrs.len(), 2);
        assert_eq!(h1.mac, "02:00:0a:00:00:0a", "the interface's MAC stays");
        assert_eq!(h1.iam_role.as_deref(), Some(DEFAULT_ROLE));
        assert_eq!(h1.user_data.as_deref(), Some("#!/bin/sh\n"));
        let h2 = c.by_ip("10.0.0.11".parse().unwrap()).unwrap();
        assert_eq!(
            h2,
            cat().by_ip(h2.private_ip).unwrap(),
            "terminated: not merged"
        );
        assert_eq!(c.instances.len(), 5);
    }

    #[test]
    fn rfc3339_of_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_180_645), "2026-12-02T03:04:05Z");
    }
}
