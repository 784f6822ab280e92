//! The lab's IMDSv2 emulator: one per lab, listening on 169.254.169.254:80 inside the vpc
//! namespace (the address sits on the node subnet's bridge, so every node and the client reach
//! it on their subnet as an instance reaches IMDS), answering each instance by the source
//! address of its request.
//!
//! - [`catalog`]: what each instance is (from the topology, optionally moto's EC2 state);
//! - [`metadata`]: AWS's rules for one request (tokens, listings, paths), pure;
//! - this file: the process — `up` writes the catalog and starts `overlay-lab imds-serve`,
//!   which binds in the vpc namespace and then returns to the lab's own namespace for its
//!   outbound calls (moto listens on the host's loopback); `down` stops it.
//!
//! Hop limit: as on EC2 it is the *PUT response* hop limit — a token reply leaves with IP TTL =
//! the instance's `HttpPutResponseHopLimit` (1 unless moto or the catalog says otherwise), so a
//! VM or container whose traffic the instance forwards or NATs never gets a token; other
//! answers travel with the normal TTL (such a client's IMDSv1 GET gets its 401).

pub mod catalog;
pub mod metadata;

use crate::node_cmd::{run_dir, RUN_ROOT};
use crate::topo::Topology;
use anyhow::{bail, Context, Result};
use catalog::Catalog;
use metadata::{Request, Response, Tokens};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const ADDRESS: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
pub const PORT: u16 = 80;
/// With `--aws-endpoint`: the AWS APIs as the instances reach them, `http://169.254.169.254:8773`
/// (a stand-in for interface VPC endpoints; a plain TCP relay to moto on the host's loopback,
/// so every service moto serves — EC2, CloudFormation, S3, ... — goes through it, told apart
/// by moto from the request's SigV4 scope). The address is one overlayd keeps on the underlay,
/// so the API stays reachable whatever the overlay's routes are.
pub const EC2_API_PORT: u16 = 8773;

/// The URL the lab's instances use for the EC2 API (`AWS_ENDPOINT_URL_EC2`).
pub fn ec2_api_url() -> String {
    aws_api_url()
}

/// The URL the lab's instances use for any AWS API (`AWS_ENDPOINT_URL`; `up --cloud-init`
/// sets it in every node's systemd manager environment).
pub fn aws_api_url() -> String {
    format!("http://{ADDRESS}:{EC2_API_PORT}")
}

/// `up --instances`: the lab's package server, plain HTTP GET of the files in the lab's
/// `packages/` directory (the overlayd .deb of `--deb`), `http://169.254.169.254:8775/<file>`.
pub const PACKAGE_PORT: u16 = 8775;
/// The package server's directory below the lab's run directory.
pub const PACKAGES_DIR: &str = "packages";

/// The URL a node downloads `file` (a file name in the lab's `packages/`) from.
pub fn package_url(file: &str) -> String {
    format!("http://{ADDRESS}:{PACKAGE_PORT}/{file}")
}

/// The file `target` (a request target) names in the package directory `dir`: a single path
/// segment of [A-Za-z0-9._+~-], not starting with '.' (no "..", no hidden files, no
/// subdirectories, no percent-encoding), that is a regular file (not a symlink). None = 404.
pub fn package_file(dir: &Path, target: &str) -> Option<PathBuf> {
    let path = target.split(['?', '#']).next()?;
    let name = path.strip_prefix('/')?;
    let ok = !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+~-".contains(&b));
    if !ok {
        return None;
    }
    let p = dir.join(name);
    std::fs::symlink_metadata(&p)
        .ok()
        .filter(|m| m.file_type().is_file())
        .map(|_| p)
}
pub const CATALOG: &str = "imds.json";
pub const LOG: &str = "imds.log";
pub const PID_FILE: &str = "imds.pid";
const SUBCOMMAND: &str = "imds-serve";
/// How often the server looks at the catalog file and moto.
const REFRESH: Duration = Duration::from_secs(1);

/// `up`'s choices for the emulator.
#[derive(Clone, Debug)]
pub struct Options {
    pub region: String,
    pub aws_endpoint: Option<String>,
    /// Serve the files of this directory on [`PACKAGE_PORT`].
    pub packages_dir: Option<PathBuf>,
    pub route_follow: Option<catalog::RouteFollow>,
}

