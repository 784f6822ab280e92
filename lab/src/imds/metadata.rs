//! The instance metadata service's rules, as pure functions: one HTTP request of one instance
//! in, one response out. AWS's behaviour that clients depend on:
//! - `PUT /latest/api/token` with `X-aws-ec2-metadata-token-ttl-seconds: 1..=21600` returns a
//!   session token bound to the instance (400 for a missing or bad TTL; 403 when the request
//!   carries `X-Forwarded-For`, as AWS refuses tokens through a proxy);
//! - every GET needs a valid `X-aws-ec2-metadata-token` when the instance requires tokens
//!   (401 otherwise); an invalid or expired token is 401 even when tokens are optional;
//! - `/` lists the versions; a version root lists `dynamic`, `meta-data` (and `user-data` when
//!   there is some); below it a directory lists one entry a line, subdirectories with a
//!   trailing slash; a missing path is 404.
//!
//! The hop limit (IP TTL of the response) is the server's job (see `server.rs`).

use super::catalog::{fnv64, rfc3339, Catalog, HttpTokens, Instance};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

pub const TOKEN_TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
pub const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";
pub const MAX_TOKEN_TTL: u64 = 21_600;
/// Versions served (each the same tree); cloud-init probes the dated ones first.
pub const VERSIONS: [&str; 5] = ["1.0", "2009-04-04", "2016-09-02", "2021-03-23", "latest"];

#[derive(Clone, Debug, Default)]
pub struct Request {
    pub method: String,
    /// Path without the query string.
    pub path: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    fn new(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    fn error(status: u16) -> Response {
        Response::new(status, format!("{status} - {}\n", reason(status)))
    }
}

pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Error",
    }
}

/// Session tokens: which instance each belongs to and until when (seconds since the epoch).
pub struct Tokens {
    seed: u64,
    issued: u64,
    live: HashMap<String, (Ipv4Addr, u64)>,
}

impl Tokens {
    /// `seed` makes tokens unguessable across runs (the server reads it from /dev/urandom).
    pub fn new(seed: u64) -> Tokens {
        Tokens {
            seed,
            issued: 0,
            live: HashMap::new(),
        }
    }

    fn issue(&mut self, ip: Ipv4Addr, ttl: u64, now: u64) -> String {
        self.issued += 1;
        let n = format!("{}:{}:{ip}", self.seed, self.issued);
        let a = fnv64(&["token-a", &n]);
        let b = fnv64(&["token-b", &n, &self.seed.to_string()]);
        let token = format!("AQAEA{a:016x}{b:016x}==");
        self.live.retain(|_, (_, exp)| *exp > now);
        self.live.insert(token.clone(), (ip, now + ttl));
        token
    }

    fn valid(&self, token: &str, ip: Ipv4Addr, now: u64) -> bool {
        matches!(self.live.get(token), Some((owner, exp)) if *owner == ip && *exp > now)
    }
}

/// Answer `req` of instance `inst` at `now` (seconds since the epoch).
pub fn handle(
    req: &Request,
    inst: &Instance,
    cat: &Catalog,
    tokens: &mut Tokens,
    now: u64,
) -> Response {
    let path = req.path.as_str();
    let head = req.method == "HEAD";
    if req.method == "PUT" {
        if path.trim_end_matches('/') != "/latest/api/token" {
            return Response::error(405);
        }
        if req.header("x-forwarded-for").is_some() {
            return Response::error(403);
        }
        let ttl = req
            .header(TOKEN_TTL_HEADER)
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|t| (1..=MAX_TOKEN_TTL).contains(t));
        let Some(ttl) = ttl else {
            return Response::error(400);
        };
        let mut r = Response::new(200, tokens.issue(inst.private_ip, ttl, now));
        r.headers
            .push((TOKEN_TTL_HEADER.to_string(), ttl.to_string()));
        return r;
    }
    if req.method != "GET" && !head {
        return Response::error(405);
    }
    match req.header(TOKEN_HEADER) {
        Some(t) if !tokens.valid(t, inst.private_ip, now) => return Response::error(401),
        None if inst.http_tokens == HttpTokens::Required => return Response::error(401),
        _ => {}
    }
    if path.trim_end_matches('/') == "/latest/api/token" {
        return Response::error(405);
    }
    let mut r = get(path, inst, cat, now);
    if head {
        r.body.clear();
    }
    r
}

