//! Every capture of `../shared/sensors/tunnels/` (relative to the crate
//! root; never copied into the repository) against tshark: the frames per
//! encapsulation equal tshark's protocol hierarchy (`tshark -q -z io,phs`),
//! and the inner SYNs and SYN-ACKs found, by 4-tuple, equal tshark's
//! (`-Y tcp.flags.syn==1`, the innermost IP and TCP fields). The report of
//! `replay` says the same counts.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use portwatch::decode::{decode_frame, Control, ControlOnly, Decap, Decoded, EncapKind};
use portwatch::source::file::FileSource;

use crate::util::tshark;

/// Where our count knowingly differs from tshark's, and why.
const EXPLAINED: &[(&str, &str)] = &[(
    "akvorado_sflow_data-encap-vxlan.pcap",
    "the VXLAN is inside an sFlow sample (UDP 6343), a truncated copy of a packet, not a mirror stream: not opened",
)];

fn tunnels_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/sensors/tunnels");
    if dir.is_dir() {
        return Some(dir);
    }
    crate::util::skip("tunnels", &format!("{} is missing", dir.display()));
    None
}

fn captures(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("readable")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "pcap" || e == "pcapng"))
        .collect();
    v.sort();
    v
}

/// Frames per protocol in tshark's hierarchy (a protocol met at several
/// places of the tree, or twice in one frame, is summed, as we count).
fn hierarchy(file: &Path) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for line in tshark(file, &["-q", "-z", "io,phs"]).lines() {
        let mut words = line.split_whitespace();
        let (Some(proto), Some(frames)) = (words.next(), words.next()) else {
            continue;
        };
        if let Some(n) = frames.strip_prefix("frames:") {
            *m.entry(proto.to_string()).or_default() += n.parse::<u64>().expect("count");
        }
    }
    m
}

/// tshark's names for what our kinds count: `gre` is every GRE header
/// (ERSPAN and bridging included), `erspan` the ERSPAN ones.
fn theirs_by_name(h: &BTreeMap<String, u64>) -> BTreeMap<&'static str, u64> {
    ["vxlan", "geneve", "gre", "erspan", "mpls"]
        .into_iter()
        .map(|n| (n, h.get(n).copied().unwrap_or(0)))
        .collect()
}

fn ours_by_name(counts: &BTreeMap<EncapKind, u64>) -> BTreeMap<&'static str, u64> {
    use EncapKind::*;
    let n = |ks: &[EncapKind]| ks.iter().map(|k| counts.get(k).copied().unwrap_or(0)).sum();
    let erspan = [ErspanI, ErspanII, ErspanIII];
    BTreeMap::from([
        ("vxlan", n(&[Vxlan])),
        ("geneve", n(&[Geneve])),
        (
            "gre",
            n(&[Gre, GreTeb, GreInUdp, ErspanI, ErspanII, ErspanIII]),
        ),
        ("erspan", n(&erspan)),
        ("mpls", n(&[Mpls])),
    ])
}

type Handshakes = BTreeMap<(IpAddr, IpAddr, u16, u16, bool), u64>;

/// SYNs and SYN-ACKs by innermost (src, dst, sport, dport, ack).
fn their_handshakes(file: &Path) -> Handshakes {
    let text = tshark(
        file,
        &[
            "-Y",
            "tcp.flags.syn==1",
            "-T",
            "fields",
            "-E",
            "occurrence=l",
            "-e",
            "ip.src",
            "-e",
            "ip.dst",
            "-e",
            "ipv6.src",
            "-e",
            "ipv6.dst",
            "-e",
            "tcp.srcport",
            "-e",
            "tcp.dstport",
            "-e",
            "tcp.flags.ack",
        ],
    );
    let mut m = Handshakes::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        // The innermost header is IPv6 when an IPv6 address is there
        // (tshark gives the last of each field; IPv4 inside IPv6 is rare
        // enough not to be in these files).
        let (src, dst) = match f[2].is_empty() {
            true => (f[0], f[1]),
            false => (f[2], f[3]),
        };
        let key = (
            src.parse().expect("src"),
            dst.parse().expect("dst"),
            f[4].parse().expect("sport"),
            f[5].parse().expect("dport"),
            matches!(f[6], "1" | "True"),
        );
        *m.entry(key).or_default() += 1;
    }
    m
}

/// The same from our reader and decoder, and the frames per encapsulation.
fn ours(file: &Path) -> (Handshakes, BTreeMap<EncapKind, u64>) {
    let mut hs = Handshakes::new();
    let mut kinds = BTreeMap::new();
    let mut src = FileSource::open(file).expect("opens");
    while let Some(frame) = src.next_frame() {
        let (r, encaps) = decode_frame(frame.linktype, frame.data, &ControlOnly, &Decap::STANDARD);
        for e in encaps.iter() {
            *kinds.entry(e.kind).or_default() += 1;
        }
        if let Ok(Decoded::Control(s)) = r {
            if matches!(s.control, Control::Syn | Control::SynAck) {
                let key = (s.src, s.dst, s.src_port, s.dst_port, s.has_ack());
                *hs.entry(key).or_default() += 1;
            }
        }
    }
    (hs, kinds)
}

#[test]
fn tunnel_captures_match_tshark() {
    let Some(dir) = tunnels_dir() else { return };
    if !crate::prereq::needs("tunnel_captures_match_tshark", false, &["tshark"]) {
        return;
    }
    let files = captures(&dir);
    assert!(files.len() >= 12, "{} captures", files.len());
    let mut bad = Vec::new();
    let mut opened = 0;
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        let (hs, kinds) = ours(file);
        let (theirs, mine) = (theirs_by_name(&hierarchy(file)), ours_by_name(&kinds));
        let same = theirs == mine && their_handshakes(file) == hs;
        opened += kinds.values().sum::<u64>();
        match (same, EXPLAINED.iter().find(|(f, _)| *f == name)) {
            (true, None) | (false, Some(_)) => {}
            (true, Some((_, why))) => bad.push(format!("{name}: listed as {why:?} but matches")),
            (false, None) => bad.push(format!(
                "{name}: encapsulations ours {mine:?} tshark {theirs:?}; handshakes ours {hs:?} tshark {:?}",
                their_handshakes(file)
            )),
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    assert!(opened > 300, "only {opened} encapsulated frames opened");
}

/// The report of `replay` on one of them: the capture section names the
/// encapsulation and its sessions, the inner connection is judged.
#[test]
fn replay_report_names_encapsulations_and_sessions() {
    let Some(dir) = tunnels_dir() else { return };
    let out = Command::new(env!("CARGO_BIN_EXE_portwatch"))
        .args(["replay", "--site", "multi-node", "--format", "json"])
        .arg(dir.join("zeek_erspanII.pcap"))
        .arg(dir.join("zeek_vxlan-encapsulated-http.pcap"))
        .output()
        .expect("runs");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let c = &report["capture"];
    assert_eq!(c["encapsulations"]["erspan_ii"], 4, "{c}");
    assert_eq!(c["encapsulations"]["vxlan"], 12, "{c}");
    let sessions = c["mirror_sessions"].as_array().expect("sessions");
    assert!(
        sessions
            .iter()
            .any(|s| s["kind"] == "erspan_ii" && s["frames"] == 4),
        "{sessions:?}"
    );
    // The inner HTTP connection, between addresses the site does not know.
    assert_eq!(
        report["summary"]["connections"]["unknown_host"], 1,
        "{report}"
    );
    assert_eq!(c["control_packets"]["syn"], 1);
}
