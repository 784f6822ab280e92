//! Standalone's bridge port: a dummy link, or a veth pair where the kernel has no dummy.

use super::{nl_err, set_owner, set_up, Nl, R};
use crate::model::*;
use rtnetlink::{LinkDummy, LinkVeth};

/// A dummy port; where the kernel has no dummy driver (EOPNOTSUPP), a veth pair whose
/// peer stays outside the bridge.
pub async fn create_dummy(
    h: &Nl,
    name: &str,
    peer: &str,
    mtu: u32,
    master: &str,
) -> R<&'static str> {
    let br = h.index(master).await?;
    let msg = LinkDummy::new(name)
        .mtu(mtu)
        .controller(br)
        .link_group(OWNER_GROUP)
        .up()
        .build();
    let kind = match h.link().add(msg).execute().await {
        Ok(()) => "dummy",
        Err(e) => {
            let e = nl_err(format!("create dummy {name}"), e);
            if e.errno != Some(libc::EOPNOTSUPP) {
                return Err(e);
            }
            let msg = LinkVeth::new(name, peer)
                .mtu(mtu)
                .controller(br)
                .link_group(OWNER_GROUP)
                .up()
                .build();
            h.link()
                .add(msg)
                .execute()
                .await
                .map_err(|e| nl_err(format!("create veth {name} (dummy fallback)"), e))?;
            set_owner(h, peer).await?;
            set_up(h, peer).await?;
            "veth"
        }
    };
    Ok(kind)
}
