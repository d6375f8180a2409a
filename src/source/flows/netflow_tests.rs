//! The samples of `../shared/sensors/netflow/` (record counts of its
//! SOURCE.md, a hand-checked record), what records prove, bad input, and
//! arbitrary bytes.

use std::net::IpAddr;
use std::path::PathBuf;

use proptest::prelude::*;

use super::*;

const EXPORTER: &str = "192.0.2.100";

fn exporter() -> IpAddr {
    EXPORTER.parse().unwrap()
}

fn t(secs: u64) -> Timestamp {
    Timestamp::from_secs_nanos(secs, 0)
}

/// The UDP payload of the single packet of a sample (classic pcap,
/// Ethernet, IPv4 without options).
fn sample(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/sensors/netflow")
        .join(name);
    let b = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    const PCAP_HEADER: usize = 24;
    const RECORD_HEADER: usize = 16;
    let frame = &b[PCAP_HEADER + RECORD_HEADER..];
    assert_eq!(&frame[12..14], &[0x08, 0x00], "{name}: IPv4");
    assert_eq!(frame[14] & 0x0f, 5, "{name}: no IP options");
    assert_eq!(frame[23], 17, "{name}: UDP");
    frame[42..].to_vec()
}

fn feed(c: &mut Collector, now: u64, b: &[u8]) -> Vec<FlowItem> {
    let mut out = Vec::new();
    c.packet(exporter(), t(now), b, &mut out);
    out
}

fn fin(c: &mut Collector) -> Vec<FlowItem> {
    let mut out = Vec::new();
    c.finish(&mut out);
    out
}

fn count(c: &Collector, reason: &str) -> u64 {
    c.counts.get(reason).copied().unwrap_or(0)
}

#[test]
fn v5_sample_has_its_29_records_none_of_which_opens_a_connection() {
    let b = sample("akvorado_nfv5.pcap");
    assert_eq!(Version::detect(&b), Some(Version::V5));
    let mut c = Collector::new();
    let mut items = feed(&mut c, 1_000, &b);
    items.extend(fin(&mut c));
    assert_eq!(c.records, 29, "SOURCE.md: count 29");
    // tshark: 7 UDP records, 22 TCP records all with ACK and no SYN
    // (connections open before the capture).
    assert_eq!(count(&c, "not_tcp"), 7, "{:?}", c.counts);
    assert_eq!(count(&c, "no_syn"), 22, "{:?}", c.counts);
    assert!(items.is_empty(), "{items:?}");
}

#[test]
fn v5_hand_checked_record_with_its_flags_made_a_lone_syn_is_unanswered() {
    let mut b = sample("akvorado_nfv5.pcap");
    // Record 0: 161.202.212.212:30104 -> 202.152.70.24:11963, TCP, flags
    // 0x18 (tshark); made a SYN alone.
    let flags_at = V5_HEADER + 37;
    assert_eq!(b[flags_at], 0x18);
    b[flags_at] = 0x02;
    let mut c = Collector::new();
    let mut items = feed(&mut c, 1_000, &b);
    items.extend(fin(&mut c));
    let o: Vec<&Observation> = observed(&items).collect();
    assert_eq!(o.len(), 1, "{items:?}");
    let o = o[0];
    assert_eq!(o.key.client, "161.202.212.212".parse::<IpAddr>().unwrap());
    assert_eq!(o.key.client_port, 30104);
    assert_eq!(o.key.server, "202.152.70.24".parse::<IpAddr>().unwrap());
    assert_eq!(o.key.server_port, 11963);
    assert_eq!(o.outcome(), Some(Outcome::Unanswered));
    assert_eq!(o.initiator, Initiator::Syn);
    assert_eq!(o.source, SourceKind::FlowExport);
    // Start = export time - (uptime - first): header and record read by
    // hand from the bytes.
    let up = u64::from(be32(&b, 4).unwrap());
    let secs = u64::from(be32(&b, 8).unwrap());
    let nanos = u64::from(be32(&b, 12).unwrap());
    let first = u64::from(be32(&b, V5_HEADER + 24).unwrap());
    let ms = secs * 1000 + nanos / 1_000_000 - (up - first);
    assert_eq!(o.ts.as_nanos(), ms * 1_000_000);
}

#[test]
fn v9_samples_template_then_data_and_options() {
    let mut c = Collector::new();
    let template = sample("akvorado_template.pcap");
    let data = sample("akvorado_data.pcap");
    assert_eq!(Version::detect(&template), Some(Version::V9));
    let mut items = feed(&mut c, 1_000, &template);
    assert_eq!(c.records, 0);
    items.extend(feed(&mut c, 1_001, &data));
    assert_eq!(c.records, 4, "SOURCE.md: FlowSet 260 with 4 records");
    // The two packets are 16 apart in sequence (44796985, 44797001): 15
    // export packets lost between them, a gap.
    assert_eq!(c.lost[&Some(exporter())].packets, 15);
    assert!(items.iter().any(|i| matches!(i, FlowItem::Gap { .. })));
    let before = c.records;
    feed(&mut c, 1_002, &sample("akvorado_options-template.pcap"));
    feed(&mut c, 1_003, &sample("akvorado_options-data.pcap"));
    assert_eq!(c.records - before, 4, "options data: 4 records");
    assert_eq!(count(&c, "options_record"), 4);
    items.extend(fin(&mut c));
    assert_eq!(count(&c, "no_template"), 0);
}

