//! `cargo +nightly fuzz run decode`: decode must never panic, for any bytes
//! under any link type, and the result must be reportable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portwatch::decode::decode;
use portwatch::source::LinkType;

const LINKTYPES: [LinkType; 10] = [
    LinkType::NULL,
    LinkType::ETHERNET,
    LinkType::RAW,
    LinkType::LOOP,
    LinkType::LINUX_SLL,
    LinkType::IPV4,
    LinkType::IPV6,
    LinkType::LINUX_SLL2,
    LinkType::RAW_BSD,
    LinkType::RAW_OPENBSD,
];

fuzz_target!(|data: &[u8]| {
    for linktype in LINKTYPES {
        if let Err(e) = decode(linktype, data) {
            let _ = (e.reason(), e.to_string());
        }
    }
});
