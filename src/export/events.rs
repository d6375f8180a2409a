//! One JSON object per line for SIEMs: every connection attempt with its
//! verdict, every outcome, and every connection two kinds of source told
//! different fates of. Field names are stable (see README.md).

use std::collections::BTreeMap;
use std::io::Write;

use serde::Serialize;

use crate::classify::explain;
use crate::pipeline::Event;
use crate::policy::Policy;

#[derive(Serialize)]
struct Line<'a> {
    timestamp: String,
    event: &'static str,
    site: &'a str,
    verdict: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: Option<&'static str>,
    /// A disagreement's outcomes, by `sensor_kind`.
    #[serde(skip_serializing_if = "Option::is_none")]
    outcomes: Option<BTreeMap<&'static str, &'static str>>,
    src: &'a str,
    src_addr: String,
    src_port: u16,
    dst: &'a str,
    dst_addr: String,
    dst_port: u16,
    service: &'a str,
    explanation: String,
    /// The encapsulation the SYN arrived in: kind and session.
    #[serde(skip_serializing_if = "Option::is_none")]
    mirror_kind: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mirror_session: Option<u32>,
}

/// Write `e` as one line; evidence events are not logged (the connection
/// line already carries them).
pub fn write_event(out: &mut impl Write, p: &Policy, e: &Event) -> std::io::Result<()> {
    let mut outcomes = None;
    let (ts, class, key, event, outcome, mirror) = match e {
        Event::Connection {
            ts,
            class,
            key,
            mirror,
            ..
        } => (ts, class, key, "connection", None, mirror),
        Event::Outcome {
            ts,
            class,
            key,
            outcome,
            mirror,
            ..
        } => (ts, class, key, "outcome", Some(outcome.as_str()), mirror),
        Event::Disagreement {
            ts,
            class,
            key,
            disagreement: d,
        } => {
            outcomes = Some(BTreeMap::from([
                (d.established.as_str(), "established"),
                (d.blocked.0.as_str(), d.blocked.1.as_str()),
            ]));
            (ts, class, key, "disagreement", None, &None)
        }
        Event::Evidence { .. } => return Ok(()),
    };
    let line = Line {
        timestamp: ts.rfc3339(),
        event,
        site: &p.site.name,
        verdict: class.verdict.as_str(),
        outcome,
        outcomes,
        src: p.peer_name(class.src),
        src_addr: key.client.to_string(),
        src_port: key.client_port,
        dst: p.peer_name(class.dst),
        dst_addr: key.server.to_string(),
        dst_port: key.server_port,
        service: &class.service,
        explanation: explain(p, class),
        mirror_kind: mirror.map(|m| m.kind.as_str()),
        mirror_session: mirror.and_then(|m| m.session),
    };
    serde_json::to_writer(&mut *out, &line)?;
    out.write_all(b"\n")
}