#[test]
fn v9_hand_checked_record_of_the_data_sample() {
    let mut c = Collector::new();
    feed(&mut c, 1_000, &sample("akvorado_template.pcap"));
    let data = sample("akvorado_data.pcap");
    // Template 260: the first record's fields at their offsets (4 PKTS, 4
    // BYTES, 4 src, 4 dst, 4+4 SNMP, 4 LAST, 4 FIRST, 2+2 ports, 4+4 AS,
    // 4 next hop, 1+1 masks, 1 protocol, 1 flags, ...).
    let rec = V9_HEADER + SET_HEADER;
    let src = IpAddr::from(<[u8; 4]>::try_from(&data[rec + 8..rec + 12]).unwrap());
    let sp = be16(&data, rec + 32).unwrap();
    let dp = be16(&data, rec + 34).unwrap();
    let proto = data[rec + 50];
    let flags = data[rec + 51];
    let mut raw = Raw::default();
    let (_, t260) = c.domains.values().next().unwrap().templates[&260].clone();
    t260.record(&data[rec..], &mut raw).unwrap();
    assert_eq!(raw.src, Some(src));
    assert_eq!((raw.src_port, raw.dst_port), (Some(sp), Some(dp)));
    assert_eq!(raw.protocol, Some(proto));
    assert_eq!(raw.flags, Some(u16::from(flags)));
    let mut items = feed(&mut c, 1_001, &data);
    items.extend(fin(&mut c));
    let syn = u8::try_from(SYN).unwrap();
    let expect = if proto != TCP {
        "not_tcp"
    } else if flags & syn == 0 {
        "no_syn"
    } else {
        "observed"
    };
    assert!(count(&c, expect) >= 1, "{:?}", c.counts);
}

/// An IPFIX message builder.
struct Ipfix {
    seq: u32,
    domain: u32,
    sets: Vec<u8>,
}

/// Template 300: src, dst, sport, dport, proto, flags, start ms, end reason.
const SPEC: [(u16, u16); 8] = [
    (ie::SRC_V4, 4),
    (ie::DST_V4, 4),
    (ie::SRC_PORT, 2),
    (ie::DST_PORT, 2),
    (ie::PROTOCOL, 1),
    (ie::TCP_FLAGS, 1),
    (ie::START_MILLISECONDS, 8),
    (ie::END_REASON, 1),
];

impl Ipfix {
    fn new(seq: u32) -> Ipfix {
        Ipfix {
            seq,
            domain: 1,
            sets: Vec::new(),
        }
    }

    fn set(mut self, id: u16, body: &[u8]) -> Ipfix {
        self.sets.extend_from_slice(&id.to_be_bytes());
        self.sets
            .extend_from_slice(&u16::try_from(body.len() + 4).unwrap().to_be_bytes());
        self.sets.extend_from_slice(body);
        self
    }

    fn template(self, id: u16, fields: &[(u16, u16)]) -> Ipfix {
        let mut b = Vec::new();
        b.extend_from_slice(&id.to_be_bytes());
        b.extend_from_slice(&u16::try_from(fields.len()).unwrap().to_be_bytes());
        for (f, l) in fields {
            b.extend_from_slice(&f.to_be_bytes());
            b.extend_from_slice(&l.to_be_bytes());
        }
        self.set(2, &b)
    }

    fn bytes(&self) -> Vec<u8> {
        let mut b = vec![0, 10];
        b.extend_from_slice(&u16::try_from(16 + self.sets.len()).unwrap().to_be_bytes());
        b.extend_from_slice(&1_700_000_000u32.to_be_bytes());
        b.extend_from_slice(&self.seq.to_be_bytes());
        b.extend_from_slice(&self.domain.to_be_bytes());
        b.extend_from_slice(&self.sets);
        b
    }
}

fn rec(src: &str, sp: u16, dst: &str, dp: u16, flags: u8, start_ms: u64) -> Vec<u8> {
    let a = |s: &str| match s.parse::<IpAddr>().unwrap() {
        IpAddr::V4(a) => a.octets(),
        IpAddr::V6(_) => unreachable!(),
    };
    let mut b = Vec::new();
    b.extend_from_slice(&a(src));
    b.extend_from_slice(&a(dst));
    b.extend_from_slice(&sp.to_be_bytes());
    b.extend_from_slice(&dp.to_be_bytes());
    b.push(TCP);
    b.push(flags);
    b.extend_from_slice(&start_ms.to_be_bytes());
    b.push(3);
    b
}

