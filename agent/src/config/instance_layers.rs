//! The two lowest layers, from the EC2 instance: IMDSv2 facts (below everything) and the
//! instance's `overlay:*` tags (below the file), and the `auto` values derived from them.
//!
//! Precedence, lowest first: IMDS facts → tags → file → environment → flags. A tag fills a
//! key nothing else sets; `role`/`cluster`/`group`/`flood` = `auto` ask for the tag
//! explicitly; `address`/`underlay` = `auto` are computed from the facts, `gateway = auto`
//! from `overlay_cidr` alone (no IMDS).

use super::*;
use crate::instance::{self, InstanceFacts, TAG_KEYS};

/// Keys whose `auto` means "this instance's tag".
const FROM_TAG: [&str; 4] = ["role", "cluster", "group", "flood"];

fn val<'a>(m: &'a Layers, k: &str) -> Option<&'a str> {
    get(m, k).map(|(v, _)| v)
}

/// Does any key need the instance? An `auto` that IMDS resolves, EC2 peer discovery (VPC
/// and region), or a required key that nothing sets (a tag may). A configuration that is
/// complete and asks for no `auto` never waits on IMDS.
pub(super) fn needed(m: &Layers) -> bool {
    let auto = |k: &str| val(m, k) == Some("auto");
    if FROM_TAG.iter().any(|k| auto(k)) || auto("underlay") {
        return true;
    }
    let role = match val(m, "role") {
        None => return true,
        Some(r) => Role::parse(r),
    };
    if auto("address") && role != Some(Role::Router) {
        return true;
    }
    if !m.contains_key("address") {
        return true;
    }
    let Some(role) = role else { return false };
    let unicast = val(m, "flood") == Some("unicast");
    let discovery = val(m, "peer_discovery");
    if unicast && (discovery == Some("ec2") || (discovery.is_none() && !m.contains_key("peers"))) {
        return true;
    }
    // flood = evpn finding its route reflectors by their tags (check_evpn_discovery's default)
    let reflector = match val(m, "evpn_reflector") {
        Some(v) => matches!(v, "true" | "1" | "yes" | "on"),
        None => role == Role::Router,
    };
    if val(m, "flood") == Some("evpn")
        && (discovery == Some("ec2")
            || (discovery.is_none()
                && !reflector
                && !m.contains_key("evpn_reflectors")
                && m.contains_key("cluster")))
    {
        return true;
    }
    (role.needs_gateway() && !m.contains_key("gateway"))
        || (role.has_vtep() && !m.contains_key("flood") && !m.contains_key("group"))
}

/// Tags fill the keys nothing else sets, and the `auto`s of [`FROM_TAG`] keys.
pub(super) fn add_tags(m: &mut Layers, f: &InstanceFacts) {
    for (tag, key) in TAG_KEYS {
        let Some(v) = f.tags.get(tag) else { continue };
        let key = super::keys()
            .iter()
            .copied()
            .find(|k| *k == key)
            .expect("tag keys are configuration keys");
        let replace = match m.get(key) {
            None => true,
            Some(r) => FROM_TAG.contains(&key) && r.vals.last().map(String::as_str) == Some("auto"),
        };
        if replace {
            let asked = m.get(key).map(|r| format!(" (auto from {})", r.source));
            m.insert(
                key,
                Raw {
                    vals: vec![v.clone()],
                    source: Source::Tag,
                    detail: Some(format!(
                        "{tag} via {}{}",
                        f.tags_from,
                        asked.unwrap_or_default()
                    )),
                },
            );
        }
    }
}

fn auto_err(key: &str, src: Source, reason: impl Into<String>) -> ConfigError {
    err(key, "auto", Some(src), reason)
}

/// Replace every `auto` with its value (or fail naming the key).
pub(super) fn resolve_auto(m: &mut Layers, f: Option<&InstanceFacts>) -> Result<(), ConfigError> {
    for k in FROM_TAG {
        if let Some(r) = m.get(k) {
            if r.vals.last().map(String::as_str) == Some("auto") {
                let tag = TAG_KEYS.iter().find(|(_, key)| *key == k).map(|(t, _)| *t);
                return Err(auto_err(
                    k,
                    r.source,
                    format!(
                        "auto means the instance's {} tag, and it has none",
                        tag.unwrap_or("?")
                    ),
                ));
            }
        }
    }
    let overlay = super::checks::check_overlay_cidr(m)?;
    let src_of = |m: &Layers, k: &str| m.get(k).map(|r| r.source).unwrap_or(Source::Default);
    let set = |m: &mut Layers, k: &str, v: String, detail: String| {
        let key = super::keys()
            .iter()
            .copied()
            .find(|x| *x == k)
            .expect("known key");
        let from = src_of(m, k);
        m.insert(
            key,
            Raw {
                vals: vec![v],
                source: Source::Imds,
                detail: Some(format!("auto from {from}: {detail}")),
            },
        );
    };
    let need = |k: &str, s: Source| -> Result<&InstanceFacts, ConfigError> {
        f.ok_or_else(|| {
            auto_err(
                k,
                s,
                "auto needs this instance's facts from IMDSv2 (not on EC2, or IMDS is off)",
            )
        })
    };
    if val(m, "underlay") == Some("auto") {
        let s = src_of(m, "underlay");
        let f = need("underlay", s)?;
        // Resolved against the kernel's links (desired.rs): the interface with this MAC.
        let mac = f.mac.clone();
        set(
            m,
            "underlay",
            "auto".into(),
            format!("the interface with MAC {mac}"),
        );
    }
    if val(m, "address") == Some("auto") {
        let s = src_of(m, "address");
        let router = matches!(val(m, "role").and_then(Role::parse), Some(Role::Router));
        let (a, how) = if router {
            (
                instance::auto_address_router(overlay),
                format!("the router takes {overlay}'s first host address"),
            )
        } else {
            let f = need("address", s)?;
            let a = instance::auto_address(f, overlay).map_err(|e| auto_err("address", s, e))?;
            (
                a,
                format!(
                    "{} in subnet {} mapped into {overlay}",
                    f.local_ipv4, f.subnet
                ),
            )
        };
        set(m, "address", a.to_string(), how);
    }
    if val(m, "gateway") == Some("auto") {
        let g = instance::auto_gateway(overlay);
        // Computed from overlay_cidr alone: it keeps the source that asked for it.
        if let Some(r) = m.get_mut("gateway") {
            r.vals = vec![g.to_string()];
            r.detail = Some(format!(
                "auto: {overlay}'s first host address (the router's by convention)"
            ));
        }
    }
    Ok(())
}
