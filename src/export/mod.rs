//! I/O out: the JSON event log, the findings' packets (pcap), findings printed as they happen, and the
//! Prometheus exporter (every metric in `metrics`, served by `http`).

pub mod community_id;
pub mod ecs;
pub mod eventlog;
pub mod events;
pub mod evidence;
pub mod findings;
pub mod graphviz;
pub mod http;
pub mod metrics;
pub mod serve;
pub mod webconfig;
