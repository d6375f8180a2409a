//! The HTML report page built from a report already in memory: the audit
//! diagram laid out by portwatch's own layout (`Diagram::audit`, `to_svg`)
//! and the page around it (`report::html::render`), what `replay --format
//! html --layout builtin` does after reading. The report is the largest
//! bundled site's (`scale-out`, fixtures/site-scale-out.pcap: 118 flow rows,
//! 22 required edges, no finding), then the same capture with a busy
//! week's findings added as traffic: every node calling every other on five
//! ports outside the model (refused) and 100 hosts outside the inventory.
//! Prints the median time per page over rounds, and the page's size.
//!
//! `cargo bench --bench html_page` (ROUNDS=N, default 400)

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use etherparse::PacketBuilder;
use portwatch::config::load_policy;
use portwatch::frame::{Frame, LinkType};
use portwatch::pipeline::Pipeline;
use portwatch::policy::Policy;
use portwatch::report::diagram::Diagram;
use portwatch::report::html::{render, Page};
use portwatch::report::Report;
use portwatch::source::file::FileSource;
use portwatch::source::{Poll, Source};

const CAPTURE: &str = "fixtures/site-scale-out.pcap";

fn frame(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src.octets(), dst.octets(), 64)
        .tcp(sport, dport, 1, 1000);
    let b = match flags {
        0x02 => b.syn(),
        0x12 => b.syn().ack(2),
        _ => b.rst().ack(2),
    };
    let mut out = Vec::new();
    b.write(&mut out, &[]).expect("frame");
    out
}

/// SYN and reply (`0x12` SYN-ACK, `0x14` RST) of one connection attempt.
fn attempt(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, reply: u8) -> [Vec<u8>; 2] {
    [
        frame(src, dst, sport, dport, 0x02),
        frame(dst, src, dport, sport, reply),
    ]
}

/// The extra traffic: node to node on ports outside the model, refused;
/// hosts outside the inventory reaching the central node's proxy.
fn busy_week(p: &Policy) -> Vec<Vec<u8>> {
    let nodes: Vec<Ipv4Addr> = (p.site.nodes.iter())
        .filter_map(|n| match n.addresses.first()? {
            std::net::IpAddr::V4(a) => Some(*a),
            _ => None,
        })
        .collect();
    let mut out = Vec::new();
    let mut sport = 40_000u16;
    for a in &nodes {
        for b in nodes.iter().filter(|b| *b != a) {
            for port in 61_001..=61_005 {
                sport += 1;
                out.extend(attempt(*a, *b, sport, port, 0x14));
            }
        }
    }
    for i in 0..100u8 {
        sport += 1;
        out.extend(attempt(
            Ipv4Addr::new(10, 9, 0, i),
            nodes[0],
            sport,
            443,
            0x12,
        ));
    }
    out
}

fn report(p: &Arc<Policy>, extra: &[Vec<u8>]) -> Report {
    let mut pl = Pipeline::new(p.clone(), Default::default());
    let mut src = FileSource::open(CAPTURE).expect("the fixture opens");
    loop {
        let poll = src.poll(&mut |f| {
            pl.ingest(f);
        });
        if poll.expect("the fixture reads") == Poll::End {
            break;
        }
    }
    let (_, end) = pl.span().expect("frames read");
    for (i, data) in extra.iter().enumerate() {
        pl.ingest(&Frame {
            ts: end.saturating_add(std::time::Duration::from_millis(i as u64)),
            linktype: LinkType::ETHERNET,
            wire_len: data.len() as u32,
            data,
            interface: 0,
            ts_invalid: false,
        });
    }
    let span = pl.span();
    if let Some((_, end)) = span {
        pl.finish(end);
    }
    Report::build(&pl, Vec::new(), span, &Default::default())
}

fn page(p: &Policy, r: &Report) -> String {
    let svg = Diagram::audit(p, r).to_svg();
    render(
        r,
        &Page {
            svg,
            layout: "portwatch's own layered layout".into(),
            subtitle: format!("replay of {CAPTURE}"),
            ..Page::default()
        },
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let p = Arc::new(
        load_policy(Path::new("scale-out"), None)
            .expect("the bundled site loads")
            .policy,
    );
    let extra = busy_week(&p);
    for (what, r) in [
        ("fixture report", report(&p, &[])),
        ("with findings", report(&p, &extra)),
    ] {
        let mut times = Vec::with_capacity(rounds);
        let mut bytes = 0;
        for _ in 0..rounds {
            let t = Instant::now();
            bytes = black_box(page(&p, black_box(&r))).len();
            times.push(t.elapsed().as_secs_f64() * 1e6);
        }
        println!(
            "{what:15} {:>4} flows {:>4} edges {:>4} findings: {:>8.1} us a page (median of {rounds}), {bytes} bytes",
            r.flows.len(),
            r.edges.len(),
            r.findings.len(),
            median(times),
        );
    }
}
