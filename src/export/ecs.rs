//! Event lines in the Elastic Common Schema: what Filebeat/Elastic Agent,
//! Logstash or a Loki pipeline ingest with no parsing rules of their own.
//!
//! Four kinds of line: a connection attempt and its outcome
//! (`event.kind: event`, joined by `portwatch.flow_id`), findings
//! (`event.kind: alert`): an unexpected, local-only or unknown-host attempt,
//! an expected flow refused or unanswered (`blocked`), each deduplicated
//! as printed findings are, and a required edge with no evidence for a
//! whole window (`missing`); and a connection two kinds of source told
//! different fates of (an alert too, `outcome-disagreement`). portwatch's own fields live under `portwatch.*`; every
//! other field is an ECS field of ECS's type (checked by a test against
//! ECS's field list).

use std::collections::VecDeque;
use std::net::IpAddr;

use serde_json::{json, Map, Value};
use sha1::{Digest, Sha1};

use super::community_id::{community_id_v1, octets};
use super::findings::{Due, Found, Occurrences};
use crate::classify::{explain, Basis, Classification, Verdict};
use crate::decode::Encap;
use crate::model::RuleId;
use crate::observation::Process;
use crate::pipeline::ConnEnd;
use crate::policy::{EdgeId, Origin, Policy};
use crate::state::kinds::Disagreement;
use crate::state::tally::FindingKind;
use crate::state::{EdgeState, FastMap, FlowKey, Outcome};
use crate::time::Timestamp;

/// The ECS version the lines follow.
pub const ECS_VERSION: &str = "9.0.0";
const TCP: u8 = 6;

/// Who writes the lines: `observer.*`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observer {
    /// The sensor's node (`--sensor`), else the host name.
    pub name: String,
    pub hostname: String,
}

impl Observer {
    /// The sensor named by the first `--sensor`, on this host.
    pub fn local(sensors: &[String]) -> Observer {
        let hostname = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".into());
        Observer {
            name: sensors.first().cloned().unwrap_or_else(|| hostname.clone()),
            hostname,
        }
    }
}

/// Flow ids of attempts whose outcome is not known yet. Bounded: beyond
/// `capacity` the oldest is forgotten (its outcome line then has no flow
/// id) and counted.
struct FlowIds {
    ids: FastMap<FlowKey, String>,
    order: VecDeque<FlowKey>,
    capacity: usize,
    forgotten: u64,
}

impl FlowIds {
    fn insert(&mut self, key: FlowKey, id: String) {
        if self.ids.insert(key, id).is_none() {
            self.order.push_back(key);
        }
        while self.ids.len() > self.capacity {
            match self.order.pop_front() {
                Some(old) => {
                    if self.ids.remove(&old).is_some() {
                        self.forgotten += 1;
                    }
                }
                None => break,
            }
        }
        // Resolved keys leave stale queue entries; keep the queue bounded too.
        if self.order.len() > 2 * self.capacity.max(1) {
            let ids = &self.ids;
            self.order.retain(|k| ids.contains_key(k));
        }
    }

    fn take(&mut self, key: &FlowKey) -> Option<String> {
        self.ids.remove(key)
    }
}

/// Turns pipeline events into ECS documents; keeps the little state the
/// lines need (flow ids, which edges are reported missing).
pub struct EcsFormatter {
    observer: Observer,
    flows: FlowIds,
    /// Per edge of the current policy: reported missing.
    missing: Vec<bool>,
    /// Which findings are due for an alert line.
    due: Occurrences,
}

impl EcsFormatter {
    /// `capacity`: attempts awaiting an outcome whose flow id is kept
    /// (the flow table's capacity is right).
    pub fn new(observer: Observer, capacity: usize) -> EcsFormatter {
        EcsFormatter {
            observer,
            flows: FlowIds {
                ids: FastMap::default(),
                order: VecDeque::new(),
                capacity: capacity.max(1),
                forgotten: 0,
            },
            missing: Vec::new(),
            due: Occurrences::default(),
        }
    }

    /// Flow ids forgotten because too many attempts were pending.
    pub fn forgotten(&self) -> u64 {
        self.flows.forgotten
    }