const C: &str = "10.0.0.1";
const S: &str = "10.0.0.2";
const START: u64 = 1_700_000_000_000;

fn one(c: &mut Collector, m: &Ipfix) -> Vec<Observation> {
    let mut items = feed(c, 1_700_000_001, &m.bytes());
    items.extend(fin(c));
    observed(&items).cloned().collect()
}

#[test]
fn ipfix_directions_joined_give_each_outcome() {
    let cases: [(&str, Vec<Vec<u8>>, Outcome, Initiator); 5] = [
        (
            "SYN-ACK back: established",
            vec![
                rec(C, 40000, S, 443, 0x1b, START),
                rec(S, 443, C, 40000, 0x1b, START),
            ],
            Outcome::Established,
            Initiator::Inferred,
        ),
        (
            "RST back: refused",
            vec![
                rec(C, 40000, S, 443, 0x02, START),
                rec(S, 443, C, 40000, 0x14, START),
            ],
            Outcome::Refused,
            Initiator::Syn,
        ),
        (
            "the reply first, then the SYN: refused all the same",
            vec![
                rec(S, 443, C, 40000, 0x14, START),
                rec(C, 40000, S, 443, 0x02, START),
            ],
            Outcome::Refused,
            Initiator::Syn,
        ),
        (
            "SYN alone, nothing back: unanswered",
            vec![rec(C, 40000, S, 443, 0x02, START)],
            Outcome::Unanswered,
            Initiator::Syn,
        ),
        (
            "a SYN to a high port from a low one: the SYN says who began",
            vec![
                rec(S, 22, C, 40000, 0x02, START),
                rec(C, 40000, S, 22, 0x12, START),
            ],
            Outcome::Established,
            Initiator::Syn,
        ),
    ];
    for (what, recs, outcome, how) in cases {
        let mut c = Collector::new();
        let mut m = Ipfix::new(0).template(300, &SPEC);
        for r in &recs {
            m = m.set(300, r);
        }
        let o = one(&mut c, &m);
        assert_eq!(o.len(), 1, "{what}: {o:?}");
        assert_eq!(o[0].outcome(), Some(outcome), "{what}");
        assert_eq!(o[0].initiator, how, "{what}");
        let client = if what.starts_with("a SYN to a high") {
            S
        } else {
            C
        };
        assert_eq!(o[0].key.client, client.parse::<IpAddr>().unwrap(), "{what}");
        assert_eq!(o[0].ts.as_nanos(), START * 1_000_000, "{what}");
        assert_eq!(count(&c, "observed"), recs.len() as u64, "{what}");
    }
}

#[test]
fn ipfix_biflow_reverse_flags_and_forced_end() {
    let mut spec = SPEC.to_vec();
    let mut m = Ipfix::new(0);
    // Reverse tcpControlBits: enterprise bit and 29305.
    let mut b = Vec::new();
    b.extend_from_slice(&301u16.to_be_bytes());
    b.extend_from_slice(&u16::try_from(spec.len() + 1).unwrap().to_be_bytes());
    for (f, l) in spec.drain(..) {
        b.extend_from_slice(&f.to_be_bytes());
        b.extend_from_slice(&l.to_be_bytes());
    }
    b.extend_from_slice(&(0x8000u16 | ie::TCP_FLAGS).to_be_bytes());
    b.extend_from_slice(&1u16.to_be_bytes());
    b.extend_from_slice(&REVERSE_PEN.to_be_bytes());
    m = m.set(2, &b);
    let mut established = rec(C, 40000, S, 443, 0x1b, START);
    established.push(0x1b);
    let mut lone = rec(C, 40001, S, 443, 0x02, START);
    lone.push(0);
    let mut forced = rec(C, 40002, S, 443, 0x02, START);
    *forced.last_mut().unwrap() = END_FORCED;
    forced.push(0);
    let m = m.set(301, &[established, lone, forced].concat());
    let mut c = Collector::new();
    let o = one(&mut c, &m);
    let got: Vec<(u16, Outcome, Initiator)> = o
        .iter()
        .map(|o| (o.key.client_port, o.outcome().unwrap(), o.initiator))
        .collect();
    assert_eq!(
        got,
        vec![
            (40000, Outcome::Established, Initiator::Logged),
            (40001, Outcome::Unanswered, Initiator::Logged),
            (40002, Outcome::Unknown, Initiator::Logged),
        ]
    );
}

#[test]
fn data_before_template_is_held_then_decoded_or_dropped() {
    let mut c = Collector::new();
    let data = Ipfix::new(0).set(300, &rec(C, 40000, S, 443, 0x02, START));
    let items = feed(&mut c, 100, &data.bytes());
    assert!(items.is_empty());
    assert_eq!(count(&c, "held_for_template"), 1);
    let items = feed(&mut c, 101, &Ipfix::new(0).template(300, &SPEC).bytes());
    assert_eq!(count(&c, "held_decoded"), 1);
    let mut items = items;
    items.extend(fin(&mut c));
    assert_eq!(observed(&items).count(), 1);

    let mut c = Collector::new();
    feed(&mut c, 100, &data.bytes());
    let late = 100 + HOLD_FOR.as_secs();
    feed(&mut c, late, &Ipfix::new(0).template(300, &SPEC).bytes());
    assert_eq!(count(&c, "no_template"), 1, "{:?}", c.counts);
    assert_eq!(count(&c, "held_decoded"), 0);
}

