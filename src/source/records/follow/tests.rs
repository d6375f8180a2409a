//! Followed logs against `replay`'s readers of the same bytes: the same
//! observations and counts, written in pieces, through a rotation; the
//! header started over in a new file; lines waiting for their node.

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use jiff::tz::TimeZone;

use super::*;
use crate::observation::Observation;
use crate::source::follow::POLL_EVERY;
use crate::source::records::pfirewall::HOLD_FOR;
use crate::source::records::{NodeInfo, RecordItem};

struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Scratch {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "portwatch-followed-test-{}-{n}-{test}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn append(path: &Path, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(bytes).unwrap();
}

fn rotate(path: &Path) {
    let mut old = path.as_os_str().to_owned();
    old.push(".old");
    std::fs::rename(path, old).unwrap();
}

/// The proxy node of the multi-node site, in Berlin.
fn ctx(timezone: bool) -> RecordContext {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    RecordContext {
        nodes: vec![
            NodeInfo {
                name: "proxy".into(),
                addresses: vec![ip("192.0.2.11")],
                timezone: timezone.then(|| TimeZone::get("Europe/Berlin").unwrap()),
            },
            NodeInfo {
                name: "central".into(),
                addresses: vec![ip("192.0.2.10")],
                timezone: None,
            },
        ],
        ..RecordContext::default()
    }
}

/// A followed file and the time of its polls, each one due.
struct Follower {
    file: FollowedFile,
    now: Instant,
    ctx: RecordContext,
}

impl Follower {
    fn new(path: &Path, ctx: RecordContext) -> Follower {
        Follower {
            file: FollowedFile::new(path, StartAt::Start),
            now: Instant::now(),
            ctx,
        }
    }

    fn poll(&mut self) -> Vec<Followed> {
        self.wait(POLL_EVERY)
    }

    fn wait(&mut self, d: Duration) -> Vec<Followed> {
        self.now += d;
        let mut out = Vec::new();
        while self.file.poll(self.now, &self.ctx, &mut out) {}
        out
    }
}

fn records(f: &[Followed]) -> Vec<&Counted> {
    f.iter()
        .filter_map(|f| match f {
            Followed::Record { counted, .. } => Some(counted),
            Followed::Change(_) => None,
        })
        .collect()
}

fn observed(items: impl IntoIterator<Item = RecordItem>) -> Vec<Observation> {
    items
        .into_iter()
        .filter_map(|i| match i {
            RecordItem::Observed(o) => Some(o),
            _ => None,
        })
        .collect()
}

const HEADER: &str = "#Version: 1.5\r\n#Software: Microsoft Windows Firewall\r\n#Time Format: Local\r\n\
#Fields: date time action protocol src-ip dst-ip src-port dst-port size tcpflags tcpsyn tcpack tcpwin icmptype icmpcode info path\r\n";

const LINES: [&str; 7] = [
    "2026-01-05 10:00:00 ALLOW UDP 192.0.2.11 192.0.2.10 50005 53 0 - - - - - - - SEND",
    "2026-01-05 10:00:01 ALLOW TCP 192.0.2.11 192.0.2.10 50000 4242 0 - 0 0 0 - - - SEND",
    "2026-01-05 10:00:05 DROP TCP 192.0.2.11 192.0.2.10 50001 4432 52 S 1 0 8192 - - - SEND",
    "2026-01-05 10:00:06 DROP TCP 192.0.2.10 192.0.2.11 4432 50001 52 SA 1 0 8192 - - - RECEIVE",
    "2026-01-05 10:00:10 ALLOW TCP 198.51.100.7 192.0.2.11 50002 443 0 - 0 0 0 - - - RECEIVE",
    "2026-01-05 10:00:20 INFO-EVENTS-LOST - - - - - 0 - - - - - - 3 -",
    "2026-01-05 10:00:21 ALLOW TCP 198.51.100.7 not-an-ip 50003 4747 0 - 0 0 0 - - - RECEIVE",
];

