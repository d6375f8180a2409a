//! Real captures against the tshark/tcpdump oracle: every file in
//! `../shared/pcaps/corpus/` is read with libpcap and decoded; SYNs (without
//! ACK) are counted per (src, dst, dst_port) and compared with tcpdump's
//! count in `ORACLE.tsv`. Known, explained differences are listed in
//! [`EXPLAINED`]; an unexplained mismatch, or a listed file that now
//! matches, fails the test.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::*;

type Counts = BTreeMap<(IpAddr, IpAddr, u16), u64>;

/// Files where we knowingly differ from tcpdump, with the reason.
const EXPLAINED: &[(&str, &str)] = &[
    (
        "libpcap__filter__AH-IPcomp-IPv4.pcap",
        "IPv4 AH is not walked",
    ),
    ("libpcap__filter__http_PPI.pcap", PPI),
    (
        "suricata__issue-3341-tcphdr-01__urgent11_cve_2019_12260.pcap",
        "one SYN carries FIN too: no stack opens a connection so, and we count it as a decode error (tcp_syn_fin), not an attempt",
    ),
    ("ndpi__6in4tunnel.pcap", TUNNEL),
    ("ndpi__vxlan.pcap", TUNNEL),
    ("tcpdump__geneve.pcap", TUNNEL),
    ("tcpdump__ipoib.pcap", IPOIB),
    ("zeek__erspan.pcap", TUNNEL),
    ("zeek__mixed-vlan-mpls.pcap", MPLS),
    ("zeek__tunnels__4in6.pcap", TUNNEL),
    ("zeek__tunnels__gre-sample.pcap", TUNNEL),
    ("zeek__tunnels__vxlan-encapsulated-http.pcap", TUNNEL),
];

const TUNNEL: &str = "tunnel (GRE, VXLAN, Geneve, ERSPAN, IP-in-IP): tcpdump counts the inner SYNs; we do not open tunnels";
const MPLS: &str = "MPLS label stack: out of scope, like tunnels";
const PPI: &str = "PPI (linktype 192) is an unsupported link type";
const IPOIB: &str = "IP over InfiniBand is an unsupported link type";

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/pcaps/corpus")
}

fn oracle(dir: &Path) -> BTreeMap<String, Counts> {
    let text = std::fs::read_to_string(dir.join("ORACLE.tsv")).expect("ORACLE.tsv readable");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("header").split('\t').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("ORACLE.tsv has no column {name}"))
    };
    let (file, src, dst, dport, count) = (
        col("file"),
        col("src"),
        col("dst"),
        col("dport"),
        col("syn_noack_tcpdump"),
    );
    let mut out: BTreeMap<String, Counts> = BTreeMap::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let f: Vec<&str> = line.split('\t').collect();
        let counts = out.entry(f[file].to_string()).or_default();
        let n: u64 = f[count].parse().expect("count");
        if f[src] == "-" || n == 0 {
            continue;
        }
        let key = (
            f[src].parse().expect("src address"),
            f[dst].parse().expect("dst address"),
            f[dport].parse().expect("port"),
        );
        counts.insert(key, n);
    }
    out
}

/// SYN counts and decode-outcome tallies for one capture file.
fn decode_file(path: &Path) -> (Counts, BTreeMap<&'static str, u64>) {
    let mut counts = Counts::new();
    let mut outcomes = BTreeMap::new();
    let Ok(mut cap) = pcap::Capture::from_file(path) else {
        return (counts, outcomes);
    };
    // The upper bits may carry FCS information (0x30000001): mask them.
    let linktype = LinkType(u16::try_from(cap.get_datalink().0 & 0xffff).unwrap_or(u16::MAX));
    while let Ok(packet) = cap.next_packet() {
        let label = match decode(linktype, packet.data) {
            Ok(Decoded::Control(s)) => {
                if s.control == Control::Syn {
                    *counts.entry((s.src, s.dst, s.dst_port)).or_default() += 1;
                }
                s.control.as_str()
            }
            Ok(Decoded::Skipped(skip)) => skip.as_str(),
            Err(e) => e.reason(),
        };
        *outcomes.entry(label).or_default() += 1;
    }
    (counts, outcomes)
}

fn describe(ours: &Counts, theirs: &Counts) -> String {
    let keys: BTreeSet<_> = ours.keys().chain(theirs.keys()).collect();
    let mut parts = Vec::new();
    for key in keys {
        let (a, b) = (ours.get(key).copied(), theirs.get(key).copied());
        if a != b {
            let (src, dst, port) = key;
            parts.push(format!(
                "{src}->{dst}:{port} ours {} tcpdump {}",
                a.unwrap_or(0),
                b.unwrap_or(0)
            ));
        }
    }
    if parts.len() > 4 {
        let more = parts.len() - 4;
        parts.truncate(4);
        parts.push(format!("... {more} more"));
    }
    parts.join("; ")
}

#[test]
fn corpus_matches_tcpdump_oracle() {
    let dir = corpus_dir();
    if !dir.join("ORACLE.tsv").exists() {
        eprintln!("note: {} absent, corpus test skipped", dir.display());
        return;
    }
    let oracle = oracle(&dir);
    let explained: BTreeMap<&str, &str> = EXPLAINED.iter().copied().collect();
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("corpus readable")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| name.ends_with(".pcap") || name.ends_with(".pcapng"))
        .collect();
    files.sort();
    let (mut matching, mut allowed, mut failures) = (0, 0, Vec::new());
    for name in &files {
        let (ours, outcomes) = decode_file(&dir.join(name));
        let Some(theirs) = oracle.get(name) else {
            failures.push(format!("{name}: not in ORACLE.tsv"));
            continue;
        };
        let same = &ours == theirs;
        match (same, explained.get(name.as_str())) {
            (true, None) => matching += 1,
            (false, Some(_)) => allowed += 1,
            (true, Some(reason)) => {
                failures.push(format!("{name}: listed as \"{reason}\" but now matches"))
            }
            (false, None) => failures.push(format!(
                "{name}: {} [{outcomes:?}]",
                describe(&ours, theirs)
            )),
        }
    }
    for name in explained.keys() {
        if !files.iter().any(|f| f == name) {
            failures.push(format!("{name}: listed but not in the corpus"));
        }
    }
    eprintln!(
        "corpus: {} files, {matching} match tcpdump, {allowed} explained differences",
        files.len()
    );
    assert!(failures.is_empty(), "unexplained:\n{}", failures.join("\n"));
}