#[test]
fn bad_input_is_counted_by_reason() {
    // Truncated set: its length runs past the message.
    let mut c = Collector::new();
    let mut b = Ipfix::new(0).template(300, &SPEC).bytes();
    b.extend_from_slice(&[1, 44, 0, 200, 1, 2, 3]);
    let len = u16::try_from(b.len()).unwrap();
    b[2..4].copy_from_slice(&len.to_be_bytes());
    feed(&mut c, 1, &b);
    assert_eq!(count(&c, "truncated_set"), 1, "{:?}", c.counts);

    // A template that changes mid-stream: later records read the new way.
    let mut c = Collector::new();
    feed(&mut c, 1, &Ipfix::new(0).template(300, &SPEC).bytes());
    let swapped = [
        (ie::DST_V4, 4),
        (ie::SRC_V4, 4),
        (ie::DST_PORT, 2),
        (ie::SRC_PORT, 2),
        (ie::PROTOCOL, 1),
        (ie::TCP_FLAGS, 1),
        (ie::START_MILLISECONDS, 8),
        (ie::END_REASON, 1),
    ];
    let m = Ipfix::new(0)
        .template(300, &swapped)
        .set(300, &rec(S, 443, C, 40000, 0x02, START));
    let o = one(&mut c, &m);
    assert_eq!(count(&c, "template_changed"), 1);
    assert_eq!(o[0].key.client, C.parse::<IpAddr>().unwrap());

    // A zero-length field is read as absent; a template of only those is
    // refused.
    let mut c = Collector::new();
    let mut zero = SPEC.to_vec();
    zero[5] = (ie::TCP_FLAGS, 0);
    let mut r = rec(C, 40000, S, 443, 0x02, START);
    r.remove(13);
    let m = Ipfix::new(0).template(300, &zero).set(300, &r);
    let o = one(&mut c, &m);
    assert!(o.is_empty());
    assert_eq!(count(&c, "zero_length_field"), 1);
    assert_eq!(count(&c, "no_tcp_flags"), 1);
    let mut c = Collector::new();
    feed(
        &mut c,
        1,
        &Ipfix::new(0).template(300, &[(ie::SRC_V4, 0)]).bytes(),
    );
    assert_eq!(count(&c, "zero_length_template"), 1);

    // Not an export packet at all.
    let mut c = Collector::new();
    feed(&mut c, 1, b"GET / HTTP/1.1\r\n");
    assert_eq!(count(&c, "bad_header"), 1);
}

#[test]
fn sequence_gaps_are_lost_records_per_exporter_and_a_gap() {
    let mut c = Collector::new();
    let r = rec(C, 40000, S, 443, 0x02, START);
    let m0 = Ipfix::new(0).template(300, &SPEC).set(300, &r);
    assert!(feed(&mut c, 10, &m0.bytes())
        .iter()
        .all(|i| !matches!(i, FlowItem::Gap { .. })));
    // The next message should be 1; it is 8: 7 records lost.
    let m1 = Ipfix::new(8).set(300, &rec(C, 40001, S, 443, 0x02, START));
    let items = feed(&mut c, 20, &m1.bytes());
    assert_eq!(c.lost[&Some(exporter())].records, 7);
    assert!(items.iter().any(|i| *i
        == FlowItem::Gap {
            from: t(10),
            to: t(20),
            exporter: None,
        }));
    // Another exporter has its own numbers.
    let mut out = Vec::new();
    c.packet(
        "192.0.2.7".parse().unwrap(),
        t(21),
        &Ipfix::new(500).template(300, &SPEC).bytes(),
        &mut out,
    );
    assert!(!c.lost.contains_key(&Some("192.0.2.7".parse().unwrap())));
}

/// An IPFIX message of `n` flow records numbered `seq`; the first of a
/// stream also carries the templates and one options record (as
/// softflowd's do).
fn numbered(seq: u32, n: u16, first: bool) -> Vec<u8> {
    let mut m = Ipfix::new(seq);
    if first {
        // Options template 301: scope observationDomainId (149), 4 bytes.
        m = m
            .template(300, &SPEC)
            .set(3, &[1, 45, 0, 1, 0, 1, 0, 149, 0, 4])
            .set(301, &[0, 0, 0, 1]);
    }
    let mut body = Vec::new();
    for i in 0..n {
        body.extend(rec(C, 40000 + i, S, 443, 0x12, START));
    }
    m.set(300, &body).bytes()
}