pub fn catalog_path(prefix: &str) -> PathBuf {
    run_dir(prefix).join(CATALOG)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Write the catalog and start the server; returns its pid once it listens.
pub fn start(t: &Topology, o: &Options) -> Result<u32> {
    let mut cat = Catalog::from_topology(t, &o.region, &catalog::rfc3339(now_secs()));
    cat.aws_endpoint = o.aws_endpoint.clone();
    cat.packages_dir = o.packages_dir.clone();
    cat.route_follow = o.route_follow.clone();
    let path = catalog_path(&t.prefix);
    std::fs::write(&path, serde_json::to_string_pretty(&cat)?)
        .with_context(|| format!("writing {}", path.display()))?;
    let dir = run_dir(&t.prefix);
    let _ = std::fs::remove_file(dir.join(PID_FILE));
    let log = std::fs::File::create(dir.join(LOG))?;
    let mut child = Command::new(std::env::current_exe()?)
        .args([SUBCOMMAND, "--catalog"])
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("starting the IMDS emulator (overlay-lab imds-serve)")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(s) = std::fs::read_to_string(dir.join(PID_FILE)) {
            if let Ok(pid) = s.trim().parse() {
                return Ok(pid);
            }
        }
        if let Some(st) = child.try_wait()? {
            bail!(
                "the IMDS emulator exited with {st}:\n{}",
                std::fs::read_to_string(dir.join(LOG)).unwrap_or_default()
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("the IMDS emulator did not start listening within 10 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The catalog path if NUL-separated `cmdline` is an `overlay-lab imds-serve --catalog P`.
pub fn served_catalog(cmdline: &[u8]) -> Option<String> {
    let args: Vec<&str> = cmdline
        .split(|&b| b == 0)
        .filter_map(|a| std::str::from_utf8(a).ok())
        .collect();
    let i = args.iter().position(|a| *a == SUBCOMMAND)?;
    (args.get(i + 1) == Some(&"--catalog")).then(|| args.get(i + 2).map(|s| s.to_string()))?
}

/// Pids of the emulator of lab `prefix`.
pub fn servers(prefix: &str) -> Vec<u32> {
    let want = format!("{RUN_ROOT}/{prefix}/{CATALOG}");
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<u32>().ok()?;
            let raw = std::fs::read(e.path().join("cmdline")).ok()?;
            (served_catalog(&raw)? == want).then_some(pid)
        })
        .collect()
}

/// Stop the emulator of lab `prefix` (SIGTERM, SIGKILL after 2 s). Returns how many.
pub fn stop(prefix: &str) -> usize {
    let pids = servers(prefix);
    crate::daemons::terminate(&pids, Duration::from_secs(2));
    pids.len()
}

struct Shared {
    catalog: RwLock<Catalog>,
    tokens: Mutex<Tokens>,
}

/// `overlay-lab imds-serve --catalog FILE`: the server process (started by `up`).
pub fn serve(catalog_file: &Path) -> Result<u8> {
    let base: Catalog = serde_json::from_str(
        &std::fs::read_to_string(catalog_file)
            .with_context(|| format!("reading {}", catalog_file.display()))?,
    )
    .with_context(|| format!("parsing {}", catalog_file.display()))?;
    let listener = bind_in(&base.vpc_ns, PORT)?;
    let relay = match &base.aws_endpoint {
        Some(ep) => Some((bind_in(&base.vpc_ns, EC2_API_PORT)?, ep.clone())),
        None => None,
    };
    let packages = match &base.packages_dir {
        Some(d) => Some((bind_in(&base.vpc_ns, PACKAGE_PORT)?, d.clone())),
        None => None,
    };
    let mut seed = [0u8; 8];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut seed)?;
    let shared = Arc::new(Shared {
        catalog: RwLock::new(base.clone()),
        tokens: Mutex::new(Tokens::new(u64::from_le_bytes(seed))),
    });
    let dir = catalog_file.parent().unwrap_or(Path::new("."));
    std::fs::write(dir.join(PID_FILE), format!("{}\n", std::process::id()))?;
    eprintln!(
        "imds: listening on {ADDRESS}:{PORT} in {} for {} instances{}",
        base.vpc_ns,
        base.instances.len(),
        base.aws_endpoint
            .as_ref()
            .map(|e| format!(", merging moto's instances from {e}"))
            .unwrap_or_default()
    );
    if let Some((l, ep)) = relay {
        eprintln!("imds: AWS APIs on {} relayed to {ep}", aws_api_url());
        std::thread::spawn(move || relay_loop(l, &ep));
    }
    if let (Some(ep), Some(rf)) = (&base.aws_endpoint, &base.route_follow) {
        let (ep, rf, ns, region) = (
            ep.clone(),
            rf.clone(),
            base.vpc_ns.clone(),
            base.region.clone(),
        );
        let log = dir.join(ROUTE_LOG);
        eprintln!(
            "imds: the VPC route to {} follows moto's route tables (delay {} ms)",
            rf.cidr, rf.delay_ms
        );
        std::thread::spawn(move || route_follow_loop(&ep, &region, &rf, &ns, &log));
    }
    if let Some((l, dir)) = packages {
        eprintln!(
            "imds: package server on {ADDRESS}:{PACKAGE_PORT} serving {}",
            dir.display()
        );
        std::thread::spawn(move || package_loop(l, &dir));
    }
    // With moto: its instances are merged before the first answer (the listener queues the
    // connections meanwhile), so no instance ever sees the lab's own ids first — a client that
    // caches its VPC or instance id would otherwise keep the wrong one.
    if let Some(ep) = &base.aws_endpoint {
        match fetch_moto(ep, &base.region) {
            Ok(v) => {
                if let Ok(mut c) = shared.catalog.write() {
                    *c = base.merged(&v);
                }
            }
            Err(e) => eprintln!(
                "imds: moto at {ep}: {e:#}; serving the lab's own catalog until it answers"
            ),
        }
    }
    {
        let shared = shared.clone();
        let file = catalog_file.to_path_buf();
        std::thread::spawn(move || refresh_loop(&file, base, &shared));
    }
    for s in listener.incoming() {
        match s {
            Ok(s) => {
                let shared = shared.clone();
                std::thread::spawn(move || {
                    if let Err(e) = connection(s, &shared) {
                        eprintln!("imds: connection: {e:#}");
                    }
                });
            }
            Err(e) => eprintln!("imds: accept: {e}"),
        }
    }
    Ok(0)
}

/// The AWS API relay: every connection to 169.254.169.254:8773 in the vpc namespace is
/// spliced, byte for byte, to moto (connected from the lab's own namespace, where moto
/// listens): any service, any method, any body.
fn relay_loop(l: TcpListener, endpoint: &str) {
    let Some(addr) = endpoint
        .strip_prefix("http://")
        .and_then(|h| h.trim_end_matches('/').parse::<SocketAddr>().ok())
    else {
        eprintln!("imds: AWS API relay: endpoint {endpoint:?} is not http://IP:PORT");
        return;
    };
    for c in l.incoming().flatten() {
        std::thread::spawn(move || {
            let up = match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                Ok(u) => u,
                Err(e) => {
                    eprintln!("imds: AWS API relay: {addr}: {e}");
                    return;
                }
            };
            let (Ok(mut c2), Ok(mut up2)) = (c.try_clone(), up.try_clone()) else {
                return;
            };
            let (mut c, mut up) = (c, up);
            let t = std::thread::spawn(move || {
                let _ = std::io::copy(&mut c2, &mut up2);
                let _ = up2.shutdown(std::net::Shutdown::Write);
            });
            let _ = std::io::copy(&mut up, &mut c);
            let _ = c.shutdown(std::net::Shutdown::Write);
            let _ = t.join();
        });
    }
}

/// The package server: GET / HEAD of a file in `dir` (see [`package_file`]), 404 for
/// anything else, 405 for other methods; keep-alive as the IMDS answers.
fn package_loop(l: TcpListener, dir: &Path) {
    for s in l.incoming().flatten() {
        let dir = dir.to_path_buf();
        std::thread::spawn(move || {
            if let Err(e) = package_connection(s, &dir) {
                if !is_timeout(&e) {
                    eprintln!("imds: package server: {e:#}");
                }
            }
        });
    }
}

fn package_connection(s: TcpStream, dir: &Path) -> Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let peer = s.peer_addr()?;
    let mut w = s.try_clone()?;
    let mut r = BufReader::new(s);
    while let Some((req, close)) = read_request(&mut r)? {
        let file = match req.method.as_str() {
            "GET" | "HEAD" => package_file(dir, &req.path),
            _ => None,
        };
        let Some(file) = file else {
            let status = if matches!(req.method.as_str(), "GET" | "HEAD") {
                404
            } else {
                405
            };
            eprintln!(
                "imds: package server: {} {} {} from {}",
                req.method,
                req.path,
                status,
                peer.ip()
            );
            let resp = Response {
                status,
                headers: Vec::new(),
                body: format!("{status} - {}\n", metadata::reason(status)),
            };
            write_response(&mut w, &req, &resp, close)?;
            if close {
                return Ok(());
            }
            continue;
        };
        let mut f = std::fs::File::open(&file)?;
        let len = f.metadata()?.len();
        write!(
            w,
            "HTTP/1.1 200 OK\r\nServer: overlay-lab\r\nContent-Type: application/octet-stream\r\n\
             Content-Length: {len}\r\nConnection: {}\r\n\r\n",
            if close { "close" } else { "keep-alive" }
        )?;
        if req.method == "GET" {
            let sent = std::io::copy(&mut f, &mut w)?;
            eprintln!(
                "imds: package server: GET {} 200 {sent} bytes to {}",
                req.path,
                peer.ip()
            );
        }
        if close {
            return Ok(());
        }
    }
    Ok(())
}

