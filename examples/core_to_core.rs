//! Prints how long a cache line takes to go from one core to another and
//! back, in nanoseconds (the median of 21 batches of 20,000 round trips
//! between two threads). `benches/replay_vs_tcpdump.sh` prints it next to
//! each portwatch round: `replay` reads a file on one thread and works on
//! it on another, so every byte crosses between two cores, and on a
//! virtual machine whose two CPUs the host places far apart (hundreds of
//! nanoseconds here instead of about 50) a round takes twice as long.
//! tcpdump, on one thread, does not notice.
//!
//!     cargo run --release --example core_to_core

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

const BATCHES: usize = 21;
const ROUND_TRIPS: u64 = 20_000;

fn main() {
    let line = Arc::new(AtomicU64::new(0));
    let other = line.clone();
    // The other thread answers each odd value with the next even one.
    let echo = std::thread::spawn(move || {
        let last = 2 * ROUND_TRIPS * BATCHES as u64;
        let mut want = 1;
        while want < last {
            while other.load(Ordering::Acquire) != want {
                std::hint::spin_loop();
            }
            other.store(want + 1, Ordering::Release);
            want += 2;
        }
    });
    let mut batches = Vec::with_capacity(BATCHES);
    let mut value = 0;
    for _ in 0..BATCHES {
        let start = Instant::now();
        for _ in 0..ROUND_TRIPS {
            line.store(value + 1, Ordering::Release);
            while line.load(Ordering::Acquire) != value + 2 {
                std::hint::spin_loop();
            }
            value += 2;
        }
        batches.push(start.elapsed().as_nanos() as f64 / ROUND_TRIPS as f64);
    }
    echo.join().expect("the echo thread");
    batches.sort_by(f64::total_cmp);
    println!("{:.0}", batches[BATCHES / 2]);
}
