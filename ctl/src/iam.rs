//! Least-privilege IAM policies for what the code calls.

use serde_json::{json, Value};

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

/// What overlayd on a node may call: read-only views of the multicast domain for diagnostics.
pub const AGENT_ACTIONS: &[&str] = &[
    "ec2:DescribeInstances",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeTransitGatewayMulticastDomains",
    "ec2:GetTransitGatewayMulticastDomainAssociations",
    "ec2:SearchTransitGatewayMulticastGroups",
];

/// Actions whose side effects land on an existing resource and can be limited by tag.
const TAG_SCOPED_PREFIXES: &[&str] = &[
    "ec2:DeleteSecurityGroup",
    "ec2:RevokeSecurityGroupIngress",
    "ec2:DeleteTransitGateway",
    "ec2:DisassociateTransitGatewayMulticastDomain",
    "secretsmanager:DeleteSecret",
];

pub fn policy(which: &str, region: Option<&str>) -> Option<Value> {
    let actions = match which {
        "bootstrap" => BOOTSTRAP_ACTIONS,
        "agent" => AGENT_ACTIONS,
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

    #[test]
    fn policies_are_valid_shapes() {
        let p = policy("bootstrap", Some("eu-west-1")).unwrap();
        let n: usize = p["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["Action"].as_array().unwrap().len())
            .sum();
        assert_eq!(n, BOOTSTRAP_ACTIONS.len());
        assert!(policy("agent", None).is_some());
        assert!(policy("root", None).is_none());
    }
}
