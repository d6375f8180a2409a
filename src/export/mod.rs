//! I/O out: the JSON event log (and, in `run`, the Prometheus exporter).

pub mod events;
