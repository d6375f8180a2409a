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
//! - `diagram`: the diagram's line labels do not overlap, on every bundled
//!   site, with its expected edges and the demo audit, in both layouts.
//! - `live`: `watch` on a veth pair in a network namespace the test creates,
//!   fed by tcpreplay, gives the verdicts `replay` gives (root only).
//! - `daemon`: `run` and `demo` over HTTP, SIGHUP and SIGTERM, promtool on a
//!   real scrape.
//! - `alerts`: one event of each finding, replayed by `run` and scraped by
//!   a real Prometheus with the shipped rules, fires its alert within one
//!   scrape plus one evaluation interval, and resolves for good.
//! - `deploy`: Prometheus rules, promtool unit tests, the Grafana dashboard's
//!   queries against a real Prometheus, and the systemd unit.
//! - `accepted`: accepted deviations (one that holds, one expired, none) in
//!   the report, the events and the finding metrics; `replay --baseline`.
//! - `propose`: sites and patches inferred from traffic, applied and
//!   replayed: the bundled sites round trip, a removed node, extra traffic.
//! - `readme`: the README's marked console examples, run as written.
//! - `layering`: no module of `src/` imports one above it in the layer list
//!   of `src/lib.rs`.
//! - `state`: `run --state-dir` killed with SIGKILL and started again: the
//!   evidence, the findings and what was reported carry over; a corrupt
//!   state file is set aside.
//! - `stdout`: a closed stdout ends `replay`, `expect` and `check` quietly
//!   and only silences `run --print`.
//! - `firewall`: `firewall` goldens (`UPDATE_GOLDEN=1 cargo test --test main
//!   firewall` rewrites them), `nft -c -f` and a load in a namespace, the
//!   documented PowerShell parameters, and the proof by traffic: namespaces
//!   for a node and two peers, its nftables rules loaded, every expected
//!   edge connects and nothing else does, and the replay agrees (root).
//! - `browser`: headless Chromium loads the HTML report of the demo fixture
//!   and the live page of `run`; every node, required edge and finding of
//!   the golden report is in the DOM, the screenshot is not blank.
//! - `events`: the event log against ECS's field list and allowed values,
//!   Community IDs, flow ids, findings as alerts, append/flush/SIGHUP reopen.
//! - `webconfig`: `--web.config.file` TLS + basic auth with a certificate made
//!   in the test, curl and a real Prometheus; other `--web.*` flags.
//! - `package`: the .deb built by cargo-deb, installed, checked and removed
//!   (root, cargo-deb, man-db, systemd-analyze).
//! - `privileges`: root-started `run`/`watch` continue as `nobody` with only
//!   CAP_NET_RAW/CAP_NET_ADMIN, read from /proc (root only).
//! - `fleet`: three node sensors, one Prometheus, the shipped rules: one
//!   site verdict per required edge.
//! - `mixed`: a packet sensor and two node-log sensors of one site, one
//!   Prometheus with the shipped rules: counted once across kinds, missing
//!   where a covering log sensor saw nothing, unverifiable where the only
//!   sensor lost events, and the kinds' disagreement.
//! - `fleet_store`: two sites, each with a packet and a flow sensor and its
//!   own Prometheus remote-writing the rules' series into one
//!   VictoriaMetrics: the fleet dashboard's queries, the overview per site
//!   and state, findings counted once, vmalert's global alerts.
//! - `report`: `report --prometheus` against a real Prometheus fed by two
//!   sensors gives the required-edge states and findings `replay` of the
//!   site's capture gives; over TLS with basic auth; the store's errors.
//! - `live_tunnels`: kernel-made VXLAN (and GENEVE, gretap, ERSPAN where the
//!   kernel has them) between two namespaces: `watch` on the underlay finds
//!   what `watch` on the overlay finds (root).
//! - `tunnels`: the mirror and tunnel captures of `../shared/sensors/tunnels/`
//!   against tshark's protocol hierarchy and inner handshakes.
//! - `wfp`: the Windows Filtering Platform readers on the real samples of
//!   `../shared/sensors/wfp/` (counts per SOURCE.md, hand-checked events).
//! - `flows`: flow logs in `replay`: a VPC flow log made from each verdict
//!   scenario (tshark) gives the capture's findings; the samples of
//!   `../shared/sensors/` with their fidelity in the report.
//! - `netflow`: NetFlow/IPFIX: the samples of `../shared/sensors/netflow/`
//!   replayed as captures of export packets; softflowd exporting each
//!   scenario (v5, v9, IPFIX) to `run --flow-listen` gives the findings of
//!   `replay`, each outcome difference named.
//! - `follow`: `run --follow` on a growing `pfirewall.log` rotated twice and
//!   truncated once counts every line once (metrics, event log); `watch
//!   --follow` alone; EVTX refused.
//! - `windows`: Windows nodes' own logs (`pfirewall.log`) as sensors:
//!   findings, blocked edges citing the firewall, coverage, lost events,
//!   time zones, mixed with captures.
//! - `nodelogs`: the same site seen two ways: a capture, and the firewall
//!   logs and audit events its nodes would have written of it; the logs'
//!   findings and required edges against the capture's, every difference
//!   in a table with its reason.
//! - `selection`: `replay --since/--until` against tshark on the same range,
//!   `--filter` against tcpdump, node-log records outside the range, bad
//!   bounds and filters, the HTML list of flows behind `unknown`, the HTML
//!   sign-off block against `sha256sum`.
//! - `evidence`: `replay --conn-log` on a capture of known connections: one
//!   ECS line per connection with its close reason (FIN, RST by each side,
//!   timeout, capture end), outcome, control packets and Community ID;
//!   `--write-findings`: tshark reads exactly the findings' connections,
//!   each from its SYN, and the cap holds.
//! - `e2e`: a real Prometheus scraping `portwatch run --replay --loop`, every
//!   dashboard and rule query, and the series the demo capture implies.

mod accepted;
mod alerts;
mod browser;
mod corpus;
mod daemon;
mod deploy;
mod diagram;
mod e2e;
mod events;
mod evidence;
mod examples;
mod faults;
mod firewall;
mod fleet;
mod fleet_store;
mod flows;
mod follow;
mod golden;
mod golden_metrics;
mod layering;
mod listeners;
mod live;
mod live_tunnels;
mod mixed;
mod netflow;
mod nodelogs;
mod package;
mod prereq;
mod privileges;
mod propose;
mod readme;
mod report;
mod scenarios;
mod selection;
mod state;
mod stdout;
mod tunnels;
mod util;
mod validation;
mod webconfig;
mod wfp;
mod windows;