#[test]
fn a_firewall_log_followed_in_pieces_and_rotated_gives_what_replay_reads() {
    let s = Scratch::new("like-replay");
    let log = s.0.join("pfirewall.log");
    let whole = format!("{HEADER}{}\r\n", LINES.join("\r\n"));
    let mut f = Follower::new(&log, ctx(true));
    assert_eq!(f.poll(), vec![Followed::Change(Change::Missing)]);
    // Written a few bytes at a time, the first half rotated away.
    let (first, second) = whole.split_at(whole.len() / 2);
    let mut got = Vec::new();
    for piece in first.as_bytes().chunks(37) {
        append(&log, piece);
        got.extend(f.poll());
    }
    rotate(&log);
    got.extend(f.poll());
    append(&log, second.as_bytes());
    got.extend(f.poll());
    let counted = records(&got);
    // The line the rotation cut, counted; the rest of it starts the new file.
    assert_eq!(
        counted
            .iter()
            .filter(|c| c.reason == reason::CUT_LINE)
            .count(),
        1
    );
    assert!(got.contains(&Followed::Change(Change::Rotated)));

    // The same bytes in one file, followed in one piece, and read by replay.
    let s2 = Scratch::new("like-replay-whole");
    let one = s2.0.join("pfirewall.log");
    append(&one, whole.as_bytes());
    let mut g = Follower::new(&one, ctx(true));
    let all = g.poll();
    let replay = pfirewall::read("x".into(), whole.as_bytes(), &ctx(true)).unwrap();
    let items = records(&all).into_iter().filter_map(|c| c.item.clone());
    assert_eq!(observed(items), observed(replay.items.clone()));
    let mut counts = g.file.counts().clone();
    // Replay counts the events an INFO-EVENTS-LOST line lost; following,
    // the line.
    assert_eq!(counts.remove("events_lost"), Some(1));
    let mut replay_counts = replay.counts.clone();
    assert_eq!(replay_counts.remove("events_lost"), Some(3));
    assert_eq!(counts, replay_counts);
    assert_eq!(g.file.records(), replay.records);
    assert_eq!(g.file.sensor().map(|s| &**s), Some("proxy"));
    assert!(records(&all)
        .iter()
        .all(|c| c.node.as_deref() == Some("proxy")));
}

#[test]
fn a_new_file_starts_over_with_its_own_header() {
    let s = Scratch::new("header");
    let log = s.0.join("pfirewall.log");
    let with_pid = format!("{} pid\r\n", HEADER.trim_end());
    append(&log, with_pid.as_bytes());
    append(&log, format!("{} 4711\r\n", LINES[1].trim_end()).as_bytes());
    let mut f = Follower::new(&log, ctx(true));
    let first = f.poll();
    let first = records(&first);
    assert_eq!(first.len(), 1);
    match &first[0].item {
        Some(RecordItem::Observed(o)) => assert_eq!(o.process.pid, Some(4711)),
        other => panic!("{other:?}"),
    }
    // The new file has no `#Fields:` line: Windows' own columns again.
    rotate(&log);
    append(&log, format!("{}\r\n", LINES[4]).as_bytes());
    let second = f.poll();
    assert_eq!(
        records(&second)
            .iter()
            .map(|c| c.reason)
            .collect::<Vec<_>>(),
        ["observed"]
    );
}

#[test]
fn lines_wait_for_the_line_that_names_the_node() {
    let s = Scratch::new("waiting");
    let log = s.0.join("pfirewall.log");
    append(&log, HEADER.as_bytes());
    // UDP names no node: it waits.
    append(&log, format!("{}\r\n", LINES[0]).as_bytes());
    let mut f = Follower::new(&log, ctx(true));
    assert!(records(&f.poll()).is_empty());
    append(&log, format!("{}\r\n", LINES[1]).as_bytes());
    let got = f.poll();
    let got = records(&got);
    assert_eq!(
        got.iter().map(|c| c.reason).collect::<Vec<_>>(),
        ["not_tcp", "observed"]
    );
    assert!(got.iter().all(|c| c.node.as_deref() == Some("proxy")));
    // Berlin winter time: 10:00 local is 09:00Z.
    let nine = jiff::Timestamp::from_second(1_767_603_600).unwrap();
    assert_eq!(
        got[0].item.as_ref().map(RecordItem::ts),
        Some(crate::time::Timestamp(nine.as_nanosecond() as u64))
    );
}