/// Feeds messages of these flow record counts and sequence numbers,
/// leaving out those `dropped`; the records lost, the rule at the end.
fn stream(msgs: &[(u16, u32)], dropped: &[usize]) -> (Collector, u64, SeqRule) {
    let mut c = Collector::new();
    for (i, &(n, seq)) in msgs.iter().enumerate() {
        if !dropped.contains(&i) {
            feed(&mut c, 10 + i as u64, &numbered(seq, n, i == 0));
        }
    }
    let lost = c.lost.get(&Some(exporter())).map_or(0, |l| l.records);
    let rule = c.domains.values().next().expect("a domain").rule;
    (c, lost, rule)
}

/// RFC 7011 numbers: the data records (options records too) before.
fn rfc(counts: &[u16]) -> Vec<(u16, u32)> {
    let mut seq = 0u32;
    let mut out = Vec::new();
    for (i, &n) in counts.iter().enumerate() {
        out.push((n, seq));
        seq += u32::from(n) + u32::from(i == 0);
    }
    out
}

/// softflowd's numbers: the flow records through this message.
fn through(counts: &[u16]) -> Vec<(u16, u32)> {
    let mut seq = 0u32;
    (counts.iter().map(|&n| {
        seq += u32::from(n);
        (n, seq)
    }))
    .collect()
}

#[test]
fn an_rfc_stream_with_a_dropped_message_loses_its_records_and_keeps_its_rule() {
    let counts = [24, 32, 32, 6, 17, 5];
    let (c, lost, rule) = stream(&rfc(&counts), &[]);
    assert_eq!((lost, rule), (0, SeqRule::Before), "{:?}", c.counts);
    let (c, lost, rule) = stream(&rfc(&counts), &[3]);
    assert_eq!((lost, rule), (6, SeqRule::Before), "{:?}", c.counts);
    assert_eq!(count(&c, "sequence_rule_switched"), 0);
}

#[test]
fn a_stream_numbered_through_its_messages_loses_nothing_and_is_recognised() {
    // softflowd -v 10 of demo.pcap: 24 (with an options record), 32 x 6,
    // 6, numbered 24, 56, ..., 216, 222.
    let counts = [24, 32, 32, 32, 32, 32, 32, 6];
    let (c, lost, rule) = stream(&through(&counts), &[]);
    assert_eq!((lost, rule), (0, SeqRule::Through), "{:?}", c.counts);
    assert_eq!(count(&c, "sequence_rule_switched"), 1);
    assert_eq!(count(&c, "sequence_behind"), 0);
}

#[test]
fn a_stream_numbered_through_its_messages_loses_a_dropped_messages_records() {
    let counts = [3, 5, 2, 4, 1, 7, 7];
    // Recognised by the third message; the fourth (4 records) dropped.
    let (c, lost, rule) = stream(&through(&counts), &[3]);
    assert_eq!((lost, rule), (4, SeqRule::Through), "{:?}", c.counts);
    // Between two messages of equal counts: still 7.
    let (c, lost, _) = stream(&through(&counts), &[5]);
    assert_eq!(lost, 7, "{:?}", c.counts);
}

#[test]
fn equal_counts_cannot_tell_the_rules_apart_so_nothing_switches() {
    let (c, lost, rule) = stream(&through(&[4, 4, 4, 4, 4]), &[]);
    // The first message's options record makes the second's number one
    // short of RFC's; once only, so no switch, and not a loss.
    assert_eq!(rule, SeqRule::Before, "{:?}", c.counts);
    assert_eq!(count(&c, "sequence_rule_switched"), 0);
    assert_eq!(lost, 0, "{:?}", c.counts);
}

#[test]
fn a_message_fitting_the_other_rule_once_then_an_rfc_one_was_a_real_loss() {
    // RFC: 2 records at 0, 1 at 3 (dropped), 3 at 4, 2 at 7. Without the
    // dropped one, the third looks numbered through itself (1 + 3 = 4),
    // the fourth fits RFC: the gap was real.
    let msgs = [(2, 0), (1, 3), (3, 4), (2, 7)];
    let (c, lost, rule) = stream(&msgs, &[1]);
    assert_eq!((lost, rule), (1, SeqRule::Before), "{:?}", c.counts);
}

#[test]
fn templates_are_scoped_per_exporter_and_domain() {
    let mut c = Collector::new();
    feed(&mut c, 1, &Ipfix::new(0).template(300, &SPEC).bytes());
    let mut other = Ipfix::new(0).set(300, &rec(C, 40000, S, 443, 0x02, START));
    other.domain = 2;
    feed(&mut c, 2, &other.bytes());
    assert_eq!(count(&c, "held_for_template"), 1, "another domain");
    let mut out = Vec::new();
    let same = Ipfix::new(0).set(300, &rec(C, 40000, S, 443, 0x02, START));
    c.packet("192.0.2.9".parse().unwrap(), t(3), &same.bytes(), &mut out);
    assert_eq!(count(&c, "held_for_template"), 2, "another exporter");
}

