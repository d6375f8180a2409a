//! Community ID v1 (corelight/community-id-spec): a hash of a flow's
//! 5-tuple, the same in both directions, that Zeek, Suricata and Elastic
//! also write, so a SIEM can join portwatch's lines with theirs.

use std::net::IpAddr;

use base64::Engine;
use sha1::{Digest, Sha1};

/// IANA protocol numbers with ports in the hash (TCP, UDP, SCTP).
const PORTED: [u8; 3] = [6, 17, 132];

/// The Community ID of a flow with the default seed 0.
///
/// Covers port-based transports and port-less protocols; ICMP's
/// type/code pairing is not implemented (portwatch sees only TCP). Both
/// addresses must be of the same family (a flow's always are).
pub fn community_id_v1(proto: u8, src: IpAddr, dst: IpAddr, sport: u16, dport: u16) -> String {
    community_id_v1_seeded(0, proto, src, dst, sport, dport)
}

pub fn community_id_v1_seeded(
    seed: u16,
    proto: u8,
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
) -> String {
    let ported = PORTED.contains(&proto);
    let (a, b) = (octets(src), octets(dst));
    // The smaller endpoint goes first, so both directions hash alike.
    let keep = (a.as_slice(), sport) <= (b.as_slice(), dport);
    let ((a, ap), (b, bp)) = match keep {
        true => ((a, sport), (b, dport)),
        false => ((b, dport), (a, sport)),
    };
    let mut h = Sha1::new();
    h.update(seed.to_be_bytes());
    h.update(&a);
    h.update(&b);
    h.update([proto, 0]);
    if ported {
        h.update(ap.to_be_bytes());
        h.update(bp.to_be_bytes());
    }
    let digest = h.finalize();
    format!(
        "1:{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// An address in network byte order (also the flow id's input).
pub(crate) fn octets(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v) => v.octets().to_vec(),
        IpAddr::V6(v) => v.octets().to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The published vectors (`../shared/community-id/baseline_deflt.json`)
    /// for every protocol this implementation covers: TCP, UDP, SCTP and a
    /// port-less one; ICMP rows are skipped (type/code pairing not done).
    #[test]
    fn published_vectors() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/community-id/baseline_deflt.json"
        );
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                return crate::source::skip_unless_ci("published_vectors", format!("{path}: {e}"))
            }
        };
        let rows: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
        let mut checked = 0;
        let mut tcp = 0;
        for r in &rows {
            let proto = r["proto"].as_u64().unwrap() as u8;
            if proto == 1 || proto == 58 {
                continue;
            }
            let ip = |k: &str| r[k].as_str().unwrap().parse::<IpAddr>().unwrap();
            let port = |k: &str| r[k].as_u64().unwrap_or(0) as u16;
            let got = community_id_v1(
                proto,
                ip("saddr"),
                ip("daddr"),
                port("sport"),
                port("dport"),
            );
            assert_eq!(got, r["communityid"].as_str().unwrap(), "row {r}");
            checked += 1;
            tcp += usize::from(proto == 6);
        }
        assert!(
            tcp >= 6 && checked >= 11,
            "{checked} rows checked, {tcp} TCP"
        );
    }

    #[test]
    fn same_both_ways_and_seed_matters() {
        let (a, b) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let fwd = community_id_v1(6, a, b, 40000, 4242);
        assert_eq!(fwd, community_id_v1(6, b, a, 4242, 40000));
        assert_ne!(fwd, community_id_v1_seeded(1, 6, a, b, 40000, 4242));
        assert_ne!(fwd, community_id_v1(6, a, b, 40001, 4242));
    }
}