    /// A new connection attempt, and its finding's alert when one is due.
    pub fn connection(
        &mut self,
        p: &Policy,
        ts: Timestamp,
        c: &Classification,
        key: &FlowKey,
    ) -> Vec<Value> {
        let flow_id = self.flow_id(ts, key);
        self.flows.insert(*key, flow_id.clone());
        let mut types = vec!["connection", "start"];
        if c.verdict == Verdict::Expected {
            types.push("allowed");
        }
        let mut doc = self.flow_doc(p, ts, c, key, Some(&flow_id));
        set_event(
            &mut doc,
            "event",
            &types,
            "connection-attempt",
            "unknown",
            format!("{flow_id}-c"),
        );
        let mut out = vec![doc];
        if let Some(kind) = FindingKind::of(c.verdict) {
            let f = Found {
                kind,
                ts,
                class: c,
                key,
                outcome: None,
            };
            out.extend(self.finding(p, &f, Some(&flow_id)));
        }
        out
    }

    /// The alert line of finding `f` of flow `flow_id`, if it is due.
    fn finding(&mut self, p: &Policy, f: &Found<'_>, flow_id: Option<&str>) -> Option<Value> {
        let Due::Report(n) = self.due.count(p, f) else {
            return None;
        };
        let c = f.class;
        let (action, types, result, suffix): (_, &[&str], _, _) = match f.kind {
            FindingKind::Unexpected => (
                "unexpected-connection",
                &["connection", "info"],
                "unknown",
                "f",
            ),
            FindingKind::LocalOnly => (
                "local-only-port-reached",
                &["connection", "info"],
                "unknown",
                "f",
            ),
            FindingKind::UnknownHost => (
                "unknown-host-connection",
                &["connection", "info"],
                "unknown",
                "f",
            ),
            FindingKind::Blocked | FindingKind::Missing => (
                "expected-flow-blocked",
                &["connection", "denied"],
                "failure",
                "b",
            ),
        };
        let id = match flow_id {
            Some(fid) => format!("{fid}-{suffix}"),
            None => format!("{}-{suffix}", self.flow_id(f.ts, f.key)),
        };
        let mut alert = self.flow_doc(p, f.ts, c, f.key, flow_id);
        // An accepted deviation is recorded, not raised.
        let kind = match c.accepted {
            Some(_) => "event",
            None => "alert",
        };
        set_event(&mut alert, kind, types, action, result, id);
        let pw = portwatch(&mut alert);
        pw.insert("finding".into(), f.kind.as_str().into());
        pw.insert("occurrence".into(), n.into());
        if let Some(a) = accepted_doc(p, c) {
            pw.insert("accepted".into(), a);
        }
        let what = match f.outcome {
            Some(o) => {
                pw.insert("outcome".into(), o.as_str().into());
                format!(
                    "expected flow {} -> {}:{} {}",
                    p.peer_name(c.src),
                    p.peer_name(c.dst),
                    c.port,
                    o.as_str()
                )
            }
            None => format!(
                "{} {} -> {}:{}",
                f.kind.as_str(),
                p.peer_name(c.src),
                p.peer_name(c.dst),
                c.port
            ),
        };
        let repeat = match n {
            1 => String::new(),
            n => format!(" (occurrence {n})"),
        };
        alert["message"] = format!("{what}{repeat}: {}", explain(p, c)).into();
        Some(alert)
    }

    /// How an attempt ended: the outcome line, and for an expected site
    /// edge refused or unanswered, a `blocked` alert after it when due.
    pub fn outcome(
        &mut self,
        p: &Policy,
        ts: Timestamp,
        c: &Classification,
        key: &FlowKey,
        outcome: Outcome,
    ) -> Vec<Value> {
        let flow_id = self.flows.take(key);
        let (types, result): (&[&str], _) = match outcome {
            Outcome::Established => (&["connection", "allowed"], "success"),
            Outcome::Refused => (&["connection", "end", "denied"], "failure"),
            Outcome::Unanswered => (&["connection", "end"], "failure"),
            Outcome::Unknown => (&["connection", "info"], "unknown"),
            // Let through; whether the handshake completed is not known.
            Outcome::Permitted => (&["connection", "allowed"], "unknown"),
            Outcome::Denied => (&["connection", "denied"], "failure"),
        };
        let id = |suffix: &str| match &flow_id {
            Some(f) => format!("{f}-{suffix}"),
            None => format!("{}-{suffix}", self.flow_id(ts, key)),
        };
        let mut doc = self.flow_doc(p, ts, c, key, flow_id.as_deref());
        set_event(
            &mut doc,
            "event",
            types,
            &format!("connection-{}", outcome.as_str()),
            result,
            id("o"),
        );
        portwatch(&mut doc).insert("outcome".into(), outcome.as_str().into());
        let mut out = vec![doc];
        if c.is_site_edge() && outcome.is_blocked() {
            let f = Found {
                kind: FindingKind::Blocked,
                ts,
                class: c,
                key,
                outcome: Some(outcome),
            };
            out.extend(self.finding(p, &f, flow_id.as_deref()));
        }
        out
    }