/// Listen on ADDRESS:port in network namespace `ns`, then return this (single-threaded)
/// process to its own namespace: the socket stays where it was made.
fn bind_in(ns: &str, port: u16) -> Result<TcpListener> {
    use nix::sched::{setns, CloneFlags};
    let home = std::fs::File::open("/proc/self/ns/net")?;
    let target = std::fs::File::open(Path::new(crate::sys::NETNS_DIR).join(ns))
        .with_context(|| format!("network namespace {ns}"))?;
    setns(target.as_fd(), CloneFlags::CLONE_NEWNET).context("setns into the vpc namespace")?;
    let l = TcpListener::bind(SocketAddr::from((ADDRESS, port)));
    setns(home.as_fd(), CloneFlags::CLONE_NEWNET).context("setns back")?;
    l.with_context(|| format!("binding {ADDRESS}:{port} in {ns}"))
}

/// Reload the catalog file when it changes; merge moto's instances when an endpoint is set.
/// A failing moto keeps the last good merge (logged once per outage).
fn refresh_loop(file: &Path, mut base: Catalog, shared: &Shared) {
    let mtime = |f: &Path| std::fs::metadata(f).and_then(|m| m.modified()).ok();
    let mut seen = mtime(file);
    let mut last_moto: Option<serde_json::Value> = None;
    let mut moto_down = false;
    let mut registered: std::collections::HashSet<String> = Default::default();
    loop {
        let m = mtime(file);
        if m != seen {
            seen = m;
            match std::fs::read_to_string(file)
                .map_err(anyhow::Error::from)
                .and_then(|s| Ok(serde_json::from_str::<Catalog>(&s)?))
            {
                Ok(c) => {
                    eprintln!("imds: catalog reloaded");
                    base = c;
                }
                Err(e) => {
                    eprintln!("imds: catalog not reloaded ({e:#}); keeping the last good one")
                }
            }
        }
        if let Some(ep) = &base.aws_endpoint {
            match fetch_moto(ep, &base.region) {
                Ok(v) => {
                    if moto_down {
                        eprintln!("imds: moto reachable again");
                    }
                    moto_down = false;
                    last_moto = Some(v);
                }
                Err(e) => {
                    if !moto_down {
                        eprintln!("imds: moto at {ep}: {e:#}; serving the last good state");
                    }
                    moto_down = true;
                }
            }
        }
        let next = match &last_moto {
            Some(v) => base.merged(v),
            None => base.clone(),
        };
        if let Ok(mut c) = shared.catalog.write() {
            if *c != next {
                *c = next.clone();
            }
        }
        if let Some(ep) = &base.aws_endpoint {
            register_credentials(ep, &next, &mut registered);
        }
        std::thread::sleep(REFRESH);
    }
}

