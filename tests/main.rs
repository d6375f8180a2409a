//! One integration test binary (ripgrep style): each module is a topic.
//!
//! - `examples`: the bundled sites against the vendor page's "Ports examples".
//! - `validation`: the `check` command on bad site and rules files.
//! - `deploy`: Prometheus rules, promtool unit tests, the Grafana dashboard's
//!   queries against a real Prometheus, and the systemd unit.
//! - `daemon`: `run` and `demo` over HTTP, SIGHUP and SIGTERM, promtool on a
//!   real scrape.
//! - `e2e`: a real Prometheus scraping `run --replay` of the demo capture;
//!   every dashboard query, recording rule and alert against live data.

mod daemon;
mod deploy;
mod e2e;
mod examples;
mod util;
mod validation;