#[test]
fn template_cache_is_bounded() {
    let mut c = Collector::new();
    for id in 0..(MAX_TEMPLATES_PER_DOMAIN as u16 + 10) {
        feed(&mut c, 1, &Ipfix::new(0).template(256 + id, &SPEC).bytes());
    }
    assert_eq!(count(&c, "template_evicted"), 10);
    assert!(c
        .domains
        .values()
        .all(|d| d.templates.len() <= MAX_TEMPLATES_PER_DOMAIN));
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(
        body in proptest::collection::vec(any::<u8>(), 0..600),
        version in prop_oneof![Just(5u16), Just(9u16), Just(10u16), any::<u16>()],
    ) {
        let mut c = Collector::new();
        // A template first, so data sets are read too.
        feed(&mut c, 1, &Ipfix::new(0).template(300, &SPEC).bytes());
        let mut b = version.to_be_bytes().to_vec();
        b.extend_from_slice(&body);
        let mut out = Vec::new();
        c.packet(exporter(), t(2), &b, &mut out);
        c.packet(exporter(), t(3), &body, &mut out);
        c.finish(&mut out);
    }

    #[test]
    fn arbitrary_sets_after_a_valid_header_never_panic(
        sets in proptest::collection::vec(any::<u8>(), 0..400),
    ) {
        let mut c = Collector::new();
        let mut m = Ipfix::new(0).template(300, &SPEC);
        m.sets.extend_from_slice(&sets);
        let mut out = Vec::new();
        c.packet(exporter(), t(2), &m.bytes(), &mut out);
        c.finish(&mut out);
    }
}

/// Template 301: as [`SPEC`] but the start as flowStartSysUpTime.
const UPTIME_SPEC: [(u16, u16); 7] = [
    (ie::SRC_V4, 4),
    (ie::DST_V4, 4),
    (ie::SRC_PORT, 2),
    (ie::DST_PORT, 2),
    (ie::PROTOCOL, 1),
    (ie::TCP_FLAGS, 1),
    (ie::START_UPTIME, 4),
];

/// A record of template 301: a lone SYN from `sp`, `up` ms after init.
fn uptime_rec(sp: u16, up: u32) -> Vec<u8> {
    let mut b = rec(C, sp, S, 80, 0x02, 0);
    b.truncate(14);
    b.extend_from_slice(&up.to_be_bytes());
    b
}

/// Options template 400 (scope: observation domain) and its record
/// carrying systemInitTimeMilliseconds.
fn with_init(m: Ipfix, init_ms: u64) -> Ipfix {
    let mut t = Vec::new();
    for v in [400u16, 2, 1, 149, 4, ie::SYSTEM_INIT_MILLISECONDS, 8] {
        t.extend_from_slice(&v.to_be_bytes());
    }
    let mut r = 1u32.to_be_bytes().to_vec();
    r.extend_from_slice(&init_ms.to_be_bytes());
    m.set(3, &t).set(400, &r)
}

fn ms(o: &Observation) -> u64 {
    o.ts.as_nanos() / 1_000_000
}

#[test]
fn ipfix_uptime_counts_from_the_streams_options_record_else_the_export_time() {
    let export_ms = 1_700_000_000_000;
    let mut c = Collector::new();
    let m = Ipfix::new(0)
        .template(301, &UPTIME_SPEC)
        .set(301, &uptime_rec(40_001, 5_000));
    let o = one(&mut c, &m);
    assert_eq!(o.len(), 1, "{:?}", c.counts);
    assert_eq!(ms(&o[0]), export_ms, "init not yet known");
    assert_eq!(count(&c, "time_from_export"), 1);
    let init = START - 600_000;
    let m = with_init(Ipfix::new(1), init).set(301, &uptime_rec(40_002, 5_000));
    let o = one(&mut c, &m);
    assert_eq!(o.len(), 1, "{:?}", c.counts);
    assert_eq!(ms(&o[0]), init + 5_000);
    // Kept for the stream: a later message without options uses it.
    let o = one(&mut c, &Ipfix::new(3).set(301, &uptime_rec(40_003, 7_250)));
    assert_eq!(ms(&o[0]), init + 7_250);
    assert_eq!(count(&c, "time_from_export"), 1);
    // Not another domain's.
    let mut m = Ipfix::new(0)
        .template(301, &UPTIME_SPEC)
        .set(301, &uptime_rec(40_004, 1));
    m.domain = 2;
    let o = one(&mut c, &m);
    assert_eq!(ms(&o[0]), export_ms);
    assert_eq!(count(&c, "time_from_export"), 2);
}

#[test]
fn ipfix_absolute_start_more_than_an_hour_after_export_is_the_export_time() {
    let export_ms = 1_700_000_000_000;
    let mut c = Collector::new();
    let ahead = MAX_AHEAD.as_millis() as u64;
    let m = Ipfix::new(0)
        .template(300, &SPEC)
        .set(300, &rec(C, 40_001, S, 80, 0x02, export_ms + ahead))
        .set(300, &rec(C, 40_002, S, 80, 0x02, export_ms + ahead + 1));
    let mut o = one(&mut c, &m);
    o.sort_by_key(|o| o.key.client_port);
    assert_eq!(ms(&o[0]), export_ms + ahead, "within the bound");
    assert_eq!(ms(&o[1]), export_ms, "past it");
    assert_eq!(count(&c, "time_implausible"), 1);
}