    /// A connection two kinds of source told different fates of (one saw
    /// it established, the other refused, unanswered or denied): an alert
    /// with each kind's outcome in `portwatch.outcomes`. Its `ts` is the
    /// later outcome's, not the SYN's, so it carries no `portwatch.flow_id`;
    /// `network.community_id` joins it to the flow's lines.
    pub fn disagreement(
        &self,
        p: &Policy,
        ts: Timestamp,
        c: &Classification,
        key: &FlowKey,
        d: &Disagreement,
    ) -> Value {
        let mut doc = self.flow_doc(p, ts, c, key, None);
        let id = format!("{}-d", self.flow_id(ts, key));
        let types = ["connection", "info"];
        set_event(
            &mut doc,
            "alert",
            &types,
            "outcome-disagreement",
            "unknown",
            id,
        );
        let (blocked_kind, blocked) = d.blocked;
        doc["message"] = format!(
            "sources disagree on {} -> {}:{}: {} saw it established, {} says {}",
            p.peer_name(c.src),
            p.peer_name(c.dst),
            c.port,
            d.established.as_str(),
            blocked_kind.as_str(),
            blocked.as_str()
        )
        .into();
        let outcomes = json!({
            d.established.as_str(): Outcome::Established.as_str(),
            blocked_kind.as_str(): blocked.as_str(),
        });
        portwatch(&mut doc).insert("outcomes".into(), outcomes);
        doc
    }

    /// A connection at its end, for the conn log: the 4-tuple, verdict and
    /// rule as the connection line has them, joined to it by the same
    /// `portwatch.flow_id`; `event.start`/`end`/`duration`; the close
    /// reason, outcome and kind of source; the control packets counted
    /// each way where the source is packets (never bytes: data segments
    /// are skipped undecoded).
    pub fn conn_end(&self, p: &Policy, c: &ConnEnd) -> Value {
        let flow_id = self.flow_id(c.start, &c.key);
        let mut doc = self.flow_doc(p, c.end, &c.class, &c.key, Some(&flow_id));
        let result = match c.outcome {
            Some(Outcome::Established) => "success",
            Some(o) if o.is_blocked() => "failure",
            _ => "unknown",
        };
        let id = format!("{flow_id}-e");
        set_event(
            &mut doc,
            "event",
            &["connection", "end"],
            "connection-end",
            result,
            id,
        );
        let span = c.end.saturating_sub(c.start);
        doc["event"]["start"] = c.start.rfc3339().into();
        doc["event"]["end"] = c.end.rfc3339().into();
        doc["event"]["duration"] = u64::try_from(span.as_nanos()).unwrap_or(u64::MAX).into();
        let outcome = c.outcome.map_or("none", Outcome::as_str);
        doc["message"] = format!(
            "connection {} -> {}:{} ended ({}) after {:.3} s: {outcome}",
            p.peer_name(c.class.src),
            p.peer_name(c.class.dst),
            c.class.port,
            c.close.as_str(),
            span.as_secs_f64(),
        )
        .into();
        let pw = portwatch(&mut doc);
        pw.insert("close".into(), c.close.as_str().into());
        if let Some(o) = c.outcome {
            pw.insert("outcome".into(), o.as_str().into());
        }
        pw.insert("source_kind".into(), c.source.as_str().into());
        if let Some(s) = &c.sensor {
            pw.insert("sensor".into(), s.as_ref().into());
        }
        if let Some([client, server]) = c.controls {
            let counts = json!({"client": client, "server": server});
            pw.insert("control_packets".into(), counts);
        }
        if let Some(a) = accepted_doc(p, &c.class) {
            pw.insert("accepted".into(), a);
        }
        set_mirror(&mut doc, c.mirror);
        doc
    }

    /// A new policy: missing-edge state starts over.
    pub fn set_policy(&mut self, p: &Policy) {
        self.missing = vec![false; p.edges.len()];
    }

    /// Which findings were counted, and how often (kept over a restart).
    pub fn occurrences(&mut self) -> &mut Occurrences {
        &mut self.due
    }

    /// Edges reported missing now.
    pub fn missing_count(&self) -> usize {
        self.missing.iter().filter(|m| **m).count()
    }

    /// `edge` was reported missing before a restart: no second alert.
    pub fn reported_missing(&mut self, p: &Policy, edge: EdgeId) {
        if self.missing.len() != p.edges.len() {
            self.set_policy(p);
        }
        if let Some(m) = self.missing.get_mut(edge.0 as usize) {
            *m = true;
        }
    }

