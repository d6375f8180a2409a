//! One integration test binary (ripgrep style): each module is a topic.
//!
//! - `examples`: the bundled sites against the vendor page's "Ports examples".
//! - `validation`: the `check` command on bad site and rules files.
//! - `golden`, `scenarios`: every fixture replayed and compared with its
//!   golden report, plus what each scenario must show.
//! - `golden_metrics`: `/metrics` of the demo capture replayed through the
//!   library, against `fixtures/demo.expected.prom`.
//!   `UPDATE_GOLDEN=1 cargo test --test main golden` rewrites the goldens.
//! - `corpus`: third-party captures from `../shared/pcaps/corpus/`.
//! - `live`: `watch` on a veth pair in a network namespace the test creates,
//!   fed by tcpreplay, gives the verdicts `replay` gives (root only).
//! - `daemon`: `run` and `demo` over HTTP, SIGHUP and SIGTERM, promtool on a
//!   real scrape.
//! - `deploy`: Prometheus rules, promtool unit tests, the Grafana dashboard's
//!   queries against a real Prometheus, and the systemd unit.
//! - `layering`: no module of `src/` imports one above it in the layer list
//!   of `src/lib.rs`.
//! - `stdout`: a closed stdout ends `replay`, `expect` and `check` quietly
//!   and only silences `run --print`.
//! - `e2e`: a real Prometheus scraping `portwatch run --replay --loop`, every
//!   dashboard and rule query, and the series the demo capture implies.

mod corpus;
mod daemon;
mod deploy;
mod e2e;
mod examples;
mod golden;
mod golden_metrics;
mod layering;
mod live;
mod scenarios;
mod stdout;
mod util;
mod validation;