/// A v5 packet of one lone SYN record: export `secs`, uptime `up`, the
/// record's First `first`.
fn v5_one(secs: u32, up: u32, first: u32) -> Vec<u8> {
    let mut b = vec![0, 5, 0, 1];
    b.extend_from_slice(&up.to_be_bytes());
    b.extend_from_slice(&secs.to_be_bytes());
    b.extend_from_slice(&250_000_000u32.to_be_bytes());
    b.extend_from_slice(&[0; 8]);
    let r = rec(C, 40_000, S, 80, 0x02, 0);
    let mut record = [0u8; V5_RECORD];
    record[0..8].copy_from_slice(&r[0..8]);
    record[24..28].copy_from_slice(&first.to_be_bytes());
    record[28..32].copy_from_slice(&first.to_be_bytes());
    record[32..36].copy_from_slice(&r[8..12]);
    record[37] = 0x02;
    record[38] = TCP;
    b.extend_from_slice(&record);
    b
}

#[test]
fn v5_first_is_placed_by_the_headers_uptime_and_a_start_before_1970_is_not() {
    let mut c = Collector::new();
    let mut items = feed(&mut c, 1_000, &v5_one(1_700_000_000, 90_000, 30_000));
    items.extend(fin(&mut c));
    let o: Vec<&Observation> = observed(&items).collect();
    assert_eq!(ms(o[0]), 1_700_000_000_250 - 60_000);
    // Uptime 3 h at an export 1000 s after 1970: First 0 is before 1970.
    let mut items = feed(&mut c, 1_001, &v5_one(1_000, 10_800_000, 0));
    items.extend(fin(&mut c));
    let o: Vec<&Observation> = observed(&items).collect();
    assert_eq!(ms(o[0]), 1_000_250);
    assert_eq!(count(&c, "time_implausible"), 1);
}

/// An exporter's clock at a v9 export an hour after it booted.
fn an_hour_up() -> Clock {
    Clock {
        export_ms: 1_700_000_000_000,
        uptime_ms: Some(3_600_000),
        init_ms: None,
    }
}

#[test]
fn v9_first_switched_is_export_time_less_the_uptime_since() {
    let clock = an_hour_up();
    let r = Raw {
        start_uptime_ms: Some(3_000_000),
        ..Raw::default()
    };
    let (ts, reason) = clock.start(&r);
    assert_eq!(ts.as_nanos() / 1_000_000, 1_700_000_000_000 - 600_000);
    assert_eq!(reason, None);
    // Across the 32-bit uptime wrap: First just before it, uptime after.
    let clock = Clock {
        uptime_ms: Some(1_000),
        ..clock
    };
    let r = Raw {
        start_uptime_ms: Some(u64::from(u32::MAX) - 999),
        ..Raw::default()
    };
    let (ts, _) = clock.start(&r);
    assert_eq!(ts.as_nanos() / 1_000_000, 1_700_000_000_000 - 2_000);
}

#[test]
fn a_records_end_is_read_as_its_start_and_not_before_it() {
    let clock = an_hour_up();
    // v9 First and Last: 10 min and 5 min before export.
    let r = Raw {
        start_uptime_ms: Some(3_000_000),
        end_uptime_ms: Some(3_300_000),
        ..Raw::default()
    };
    let (start, _) = clock.start(&r);
    let (end, why) = clock.end(&r, start);
    assert_eq!(end.as_nanos() / 1_000_000, 1_700_000_000_000 - 300_000);
    assert_eq!(why, None);
    // IPFIX flowEndMilliseconds over flowEndSeconds.
    let r = Raw {
        start_ms: Some(1_699_999_999_000),
        end_ms: Some(1_699_999_999_500),
        end_secs: Some(1_699_999_990),
        ..Raw::default()
    };
    let (start, _) = clock.start(&r);
    assert_eq!(
        clock.end(&r, start).0.as_nanos() / 1_000_000,
        1_699_999_999_500
    );
    // Before the start, or hours after export: the start, counted.
    for end_ms in [1_699_999_998_000, 1_700_000_000_000 + 2 * 3_600_000] {
        let r = Raw {
            end_ms: Some(end_ms),
            ..r
        };
        assert_eq!(clock.end(&r, start), (start, Some("time_implausible")));
    }
    // No end: the start; an uptime end with no clock to read it by.
    let r = Raw {
        end_ms: None,
        end_secs: None,
        ..r
    };
    assert_eq!(clock.end(&r, start), (start, None));
    let ipfix = Clock {
        uptime_ms: None,
        ..clock
    };
    let r = Raw {
        end_uptime_ms: Some(5),
        ..r
    };
    assert_eq!(ipfix.end(&r, start), (start, Some("time_from_export")));
}