    /// The state of each judged required edge at `now`: a `missing` alert
    /// when one turns missing, an event when it is seen again.
    pub fn edges(
        &mut self,
        p: &Policy,
        now: Timestamp,
        states: impl IntoIterator<Item = (EdgeId, EdgeState)>,
    ) -> Vec<Value> {
        if self.missing.len() != p.edges.len() {
            self.set_policy(p);
        }
        let mut out = Vec::new();
        for (edge, state) in states {
            let Some(was) = self.missing.get_mut(edge.0 as usize) else {
                continue;
            };
            let is = state == EdgeState::Missing;
            if is == *was || (!is && state != EdgeState::Seen) {
                continue;
            }
            *was = is;
            out.push(self.edge_doc(p, now, edge, is));
        }
        out
    }

    fn edge_doc(&self, p: &Policy, now: Timestamp, id: EdgeId, missing: bool) -> Value {
        let e = p.edge(id);
        let (src, dst) = (&p.endpoint(e.src).name, &p.endpoint(e.dst).name);
        let (rule, description) = edge_rule(p, id);
        let text = match missing {
            true => format!(
                "required edge {src} -> {dst}:{} ({}) has had no evidence for {}s",
                e.port,
                e.service,
                e.window.as_secs()
            ),
            false => format!(
                "required edge {src} -> {dst}:{} ({}) is seen again",
                e.port, e.service
            ),
        };
        let mut doc = json!({
            "@timestamp": now.rfc3339(),
            "ecs": {"version": ECS_VERSION},
            "message": text,
            "observer": self.observer_doc(),
            "rule": rule_doc(p, rule, description),
            "portwatch": {
                "site": p.site.name,
                "src": src,
                "dst": dst,
                "port": e.port,
                "service": &*e.service,
                "window_seconds": e.window.as_secs(),
            },
        });
        let edge_key = format!("{src}>{dst}:{}", e.port);
        let nanos = now.as_nanos();
        let (kind, action, suffix) = match missing {
            true => ("alert", "required-edge-missing", "m"),
            false => ("event", "required-edge-seen", "s"),
        };
        let event_id = format!(
            "{}-{suffix}",
            short_hash(&[edge_key.as_bytes(), &nanos.to_be_bytes()])
        );
        set_event(
            &mut doc,
            kind,
            &["connection", "info"],
            action,
            "unknown",
            event_id,
        );
        if missing {
            portwatch(&mut doc).insert("finding".into(), "missing".into());
        }
        doc
    }

    fn observer_doc(&self) -> Value {
        json!({
            "name": self.observer.name,
            "hostname": self.observer.hostname,
            "type": "sensor",
            "vendor": "portwatch",
            "product": "portwatch",
            "version": env!("CARGO_PKG_VERSION"),
        })
    }

    /// Stable for one attempt, distinct across attempts and sensors: the
    /// SYN's time, the 5-tuple and the observer.
    fn flow_id(&self, ts: Timestamp, key: &FlowKey) -> String {
        short_hash(&[
            self.observer.name.as_bytes(),
            &ts.as_nanos().to_be_bytes(),
            &octets(key.client),
            &key.client_port.to_be_bytes(),
            &octets(key.server),
            &key.server_port.to_be_bytes(),
        ])
    }

    fn flow_doc(
        &self,
        p: &Policy,
        ts: Timestamp,
        c: &Classification,
        key: &FlowKey,
        flow_id: Option<&str>,
    ) -> Value {
        let explanation = explain(p, c);
        let (rule, description) = class_rule(p, c, &explanation);
        let mut pw = json!({
            "site": p.site.name,
            "verdict": c.verdict.as_str(),
            "src": p.peer_name(c.src),
            "dst": p.peer_name(c.dst),
            "service": &*c.service,
        });
        if let Some(f) = flow_id {
            pw["flow_id"] = f.into();
        }
        json!({
            "@timestamp": ts.rfc3339(),
            "ecs": {"version": ECS_VERSION},
            "message": explanation,
            "source": {"ip": key.client.to_string(), "port": key.client_port},
            "destination": {"ip": key.server.to_string(), "port": key.server_port},
            "network": {
                "transport": "tcp",
                "iana_number": TCP.to_string(),
                "type": if key.client.is_ipv4() { "ipv4" } else { "ipv6" },
                "community_id": community_id_v1(
                    TCP, key.client, key.server, key.client_port, key.server_port,
                ),
            },
            "related": {"ip": related(key.client, key.server)},
            "observer": self.observer_doc(),
            "rule": rule_doc(p, rule, description),
            "portwatch": pw,
        })
    }
}

