//! The first IGMP membership report a node sends for the overlay group is IGMPv2 (type 0x16):
//! a TGW ignores IGMPv3 (0x22), so force_igmp_version must be set before the VTEP joins.
//! No querier runs on the segment, so nothing but overlayd's ordering decides the version.

use overlay_tests::*;
use std::time::Duration;

#[test]
fn first_igmp_report_on_the_underlay_is_v2() {
    if !ready("first_igmp_report_on_the_underlay_is_v2") {
        return;
    }
    if which("tcpdump").is_none() {
        assert!(!in_ci(), "tcpdump missing and CI=true");
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED first_igmp_report_on_the_underlay_is_v2: tcpdump not installed"
        );
        return;
    }
    let prefix = unique_prefix("igmp");
    let node = Node::new(&prefix, 9001);
    let pcap = node.dir.join("underlay.pcap");
    let cap = tcpdump(&node.sw, "u0", "igmp", &pcap).unwrap();

    let out = node.overlayd("apply", &node.flags("host"));
    assert!(out.status.success(), "apply: {}", text(&out));

    let is_report = |t: u8| matches!(t, 0x12 | 0x16 | 0x22);
    let seen = wait_for(Duration::from_secs(5), || {
        igmp_messages(&pcap_frames(&pcap))
            .iter()
            .any(|(t, g)| is_report(*t) && *g == [239, 255, 0, 1])
    });
    drop(cap);
    let msgs = igmp_messages(&pcap_frames(&pcap));
    assert!(
        seen,
        "no IGMP report for 239.255.0.1 within 5 s; saw {msgs:x?}"
    );
    let first = msgs.iter().find(|(t, _)| is_report(*t)).expect("a report");
    assert_eq!(
        first.0, 0x16,
        "first IGMP report is type {:#04x} (0x22 = IGMPv3, ignored by a TGW), all: {msgs:x?}",
        first.0
    );
    assert_eq!(first.1, [239, 255, 0, 1]);
}