#[test]
fn a_log_naming_no_node_goes_out_after_waiting_and_needs_a_time_zone() {
    let s = Scratch::new("no-node");
    let log = s.0.join("pfirewall.log");
    let line =
        "2026-01-05 10:00:01 ALLOW TCP 198.51.100.1 198.51.100.2 50000 4242 0 - 0 0 0 - - - SEND";
    append(&log, format!("{HEADER}{line}\r\n").as_bytes());
    // No node, no --timezone: nothing to read its times in.
    let mut f = Follower::new(&log, ctx(true));
    assert!(records(&f.poll()).is_empty(), "waiting for its node");
    let got = f.wait(HOLD_FOR);
    let got = records(&got);
    assert_eq!(
        got.iter()
            .map(|c| (c.reason, c.node.clone()))
            .collect::<Vec<_>>(),
        [("no_time_zone", None)]
    );
    // With --timezone and --sensor: under the sensor, in that zone.
    let mut c = ctx(true);
    c.timezone = Some(("UTC".into(), TimeZone::UTC));
    c.sensor = Some("central".into());
    let mut f = Follower::new(&log, c);
    f.poll();
    let got = f.wait(HOLD_FOR);
    let got = records(&got);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].reason, "observed");
    assert_eq!(got[0].node.as_deref(), Some("central"));
}

#[test]
fn overlong_cut_and_unknown_lines_are_counted() {
    let s = Scratch::new("bad");
    let log = s.0.join("events.ndjson");
    append(&log, b"not a log\n");
    let mut f = Follower::new(&log, ctx(false));
    let got = f.poll();
    assert_eq!(
        records(&got).iter().map(|c| c.reason).collect::<Vec<_>>(),
        ["unknown_format"]
    );
    let mut long = b"{\"a\":\"".to_vec();
    long.extend(vec![b'x'; crate::source::follow::MAX_LINE]);
    long.extend(b"\"}\n{\"EventID\": 4624}\n{\"cut");
    append(&log, &long);
    let got = f.poll();
    assert_eq!(
        records(&got).iter().map(|c| c.reason).collect::<Vec<_>>(),
        ["line_too_long", "other_event"]
    );
    std::fs::write(&log, b"").unwrap();
    let got = f.poll();
    assert_eq!(
        records(&got).iter().map(|c| c.reason).collect::<Vec<_>>(),
        ["cut_line"]
    );
    assert_eq!(f.file.records(), 4);
}

#[test]
fn wfp_ndjson_followed_gives_what_replay_reads() {
    let sample = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(
        "../shared/sensors/wfp/otrf_covenant_sharpsc_query_dcerpc_smb_svcctl_wfp_only.ndjson",
    );
    let Ok(bytes) = std::fs::read(&sample) else {
        crate::source::skip_unless_ci(
            "wfp_ndjson_followed_gives_what_replay_reads",
            "../shared/sensors/wfp is missing",
        );
        return;
    };
    let ctx = RecordContext::default();
    let replay = crate::source::records::wfp::read_file(&sample, &ctx).unwrap();
    let s = Scratch::new("wfp");
    let log = s.0.join("winlogbeat.ndjson");
    let mut f = Follower::new(&log, ctx);
    let mut got = Vec::new();
    for piece in bytes.chunks(4096) {
        append(&log, piece);
        got.extend(f.poll());
    }
    let items = records(&got).into_iter().filter_map(|c| c.item.clone());
    let mut followed = observed(items);
    followed.sort_by_key(|o| o.ts);
    assert!(!followed.is_empty());
    assert_eq!(followed, observed(replay.items.clone()));
    assert_eq!(f.file.counts(), &replay.counts);
    assert_eq!(f.file.records(), replay.records);
    assert_eq!(f.file.format(), Some(RecordFormat::WfpEvents));
}

fn vpc_sample(name: &str) -> Vec<u8> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/sensors/vpcflow");
    std::fs::read(dir.join(name)).unwrap()
}

/// Observations in time order (replay sorts its items by time, stably).
fn by_time(mut o: Vec<Observation>) -> Vec<Observation> {
    o.sort_by_key(|o| o.ts);
    o
}