fn related(a: IpAddr, b: IpAddr) -> Vec<String> {
    match a == b {
        true => vec![a.to_string()],
        false => vec![a.to_string(), b.to_string()],
    }
}

fn set_event(doc: &mut Value, kind: &str, types: &[&str], action: &str, outcome: &str, id: String) {
    doc["event"] = json!({
        "kind": kind,
        "category": ["network"],
        "type": types,
        "action": action,
        "outcome": outcome,
        "id": id,
        "module": "portwatch",
        "dataset": if kind == "alert" { "portwatch.finding" } else { "portwatch.flow" },
    });
}

/// `portwatch.mirror.kind` and `portwatch.mirror.session` (when there is
/// one): the encapsulation a flow's SYN arrived in.
pub fn set_mirror(doc: &mut Value, mirror: Option<Encap>) {
    let Some(m) = mirror else { return };
    let mut v = json!({ "kind": m.kind.as_str() });
    if let Some(s) = m.session {
        v["session"] = s.into();
    }
    portwatch(doc).insert("mirror".into(), v);
}

/// `process.executable` and `process.pid` where the source names them (a
/// node's audit events do; packets do not).
pub fn set_process(doc: &mut Value, p: &Process) {
    if !p.is_known() {
        return;
    }
    let mut v = Map::new();
    if let Some(exe) = &p.executable {
        v.insert("executable".into(), exe.as_ref().into());
    }
    if let Some(pid) = p.pid {
        v.insert("pid".into(), pid.into());
    }
    doc["process"] = Value::Object(v);
}

fn portwatch(doc: &mut Value) -> &mut Map<String, Value> {
    doc["portwatch"]
        .as_object_mut()
        .expect("every document has a portwatch object")
}

/// The acceptance that held for `c`, as `portwatch.accepted`.
fn accepted_doc(p: &Policy, c: &Classification) -> Option<Value> {
    let a = p.acceptance(c.accepted?);
    Some(json!({
        "index": a.index,
        "ticket": a.ticket,
        "owner": a.owner,
        "expires": a.expires,
        "reason": a.reason,
    }))
}

/// Which rule judged a connection, as `rule.name` and `rule.ruleset`.
enum RuleRef {
    Model(String),
    Site(String),
}

fn rule_doc(p: &Policy, r: RuleRef, description: String) -> Value {
    let (name, ruleset) = match r {
        RuleRef::Model(n) => (n, p.model.id.clone()),
        RuleRef::Site(n) => (n, format!("site:{}", p.site.name)),
    };
    json!({"name": name, "ruleset": ruleset, "description": description})
}

fn class_rule(p: &Policy, c: &Classification, explanation: &str) -> (RuleRef, String) {
    let r = match c.basis {
        Basis::Edge(e) => return edge_rule(p, e),
        Basis::Rule(r) => return model_rule(p, r),
        Basis::SameHost => RuleRef::Model("same-host".into()),
        Basis::Loopback => RuleRef::Model("loopback".into()),
        Basis::Sensor => RuleRef::Model("sensor".into()),
        Basis::LocalRule(r) => {
            let rule = p.model.rule(r);
            RuleRef::Model(format!("{}:{}/local", rule.service(), rule.port))
        }
        Basis::NoRule => RuleRef::Model("no-rule".into()),
        Basis::Unknown { .. } => RuleRef::Site("unknown-host".into()),
    };
    (r, explanation.to_string())
}

/// A model rule that allows a connection (through an edge or directly).
fn model_rule(p: &Policy, r: RuleId) -> (RuleRef, String) {
    let rule = p.model.rule(r);
    (
        RuleRef::Model(format!("{}:{}", rule.service(), rule.port)),
        format!("{} ({})", rule.purpose, rule.cite),
    )
}

/// The rule or site allowance an expected edge comes from.
fn edge_rule(p: &Policy, id: EdgeId) -> (RuleRef, String) {
    let e = p.edge(id);
    match e.origins.first() {
        Some(Origin::Rule(r)) => model_rule(p, *r),
        Some(Origin::Monitoring) => (
            RuleRef::Site("monitoring".into()),
            "a scraper of the portwatch sensors (site monitoring list)".into(),
        ),
        Some(Origin::Allowance(i)) => (
            RuleRef::Site(format!("allow[{i}]")),
            format!("allowed by the site (allow[{i}])"),
        ),
        None => (
            RuleRef::Site(format!("{}:{}", e.service, e.port)),
            "expected by the site".into(),
        ),
    }
}

fn short_hash(parts: &[&[u8]]) -> String {
    let mut h = Sha1::new();
    for p in parts {
        h.update((p.len() as u32).to_be_bytes());
        h.update(p);
    }
    h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
