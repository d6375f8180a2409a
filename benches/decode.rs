//! Decode throughput on a replay-like mix (95% non-control TCP).
//! Stable Rust has no `#[bench]`: a plain program that prints the rate.
//! `cargo bench --bench decode`

use std::hint::black_box;
use std::time::Instant;

use etherparse::PacketBuilder;
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

fn main() {
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