#[test]
fn a_vpc_flow_log_followed_in_pieces_gives_what_replay_reads() {
    use crate::source::flows::{self, vpc::JOIN_WAIT, FlowFormat, FlowItem};
    for name in [
        "awsdocs_v2_default.log",
        "awsdocs_v3_tcp_flags.log",
        "awsdocs_v3_transit_gateway.log",
        "awsdocs_v5_flow_direction.log",
        "elastic_beats_accept-reject-traffic.log",
    ] {
        let bytes = vpc_sample(name);
        let s = Scratch::new("vpc");
        let log = s.0.join(name);
        let mut f = Follower::new(&log, ctx(false));
        let mut got = Vec::new();
        for piece in bytes.chunks(41) {
            append(&log, piece);
            got.extend(f.poll());
        }
        got.extend(f.wait(JOIN_WAIT));
        assert_eq!(f.file.format(), Some(RecordFormat::VpcFlow), "{name}");
        let replay = flows::read(FlowFormat::VpcFlowLog, bytes.clone());
        let items: Vec<RecordItem> = records(&got)
            .into_iter()
            .filter_map(|c| c.item.clone())
            .collect();
        let want: Vec<Observation> = replay.observations().cloned().collect();
        // The transit gateway's records have no start: none is placed.
        assert_eq!(want.is_empty(), name.contains("transit"), "{name}");
        assert_eq!(by_time(observed(items.clone())), want, "{name}");
        assert_eq!(f.file.counts(), &replay.counts, "{name}");
        assert_eq!(f.file.records(), replay.records, "{name}");
        // The same interfaces, told from the same ends: the same coverage.
        let interfaces = f.file.interfaces().expect("a VPC flow log's interfaces");
        assert_eq!(interfaces.by_id, replay.interfaces.by_id, "{name}");
        assert_eq!(
            interfaces.by_id.is_empty(),
            name.contains("transit"),
            "{name}"
        );
        // NODATA and SKIPDATA are gaps, at the end of their interval.
        let gaps: Vec<_> = (items.iter())
            .filter_map(|i| match i {
                RecordItem::Lost { at, .. } => Some(*at),
                _ => None,
            })
            .collect();
        let want_gaps: Vec<_> = (replay.items.iter())
            .filter_map(|i| match i {
                FlowItem::Gap { to, .. } => Some(*to),
                _ => None,
            })
            .collect();
        assert_eq!(gaps, want_gaps, "{name}");
    }
}

#[test]
fn a_vpc_flow_log_waits_for_the_other_direction_and_counts_a_header_again() {
    let bytes = vpc_sample("awsdocs_v3_tcp_flags.log");
    let text = String::from_utf8(bytes).unwrap();
    let header = text.lines().next().unwrap();
    let lines: Vec<&str> = text.lines().skip(1).collect();
    let s = Scratch::new("vpc-again");
    let log = s.0.join("vpc.log");
    // The SYN's record, then (within the wait) the SYN-ACK's: one
    // connection, established.
    append(&log, format!("{header}\n{}\n", lines[0]).as_bytes());
    let mut f = Follower::new(&log, ctx(false));
    let first = f.poll();
    assert!(records(&first).iter().all(|c| c.item.is_none()));
    append(&log, format!("{header}\n{}\n", lines[1]).as_bytes());
    let mut got = f.poll();
    got.extend(f.wait(crate::source::flows::vpc::JOIN_WAIT));
    let counted = records(&got);
    let reasons: Vec<&str> = counted.iter().map(|c| c.reason).collect();
    assert_eq!(reasons, ["header_again", "tcp", "observed"]);
    match &counted[2].item {
        Some(RecordItem::Observed(o)) => {
            assert_eq!(o.outcome(), Some(crate::observation::Outcome::Established));
            assert_eq!(o.key.server_port, 5001);
        }
        other => panic!("{other:?}"),
    }
    // A header and a connection are counted, not records: the two lines are.
    assert_eq!(f.file.records(), 2);
}

/// A record's end, and an end not used (counted beside the record, not as
/// one), are followed as replay reads them.
#[test]
fn a_vpc_records_end_is_followed_as_replay_reads_it() {
    use crate::source::flows::{self, vpc::JOIN_WAIT, FlowFormat};
    let text = "version srcaddr dstaddr srcport dstport protocol start end action log-status\n\
                2 10.0.0.1 10.0.0.2 40000 443 6 100 99 ACCEPT OK\n\
                2 10.0.0.1 10.0.0.2 40003 443 6 100 760 ACCEPT OK\n";
    let s = Scratch::new("vpc-end");
    let log = s.0.join("vpc.log");
    append(&log, text.as_bytes());
    let mut f = Follower::new(&log, ctx(false));
    let mut got = f.poll();
    got.extend(f.wait(JOIN_WAIT));
    let replay = flows::read(FlowFormat::VpcFlowLog, text.as_bytes().to_vec());
    assert_eq!(replay.counts["time_implausible"], 1);
    assert_eq!(f.file.counts(), &replay.counts);
    assert_eq!(f.file.records(), 2);
    let items = records(&got).into_iter().filter_map(|c| c.item.clone());
    let want: Vec<Observation> = replay.observations().cloned().collect();
    assert_eq!(by_time(observed(items)), want);
    assert!(want.iter().any(|o| o.end > Some(o.ts)));
}
