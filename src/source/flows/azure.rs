//! Azure VNet flow logs (`flowLogVersion` 4, `flowRecords`) and NSG flow
//! logs (`properties.Version` 1 or 2): JSON, a `{"records": [...]}`
//! document or one record per line. Each tuple is one flow's state.
//!
//! What a tuple can prove (there are no TCP flags):
//! - `D` (VNet state, NSG decision): the rule denied it: `denied` (counted
//!   by the rule's name).
//! - `B` begins a flow and `E` ends it; the begin and end of one flow make
//!   one observation at the begin's time. At `E`, packets back after the
//!   client's second packet (its ACK) is `established` (inferred: a
//!   refusal is one packet each way); anything else is `permitted`.
//! - A flow begun and not ended in the file is `permitted`; `C` (continuing)
//!   of a flow not begun here opens it (it was open before the log).
//! - The tuple's source is the initiator.

use std::collections::HashMap;
use std::net::IpAddr;

use serde_json::Value;

use super::{key, FlowFile, FlowStop};
use crate::observation::{Fate, FlowKey, Observation, Outcome, SourceKind};
use crate::time::Timestamp;

/// Flows begun and not yet ended held per file; beyond this, all held are
/// observed early (counted).
const OPEN_CAPACITY: usize = 1 << 20;
/// Distinct rule names counted; further names count as `(other)`.
const RULE_CAPACITY: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Begin,
    Continuing,
    End,
    Denied,
    /// NSG version 1: allowed, nothing more.
    Allowed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tuple {
    ts: Timestamp,
    key: FlowKey,
    tcp: bool,
    state: State,
    /// Packets source to destination, and back.
    s2d: u64,
    d2s: u64,
}

/// The tuple layouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// VNet: `ms,src,dst,sport,dport,proto#,dir,state,enc,pkts,bytes,pkts,bytes`.
    Vnet,
    /// NSG: `s,src,dst,sport,dport,T|U,dir,A|D[,state,pkts,bytes,pkts,bytes]`.
    Nsg,
}

fn parse_tuple(layout: Layout, s: &str) -> Result<Tuple, &'static str> {
    let fields = super::Fields::<13>::of(s.split(','));
    let (t, n) = (fields.kept(), fields.len());
    let ok = match layout {
        Layout::Vnet => n == 13,
        Layout::Nsg => n == 8 || n == 13,
    };
    if !ok {
        return Err("malformed_tuple_fields");
    }
    let stamp: u64 = t[0].parse().map_err(|_| "malformed_time")?;
    let ts = match layout {
        Layout::Vnet => Timestamp::from_secs_nanos(stamp / 1000, (stamp % 1000) as u32 * 1_000_000),
        Layout::Nsg => Timestamp::from_secs_nanos(stamp, 0),
    };
    let ip = |s: &str| s.parse::<IpAddr>().map_err(|_| "malformed_address");
    let port = |s: &str| s.parse::<u16>().map_err(|_| "malformed_port");
    let key = key((ip(t[1])?, port(t[3])?), (ip(t[2])?, port(t[4])?), true);
    let tcp = matches!(t[5], "6" | "T");
    let state = match (layout, t[7]) {
        (Layout::Vnet, "B") => State::Begin,
        (Layout::Vnet, "C") => State::Continuing,
        (Layout::Vnet, "E") => State::End,
        (_, "D") => State::Denied,
        (Layout::Nsg, "A") if n == 8 => State::Allowed,
        (Layout::Nsg, "A") => match t[8] {
            "B" => State::Begin,
            "C" => State::Continuing,
            "E" => State::End,
            _ => return Err("malformed_state"),
        },
        _ => return Err("malformed_state"),
    };
    // Counts are empty in a begin tuple.
    let count = |i: usize| {
        t.get(i).map_or(Ok(0), |c| {
            if c.is_empty() {
                Ok(0)
            } else {
                c.parse::<u64>().map_err(|_| "malformed_count")
            }
        })
    };
    Ok(Tuple {
        ts,
        key,
        tcp,
        state,
        s2d: count(9)?,
        d2s: count(11)?,
    })
}

/// The reader's state over a file.
#[derive(Default)]
struct Reader {
    f: FlowFile,
    open: HashMap<FlowKey, Timestamp>,
}

impl Reader {
    fn emit(&mut self, ts: Timestamp, key: FlowKey, outcome: Outcome, inferred: bool) {
        self.f.observe(Observation {
            fate: Fate::Ended { outcome, inferred },
            ..Observation::record(ts, key, outcome, SourceKind::AzureFlowLog)
        });
    }

    fn deny(&mut self, rule: &str) {
        let full = self.f.denied_by.len() >= RULE_CAPACITY && !self.f.denied_by.contains_key(rule);
        let name = if full { "(other)" } else { rule };
        *self.f.denied_by.entry(name.to_string()).or_insert(0) += 1;
    }

