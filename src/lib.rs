//! portwatch: passive compliance monitoring of TCP control packets against a
//! product's port model and a site's inventory.
//!
//! Data flow:
//!
//! ```text
//! source (pcap/pcapng files, libpcap live)  ── Frame ──▶
//! decode (pure: link, VLAN, IPv4/IPv6, tunnels, TCP) ── Segment ──▶
//! state (handshake table)                   ── Observation ──▶
//! source (record readers: node logs, read in full or followed) ── Observation ──▶
//! classify (pure: model + site → Verdict)   ──▶
//! state (pure: required-edge clocks, tallies; time passed in) ──▶
//! report / export (audit report, Prometheus, event log)
//! store (the fleet's metrics store) ──▶ report (`report --prometheus`)
//! ```
//!
//! Layers, top to bottom. A module may use the modules on the lines below
//! its own, never those on its line or above (`tests/layering.rs` reads
//! this list and the sources, and fails on an import that goes up):
//!
//! ```text
//! layers:
//! cmd                │ one module per command; signals, the capture driver
//! cli                │ clap's raw arguments
//! propose            │ site entries and allowances inferred from traffic
//! report export firewall │ audit report, HTML page │ Prometheus, HTTP, event log, conn log, findings' packets, printed findings, Graphviz │ host firewall rules
//! pipeline           │ one frame through decode → classify → state
//! state              │ handshake table, records of one connection merged, required-edge clocks, tallies
//! config classify    │ loading site + rules │ verdicts
//! policy             │ model × site: roles, expected edges, visibility
//! site               │ the site inventory
//! model              │ the product's port model
//! decode source store │ bytes → Segment │ files, live capture, paced replay, record readers │ the metrics store's query API (`report --prometheus`)
//! observation        │ what a sensor saw of one connection: 4-tuple, initiator, fate, fidelity
//! frame diag map     │ Frame/LinkType │ located diagnostics │ the per-packet hasher, entries held in arrival order up to a limit
//! time               │ capture timestamps
//! name quote         │ the identifiers of site and model files │ text into each output format
//! ```
//!
//! Only `source`, `export`, `store` (it asks the metrics store), `config`
//! (it reads the site and rules files) and `cmd` touch the operating system. `run` keeps the hot path on one
//! capture thread; tokio only serves HTTP and handles signals.
#![forbid(unsafe_code)]

pub mod classify;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod decode;
pub mod diag;
pub mod export;
pub mod firewall;
pub mod frame;
pub mod map;
pub mod model;
pub mod name;
pub mod observation;
pub mod pipeline;
pub mod policy;
pub mod propose;
pub mod quote;
pub mod report;
#[cfg(test)]
mod scratch_tests;
pub mod site;
pub mod source;
pub mod state;
pub mod store;
pub mod time;
