//! Least-privilege IAM policies for what the code calls: overlayctl's own (`bootstrap`) and the
//! instance roles of the cloud's nodes (`host`, `management`, `router`).
//!
//! Every statement has a stable `Sid` ([`SID_AGENT`], ...) so a CloudFormation template can be
//! compared with [`role_policy`] statement by statement.

use serde_json::{json, Value};

use crate::config::{self, Flood, PeerDiscovery, CLUSTER_TAG};

/// Every API action bootstrap, plan, status, doctor and teardown call.
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
    // doctor only
    "ec2:DescribeNetworkAcls",
    "ec2:DescribeInstanceTypes",
    "ec2:SearchTransitGatewayMulticastGroups",
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
    "ec2:DeleteTags",
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

/// With flood = unicast or evpn and peer_discovery = ec2: the peers are the running instances
/// tagged with the cluster.
pub const AGENT_EC2_DISCOVERY_ACTIONS: &[&str] = &["ec2:DescribeInstances"];

/// The actions of overlayd's instance role for a cluster flooding with `flood`.
pub fn agent_actions(flood: Flood) -> Vec<&'static str> {
    let mut v: Vec<&str> = AGENT_ACTIONS.to_vec();
    match flood {
        Flood::Multicast => v.extend(AGENT_MULTICAST_ACTIONS),
        // evpn needs what unicast needs: the same peer discovery, no transit gateway (BGP
        // between the nodes is no AWS call)
        Flood::Unicast(PeerDiscovery::Ec2) | Flood::Evpn(PeerDiscovery::Ec2) => {
            v.extend(AGENT_EC2_DISCOVERY_ACTIONS)
        }
        Flood::Unicast(PeerDiscovery::Static) | Flood::Evpn(PeerDiscovery::Static) => {}
    }
    v.sort_unstable();
    v
}

/// Actions whose side effects land on an existing resource and can be limited by tag.
const TAG_SCOPED_PREFIXES: &[&str] = &[
    "ec2:DeleteSecurityGroup",
    "ec2:DeleteTags",
    "ec2:RevokeSecurityGroupIngress",
    "ec2:DeleteTransitGateway",
    "ec2:DisassociateTransitGatewayMulticastDomain",
    "secretsmanager:DeleteSecret",
];

/// The management server reads the cluster's two database secrets (admin and service,
/// `overlay/<cluster>/db-*`) for `cloudstack-setup-databases`. They are encrypted with the
/// account's default Secrets Manager key, which needs no KMS permission.
pub const SECRETS_ACTIONS: &[&str] = &[
    "secretsmanager:DescribeSecret",
    "secretsmanager:GetSecretValue",
];

/// The router reads the route tables (no resource-level permission exists for Describe calls).
pub const ROUTE_READ_ACTIONS: &[&str] = &["ec2:DescribeRouteTables"];

/// Router HA: a standby router takes the overlay route over (`overlay_cidr -> its ENI`) with
/// ReplaceRoute, the only call it makes: bootstrap creates the routes (pointing at the first
/// router), the router never does. IAM authorizes it on the route table alone (resource
/// `route-table*`, condition keys `aws:ResourceTag/${TagKey}`, `ec2:ResourceTag/${TagKey}`,
/// `ec2:RouteTableID`, `ec2:Vpc`), so it is limited to route tables tagged `overlay:cluster`
/// (bootstrap tags every route table it manages).
pub const ROUTE_TAKEOVER_ACTIONS: &[&str] = &["ec2:ReplaceRoute"];

/// `Sid` of overlayctl's own policy.
pub const SID_BOOTSTRAP: &str = "OverlayBootstrap";
/// `Sid` of the bootstrap statement whose destructive calls need the cluster tag.
pub const SID_TEARDOWN_ONLY_TAGGED: &str = "OverlayTeardownOnlyTagged";
/// `Sid` of overlayd's statement, the same in the host, management and router roles.
pub const SID_AGENT: &str = "OverlayAgent";
/// `Sid` of the management server's secrets statement.
pub const SID_SECRETS: &str = "OverlaySecrets";
/// `Sid` of the router's route-table reads.
pub const SID_ROUTE_READ: &str = "OverlayRouteRead";
/// `Sid` of the router's route takeover.
pub const SID_ROUTE_TAKEOVER: &str = "OverlayRouteTakeover";
/// `Sid` a CloudFormation template gives its own statement for `cfn-signal`
/// ([`STACK_SIGNAL_ACTIONS`] on its stack). Never part of [`role_policy`]'s output: instances
/// not created by CloudFormation have no stack to signal.
pub const SID_STACK_SIGNAL: &str = "OverlayStackSignal";
/// The actions of the template's [`SID_STACK_SIGNAL`] statement.
pub const STACK_SIGNAL_ACTIONS: &[&str] = &["cloudformation:SignalResource"];