fn get(path: &str, inst: &Instance, cat: &Catalog, now: u64) -> Response {
    let p = path.trim_start_matches('/');
    if p.is_empty() {
        return Response::new(200, VERSIONS.join("\n"));
    }
    let (version, rest) = p.split_once('/').unwrap_or((p, ""));
    if !VERSIONS.contains(&version) {
        return Response::error(404);
    }
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() {
        let mut v = vec!["dynamic", "meta-data"];
        if inst.user_data.is_some() {
            v.push("user-data");
        }
        return Response::new(200, v.join("\n"));
    }
    if rest == "user-data" {
        return match &inst.user_data {
            Some(u) => Response::new(200, u.clone()),
            None => Response::error(404),
        };
    }
    lookup(&tree(inst, cat, now), rest)
}

/// A leaf's value, or a directory's listing (immediate children, subdirectories with "/").
fn lookup(t: &BTreeMap<String, String>, rel: &str) -> Response {
    if let Some(v) = t.get(rel) {
        return Response::new(200, v.clone());
    }
    let dir = format!("{rel}/");
    let mut entries = BTreeSet::new();
    for k in t.keys().filter(|k| k.starts_with(&dir)) {
        let child = &k[dir.len()..];
        match child.split_once('/') {
            Some((d, _)) => entries.insert(format!("{d}/")),
            None => entries.insert(child.to_string()),
        };
    }
    if entries.is_empty() {
        return Response::error(404);
    }
    Response::new(200, entries.into_iter().collect::<Vec<_>>().join("\n"))
}

/// Every leaf below a version root: "meta-data/..." and "dynamic/...".
pub fn tree(inst: &Instance, cat: &Catalog, now: u64) -> BTreeMap<String, String> {
    let mut t = BTreeMap::new();
    let mut put = |k: String, v: String| {
        t.insert(k, v);
    };
    let ip = inst.private_ip.to_string();
    let hostname = format!(
        "ip-{}.{}.compute.internal",
        ip.replace('.', "-"),
        cat.region
    );
    let md = |k: &str| format!("meta-data/{k}");
    put(md("ami-id"), inst.image_id.clone());
    put(md("ami-launch-index"), "0".into());
    put(md("hostname"), hostname.clone());
    put(md("local-hostname"), hostname.clone());
    put(md("instance-id"), inst.instance_id.clone());
    put(md("instance-type"), inst.instance_type.clone());
    put(md("local-ipv4"), ip.clone());
    put(md("mac"), inst.mac.clone());
    put(
        md("placement/availability-zone"),
        inst.availability_zone.clone(),
    );
    put(md("placement/region"), cat.region.clone());
    put(md("services/domain"), "amazonaws.com".into());
    put(md("services/partition"), "aws".into());
    let eni = |k: &str| md(&format!("network/interfaces/macs/{}/{k}", inst.mac));
    put(eni("device-number"), "0".into());
    put(eni("interface-id"), inst.interface_id.clone());
    put(eni("local-hostname"), hostname);
    put(eni("local-ipv4s"), ip.clone());
    put(eni("mac"), inst.mac.clone());
    put(eni("owner-id"), cat.account.clone());
    put(eni("subnet-id"), inst.subnet_id.clone());
    put(eni("subnet-ipv4-cidr-block"), inst.subnet_cidr.clone());
    put(eni("vpc-id"), inst.vpc_id.clone());
    put(
        eni("vpc-ipv4-cidr-block"),
        inst.vpc_cidrs.first().cloned().unwrap_or_default(),
    );
    put(eni("vpc-ipv4-cidr-blocks"), inst.vpc_cidrs.join("\n"));
    if inst.metadata_tags {
        // AWS exposes only keys IMDS can carry in a path (no '/', no spaces)
        for (k, v) in inst.tags.iter().filter(|(k, _)| !k.contains(['/', ' '])) {
            put(md(&format!("tags/instance/{k}")), v.clone());
        }
    }
    if let Some(role) = &inst.iam_role {
        let profile = fnv64(&["profile", &cat.prefix, role]);
        put(
            md("iam/info"),
            pretty(&serde_json::json!({
                "Code": "Success",
                "LastUpdated": rfc3339(now),
                "InstanceProfileArn": format!("arn:aws:iam::{}:instance-profile/{role}", cat.account),
                "InstanceProfileId": format!("AIPA{:016X}", profile),
            })),
        );
        put(
            md(&format!("iam/security-credentials/{role}")),
            pretty(&credentials(inst, role, now)),
        );
    }
    put(
        "dynamic/instance-identity/document".into(),
        pretty(&serde_json::json!({
            "accountId": cat.account,
            "architecture": "x86_64",
            "availabilityZone": inst.availability_zone,
            "billingProducts": null,
            "devpayProductCodes": null,
            "marketplaceProductCodes": null,
            "imageId": inst.image_id,
            "instanceId": inst.instance_id,
            "instanceType": inst.instance_type,
            "kernelId": null,
            "pendingTime": inst.launch_time,
            "privateIp": ip,
            "ramdiskId": null,
            "region": cat.region,
            "version": "2017-09-30",
        })),
    );
    t
}

