//! `cargo +nightly fuzz run pcap_reader` (or `fuzz/run.sh`): the pcap and
//! pcapng reader must never panic or allocate without bound on any bytes,
//! must account for every record it delivers, and must say where it
//! stopped within the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portwatch::source::file::FileSource;
use portwatch::source::{Poll, Source};

fuzz_target!(|data: &[u8]| {
    let reader = Box::new(std::io::Cursor::new(data.to_vec()));
    let Ok(mut src) = FileSource::open_reader("fuzz".into(), reader) else {
        return;
    };
    let mut frames = 0u64;
    let mut bytes = 0usize;
    loop {
        match src.poll(&mut |f| {
            frames += 1;
            bytes += f.data.len();
            assert!(f.data.len() <= data.len());
        }) {
            Ok(Poll::Frames(_)) => {}
            Ok(Poll::End) => break,
            Ok(Poll::Idle) => panic!("a file never idles"),
            Err(e) => {
                let _ = e.to_string();
                break;
            }
        }
    }
    let facts = src.facts();
    assert_eq!(facts.records, frames);
    assert!(bytes <= data.len());
    if let Some(s) = &facts.stopped {
        assert!(s.offset <= data.len() as u64, "stopped past the end");
        assert!(!s.reason.is_empty());
    }
});
