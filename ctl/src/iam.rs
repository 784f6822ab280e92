//! Least-privilege IAM policies for what the code calls.

use serde_json::{json, Value};

use crate::config::{Flood, PeerDiscovery};

/// Every API action bootstrap, plan, status and teardown call.
pub const BOOTSTRAP_ACTIONS: &[&str] = &[
    // read
    "ec2:DescribeVpcs",
    "ec2:DescribeSubnets",
    "ec2:DescribeInstances",
    "ec2:DescribeRouteTables",
    "ec2:DescribeSecurityGroups",
    "ec2:DescribeTransitGateways",
    "ec2:DescribeTransitGatewayVpcAttachments",
    "ec2:DescribeTransitGatewayMulticastDomains",
    "ec2:GetTransitGatewayMulticastDomainAssociations",
    "elasticfilesystem:DescribeFileSystems",
    "elasticfilesystem:DescribeMountTargets",
    "elasticfilesystem:DescribeMountTargetSecurityGroups",
    "rds:DescribeDBInstances",
    "rds:DescribeDBSubnetGroups",
    "rds:DescribeDBParameterGroups",
    "rds:DescribeDBParameters",
    "rds:ListTagsForResource",
    "secretsmanager:DescribeSecret",
    "secretsmanager:GetSecretValue",
    // create / change
    "ec2:CreateSecurityGroup",
    "ec2:AuthorizeSecurityGroupIngress",
    "ec2:RevokeSecurityGroupIngress",
    "ec2:CreateTags",
    "ec2:ModifyInstanceAttribute",
    "ec2:CreateRoute",
    "ec2:ReplaceRoute",
    "ec2:CreateTransitGateway",
    "ec2:CreateTransitGatewayVpcAttachment",
    "ec2:ModifyTransitGatewayVpcAttachment",
    "ec2:CreateTransitGatewayMulticastDomain",
    "ec2:AssociateTransitGatewayMulticastDomain",
    "elasticfilesystem:CreateFileSystem",
    "elasticfilesystem:UpdateFileSystem",
    "elasticfilesystem:CreateMountTarget",
    "elasticfilesystem:ModifyMountTargetSecurityGroups",
    "elasticfilesystem:TagResource",
    "rds:CreateDBSubnetGroup",
    "rds:ModifyDBSubnetGroup",
    "rds:CreateDBParameterGroup",
    "rds:ModifyDBParameterGroup",
    "rds:CreateDBInstance",
    "rds:ModifyDBInstance",
    "rds:AddTagsToResource",
    "secretsmanager:CreateSecret",
    "secretsmanager:RestoreSecret",
    "secretsmanager:TagResource",
    // teardown
    "ec2:DeleteSecurityGroup",
    "ec2:DeleteRoute",
    "ec2:DisassociateTransitGatewayMulticastDomain",
    "ec2:DeleteTransitGatewayMulticastDomain",
    "ec2:DeleteTransitGatewayVpcAttachment",
    "ec2:DeleteTransitGateway",
    "elasticfilesystem:DeleteMountTarget",
    "elasticfilesystem:DeleteFileSystem",
    "rds:DeleteDBInstance",
    "rds:DeleteDBParameterGroup",
    "rds:DeleteDBSubnetGroup",
    "secretsmanager:DeleteSecret",
];

/// What overlayd on a node may call, in every flood mode. `ec2:DescribeTags`: overlayd reads
/// its instance's tags (its role and cluster, when a node is configured by tags) from instance
/// metadata `tags/instance/` where instance metadata tags are enabled, else from DescribeTags
/// with the instance role; metadata tags are a per-instance option, independent of the flood
/// mode, so the fallback is always allowed.
pub const AGENT_ACTIONS: &[&str] = &["ec2:DescribeNetworkInterfaces", "ec2:DescribeTags"];

/// With flood = multicast: read-only views of the multicast domain for diagnostics (unicast
/// flooding has no transit gateway to look at).
pub const AGENT_MULTICAST_ACTIONS: &[&str] = &[
    "ec2:DescribeTransitGatewayMulticastDomains",
    "ec2:GetTransitGatewayMulticastDomainAssociations",
    "ec2:SearchTransitGatewayMulticastGroups",
];

/// With flood = unicast and peer_discovery = ec2: the peers are the running instances tagged
/// with the cluster.
pub const AGENT_EC2_DISCOVERY_ACTIONS: &[&str] = &["ec2:DescribeInstances"];

/// The actions of overlayd's instance role for a cluster flooding with `flood`.
pub fn agent_actions(flood: Flood) -> Vec<&'static str> {
    let mut v: Vec<&str> = AGENT_ACTIONS.to_vec();
    match flood {
        Flood::Multicast => v.extend(AGENT_MULTICAST_ACTIONS),
        Flood::Unicast(PeerDiscovery::Ec2) => v.extend(AGENT_EC2_DISCOVERY_ACTIONS),
        Flood::Unicast(PeerDiscovery::Static) => {}
    }
    v.sort_unstable();
    v
}

