//! Robustness on captures no one here wrote: every file of
//! `../shared/pcaps/corpus/` (relative to the crate root; never copied into
//! the repository) is replayed by the real binary, which must exit 0–3
//! without a panic; and SYN-without-ACK counts per (src, dst, dst port),
//! taken with our own file reader and decoder, are compared with the
//! tshark/tcpdump oracle `ORACLE.tsv`.
//!
//! Which oracle column: tcpdump's (`syn_noack_tcpdump`), except where
//! libpcap 1.10 read fewer packets than tshark (`packets_libpcap` <
//! `packets_tshark`: multi-interface pcapng whose interfaces differ; we read
//! those fully, as tshark does), where tshark's count is the reference.
//! Every remaining difference is listed in [`EXPLAINED`] with its reason,
//! unsupported link types included: this is the one oracle test (the
//! decoder's unit tests do not repeat it with a list of their own).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use portwatch::decode::{decode, Control, DecodeError, Decoded};
use portwatch::source::file::FileSource;

type Counts = BTreeMap<(IpAddr, IpAddr, u16), u64>;

const AH: &str = "IPv4 AH is not walked to the TCP header";
const PPI: &str = "PPI (linktype 192) is an unsupported link type";
const IPOIB: &str = "IP over InfiniBand is an unsupported link type";

/// Files where our count knowingly differs from the oracle, and why.
/// (Tunnelled captures, GRE, VXLAN, GENEVE, ERSPAN, IP-in-IP, 6in4, 4in6 and
/// MPLS, match exactly since the decoder opens them: the oracle counts the
/// inner SYNs too.)
const EXPLAINED: &[(&str, &str)] = &[
    ("libpcap__filter__AH-IPcomp-IPv4.pcap", AH),
    ("libpcap__filter__http_PPI.pcap", PPI),
    (
        "suricata__issue-3341-tcphdr-01__urgent11_cve_2019_12260.pcap",
        "one SYN also carries FIN: counted as a decode error (tcp_syn_fin), never an attempt",
    ),
    ("tcpdump__ipoib.pcap", IPOIB),
];

fn corpus_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/pcaps/corpus");
    assert!(
        dir.join("ORACLE.tsv").is_file(),
        "{} is absent: run the tests from a checkout beside shared/ \
         (CI has it; the corpus is never copied into the repository)",
        dir.display()
    );
    dir
}

fn corpus_files(dir: &Path) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .expect("corpus readable")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with(".pcap") || n.ends_with(".pcapng"))
        .collect();
    files.sort();
    files
}

#[test]
fn corpus_replay_exits_cleanly() {
    let dir = corpus_dir();
    let files = corpus_files(&dir);
    assert!(files.len() > 100, "corpus has {} files", files.len());
    let chunks: Vec<&[String]> = files.chunks(files.len().div_ceil(4)).collect();
    let failures: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = chunks
            .iter()
            .map(|chunk| {
                let dir = &dir;
                s.spawn(move || {
                    let mut bad = Vec::new();
                    for name in chunk.iter() {
                        let out = Command::new(env!("CARGO_BIN_EXE_portwatch"))
                            .args(["replay", "--site", "multi-node", "--format", "json"])
                            .arg(dir.join(name))
                            .output()
                            .expect("portwatch runs");
                        let stderr = String::from_utf8_lossy(&out.stderr);
                        match out.status.code() {
                            Some(0..=3) if !stderr.contains("panicked") => {}
                            code => bad.push(format!("{name}: exit {code:?}: {stderr}")),
                        }
                        // A report comes out whenever the file opened.
                        if matches!(out.status.code(), Some(0 | 1 | 3)) {
                            if let Err(e) = serde_json::from_slice::<serde_json::Value>(&out.stdout)
                            {
                                bad.push(format!("{name}: report is not JSON: {e}"));
                            }
                        }
                    }
                    bad
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("thread"))
            .collect()
    });
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

struct Oracle {
    tshark: Counts,
    tcpdump: Counts,
    libpcap_stopped_early: bool,
}

fn oracle(dir: &Path) -> BTreeMap<String, Oracle> {
    let text = std::fs::read_to_string(dir.join("ORACLE.tsv")).expect("ORACLE.tsv");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("header").split('\t').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("ORACLE.tsv has no column {name}"))
    };
    let c = [
        col("file"),
        col("packets_tshark"),
        col("packets_libpcap"),
        col("src"),
        col("dst"),
        col("dport"),
        col("syn_noack_tshark"),
        col("syn_noack_tcpdump"),
    ];
    let mut out: BTreeMap<String, Oracle> = BTreeMap::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let f: Vec<&str> = line.split('\t').collect();
        let tshark_packets: u64 = f[c[1]].parse().unwrap_or(0);
        let early = matches!(f[c[2]].parse::<u64>(), Ok(n) if n < tshark_packets);
        let o = out.entry(f[c[0]].to_string()).or_insert(Oracle {
            tshark: Counts::new(),
            tcpdump: Counts::new(),
            libpcap_stopped_early: early,
        });
        if f[c[3]] == "-" {
            continue;
        }
        let key = (
            f[c[3]].parse().expect("src"),
            f[c[4]].parse().expect("dst"),
            f[c[5]].parse().expect("dport"),
        );
        for (counts, col) in [(&mut o.tshark, c[6]), (&mut o.tcpdump, c[7])] {
            let n: u64 = f[col].parse().expect("count");
            if n > 0 {
                counts.insert(key, n);
            }
        }
    }
    out
}