/// Who a policy is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyRole {
    /// overlayctl itself: plan, bootstrap, status, doctor, teardown.
    Bootstrap,
    /// overlayd on a KVM host (`agent` is an alias).
    Host,
    /// The CloudStack management server: overlayd's actions and the database secrets.
    Management,
    /// The router: overlayd's actions and the route takeover of router HA.
    Router,
}

/// The values of `iam-policy --for`.
pub const POLICY_ROLES: &[&str] = &["bootstrap", "host", "management", "router", "agent"];

impl PolicyRole {
    /// `bootstrap`, `host` (or `agent`), `management`, `router`.
    pub fn parse(s: &str) -> Option<PolicyRole> {
        match s {
            "bootstrap" => Some(PolicyRole::Bootstrap),
            "host" | "agent" => Some(PolicyRole::Host),
            "management" => Some(PolicyRole::Management),
            "router" => Some(PolicyRole::Router),
            _ => None,
        }
    }
    pub fn as_str(&self) -> &'static str {
        match self {
            PolicyRole::Bootstrap => "bootstrap",
            PolicyRole::Host => "host",
            PolicyRole::Management => "management",
            PolicyRole::Router => "router",
        }
    }
    /// The instance roles (every role but bootstrap).
    pub fn instance_roles() -> [PolicyRole; 3] {
        [PolicyRole::Host, PolicyRole::Management, PolicyRole::Router]
    }
}

/// The ARN pattern of cluster `cluster`'s secrets (`*`: every cluster's) in `region` (`*`: any):
/// `arn:aws:secretsmanager:<region>:*:secret:overlay/<cluster>/*` (Secrets Manager appends a
/// random suffix to each name, which the final `*` covers).
pub fn secrets_arn_pattern(region: Option<&str>, cluster: Option<&str>) -> String {
    format!(
        "arn:aws:secretsmanager:{}:*:secret:{}*",
        region.unwrap_or("*"),
        config::secrets_prefix(cluster.unwrap_or("*"))
    )
}

/// Every route table in `region` (`*`: any): `arn:aws:ec2:<region>:*:route-table/*`.
pub fn route_table_arn_pattern(region: Option<&str>) -> String {
    format!("arn:aws:ec2:{}:*:route-table/*", region.unwrap_or("*"))
}

