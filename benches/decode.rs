//! Decode throughput on a replay-like mix (95% non-control TCP), then on
//! control packets alone: `decode` against etherparse's lax slicing of the
//! same frames (link, IP and TCP), in alternating rounds.
//! Stable Rust has no `#[bench]`: a plain program that prints the rate.
//! `cargo bench --bench decode`

use std::hint::black_box;
use std::time::Instant;

use etherparse::{LaxSlicedPacket, PacketBuilder, TransportSlice};
use portwatch::decode::{decode, Decoded};
use portwatch::frame::LinkType;

fn frames() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for i in 0..100u16 {
        let base = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let tcp = match i % 3 {
            0 => base
                .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
                .tcp(40000 + i, 443, 1, 1000),
            1 => base
                .single_vlan(7u16.try_into().expect("vid"))
                .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
                .tcp(40000 + i, 443, 1, 1000),
            _ => base
                .ipv6([0x20; 16], [0x21; 16], 64)
                .tcp(40000 + i, 443, 1, 1000),
        };
        let tcp = if i % 20 == 0 { tcp.syn() } else { tcp.ack(7) };
        let mut frame = Vec::new();
        tcp.write(&mut frame, &[0; 100]).expect("write");
        // A header-only snaplen, as captures for portwatch are taken.
        frame.truncate(128);
        out.push(frame);
    }
    out
}

/// Control packets only (SYN, SYN-ACK, RST, FIN), as `frames` lays them out.
fn control_frames() -> Vec<Vec<u8>> {
    frames()
        .into_iter()
        .enumerate()
        .map(|(i, mut f)| {
            let tcp = match (i % 3, f[12..14] == [0x81, 0x00]) {
                (2, _) => 14 + 40,
                (_, true) => 18 + 20,
                _ => 14 + 20,
            };
            f[tcp + 13] = [0x02, 0x12, 0x14, 0x11][i % 4];
            f
        })
        .collect()
}

/// ns per frame of `f` over `frames`, `rounds` times.
fn time(frames: &[Vec<u8>], rounds: usize, mut f: impl FnMut(&[u8]) -> bool) -> (f64, u64) {
    let start = Instant::now();
    let mut hits = 0u64;
    for _ in 0..rounds {
        for frame in frames {
            hits += u64::from(f(black_box(frame)));
        }
    }
    let n = (rounds * frames.len()) as f64;
    (start.elapsed().as_nanos() as f64 / n, hits)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    mixed();
    controls();
}

/// Control packets: the frames the pre-check passes to the IP and TCP layers.
fn controls() {
    let frames = control_frames();
    let rounds = 20_000;
    let (mut ours, mut theirs, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..9 {
        let (a, n) = time(&frames, rounds, |f| {
            matches!(decode(LinkType::ETHERNET, f), Ok(Decoded::Control(_)))
        });
        let (b, m) = time(&frames, rounds, |f| {
            matches!(
                LaxSlicedPacket::from_ethernet(f),
                Ok(LaxSlicedPacket { transport: Some(TransportSlice::Tcp(t)), .. })
                    if t.syn() || t.rst() || t.fin()
            )
        });
        assert_eq!(n, m, "both read every control packet");
        assert_eq!(n, (rounds * frames.len()) as u64);
        ours.push(a);
        theirs.push(b);
        ratios.push(b / a);
    }
    println!(
        "control packets: decode {:.1} ns/frame, etherparse {:.1} ns/frame; \
         etherparse/decode median of 9 alternating rounds: {:.2}x",
        median(ours),
        median(theirs),
        median(ratios)
    );
}

fn mixed() {
    let frames = frames();
    let rounds = 50_000;
    let start = Instant::now();
    let mut controls = 0u64;
    for _ in 0..rounds {
        for frame in &frames {
            if let Ok(Decoded::Control(_)) = decode(LinkType::ETHERNET, black_box(frame)) {
                controls += 1;
            }
        }
    }
    let elapsed = start.elapsed();
    let n = (rounds * frames.len()) as f64;
    println!(
        "decode: {:.1} ns/frame, {:.1} Mframes/s ({controls} control)",
        elapsed.as_nanos() as f64 / n,
        n / elapsed.as_secs_f64() / 1e6
    );
    assert_eq!(controls, rounds as u64 * 5);
}
