//! The two text files overlayd keeps a line in: /etc/hosts (CloudStack picks its own address
//! by resolving its FQDN) and resolv.conf (DNS). Only lines marked as ours are ever changed;
//! everything else in the file is preserved byte for byte.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::Path;

pub const HOSTS_MARK: &str = "# overlayd";
pub const RESOLV_BEGIN: &str = "# BEGIN overlayd (managed; edits inside are overwritten)";
pub const RESOLV_END: &str = "# END overlayd";

fn is_ours(line: &str) -> bool {
    line.trim_end().ends_with(HOSTS_MARK)
}

/// New /etc/hosts content: our line (if any) first — the resolver takes the first match —
/// then every other line unchanged.
pub fn render_hosts(current: &str, line: Option<&(Ipv4Addr, String)>) -> String {
    let mut out = String::new();
    if let Some((ip, fqdn)) = line {
        let short = fqdn.split('.').next().unwrap_or(fqdn);
        if short != fqdn {
            out.push_str(&format!("{ip}\t{fqdn} {short}\t{HOSTS_MARK}\n"));
        } else {
            out.push_str(&format!("{ip}\t{fqdn}\t{HOSTS_MARK}\n"));
        }
    }
    for l in current.split_inclusive('\n') {
        if !is_ours(l) {
            out.push_str(l);
        }
    }
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// New resolv.conf content: a marked block of `nameserver` lines at the top (or none when
/// `servers` is empty), the rest untouched.
pub fn render_resolv(current: &str, servers: &[Ipv4Addr]) -> String {
    let mut rest = String::new();
    let mut inside = false;
    for l in current.split_inclusive('\n') {
        let t = l.trim_end();
        if t == RESOLV_BEGIN {
            inside = true;
            continue;
        }
        if inside {
            if t == RESOLV_END {
                inside = false;
            }
            continue;
        }
        rest.push_str(l);
    }
    let mut out = String::new();
    if !servers.is_empty() {
        out.push_str(RESOLV_BEGIN);
        out.push('\n');
        for s in servers {
            out.push_str(&format!("nameserver {s}\n"));
        }
        out.push_str(RESOLV_END);
        out.push('\n');
    }
    out.push_str(&rest);
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

pub fn read_optional(path: &Path) -> std::io::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Replace a file's content atomically (temp file + rename), keeping its permissions.
/// Where rename is impossible (a bind-mounted file, as `ip netns exec` does for
/// /etc/netns/NAME/*), fall back to rewriting in place.
pub fn write_atomic(path: &Path, content: &str) -> std::io::Result<()> {
    write_atomic_with(path, content, true)
}

/// [`write_atomic`]; `durable` = fsync before the rename (skip it for files that only
/// describe volatile kernel state and are meaningless after a reboot anyway).
pub fn write_atomic_with(path: &Path, content: &str, durable: bool) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.overlayd.{}", std::process::id()));
    let perms = std::fs::metadata(path).ok().map(|m| m.permissions());
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(content.as_bytes())?;
        if durable {
            f.sync_all()?;
        }
        if let Some(p) = &perms {
            std::fs::set_permissions(&tmp, p.clone())?;
        }
        std::fs::rename(&tmp, path)
    })();
    match res {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            // EBUSY: the target is a mount point. EROFS: the directory is read-only and
            // only the file is bind-mounted writable (systemd ReadWritePaths=/etc/hosts).
            if matches!(e.raw_os_error(), Some(libc::EBUSY) | Some(libc::EROFS)) {
                std::fs::write(path, content)
            } else {
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_line_first_and_idempotent() {
        let cur = "127.0.0.1 localhost\n::1 localhost\n";
        let l = (
            "10.101.0.2".parse().unwrap(),
            "cloudstack-management.localdomain".to_string(),
        );
        let a = render_hosts(cur, Some(&l));
        assert!(a.starts_with(
            "10.101.0.2\tcloudstack-management.localdomain cloudstack-management\t# overlayd\n"
        ));
        assert!(a.ends_with(cur));
        assert_eq!(render_hosts(&a, Some(&l)), a);
        // removing restores the original exactly
        assert_eq!(render_hosts(&a, None), cur);
    }

    #[test]
    fn hosts_changed_address_replaces_old_line() {
        let l1 = ("10.101.0.2".parse().unwrap(), "mgmt".to_string());
        let l2 = ("10.101.0.3".parse().unwrap(), "mgmt".to_string());
        let a = render_hosts("", Some(&l1));
        let b = render_hosts(&a, Some(&l2));
        assert_eq!(b, "10.101.0.3\tmgmt\t# overlayd\n");
    }

    #[test]
    fn resolv_block() {
        let cur = "search ec2.internal\nnameserver 10.0.0.2\n";
        let s: Vec<Ipv4Addr> = vec!["10.0.0.2".parse().unwrap()];
        let a = render_resolv(cur, &s);
        assert!(a.starts_with(RESOLV_BEGIN));
        assert!(a.ends_with(cur));
        assert_eq!(render_resolv(&a, &s), a);
        assert_eq!(render_resolv(&a, &[]), cur);
        assert_eq!(render_resolv(cur, &[]), cur);
    }
}
