//! `cargo +nightly fuzz run decode`: decode must never panic, for any bytes
//! under any link type, and the result must be reportable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portwatch::decode::decode;
use portwatch::frame::LinkType;

fuzz_target!(|data: &[u8]| {
    for linktype in LinkType::SUPPORTED {
        if let Err(e) = decode(linktype, data) {
            let _ = (e.reason(), e.to_string());
        }
    }
});
