//! The EC2 API, as little of it as overlayd needs: `DescribeInstances` (the cluster's peers
//! for unicast flooding) and `DescribeTags` (this instance's tags when instance metadata
//! tags are off). Credentials and region come from the standard chain (on EC2: the instance
//! role through IMDS); `AWS_ENDPOINT_URL_EC2` / `AWS_ENDPOINT_URL` point it elsewhere (a VPC
//! endpoint, or moto in the tests). The stack is overlayctl's: hyper 1 + rustls (ring), names
//! resolved by hickory (the binary is static; glibc's NSS is never loaded).

use aws_config::{BehaviorVersion, Region};
use aws_sdk_ec2::types::Filter;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

/// A whole call (with its retries) gives up after this: the daemon keeps its last good
/// peer set and tries again at the next interval.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// An EC2 client for `region`, built by hand rather than with `aws_config::defaults()`: a
/// node needs only the environment's or the instance role's credentials (IMDS), so the
/// default chain's profile files, SSO, STS web identity and ECS providers are never linked
/// in (they cost binary size, and resident memory with it). `AWS_ENDPOINT_URL_EC2` /
/// `AWS_ENDPOINT_URL` are honoured as the SDK's own loader would.
pub async fn client(region: &str) -> aws_sdk_ec2::Client {
    use aws_config::environment::credentials::EnvironmentVariableCredentialsProvider;
    use aws_config::imds::credentials::ImdsCredentialsProvider;
    use aws_config::meta::credentials::CredentialsProviderChain;
    use aws_config::provider_config::ProviderConfig;
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_with_resolver(aws_smithy_dns::HickoryDnsResolver::default());
    let imds_conf = ProviderConfig::without_region().with_http_client(http.clone());
    let creds = CredentialsProviderChain::first_try(
        "Environment",
        EnvironmentVariableCredentialsProvider::new(),
    )
    .or_else(
        "Ec2InstanceMetadata",
        ImdsCredentialsProvider::builder()
            .configure(&imds_conf)
            .build(),
    );
    let timeouts = aws_sdk_ec2::config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(2))
        .operation_attempt_timeout(Duration::from_secs(5))
        .operation_timeout(CALL_TIMEOUT)
        .build();
    let mut b = aws_sdk_ec2::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region.to_string()))
        .credentials_provider(creds)
        .http_client(http)
        .timeout_config(timeouts)
        .retry_config(aws_sdk_ec2::config::retry::RetryConfig::standard());
    let endpoint = ["AWS_ENDPOINT_URL_EC2", "AWS_ENDPOINT_URL"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()));
    if let Some(u) = endpoint {
        b = b.endpoint_url(u);
    }
    aws_sdk_ec2::Client::from_conf(b.build())
}

fn say<E, R>(call: &str, e: aws_sdk_ec2::error::SdkError<E, R>) -> String
where
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    format!("{call}: {}", aws_sdk_ec2::error::DisplayErrorContext(&e))
}

/// Underlay addresses of the running instances of the cluster in the VPC (every page), each
/// with its `overlay:role` tag ("" without one).
pub async fn describe_peers(
    c: &aws_sdk_ec2::Client,
    vpc_id: &str,
    cluster: &str,
) -> Result<BTreeMap<Ipv4Addr, String>, String> {
    let f = |n: &str, v: &str| Filter::builder().name(n).values(v).build();
    let mut pages = c
        .describe_instances()
        .filters(f("vpc-id", vpc_id))
        .filters(f("tag:overlay:cluster", cluster))
        .filters(f("instance-state-name", "running"))
        .max_results(1000)
        .into_paginator()
        .send();
    let mut out = BTreeMap::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| say("DescribeInstances", e))?;
        for r in page.reservations() {
            for i in r.instances() {
                if let Some(ip) = i.private_ip_address().and_then(|s| s.parse().ok()) {
                    let role = i
                        .tags()
                        .iter()
                        .find(|t| t.key() == Some("overlay:role"))
                        .and_then(|t| t.value())
                        .unwrap_or("");
                    out.insert(ip, role.to_string());
                }
            }
        }
    }
    Ok(out)
}

/// This instance's `overlay:*` tags through the API.
pub async fn describe_tags(
    c: &aws_sdk_ec2::Client,
    instance_id: &str,
) -> Result<BTreeMap<String, String>, String> {
    let f = |n: &str, v: &str| Filter::builder().name(n).values(v).build();
    let out = c
        .describe_tags()
        .filters(f("resource-id", instance_id))
        .filters(f("resource-type", "instance"))
        .send()
        .await
        .map_err(|e| say("DescribeTags", e))?;
    Ok(out
        .tags()
        .iter()
        .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or("").to_string())))
        .filter(|(k, _)| super::TAG_KEYS.iter().any(|(t, _)| t == k))
        .collect())
}

/// [`describe_tags`] from synchronous code (configuration is loaded outside any runtime, and
/// on SIGHUP inside one): on its own thread with its own runtime.
pub fn describe_tags_blocking(
    region: &str,
    instance_id: &str,
) -> Result<BTreeMap<String, String>, String> {
    let (region, id) = (region.to_string(), instance_id.to_string());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            let c = client(&region).await;
            describe_tags(&c, &id).await
        })
    })
    .join()
    .unwrap_or_else(|_| Err("DescribeTags thread panicked".into()))
}
