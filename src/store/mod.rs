//! The metrics store: a Prometheus-compatible HTTP query API (Prometheus,
//! VictoriaMetrics, Thanos Query, Mimir) asked instant queries, over HTTP or
//! HTTPS with basic auth, as Prometheus clients do it. Only [`client`]
//! touches the network; [`answer`] turns the JSON into typed samples, and
//! [`promql`] writes the queries. Everything the store answers is untrusted
//! text: it reaches output only through serde and maud.

pub mod answer;
pub mod client;
pub mod promql;

pub use answer::{Sample, MAX_ANSWER_BYTES};
pub use client::{Store, StoreConfig, StoreError};
