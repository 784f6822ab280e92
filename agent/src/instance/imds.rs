//! An IMDSv2 client, and nothing more: a session token from `PUT /latest/api/token`, then
//! `GET`s carrying it. IMDSv1 (a GET without a token) is never tried. Every request has a 1 s
//! timeout and one retry, so a node that is not on EC2 learns that within about 2 s.
//!
//! Plain HTTP/1.1 over a std socket: IMDS is a link-local service that speaks nothing else,
//! and configuration is loaded before (and outside) the daemon's runtime.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Where IMDS answers on every EC2 instance.
pub const ADDRESS: &str = "169.254.169.254:80";
/// Per-request timeout (connect, and each read/write).
pub const TIMEOUT: Duration = Duration::from_secs(1);
/// Attempts per request: the first and one retry.
pub const ATTEMPTS: u32 = 2;
/// Token lifetime asked for: configuration needs it for a second or two.
const TOKEN_TTL_SECS: u32 = 60;
/// Bodies above this are refused (the largest IMDS answer, user data, is at most 16 KiB).
const MAX_BODY: usize = 64 * 1024;

/// Why IMDS could not answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImdsError {
    /// Nothing answered (timeout, refused, reset): not on EC2, or IMDS is off.
    Unreachable(String),
    /// IMDS answered with this status.
    Status(u16),
    /// The answer was not HTTP we understand.
    Garbled(String),
}

impl std::fmt::Display for ImdsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImdsError::Unreachable(e) => write!(f, "IMDS at {ADDRESS} unreachable: {e}"),
            ImdsError::Status(s) => write!(f, "IMDS answered HTTP {s}"),
            ImdsError::Garbled(e) => write!(f, "IMDS answer not understood: {e}"),
        }
    }
}

/// A session: one token, reused for every GET.
pub struct Imds {
    addr: SocketAddr,
    token: String,
}

impl Imds {
    /// Get a token (PUT with `X-aws-ec2-metadata-token-ttl-seconds`).
    pub fn connect() -> Result<Imds, ImdsError> {
        let addr: SocketAddr = ADDRESS.parse().expect("constant address");
        let ttl = TOKEN_TTL_SECS.to_string();
        let (status, body) = request(
            addr,
            "PUT",
            "/latest/api/token",
            &[("X-aws-ec2-metadata-token-ttl-seconds", &ttl)],
        )?;
        if status != 200 {
            return Err(ImdsError::Status(status));
        }
        let token = body.trim().to_string();
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ImdsError::Garbled("empty or malformed token".into()));
        }
        Ok(Imds { addr, token })
    }

    /// `GET /latest/<path>`: Ok(None) on 404 (the key does not exist here).
    pub fn get(&self, path: &str) -> Result<Option<String>, ImdsError> {
        let (status, body) = request(
            self.addr,
            "GET",
            &format!("/latest/{path}"),
            &[("X-aws-ec2-metadata-token", &self.token)],
        )?;
        match status {
            200 => Ok(Some(body)),
            404 => Ok(None),
            s => Err(ImdsError::Status(s)),
        }
    }

    /// Like [`Imds::get`], but the key must exist.
    pub fn need(&self, path: &str) -> Result<String, ImdsError> {
        self.get(path)?
            .map(|s| s.trim().to_string())
            .ok_or_else(|| ImdsError::Garbled(format!("{path}: not found (HTTP 404)")))
    }
}

/// One request with [`ATTEMPTS`] tries; the retry only when nothing usable came back.
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, String), ImdsError> {
    let mut last = ImdsError::Unreachable("no attempt".into());
    for _ in 0..ATTEMPTS {
        match once(addr, method, path, headers) {
            Ok(r) => return Ok(r),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn once(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, String), ImdsError> {
    let unreachable = |e: std::io::Error| {
        ImdsError::Unreachable(match e.kind() {
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
                format!("no answer within {} s", TIMEOUT.as_secs())
            }
            _ => e.to_string(),
        })
    };
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(unreachable)?;
    s.set_read_timeout(Some(TIMEOUT)).map_err(unreachable)?;
    s.set_write_timeout(Some(TIMEOUT)).map_err(unreachable)?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 169.254.169.254\r\nUser-Agent: overlayd/{}\r\nConnection: close\r\nContent-Length: 0\r\n",
        env!("CARGO_PKG_VERSION")
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).map_err(unreachable)?;
    // Read until the body is complete (Content-Length) or the server closes.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(total) = complete_len(&buf) {
            if buf.len() >= total {
                break;
            }
        }
        if buf.len() > MAX_BODY + 4096 {
            return Err(ImdsError::Garbled("answer too large".into()));
        }
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(unreachable(e)),
        }
    }
    parse_response(&buf)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Headers + Content-Length, once the headers are in.
fn complete_len(buf: &[u8]) -> Option<usize> {
    let end = find(buf, b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..end]);
    content_length(&head).map(|n| end + n)
}

fn content_length(head: &str) -> Option<usize> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())
            .flatten()
    })
}

/// Status and body of a complete HTTP/1.1 response (Content-Length or read to close). Split
/// on the raw bytes, decoded afterwards: a length never cuts a character.
pub fn parse_response(buf: &[u8]) -> Result<(u16, String), ImdsError> {
    let Some(at) = find(buf, b"\r\n\r\n") else {
        return Err(ImdsError::Garbled("no end of headers".into()));
    };
    let head = String::from_utf8_lossy(&buf[..at]).into_owned();
    let raw_body = &buf[at + 4..];
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ImdsError::Garbled(format!("status line {status_line:?}")))?;
    let body = match content_length(&head) {
        Some(n) if n <= raw_body.len() => String::from_utf8_lossy(&raw_body[..n]).into_owned(),
        Some(n) => {
            return Err(ImdsError::Garbled(format!(
                "body cut short ({} of {n} bytes)",
                raw_body.len()
            )))
        }
        None => String::from_utf8_lossy(raw_body).into_owned(),
    };
    if body.len() > MAX_BODY {
        return Err(ImdsError::Garbled("body too large".into()));
    }
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_cut_at_content_length_and_statuses_read() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcdef").unwrap();
        assert_eq!(r, (200, "abc".into()));
        let r = parse_response(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n").unwrap();
        assert_eq!(r.0, 404);
        let r = parse_response(b"HTTP/1.1 200 OK\r\n\r\nto the end").unwrap();
        assert_eq!(r.1, "to the end");
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nab").is_err());
        assert!(parse_response(b"garbage").is_err());
        // a length inside a multi-byte character: no panic, the bytes are decoded lossily
        let r = parse_response("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n\u{e9}".as_bytes())
            .unwrap();
        assert_eq!(r.0, 200);
        assert_eq!(
            complete_len(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n"),
            Some(41)
        );
    }

    #[test]
    fn nothing_listening_is_unreachable_after_the_retry() {
        // A closed loopback port: refused at once, twice.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        match request(addr, "PUT", "/latest/api/token", &[]) {
            Err(ImdsError::Unreachable(_)) => {}
            other => panic!("{other:?}"),
        }
    }
}