#[test]
fn a_v5_observation_ends_at_its_records_last() {
    let mut b = v5_one(1_700_000_000, 90_000, 30_000);
    // Last: 20 s after First.
    b[V5_HEADER + 28..V5_HEADER + 32].copy_from_slice(&50_000u32.to_be_bytes());
    let mut c = Collector::new();
    let mut items = feed(&mut c, 1_000, &b);
    items.extend(fin(&mut c));
    let o: Vec<&Observation> = observed(&items).collect();
    assert_eq!(ms(o[0]), 1_700_000_000_250 - 60_000);
    let end = o[0].end.expect("an end");
    assert_eq!(end.as_nanos() / 1_000_000, 1_700_000_000_250 - 40_000);
    assert_eq!(count(&c, "time_implausible"), 0);
}

/// A record of template 300 from client `i` (its own address) to `S`:443.
fn numbered_rec(i: u32, flags: u8, start_ms: u64) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&(0x0a00_0000 | i).to_be_bytes());
    b.extend_from_slice(&[10, 0, 0, 2]);
    b.extend_from_slice(&40_000u16.to_be_bytes());
    b.extend_from_slice(&443u16.to_be_bytes());
    b.push(TCP);
    b.push(flags);
    b.extend_from_slice(&start_ms.to_be_bytes());
    b.push(3);
    b
}

/// The reverse of [`numbered_rec`]: from `S`:443 back to client `i`.
fn numbered_reply(i: u32, flags: u8, start_ms: u64) -> Vec<u8> {
    let mut b = numbered_rec(i, flags, start_ms);
    let (src, dst) = b.split_at_mut(4);
    src.swap_with_slice(&mut dst[..4]);
    let (sp, dp) = b[8..12].split_at_mut(2);
    sp.swap_with_slice(dp);
    b
}

/// (client address's last 24 bits, outcome) of each observation.
fn outcomes(items: &[FlowItem]) -> Vec<(u32, Outcome)> {
    observed(items)
        .map(|o| match o.key.client {
            IpAddr::V4(a) => (u32::from(a) & 0x00ff_ffff, o.outcome().unwrap()),
            IpAddr::V6(_) => unreachable!(),
        })
        .collect()
}

#[test]
fn a_direction_waits_join_for_its_reverse_then_is_settled_alone() {
    let mut c = Collector::new();
    let mut seq = 0;
    let mut send = |c: &mut Collector, now: u64, r: Vec<u8>| {
        let m = Ipfix::new(seq).template(300, &SPEC).set(300, &r);
        seq += 1;
        outcomes(&feed(c, now, &m.bytes()))
    };
    assert_eq!(send(&mut c, 100, numbered_rec(1, 0x02, START)), []);
    assert_eq!(send(&mut c, 101, numbered_rec(2, 0x02, START)), []);
    // JOIN_FOR after the first: it is settled alone; the second waits on.
    assert_eq!(
        send(&mut c, 105, numbered_rec(3, 0x02, START)),
        [(1, Outcome::Unanswered)]
    );
    assert_eq!(
        send(&mut c, 105, numbered_reply(2, 0x12, START)),
        [(2, Outcome::Established)]
    );
    assert_eq!(outcomes(&fin(&mut c)), [(3, Outcome::Unanswered)]);
    assert_eq!(count(&c, "observed"), 4);
}

#[test]
fn at_the_cap_the_oldest_direction_is_settled_alone() {
    let mut c = Collector::new();
    let mut items = Vec::new();
    // MAX_JOINS + 1 lone SYNs, 2,000 records a message.
    let n = MAX_JOINS as u32 + 1;
    let mut seq = 0;
    for from in (0..n).step_by(2_000) {
        let to = n.min(from + 2_000);
        let recs: Vec<u8> = (from..to)
            .flat_map(|i| numbered_rec(i, 0x02, START))
            .collect();
        let m = Ipfix::new(seq).template(300, &SPEC).set(300, &recs);
        seq += to - from;
        c.packet(exporter(), t(1_000), &m.bytes(), &mut items);
    }
    assert_eq!(outcomes(&items), [(0, Outcome::Unanswered)]);
    assert_eq!(c.joins.len(), MAX_JOINS);
    // The first's answer comes too late; it is held itself, and the
    // second makes room for it. The third's joins.
    let m = Ipfix::new(seq).template(300, &SPEC).set(
        300,
        &[
            numbered_reply(0, 0x12, START),
            numbered_reply(2, 0x12, START),
        ]
        .concat(),
    );
    let items = feed(&mut c, 1_000, &m.bytes());
    assert_eq!(
        outcomes(&items),
        [(1, Outcome::Unanswered), (2, Outcome::Established)]
    );
    assert_eq!(c.joins.len(), MAX_JOINS - 1);
    assert_eq!(count(&c, "join_evicted"), 2);
    assert_eq!(count(&c, "lost_records"), 0);
}
