//! AWS SDK clients: one trimmed HTTP/TLS stack (rustls, hickory DNS), the standard credential
//! chain, one endpoint.

use anyhow::Result;
use aws_config::{BehaviorVersion, Region};
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};

#[derive(Debug, Clone, Default)]
pub struct AwsOpts {
    pub region: Option<String>,
    pub profile: Option<String>,
    pub endpoint_url: Option<String>,
}

#[derive(Clone)]
pub struct Clients {
    pub ec2: aws_sdk_ec2::Client,
    pub efs: aws_sdk_efs::Client,
    pub rds: aws_sdk_rds::Client,
    pub sm: aws_sdk_secretsmanager::Client,
    pub region: String,
}

/// Builds the four service clients. `--region` wins over the cluster file's region.
pub async fn clients(opts: &AwsOpts, cluster_region: Option<&str>) -> Result<Clients> {
    // hickory, not getaddrinfo: overlayctl is linked statically, and glibc's NSS (what
    // getaddrinfo uses) would load the host's shared libnss modules into it.
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_with_resolver(aws_smithy_dns::HickoryDnsResolver::default());
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http);
    if let Some(r) = opts.region.as_deref().or(cluster_region) {
        loader = loader.region(Region::new(r.to_string()));
    }
    if let Some(p) = &opts.profile {
        loader = loader.profile_name(p);
    }
    if let Some(u) = &opts.endpoint_url {
        loader = loader.endpoint_url(u);
    }
    let conf = loader.load().await;
    let region = conf.region().map(|r| r.to_string()).ok_or_else(|| {
        anyhow::anyhow!("no AWS region: pass --region, set AWS_REGION, or use --config")
    })?;
    Ok(Clients {
        ec2: aws_sdk_ec2::Client::new(&conf),
        efs: aws_sdk_efs::Client::new(&conf),
        rds: aws_sdk_rds::Client::new(&conf),
        sm: aws_sdk_secretsmanager::Client::new(&conf),
        region,
    })
}

/// Error code of an SDK error (e.g. "InvalidSubnetID.NotFound"), if the service sent one.
pub fn code<E, R>(e: &aws_sdk_ec2::error::SdkError<E, R>) -> Option<String>
where
    E: aws_sdk_ec2::error::ProvideErrorMetadata,
{
    e.as_service_error()
        .and_then(|s| s.code())
        .map(str::to_string)
}

/// Turns an SDK error into an anyhow error that says which call failed and why.
pub fn err<E, R>(call: &str, e: aws_sdk_ec2::error::SdkError<E, R>) -> anyhow::Error
where
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    anyhow::anyhow!("{call}: {}", aws_sdk_ec2::error::DisplayErrorContext(&e))
}
