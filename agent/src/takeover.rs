//! Router HA's AWS half: when this router becomes active, the VPC route tables' `overlay CIDR
//! → router` routes are moved to this router's ENI (ReplaceRoute), so VPC traffic to the
//! overlay follows the VIP. The tables are those of the VPC tagged `overlay:cluster=<cluster>`
//! (`overlayctl bootstrap` tags the tables it routes), or, when none is tagged (a
//! CloudFormation stack cannot tag existing tables), every table of the VPC with a route for
//! the overlay CIDR ([`select`]). The router role's IAM policy allows ReplaceRoute on those
//! tables only. On becoming backup nothing is changed: the new active router moves them.
//!
//! Pure: [`moves`] decides from the tables as read; the EC2 calls are thin.

use serde::Serialize;

/// One route table's overlay route as DescribeRouteTables shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRoute {
    pub table: String,
    /// Tagged `overlay:cluster=<this cluster>`.
    pub tagged: bool,
    /// The route's target: an ENI id, an instance id, or None (no such route, or blackhole).
    pub target: Option<String>,
}

/// What one takeover did (for `overlayd status`).
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct TakeoverReport {
    /// This router's ENI.
    pub eni: Option<String>,
    /// Tables already pointing at it.
    pub kept: Vec<String>,
    /// Tables moved to it (table: from target).
    pub moved: Vec<String>,
    pub took_ms: u128,
    pub error: Option<String>,
}

/// The cluster's tables among those with an overlay route: the tagged ones, or every one when
/// none is tagged.
pub fn select(tables: Vec<TableRoute>) -> Vec<TableRoute> {
    if tables.iter().any(|t| t.tagged) {
        tables.into_iter().filter(|t| t.tagged).collect()
    } else {
        tables
    }
}

/// The tables whose overlay route must move to `eni` (with what they pointed at). A table
/// pointing at this router's instance id counts as pointing here.
pub fn moves(tables: &[TableRoute], eni: &str, instance_id: &str) -> Vec<(String, String)> {
    tables
        .iter()
        .filter(|t| !matches!(t.target.as_deref(), Some(x) if x == eni || x == instance_id))
        .map(|t| {
            (
                t.table.clone(),
                t.target.clone().unwrap_or_else(|| "none".into()),
            )
        })
        .collect()
}

#[cfg(feature = "ec2")]
pub mod ec2 {
    use super::*;
    use aws_sdk_ec2::types::Filter;

    fn say<E, R>(call: &str, e: aws_sdk_ec2::error::SdkError<E, R>) -> String
    where
        E: std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        format!("{call}: {}", aws_sdk_ec2::error::DisplayErrorContext(&e))
    }

    /// The primary ENI of the instance with private address `ip` in `vpc`.
    pub async fn own_eni(
        c: &aws_sdk_ec2::Client,
        vpc: &str,
        ip: std::net::Ipv4Addr,
    ) -> Result<String, String> {
        let f = |n: &str, v: &str| Filter::builder().name(n).values(v).build();
        let r = c
            .describe_network_interfaces()
            .filters(f("vpc-id", vpc))
            .filters(f("addresses.private-ip-address", &ip.to_string()))
            .send()
            .await
            .map_err(|e| say("DescribeNetworkInterfaces", e))?;
        r.network_interfaces()
            .iter()
            .find_map(|n| n.network_interface_id().map(str::to_string))
            .ok_or_else(|| format!("DescribeNetworkInterfaces: no interface with {ip} in {vpc}"))
    }

    /// The VPC's route tables with a `cidr` route, each marked tagged with `cluster` or not
    /// (pass the result to [`select`]).
    pub async fn tables(
        c: &aws_sdk_ec2::Client,
        vpc: &str,
        cluster: &str,
        cidr: &str,
    ) -> Result<Vec<TableRoute>, String> {
        let f = |n: &str, v: &str| Filter::builder().name(n).values(v).build();
        let r = c
            .describe_route_tables()
            .filters(f("vpc-id", vpc))
            .send()
            .await
            .map_err(|e| say("DescribeRouteTables", e))?;
        Ok(r.route_tables()
            .iter()
            .filter_map(|t| {
                let route = t
                    .routes()
                    .iter()
                    .find(|x| x.destination_cidr_block() == Some(cidr))?;
                Some(TableRoute {
                    table: t.route_table_id()?.to_string(),
                    tagged: t
                        .tags()
                        .iter()
                        .any(|g| g.key() == Some("overlay:cluster") && g.value() == Some(cluster)),
                    target: route
                        .network_interface_id()
                        .or(route.instance_id())
                        .map(str::to_string),
                })
            })
            .collect())
    }

    pub async fn replace(
        c: &aws_sdk_ec2::Client,
        table: &str,
        cidr: &str,
        eni: &str,
    ) -> Result<(), String> {
        c.replace_route()
            .route_table_id(table)
            .destination_cidr_block(cidr)
            .network_interface_id(eni)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| say(&format!("ReplaceRoute {table}"), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tables_pointing_elsewhere_move() {
        let t = |id: &str, to: Option<&str>| TableRoute {
            table: id.into(),
            tagged: true,
            target: to.map(str::to_string),
        };
        let tables = [
            t("rtb-a", Some("eni-peer")),
            t("rtb-b", Some("eni-me")),
            t("rtb-c", Some("i-me")),
            t("rtb-d", None),
        ];
        assert_eq!(
            moves(&tables, "eni-me", "i-me"),
            vec![
                ("rtb-a".to_string(), "eni-peer".to_string()),
                ("rtb-d".to_string(), "none".to_string())
            ]
        );
        assert!(moves(&tables[1..3], "eni-me", "i-me").is_empty());
    }

    #[test]
    fn tagged_tables_win_else_every_table_with_the_route() {
        let t = |id: &str, tagged: bool| TableRoute {
            table: id.into(),
            tagged,
            target: Some("eni-peer".into()),
        };
        let names = |v: Vec<TableRoute>| v.into_iter().map(|t| t.table).collect::<Vec<_>>();
        assert_eq!(
            names(select(vec![t("rtb-a", true), t("rtb-b", false)])),
            ["rtb-a"]
        );
        assert_eq!(
            names(select(vec![t("rtb-a", false), t("rtb-b", false)])),
            ["rtb-a", "rtb-b"]
        );
        assert!(select(vec![]).is_empty());
    }
}