    fn tuple(&mut self, layout: Layout, nic: &str, rule: &str, s: &str) {
        self.f.records += 1;
        let t = match parse_tuple(layout, s) {
            Ok(t) => t,
            Err(reason) => return self.f.count(reason),
        };
        (self.f.interfaces).note(nic, &[t.key.client, t.key.server]);
        if !t.tcp {
            return self.f.count("not_tcp");
        }
        if self.open.len() >= OPEN_CAPACITY {
            self.f.count("open_full");
            self.close_all();
        }
        match t.state {
            State::Denied => {
                self.deny(rule);
                self.emit(t.ts, t.key, Outcome::Denied, false);
            }
            State::Allowed => self.emit(t.ts, t.key, Outcome::Permitted, false),
            State::Begin => {
                if self.open.insert(t.key, t.ts).is_some() {
                    self.f.count("begin_again");
                }
            }
            State::Continuing => {
                self.f.count("continuing");
                self.open.entry(t.key).or_insert(t.ts);
            }
            State::End => {
                let began = self.open.remove(&t.key).unwrap_or(t.ts);
                if t.d2s > 0 && t.s2d >= 2 {
                    self.emit(began, t.key, Outcome::Established, true);
                } else {
                    self.emit(began, t.key, Outcome::Permitted, false);
                }
            }
        }
    }

    /// Flows begun and not ended: `permitted`.
    fn close_all(&mut self) {
        let mut open: Vec<(FlowKey, Timestamp)> = self.open.drain().collect();
        open.sort_by_key(|(_, ts)| *ts);
        for (key, ts) in open {
            self.f.count("not_ended");
            self.emit(ts, key, Outcome::Permitted, false);
        }
    }

    fn record(&mut self, r: &Value) {
        // The logged NIC: its MAC, else the resource the log targets.
        let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let target = (text(r, "macAddress"))
            .or_else(|| text(r, "targetResourceID"))
            .or_else(|| text(r, "resourceId"))
            .unwrap_or_default();
        if let Some(flows) = r.pointer("/flowRecords/flows").and_then(Value::as_array) {
            for acl in flows {
                for g in array(acl, "flowGroups") {
                    self.tuples(Layout::Vnet, &target, g);
                }
            }
        } else if let Some(flows) = r.pointer("/properties/flows").and_then(Value::as_array) {
            for rule in flows {
                for g in array(rule, "flows") {
                    let rule_name = rule.get("rule").cloned().unwrap_or(Value::Null);
                    let mut g = g.clone();
                    if let Some(o) = g.as_object_mut() {
                        o.insert("rule".into(), rule_name);
                    }
                    let nic = text(&g, "mac").unwrap_or_else(|| target.clone());
                    self.tuples(Layout::Nsg, &nic, &g);
                }
            }
        } else {
            self.f.count("malformed_record");
        }
    }

    /// A group's tuples, under its rule.
    fn tuples(&mut self, layout: Layout, nic: &str, g: &Value) {
        let rule = g
            .get("rule")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        match g.get("flowTuples").and_then(Value::as_array) {
            None => self.f.count("malformed_record"),
            Some(ts) => {
                for t in ts {
                    match t.as_str() {
                        Some(s) => self.tuple(layout, nic, &rule, s),
                        None => {
                            self.f.records += 1;
                            self.f.count("malformed_tuple_fields");
                        }
                    }
                }
            }
        }
    }
}

fn array<'a>(v: &'a Value, name: &str) -> &'a [Value] {
    v.get(name)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// How JSON text is laid out, by its first line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JsonShape {
    /// The first line is a whole value: one value a line (NDJSON), or a
    /// document written on one line.
    Lines,
    /// The first line opens a value the next lines continue: a document
    /// over lines (pretty-printed), which names its kind where it likes and
    /// cannot be read line by line.
    Document,
}

/// The shape of text starting (after blanks or a UTF-8 byte-order mark)
/// with `{`; `None` for other text, or before the first line's end.
pub fn json_shape(head: &[u8]) -> Option<JsonShape> {
    let t = head.trim_ascii_start();
    let t = t
        .strip_prefix(b"\xEF\xBB\xBF")
        .unwrap_or(t)
        .trim_ascii_start();
    if !t.starts_with(b"{") {
        return None;
    }
    let line = &t[..t.iter().position(|b| *b == b'\n')?];
    // Cut short is a document's first line; broken is a bad line of NDJSON.
    match serde_json::from_slice::<serde::de::IgnoredAny>(line) {
        Err(e) if e.is_eof() => Some(JsonShape::Document),
        _ => Some(JsonShape::Lines),
    }
}

/// Read an Azure flow log's text: JSON documents one after another.
pub fn read(bytes: &[u8]) -> FlowFile {
    let mut r = Reader::default();
    let mut docs = serde_json::Deserializer::from_slice(bytes).into_iter::<Value>();
    loop {
        let at = docs.byte_offset();
        match docs.next() {
            None => break,
            Some(Ok(doc)) => match doc.get("records").and_then(Value::as_array) {
                Some(records) => records.iter().for_each(|rec| r.record(rec)),
                None => r.record(&doc),
            },
            Some(Err(e)) => {
                r.f.count(if e.is_eof() {
                    "truncated"
                } else {
                    "malformed_json"
                });
                r.f.stopped = Some(FlowStop {
                    offset: at as u64,
                    reason: format!("not JSON from here ({e})"),
                });
                break;
            }
        }
    }
    r.close_all();
    r.f
}
