//! Sysctls through /proc/sys (no `sysctl` subprocess). Keys use '/' separators so interface
//! names containing '.' stay unambiguous.

use std::path::PathBuf;

fn path(key: &str) -> PathBuf {
    PathBuf::from("/proc/sys").join(key)
}

/// Current value, or None when the key does not exist (device absent, IPv6 disabled…).
pub fn read(key: &str) -> std::io::Result<Option<String>> {
    match std::fs::read_to_string(path(key)) {
        Ok(s) => Ok(Some(s.trim().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

pub fn write(key: &str, value: &str) -> std::io::Result<()> {
    std::fs::write(path(key), format!("{value}\n"))
        .map_err(|e| std::io::Error::new(e.kind(), format!("writing {}: {e}", path(key).display())))
}