/// The VPC route log: one line per change, `<unix ms seen> <unix ms applied> <via>`.
pub const ROUTE_LOG: &str = "vpc-route.log";

/// Router HA: polls moto's route to `rf.cidr` every 100 ms; when its target's address
/// changes, the vpc namespace's route follows `rf.delay_ms` later (as AWS's own propagation).
fn route_follow_loop(ep: &str, region: &str, rf: &catalog::RouteFollow, ns: &str, log: &Path) {
    let mut current: Option<String> = None;
    loop {
        let want = http_to_moto(
            ep,
            "GET",
            &format!("/_shim/routes?region={region}&cidr={}", rf.cidr),
        )
        .ok()
        .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
        .and_then(|v| {
            v["routes"]
                .as_array()?
                .iter()
                .find_map(|r| r["target_ip"].as_str().map(str::to_string))
        });
        if let Some(ip) = want.filter(|ip| current.as_deref() != Some(ip.as_str())) {
            let seen = now_ms();
            std::thread::sleep(Duration::from_millis(rf.delay_ms));
            let ok = Command::new("ip")
                .args(["-n", ns, "route", "replace", &rf.cidr, "via", &ip])
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                let line = format!("{seen} {} {ip}\n", now_ms());
                let _ = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(log)
                    .and_then(|mut f| f.write_all(line.as_bytes()));
                eprintln!("imds: VPC route {} now via {ip}", rf.cidr);
                current = Some(ip);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// Tells the shim the secret of every instance role's current credentials (`POST
/// /_shim/credentials`), once per key, so the shim verifies the SigV4 signature of requests
/// made with them (as AWS does) instead of taking any signature.
fn register_credentials(
    endpoint: &str,
    cat: &Catalog,
    done: &mut std::collections::HashSet<String>,
) {
    for inst in &cat.instances {
        let Some(role) = &inst.iam_role else { continue };
        let c = metadata::credentials(inst, role, now_secs());
        let (Some(key), Some(secret)) = (c["AccessKeyId"].as_str(), c["SecretAccessKey"].as_str())
        else {
            continue;
        };
        if done.contains(key) {
            continue;
        }
        let path = format!("/_shim/credentials?key={key}&secret={secret}");
        match http_to_moto(endpoint, "POST", &path) {
            Ok(_) => {
                done.insert(key.to_string());
            }
            Err(e) => eprintln!("imds: registering {}'s credentials: {e:#}", inst.node),
        }
    }
}

/// `GET <endpoint>/_shim/instances?region=R` (plain HTTP, loopback).
fn fetch_moto(endpoint: &str, region: &str) -> Result<serde_json::Value> {
    let body = http_to_moto(
        endpoint,
        "GET",
        &format!("/_shim/instances?region={region}"),
    )?;
    Ok(serde_json::from_str(&body)?)
}

/// One plain-HTTP request without a body to the shim at `endpoint` (http://IP:PORT); the
/// body of a 200 answer.
pub(crate) fn http_to_moto(endpoint: &str, method: &str, path: &str) -> Result<String> {
    let hostport = endpoint
        .strip_prefix("http://")
        .context("only http:// endpoints")?
        .trim_end_matches('/');
    let addr: SocketAddr = hostport
        .parse()
        .with_context(|| format!("endpoint {endpoint:?}: want http://IP:PORT"))?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {hostport}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").context("no HTTP header")?;
    if head.split_whitespace().nth(1) != Some("200") {
        bail!("{}", head.lines().next().unwrap_or(""));
    }
    Ok(body.to_string())
}

/// Serve one client connection (keep-alive) until it closes or asks to.
fn connection(s: TcpStream, shared: &Shared) -> Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let peer = match s.peer_addr()? {
        SocketAddr::V4(a) => *a.ip(),
        SocketAddr::V6(_) => return Ok(()),
    };
    let mut w = s.try_clone()?;
    let mut r = BufReader::new(s);
    loop {
        let (req, close) = match read_request(&mut r) {
            Ok(Some(x)) => x,
            Ok(None) => return Ok(()),
            // an idle keep-alive connection timing out is a normal end
            Err(e) if is_timeout(&e) => return Ok(()),
            Err(e) => return Err(e),
        };
        let cat = shared
            .catalog
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|e| e.into_inner().clone());
        let resp = match cat.by_ip(peer) {
            Some(inst) => {
                let mut tk = shared.tokens.lock().unwrap_or_else(|e| e.into_inner());
                let resp = metadata::handle(&req, inst, &cat, &mut tk, now_secs());
                // AWS's hop limit is the *PUT response* hop limit: a token leaves with IP TTL
                // = HttpPutResponseHopLimit (1: the instance itself only), so a container or VM
                // behind the instance never gets one; other answers travel normally (an IMDSv1
                // GET from there gets its 401). The rest of this connection keeps that TTL, so
                // a retransmitted token segment cannot escape either.
                if req.method == "PUT" && resp.status == 200 {
                    w.set_ttl(u32::from(inst.hop_limit.clamp(1, 64)))?;
                }
                resp
            }
            // not an instance of this lab (on EC2 nothing else reaches IMDS): TTL 1, so
            // whatever it is, it is answered only if it is on the subnet itself
            None => {
                w.set_ttl(1)?;
                Response {
                    status: 403,
                    headers: Vec::new(),
                    body: "403 - Forbidden\n".into(),
                }
            }
        };
        write_response(&mut w, &req, &resp, close)?;
        if close {
            return Ok(());
        }
    }
}

fn is_timeout(e: &anyhow::Error) -> bool {
    e.downcast_ref::<std::io::Error>().is_some_and(|e| {
        matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        )
    })
}