fn sorted(actions: &[&'static str]) -> Vec<&'static str> {
    let mut v = actions.to_vec();
    v.sort_unstable();
    v
}

fn region_condition(region: Option<&str>) -> Option<Value> {
    region.map(|r| json!({"StringEquals": {"aws:RequestedRegion": r}}))
}

/// `{Sid, Effect: Allow, Action, Resource}` and, with a region, the `aws:RequestedRegion`
/// condition.
fn statement(sid: &str, actions: Vec<&str>, resource: &str, region: Option<&str>) -> Value {
    let mut st = json!({
        "Sid": sid,
        "Effect": "Allow",
        "Action": actions,
        "Resource": resource,
    });
    if let Some(c) = region_condition(region) {
        st["Condition"] = c;
    }
    st
}

fn bootstrap_statements(region: Option<&str>) -> Vec<Value> {
    let (scoped, rest): (Vec<&str>, Vec<&str>) = sorted(BOOTSTRAP_ACTIONS)
        .into_iter()
        .partition(|a| TAG_SCOPED_PREFIXES.iter().any(|p| a.starts_with(p)));
    let mut tagged = statement(SID_TEARDOWN_ONLY_TAGGED, scoped, "*", region);
    let tag_key = format!("aws:ResourceTag/{CLUSTER_TAG}");
    tagged["Condition"]["StringLike"] = json!({ tag_key: "*" });
    vec![statement(SID_BOOTSTRAP, rest, "*", region), tagged]
}

/// The policy document (`Version` 2012-10-17) of `role`:
///
/// * `region`: Some → every statement carries `StringEquals aws:RequestedRegion` and the ARNs
///   name the region; None → any region (`*` in the ARNs).
/// * `flood`: the cluster's flooding, which decides overlayd's actions ([`agent_actions`]);
///   bootstrap's policy is the same in every mode.
/// * `cluster`: Some → the management server's secrets are `overlay/<cluster>/*` and the
///   router's takeover needs `aws:ResourceTag/overlay:cluster` = the cluster (`StringEquals`);
///   None → every cluster's secrets (`overlay/*/*`) and any route table tagged `overlay:cluster`
///   (`StringLike *`). Bootstrap and host do not use it.
///
/// Statements, in this order: bootstrap [`SID_BOOTSTRAP`], [`SID_TEARDOWN_ONLY_TAGGED`];
/// host [`SID_AGENT`]; management [`SID_AGENT`], [`SID_SECRETS`]; router [`SID_AGENT`],
/// [`SID_ROUTE_READ`], [`SID_ROUTE_TAKEOVER`]. Actions are sorted.
pub fn role_policy(
    role: PolicyRole,
    region: Option<&str>,
    flood: Flood,
    cluster: Option<&str>,
) -> Value {
    let agent = || statement(SID_AGENT, agent_actions(flood), "*", region);
    let statements = match role {
        PolicyRole::Bootstrap => bootstrap_statements(region),
        PolicyRole::Host => vec![agent()],
        PolicyRole::Management => vec![
            agent(),
            statement(
                SID_SECRETS,
                sorted(SECRETS_ACTIONS),
                &secrets_arn_pattern(region, cluster),
                region,
            ),
        ],
        PolicyRole::Router => {
            let mut takeover = statement(
                SID_ROUTE_TAKEOVER,
                sorted(ROUTE_TAKEOVER_ACTIONS),
                &route_table_arn_pattern(region),
                region,
            );
            let tag_key = format!("aws:ResourceTag/{CLUSTER_TAG}");
            match cluster {
                Some(c) => takeover["Condition"]["StringEquals"][&tag_key] = json!(c),
                None => takeover["Condition"]["StringLike"] = json!({ tag_key: "*" }),
            }
            vec![
                agent(),
                statement(SID_ROUTE_READ, sorted(ROUTE_READ_ACTIONS), "*", region),
                takeover,
            ]
        }
    };
    json!({"Version": "2012-10-17", "Statement": statements})
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: Option<&str> = Some("eu-west-1");

    fn statements(p: &Value) -> &Vec<Value> {
        p["Statement"].as_array().unwrap()
    }

    fn strs(v: &Value) -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect()
    }

    fn actions(p: &Value) -> Vec<String> {
        let mut v: Vec<String> = statements(p)
            .iter()
            .flat_map(|s| strs(&s["Action"]))
            .collect();
        v.sort();
        v
    }

    fn sids(p: &Value) -> Vec<String> {
        statements(p)
            .iter()
            .map(|s| s["Sid"].as_str().unwrap().to_string())
            .collect()
    }

    fn by_sid<'a>(p: &'a Value, sid: &str) -> &'a Value {
        statements(p)
            .iter()
            .find(|s| s["Sid"] == sid)
            .unwrap_or_else(|| panic!("no statement {sid} in {p}"))
    }

    #[test]
    fn policies_are_valid_shapes() {
        for role in [
            PolicyRole::Bootstrap,
            PolicyRole::Host,
            PolicyRole::Management,
            PolicyRole::Router,
        ] {
            for region in [None, R] {
                let p = role_policy(role, region, Flood::Multicast, Some("lab1"));
                assert_eq!(p["Version"], "2012-10-17");
                let ids = sids(&p);
                let unique: std::collections::BTreeSet<_> = ids.iter().collect();
                assert_eq!(unique.len(), ids.len(), "Sids repeat: {ids:?}");
                for st in statements(&p) {
                    assert_eq!(st["Effect"], "Allow");
                    let a = strs(&st["Action"]);
                    assert!(!a.is_empty());
                    let mut s = a.clone();
                    s.sort();
                    assert_eq!(a, s, "actions sorted");
                    assert!(st["Resource"].is_string());
                    assert!(st["Sid"].as_str().unwrap().starts_with("Overlay"));
                    assert_ne!(st["Sid"], SID_STACK_SIGNAL);
                    // the template adds cloudformation:SignalResource itself
                    assert!(!a.iter().any(|x| x.starts_with("cloudformation:")));
                }
            }
        }
        let p = role_policy(PolicyRole::Bootstrap, R, Flood::Multicast, None);
        assert_eq!(actions(&p).len(), BOOTSTRAP_ACTIONS.len());
        assert_eq!(sids(&p), [SID_BOOTSTRAP, SID_TEARDOWN_ONLY_TAGGED]);
    }

    #[test]
    fn roles_parse_and_agent_is_host() {
        for s in POLICY_ROLES {
            assert!(PolicyRole::parse(s).is_some(), "{s}");
        }
        assert_eq!(PolicyRole::parse("agent"), Some(PolicyRole::Host));
        assert_eq!(PolicyRole::parse("root"), None);
        for r in PolicyRole::instance_roles() {
            assert_eq!(PolicyRole::parse(r.as_str()), Some(r));
        }
    }

    #[test]
    fn bootstrap_policy_is_the_same_in_every_flood_mode() {
        let m = role_policy(PolicyRole::Bootstrap, R, Flood::Multicast, None);
        for peer in [PeerDiscovery::Ec2, PeerDiscovery::Static] {
            let u = role_policy(PolicyRole::Bootstrap, R, Flood::Unicast(peer), None);
            assert_eq!(m, u);
        }
        // teardown of a transit gateway left from multicast flooding stays allowed
        assert!(actions(&m).contains(&"ec2:DeleteTransitGateway".to_string()));
        let t = by_sid(&m, SID_TEARDOWN_ONLY_TAGGED);
        assert_eq!(
            t["Condition"]["StringLike"]["aws:ResourceTag/overlay:cluster"],
            "*"
        );
        assert_eq!(
            t["Condition"]["StringEquals"]["aws:RequestedRegion"],
            "eu-west-1"
        );
        // a cluster name changes nothing for bootstrap
        assert_eq!(
            m,
            role_policy(PolicyRole::Bootstrap, R, Flood::Multicast, Some("lab1"))
        );
    }

    #[test]
    fn agent_policy_multicast() {
        let p = role_policy(PolicyRole::Host, R, Flood::Multicast, None);
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
        let st = &statements(&p)[0];
        assert_eq!(st["Sid"], SID_AGENT);
        assert_eq!(st["Resource"], "*");
        assert_eq!(
            st["Condition"]["StringEquals"]["aws:RequestedRegion"],
            "eu-west-1"
        );
        assert_eq!(statements(&p).len(), 1);
    }

    #[test]
    fn agent_policy_unicast_with_ec2_discovery_reads_instances() {
        let p = role_policy(
            PolicyRole::Host,
            None,
            Flood::Unicast(PeerDiscovery::Ec2),
            None,
        );
        assert_eq!(
            actions(&p),
            [
                "ec2:DescribeInstances",
                "ec2:DescribeNetworkInterfaces",
                "ec2:DescribeTags",
            ]
        );
        assert!(statements(&p)[0].get("Condition").is_none());
    }

    #[test]
    fn agent_policy_unicast_with_static_peers() {
        let p = role_policy(
            PolicyRole::Host,
            None,
            Flood::Unicast(PeerDiscovery::Static),
            None,
        );
        assert_eq!(
            actions(&p),
            ["ec2:DescribeNetworkInterfaces", "ec2:DescribeTags"]
        );
    }

    #[test]
    fn evpn_needs_exactly_what_unicast_needs() {
        for peer in [PeerDiscovery::Ec2, PeerDiscovery::Static] {
            for role in POLICY_ROLES {
                let role = PolicyRole::parse(role).unwrap();
                for (region, cluster) in [(R, Some("lab1")), (None, None)] {
                    assert_eq!(
                        role_policy(role, region, Flood::Evpn(peer), cluster),
                        role_policy(role, region, Flood::Unicast(peer), cluster),
                        "{role:?} {peer:?}"
                    );
                }
            }
            assert_eq!(
                agent_actions(Flood::Evpn(peer)),
                agent_actions(Flood::Unicast(peer))
            );
        }
        assert!(agent_actions(Flood::Evpn(PeerDiscovery::Ec2)).contains(&"ec2:DescribeInstances"));
        assert!(
            !agent_actions(Flood::Evpn(PeerDiscovery::Static)).contains(&"ec2:DescribeInstances")
        );
    }

    #[test]
    fn host_does_not_depend_on_the_cluster() {
        assert_eq!(
            role_policy(PolicyRole::Host, R, Flood::Multicast, None),
            role_policy(PolicyRole::Host, R, Flood::Multicast, Some("lab1"))
        );
    }

    #[test]
    fn every_instance_role_carries_the_same_agent_statement() {
        for flood in [
            Flood::Multicast,
            Flood::Unicast(PeerDiscovery::Ec2),
            Flood::Unicast(PeerDiscovery::Static),
        ] {
            let host = role_policy(PolicyRole::Host, R, flood, Some("lab1"));
            for role in [PolicyRole::Management, PolicyRole::Router] {
                let p = role_policy(role, R, flood, Some("lab1"));
                assert_eq!(
                    statements(&p)[0],
                    statements(&host)[0],
                    "{role:?} {flood:?}"
                );
            }
        }
    }

    #[test]
    fn management_reads_the_cluster_secrets_only() {
        let p = role_policy(PolicyRole::Management, R, Flood::Multicast, Some("lab1"));
        assert_eq!(sids(&p), [SID_AGENT, SID_SECRETS]);
        let st = by_sid(&p, SID_SECRETS);
        assert_eq!(
            strs(&st["Action"]),
            [
                "secretsmanager:DescribeSecret",
                "secretsmanager:GetSecretValue"
            ]
        );
        assert_eq!(
            st["Resource"],
            "arn:aws:secretsmanager:eu-west-1:*:secret:overlay/lab1/*"
        );
        assert_eq!(
            st["Condition"]["StringEquals"]["aws:RequestedRegion"],
            "eu-west-1"
        );
        // the names overlayctl gives the secrets fall under the pattern
        let c = config::parse(
            r#"
name = "lab1"
region = "eu-west-1"
vpc_id = "vpc-0123456789abcdef0"
subnet_id = "subnet-0123456789abcdef0"
second_subnet_id = "subnet-0123456789abcdef1"
overlay_cidr = "100.64.0.0/16"
multicast_group = "239.1.1.1"
router_instance_id = "i-0123456789abcdef0"
access_cidr = "203.0.113.0/24"
"#,
        )
        .unwrap();
        for which in ["admin", "service"] {
            let name = c.secret_name(which);
            assert!(name.starts_with("overlay/lab1/"), "{name}");
        }
        // no secret write, no other service
        for a in actions(&p) {
            assert!(
                a.starts_with("ec2:") || SECRETS_ACTIONS.contains(&a.as_str()),
                "{a}"
            );
        }
        // without a region or a cluster: any region, every cluster's secrets
        let p = role_policy(PolicyRole::Management, None, Flood::Multicast, None);
        let st = by_sid(&p, SID_SECRETS);
        assert_eq!(
            st["Resource"],
            "arn:aws:secretsmanager:*:*:secret:overlay/*/*"
        );
        assert!(st.get("Condition").is_none());
    }

    #[test]
    fn router_takes_routes_over_only_in_tagged_route_tables() {
        let p = role_policy(PolicyRole::Router, R, Flood::Multicast, Some("lab1"));
        assert_eq!(sids(&p), [SID_AGENT, SID_ROUTE_READ, SID_ROUTE_TAKEOVER]);
        let read = by_sid(&p, SID_ROUTE_READ);
        assert_eq!(strs(&read["Action"]), ["ec2:DescribeRouteTables"]);
        assert_eq!(read["Resource"], "*");
        let t = by_sid(&p, SID_ROUTE_TAKEOVER);
        // the router moves routes, it never creates one
        assert_eq!(strs(&t["Action"]), ["ec2:ReplaceRoute"]);
        assert!(!actions(&p).contains(&"ec2:CreateRoute".to_string()));
        assert_eq!(t["Resource"], "arn:aws:ec2:eu-west-1:*:route-table/*");
        assert_eq!(
            t["Condition"],
            json!({"StringEquals": {
                "aws:RequestedRegion": "eu-west-1",
                "aws:ResourceTag/overlay:cluster": "lab1",
            }})
        );
        // no deletion of routes, no other route-table change
        assert!(!actions(&p).iter().any(|a| a.contains("Delete")));
        // exactly what the router calls: overlayd's actions, the route read and ReplaceRoute
        let mut want: Vec<String> = agent_actions(Flood::Multicast)
            .into_iter()
            .chain(["ec2:DescribeRouteTables", "ec2:ReplaceRoute"])
            .map(str::to_string)
            .collect();
        want.sort();
        assert_eq!(actions(&p), want);
        // without a cluster name: any route table tagged for some overlay cluster
        let p = role_policy(PolicyRole::Router, None, Flood::Multicast, None);
        let t = by_sid(&p, SID_ROUTE_TAKEOVER);
        assert_eq!(t["Resource"], "arn:aws:ec2:*:*:route-table/*");
        assert_eq!(
            t["Condition"],
            json!({"StringLike": {"aws:ResourceTag/overlay:cluster": "*"}})
        );
    }

    #[test]
    fn arn_patterns() {
        assert_eq!(
            secrets_arn_pattern(Some("us-east-1"), Some("c1")),
            "arn:aws:secretsmanager:us-east-1:*:secret:overlay/c1/*"
        );
        assert_eq!(
            route_table_arn_pattern(None),
            "arn:aws:ec2:*:*:route-table/*"
        );
    }
}