/// Temporary credentials of the instance's role: stable within an hour (clients cache them),
/// valid six hours. moto accepts any key, and the shim records the access key id of each
/// call, so a test can see which instance's credentials made it.
pub fn credentials(inst: &Instance, role: &str, now: u64) -> serde_json::Value {
    let hour = now / 3600;
    let h = |what: &str| fnv64(&[what, &inst.instance_id, role, &hour.to_string()]);
    serde_json::json!({
        "Code": "Success",
        "LastUpdated": rfc3339(hour * 3600),
        "Type": "AWS-HMAC",
        "AccessKeyId": format!("ASIA{:016X}", h("key")),
        "SecretAccessKey": format!("{:016x}{:016x}{:08x}", h("s1"), h("s2"), h("s3") as u32),
        "Token": format!("IQoJb3JpZ2luX2Vj{:016x}{:016x}", h("t1"), h("t2")),
        "Expiration": rfc3339(hour * 3600 + 6 * 3600),
    })
}

fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topo::Topology;

    const NOW: u64 = 1_796_180_645;

    fn cat() -> Catalog {
        let t = Topology::new("t", 1, 0, "239.255.0.1".parse().unwrap(), 100, 1500);
        Catalog::from_topology(&t, "eu-west-1", "2026-12-02T00:00:00Z")
    }

    fn req(method: &str, path: &str, headers: &[(&str, &str)]) -> Request {
        Request {
            method: method.into(),
            path: path.into(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
                .collect(),
        }
    }

    fn token(c: &Catalog, i: usize, tk: &mut Tokens) -> String {
        let r = handle(
            &req("PUT", "/latest/api/token", &[(TOKEN_TTL_HEADER, "60")]),
            &c.instances[i],
            c,
            tk,
            NOW,
        );
        assert_eq!(r.status, 200);
        assert_eq!(
            r.headers,
            [(TOKEN_TTL_HEADER.to_string(), "60".to_string())]
        );
        r.body
    }

    #[test]
    fn token_ttl_must_be_1_to_21600_and_no_proxy() {
        let c = cat();
        let mut tk = Tokens::new(7);
        let i = &c.instances[0];
        for bad in [None, Some("0"), Some("21601"), Some("abc"), Some("-5")] {
            let h: Vec<(&str, &str)> = bad.map(|v| (TOKEN_TTL_HEADER, v)).into_iter().collect();
            assert_eq!(
                handle(&req("PUT", "/latest/api/token", &h), i, &c, &mut tk, NOW).status,
                400,
                "{bad:?}"
            );
        }
        for ok in ["1", "21600"] {
            assert_eq!(
                handle(
                    &req("PUT", "/latest/api/token", &[(TOKEN_TTL_HEADER, ok)]),
                    i,
                    &c,
                    &mut tk,
                    NOW
                )
                .status,
                200
            );
        }
        let fwd = req(
            "PUT",
            "/latest/api/token",
            &[(TOKEN_TTL_HEADER, "60"), ("X-Forwarded-For", "1.2.3.4")],
        );
        assert_eq!(handle(&fwd, i, &c, &mut tk, NOW).status, 403);
        assert_eq!(
            handle(&req("PUT", "/latest/meta-data/", &[]), i, &c, &mut tk, NOW).status,
            405
        );
        assert_eq!(
            handle(&req("POST", "/latest/meta-data/", &[]), i, &c, &mut tk, NOW).status,
            405
        );
    }

    #[test]
    fn gets_need_a_valid_token_of_the_same_instance_until_it_expires() {
        let mut c = cat();
        let mut tk = Tokens::new(7);
        let t0 = token(&c, 0, &mut tk);
        let t1 = token(&c, 1, &mut tk);
        assert_ne!(t0, t1);
        let get = |t: Option<&str>| {
            let h: Vec<(&str, &str)> = t.map(|t| (TOKEN_HEADER, t)).into_iter().collect();
            req("GET", "/latest/meta-data/instance-id", &h)
        };
        let i0 = c.instances[0].clone();
        assert_eq!(handle(&get(None), &i0, &c, &mut tk, NOW).status, 401);
        assert_eq!(
            handle(&get(Some("bogus")), &i0, &c, &mut tk, NOW).status,
            401
        );
        assert_eq!(
            handle(&get(Some(&t1)), &i0, &c, &mut tk, NOW).status,
            401,
            "another instance's token"
        );
        let r = handle(&get(Some(&t0)), &i0, &c, &mut tk, NOW);
        assert_eq!((r.status, r.body.as_str()), (200, i0.instance_id.as_str()));
        assert_eq!(
            handle(&get(Some(&t0)), &i0, &c, &mut tk, NOW + 60).status,
            401,
            "expired"
        );
        // tokens optional (IMDSv1 allowed): no token is fine, a bad one is still refused
        c.instances[0].http_tokens = HttpTokens::Optional;
        let i0 = c.instances[0].clone();
        assert_eq!(handle(&get(None), &i0, &c, &mut tk, NOW).status, 200);
        assert_eq!(
            handle(&get(Some("bogus")), &i0, &c, &mut tk, NOW).status,
            401
        );
    }

    fn body(c: &Catalog, i: usize, path: &str) -> (u16, String) {
        let mut tk = Tokens::new(1);
        let t = token(c, i, &mut tk);
        let r = handle(
            &req("GET", path, &[(TOKEN_HEADER, &t)]),
            &c.instances[i],
            c,
            &mut tk,
            NOW,
        );
        (r.status, r.body)
    }

    #[test]
    fn listings_one_entry_a_line_directories_with_a_slash() {
        let c = cat();
        let (s, root) = body(&c, 2, "/");
        assert_eq!(s, 200);
        assert!(root.lines().any(|l| l == "2021-03-23") && root.ends_with("latest"));
        assert_eq!(body(&c, 2, "/latest/"), (200, "dynamic\nmeta-data".into()));
        assert_eq!(body(&c, 2, "/latest/user-data").0, 404);
        let (_, md) = body(&c, 2, "/2009-04-04/meta-data/");
        let lines: Vec<&str> = md.lines().collect();
        for want in [
            "instance-id",
            "local-ipv4",
            "mac",
            "network/",
            "placement/",
            "tags/",
            "iam/",
        ] {
            assert!(lines.contains(&want), "{want} in {md}");
        }
        assert_eq!(
            body(&c, 2, "/latest/meta-data"),
            (200, md.clone()),
            "without the slash too"
        );
        assert_eq!(
            body(&c, 2, "/latest/meta-data/placement/"),
            (200, "availability-zone\nregion".into())
        );
        let mac = &c.instances[2].mac;
        assert_eq!(
            body(&c, 2, "/latest/meta-data/network/interfaces/macs/"),
            (200, format!("{mac}/"))
        );
        let (_, eni) = body(
            &c,
            2,
            &format!("/latest/meta-data/network/interfaces/macs/{mac}/"),
        );
        for want in [
            "device-number",
            "interface-id",
            "subnet-id",
            "vpc-id",
            "subnet-ipv4-cidr-block",
            "vpc-ipv4-cidr-blocks",
            "local-ipv4s",
        ] {
            assert!(eni.lines().any(|l| l == want), "{want} in {eni}");
        }
        assert_eq!(body(&c, 2, "/2016-09-02/meta-data/nope").0, 404);
        assert_eq!(body(&c, 2, "/1999-01-01/meta-data/").0, 404);
        assert_eq!(
            body(&c, 2, "/latest/dynamic/instance-identity/"),
            (200, "document".into())
        );
    }

    #[test]
    fn values_tags_role_credentials_and_identity_document() {
        let mut c = cat();
        let h1 = c.instances[2].clone();
        assert_eq!(body(&c, 2, "/latest/meta-data/local-ipv4").1, "10.0.0.10");
        assert_eq!(
            body(&c, 2, "/latest/meta-data/placement/region").1,
            "eu-west-1"
        );
        assert_eq!(
            body(&c, 2, "/latest/meta-data/placement/availability-zone").1,
            "eu-west-1a"
        );
        assert_eq!(
            body(&c, 2, "/latest/meta-data/tags/instance/overlay:role").1,
            "host"
        );
        assert_eq!(
            body(&c, 2, "/latest/meta-data/tags/instance"),
            (200, "Name\noverlay:cluster\noverlay:role".into())
        );
        assert_eq!(
            body(&c, 2, "/latest/meta-data/iam/security-credentials/"),
            (200, "overlay-lab-node".into())
        );
        let (_, cr) = body(
            &c,
            2,
            "/latest/meta-data/iam/security-credentials/overlay-lab-node",
        );
        let cr: serde_json::Value = serde_json::from_str(&cr).unwrap();
        assert_eq!(cr["Code"], "Success");
        assert!(cr["AccessKeyId"].as_str().unwrap().starts_with("ASIA"));
        assert_eq!(
            cr,
            credentials(&h1, "overlay-lab-node", NOW + 1),
            "stable within the hour"
        );
        let (_, doc) = body(&c, 2, "/latest/dynamic/instance-identity/document");
        let doc: serde_json::Value = serde_json::from_str(&doc).unwrap();
        assert_eq!(doc["instanceId"], h1.instance_id.as_str());
        assert_eq!(doc["privateIp"], "10.0.0.10");
        assert_eq!(doc["region"], "eu-west-1");
        // metadata tags off: no tags/ at all; no role: no iam/; user data listed when present
        c.instances[2].metadata_tags = false;
        c.instances[2].iam_role = None;
        c.instances[2].user_data = Some("#cloud-config\n".into());
        assert_eq!(
            body(&c, 2, "/latest/meta-data/tags/instance/overlay:role").0,
            404
        );
        assert_eq!(body(&c, 2, "/latest/meta-data/iam/").0, 404);
        assert_eq!(
            body(&c, 2, "/latest/"),
            (200, "dynamic\nmeta-data\nuser-data".into())
        );
        assert_eq!(
            body(&c, 2, "/latest/user-data"),
            (200, "#cloud-config\n".into())
        );
    }

    #[test]
    fn head_has_no_body() {
        let c = cat();
        let mut tk = Tokens::new(1);
        let t = token(&c, 0, &mut tk);
        let r = handle(
            &req("HEAD", "/latest/meta-data/mac", &[(TOKEN_HEADER, &t)]),
            &c.instances[0],
            &c,
            &mut tk,
            NOW,
        );
        assert_eq!((r.status, r.body.as_str()), (200, ""));
    }
}