/// One request (headers lower-cased; any body read and dropped), and whether the client
/// wants the connection closed after it. None at end of stream.
fn read_request(r: &mut impl BufRead) -> Result<Option<(Request, bool)>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (method, target, version) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("/").to_string(),
        parts.next().unwrap_or("HTTP/1.0").to_string(),
    );
    let mut headers = Vec::new();
    let mut size = 0usize;
    loop {
        let mut h = String::new();
        let n = r.read_line(&mut h)?;
        size += n;
        if n == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if size > 16 * 1024 {
            bail!("request header over 16 KiB");
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let req = Request {
        method,
        path: target.split('?').next().unwrap_or("/").to_string(),
        headers,
    };
    let len: u64 = req
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if len > 1 << 20 {
        bail!("request body of {len} bytes refused");
    }
    std::io::copy(&mut r.take(len), &mut std::io::sink())?;
    let close = match req.header("connection") {
        Some(c) => c.eq_ignore_ascii_case("close"),
        None => version == "HTTP/1.0",
    };
    Ok(Some((req, close)))
}

fn write_response(w: &mut impl Write, req: &Request, resp: &Response, close: bool) -> Result<()> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nServer: EC2ws\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: {}\r\n",
        resp.status,
        metadata::reason(resp.status),
        resp.body.len(),
        if close { "close" } else { "keep-alive" }
    );
    for (k, v) in &resp.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    if req.method != "HEAD" {
        out.push_str(&resp.body);
    }
    w.write_all(out.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_its_server_by_command_line() {
        let c = b"/usr/bin/overlay-lab\0imds-serve\0--catalog\0/run/overlay-lab/a/imds.json\0";
        assert_eq!(
            served_catalog(c).as_deref(),
            Some("/run/overlay-lab/a/imds.json")
        );
        assert_eq!(served_catalog(b"overlay-lab\0up\0--prefix\0a\0"), None);
        assert_eq!(served_catalog(b"overlay-lab\0imds-serve\0"), None);
    }

    #[test]
    fn parses_requests_with_keep_alive_and_bodies() {
        let raw = "PUT /latest/api/token HTTP/1.1\r\nX-aws-ec2-metadata-token-ttl-seconds: 21600\r\n\
                   Content-Length: 3\r\n\r\nabcGET /latest/meta-data/?x=1 HTTP/1.1\r\nConnection: close\r\n\r\n";
        let mut r = BufReader::new(raw.as_bytes());
        let (a, close) = read_request(&mut r).unwrap().unwrap();
        assert_eq!(
            (a.method.as_str(), a.path.as_str(), close),
            ("PUT", "/latest/api/token", false)
        );
        assert_eq!(a.header(metadata::TOKEN_TTL_HEADER), Some("21600"));
        let (b, close) = read_request(&mut r).unwrap().unwrap();
        assert_eq!(
            (b.method.as_str(), b.path.as_str(), close),
            ("GET", "/latest/meta-data/", true)
        );
        assert!(read_request(&mut r).unwrap().is_none());
        let mut r = BufReader::new("GET / HTTP/1.0\r\n\r\n".as_bytes());
        assert!(read_request(&mut r).unwrap().unwrap().1, "HTTP/1.0 closes");
    }
}