/// SYN-without-ACK counts read with our reader and decoder, and whether a
/// frame had a link type we do not decode.
fn ours(path: &Path) -> (Counts, bool) {
    let mut counts = Counts::new();
    let mut unsupported = false;
    let Ok(mut file) = FileSource::open(path) else {
        return (counts, false);
    };
    while let Some(frame) = file.next_frame() {
        match decode(frame.linktype, frame.data) {
            Ok(Decoded::Control(s)) if s.control == Control::Syn => {
                *counts.entry((s.src, s.dst, s.dst_port)).or_default() += 1;
            }
            Err(DecodeError::UnsupportedLinkType { .. }) => unsupported = true,
            _ => {}
        }
    }
    (counts, unsupported)
}

fn describe(ours: &Counts, theirs: &Counts) -> String {
    let keys: BTreeSet<_> = ours.keys().chain(theirs.keys()).collect();
    let mut parts: Vec<String> = keys
        .into_iter()
        .filter(|k| ours.get(k) != theirs.get(k))
        .map(|(s, d, p)| {
            let k = (*s, *d, *p);
            format!(
                "{s}->{d}:{p} ours {} oracle {}",
                ours.get(&k).unwrap_or(&0),
                theirs.get(&k).unwrap_or(&0)
            )
        })
        .collect();
    if parts.len() > 4 {
        let more = parts.len() - 4;
        parts.truncate(4);
        parts.push(format!("... {more} more"));
    }
    parts.join("; ")
}

#[test]
fn corpus_syn_counts_match_oracle() {
    let dir = corpus_dir();
    let oracle = oracle(&dir);
    let explained: BTreeMap<&str, &str> = EXPLAINED.iter().copied().collect();
    let files = corpus_files(&dir);
    let (mut matching, mut allowed, mut unsupported_files) = (0, 0, Vec::new());
    let mut failures = Vec::new();
    for name in &files {
        let Some(o) = oracle.get(name) else {
            failures.push(format!("{name}: not in ORACLE.tsv"));
            continue;
        };
        let (counts, unsupported) = ours(&dir.join(name));
        if unsupported {
            unsupported_files.push(name.as_str());
        }
        let theirs = if o.libpcap_stopped_early {
            &o.tshark
        } else {
            &o.tcpdump
        };
        match (&counts == theirs, explained.get(name.as_str())) {
            (true, None) => matching += 1,
            (false, Some(_)) => allowed += 1,
            (true, Some(reason)) => {
                failures.push(format!("{name}: listed as \"{reason}\" but now matches"))
            }
            (false, None) => failures.push(format!("{name}: {}", describe(&counts, theirs))),
        }
    }
    for name in explained.keys() {
        if !files.iter().any(|f| f == name) {
            failures.push(format!("{name}: listed but not in the corpus"));
        }
    }
    eprintln!(
        "corpus: {} files, {matching} match, {allowed} explained differences, \
         frames of an unsupported link type in: {unsupported_files:?}",
        files.len()
    );
    assert!(failures.is_empty(), "unexplained:\n{}", failures.join("\n"));
}