/// Actions whose side effects land on an existing resource and can be limited by tag.
const TAG_SCOPED_PREFIXES: &[&str] = &[
    "ec2:DeleteSecurityGroup",
    "ec2:RevokeSecurityGroupIngress",
    "ec2:DeleteTransitGateway",
    "ec2:DisassociateTransitGatewayMulticastDomain",
    "secretsmanager:DeleteSecret",
];

/// The policy for `which` (bootstrap | agent). The agent's depends on the cluster's flood mode;
/// the bootstrap one does not (teardown removes a transit gateway left from flood = multicast
/// whatever the file says now).
pub fn policy(which: &str, region: Option<&str>, flood: Flood) -> Option<Value> {
    let actions: Vec<&str> = match which {
        "bootstrap" => BOOTSTRAP_ACTIONS.to_vec(),
        "agent" => agent_actions(flood),
        _ => return None,
    };
    let mut statements = Vec::new();
    let region_cond = region.map(|r| json!({"StringEquals": {"aws:RequestedRegion": r}}));
    let (scoped, rest): (Vec<&str>, Vec<&str>) = actions.iter().partition(|a| {
        TAG_SCOPED_PREFIXES.iter().any(|p| a.starts_with(p)) && which == "bootstrap"
    });
    let mut main = json!({
        "Sid": format!("Overlay{}", if which == "agent" { "Agent" } else { "Bootstrap" }),
        "Effect": "Allow",
        "Action": rest,
        "Resource": "*",
    });
    if let Some(c) = &region_cond {
        main["Condition"] = c.clone();
    }
    statements.push(main);
    if !scoped.is_empty() {
        let mut cond = json!({"StringLike": {"aws:ResourceTag/overlay:cluster": "*"}});
        if let Some(r) = region {
            cond["StringEquals"] = json!({"aws:RequestedRegion": r});
        }
        statements.push(json!({
            "Sid": "OverlayTeardownOnlyTagged",
            "Effect": "Allow",
            "Action": scoped,
            "Resource": "*",
            "Condition": cond,
        }));
    }
    Some(json!({"Version": "2012-10-17", "Statement": statements}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actions(p: &Value) -> Vec<String> {
        let mut v: Vec<String> = p["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["Action"].as_array().unwrap().clone())
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn policies_are_valid_shapes() {
        let p = policy("bootstrap", Some("eu-west-1"), Flood::Multicast).unwrap();
        let n: usize = p["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["Action"].as_array().unwrap().len())
            .sum();
        assert_eq!(n, BOOTSTRAP_ACTIONS.len());
        assert!(policy("agent", None, Flood::Multicast).is_some());
        assert!(policy("root", None, Flood::Multicast).is_none());
    }

    #[test]
    fn bootstrap_policy_is_the_same_in_every_flood_mode() {
        let m = policy("bootstrap", Some("eu-west-1"), Flood::Multicast).unwrap();
        for peer in [PeerDiscovery::Ec2, PeerDiscovery::Static] {
            let u = policy("bootstrap", Some("eu-west-1"), Flood::Unicast(peer)).unwrap();
            assert_eq!(m, u);
        }
        // teardown of a transit gateway left from multicast flooding stays allowed
        assert!(actions(&m).contains(&"ec2:DeleteTransitGateway".to_string()));
    }

    #[test]
    fn agent_policy_multicast() {
        let p = policy("agent", Some("eu-west-1"), Flood::Multicast).unwrap();
        assert_eq!(
            actions(&p),
            [
                "ec2:DescribeNetworkInterfaces",
                "ec2:DescribeTags",
                "ec2:DescribeTransitGatewayMulticastDomains",
                "ec2:GetTransitGatewayMulticastDomainAssociations",
                "ec2:SearchTransitGatewayMulticastGroups",
            ]
        );
        let st = &p["Statement"].as_array().unwrap()[0];
        assert_eq!(st["Sid"], "OverlayAgent");
        assert_eq!(
            st["Condition"]["StringEquals"]["aws:RequestedRegion"],
            "eu-west-1"
        );
        assert_eq!(p["Statement"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn agent_policy_unicast_with_ec2_discovery_reads_instances() {
        let p = policy("agent", None, Flood::Unicast(PeerDiscovery::Ec2)).unwrap();
        assert_eq!(
            actions(&p),
            [
                "ec2:DescribeInstances",
                "ec2:DescribeNetworkInterfaces",
                "ec2:DescribeTags",
            ]
        );
        assert!(p["Statement"][0].get("Condition").is_none());
    }

    #[test]
    fn agent_policy_unicast_with_static_peers() {
        let p = policy("agent", None, Flood::Unicast(PeerDiscovery::Static)).unwrap();
        assert_eq!(
            actions(&p),
            ["ec2:DescribeNetworkInterfaces", "ec2:DescribeTags"]
        );
    }
}
