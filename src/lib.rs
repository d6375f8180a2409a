//! portwatch: passive compliance monitoring of TCP control packets against a
//! product's port model and a site's inventory.
//!
//! ```text
//! source (pcap/pcapng files, libpcap live)  ── Frame ──▶
//! decode (pure: link, VLAN, IPv4/IPv6, TCP) ── Segment ──▶
//! classify (pure: model + site → Verdict)   ──▶
//! state (pure: handshake table, required-edge clocks, tallies; time passed in) ──▶
//! report / export (audit report, Prometheus, event log)
//! ```
//!
//! Only `source`, `export`, `app`, `run` and `daemon` touch the operating
//! system. `daemon` (`portwatch run`/`demo`) keeps the hot path on one
//! capture thread; tokio only serves HTTP and handles signals.
#![forbid(unsafe_code)]

pub mod app;
pub mod classify;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod decode;
pub mod export;
pub mod model;
pub mod pipeline;
pub mod policy;
pub mod propose;
pub mod propose_cmd;
pub mod report;
pub mod run;
pub mod site;
pub mod source;
pub mod state;
pub mod time;
