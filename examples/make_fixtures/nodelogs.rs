//! What each node of the multi-node site would have logged of a capture's
//! connection attempts: its Windows Firewall log (`pfirewall.log`) and its
//! Filtering Platform audit events 5156/5157 as Winlogbeat ships them
//! (NDJSON, ECS), written under `fixtures/nodelogs/` with the site file
//! they are read with (the bundled multi-node site, each node given a
//! `timezone:`).
//!
//! One record per attempt on each end that is a site node:
//!
//! - the initiator's node: `ALLOW … SEND`, a 5156 outbound (Connect layer);
//!   its own firewall lets every connection out;
//! - the responder's node, attempt answered (SYN-ACK) or refused (RST):
//!   `ALLOW … RECEIVE`, a 5156 inbound (Receive/Accept layer) at the SYN
//!   that got through; the firewall let it in, the log cannot see the RST;
//! - the responder's node, attempt unanswered: its host firewall dropped
//!   it, one `DROP … RECEIVE` (flags `S`) and one 5157 per SYN.
//!
//! Firewall log times are the node's local time in whole seconds; the
//! events' `@timestamp` is UTC in milliseconds. Inbound events name the
//! remote initiator as `SourceAddress`, as Windows 10 and Server 2016 and
//! later do. Deterministic: no clock, no randomness.

use std::fmt::Write as _;
use std::net::IpAddr;

use jiff::tz::TimeZone;
use serde_json::json;

use super::{Answer, Attempt, BASE_SECS, MICROS};
use portwatch::policy::Policy;

/// Where the files go, under the fixtures directory.
pub const DIR: &str = "nodelogs";
/// The site file the logs are read with.
pub const SITE: &str = "site.yaml";

/// Each node's time zone (the site file's `timezone:`): local times on
/// both sides of UTC, one with a half-hour offset.
pub const TIMEZONES: [(&str, &str); 5] = [
    ("proxy", "Europe/Berlin"),
    ("engine1", "America/New_York"),
    ("engine2", "Asia/Kolkata"),
    ("central", "Europe/Berlin"),
    ("scheduler", "Europe/London"),
];

/// The host names the events carry (`host.name`): the node's name as the
/// first label, upper case as Windows keeps it.
const DOMAIN: &str = "sense.corp.example";

const HEADER: &str = "#Version: 1.5\r\n#Software: Microsoft Windows Firewall\r\n#Time Format: Local\r\n\
#Fields: date time action protocol src-ip dst-ip src-port dst-port size tcpflags tcpsyn tcpack tcpwin icmptype icmpcode info path\r\n\r\n";

/// The filter that let connections in and out (the default allow rules'
/// run-time ids differ per boot; these are plausible ones), and the block
/// rule that drops the unanswered attempts.
const ALLOW_IN_FILTER: u64 = 71_434;
const ALLOW_OUT_FILTER: u64 = 70_229;
const BLOCK_FILTER: u64 = 87_617;

/// The files of every node, in the site's node order: name and bytes,
/// then the site file.
pub fn files(policy: &Policy, site_yaml: &str, attempts: &[Attempt]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for node in &policy.site.nodes {
        let tz_name = TIMEZONES
            .iter()
            .find(|(n, _)| *n == node.name)
            .map(|(_, z)| *z)
            .unwrap_or_else(|| panic!("no time zone for node {}", node.name));
        let tz = TimeZone::get(tz_name).expect("bundled time zone database");
        let records = records_of(&node.addresses, policy, attempts);
        out.push((
            format!("{}-pfirewall.log", node.name),
            pfirewall(&tz, &records).into_bytes(),
        ));
        out.push((
            format!("{}-wfp.ndjson", node.name),
            winlogbeat(&node.name, &records).into_bytes(),
        ));
    }
    out.push((SITE.into(), site_with_timezones(site_yaml).into_bytes()));
    out
}

/// The file names [`files`] writes, relative to the fixtures directory.
pub fn names() -> Vec<String> {
    let mut v: Vec<String> = (TIMEZONES.iter())
        .flat_map(|(node, _)| {
            [
                format!("{DIR}/{node}-pfirewall.log"),
                format!("{DIR}/{node}-wfp.ndjson"),
            ]
        })
        .collect();
    v.push(format!("{DIR}/{SITE}"));
    v
}

/// The bundled site file with a `timezone:` line under each node's name.
fn site_with_timezones(yaml: &str) -> String {
    let mut out = String::from(
        "# Written by examples/make_fixtures.rs: deploy/sites/multi-node.yaml with each\n\
         # node's timezone:, the local time of its pfirewall.log in this directory.\n",
    );
    for line in yaml.lines() {
        out.push_str(line);
        out.push('\n');
        if let Some(name) = line.strip_prefix("  - name: ") {
            if let Some((_, tz)) = TIMEZONES.iter().find(|(n, _)| *n == name) {
                let _ = writeln!(out, "    timezone: {tz}");
            }
        }
    }
    out
}

/// What one node logged of one packet or connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// It opened the connection; its firewall let it out.
    Send,
    /// Its firewall let the connection in.
    Receive,
    /// Its firewall dropped this SYN.
    Drop,
}

#[derive(Clone, Copy, Debug)]
struct Record {
    /// Microseconds since [`BASE_SECS`].
    t: u64,
    kind: Kind,
    client: IpAddr,
    client_port: u16,
    server: IpAddr,
    port: u16,
    isn: u32,
    /// The process: the executable of the service on the port (see
    /// [`executable`]) and its pid.
    exe: &'static str,
    pid: u32,
}

/// The records of the node owning `addresses`, in time order.
fn records_of(addresses: &[IpAddr], policy: &Policy, attempts: &[Attempt]) -> Vec<Record> {
    let mut out = Vec::new();
    for a in attempts {
        let (exe, pid) = executable(policy, a);
        let record = |t, kind| Record {
            t,
            kind,
            client: a.client,
            client_port: a.client_port,
            server: a.server,
            port: a.port,
            isn: a.isn,
            exe,
            pid,
        };
        if addresses.contains(&a.client) {
            out.push(record(a.syns[0], Kind::Send));
        }
        if addresses.contains(&a.server) {
            match a.answer {
                Answer::SynAck | Answer::Rst => {
                    out.push(record(*a.syns.last().expect("a SYN"), Kind::Receive));
                }
                Answer::Silence => out.extend(a.syns.iter().map(|t| record(*t, Kind::Drop))),
            }
        }
    }
    out.sort_by_key(|r| r.t);
    out
}

/// The executable of the service listening on the attempt's port (the
/// model's service for it on the responding node), with a fixed pid; on
/// the initiator's node the connecting process is named after the service
/// it reaches too. A port without a Qlik service is the kernel's (`System`,
/// pid 4), as Windows names SMB and http.sys ports.
fn executable(policy: &Policy, a: &Attempt) -> (&'static str, u32) {
    let c = portwatch::classify::classify(policy, a.client, a.server, a.port);
    match c.service.as_ref() {
        "qps" => (
            "\\device\\harddiskvolume2\\program files\\qlik\\sense\\proxy\\proxy.exe",
            3356,
        ),
        "qrs" => (
            "\\device\\harddiskvolume2\\program files\\qlik\\sense\\repository\\repository.exe",
            3112,
        ),
        "qrd" => (
            "\\device\\harddiskvolume2\\program files\\qlik\\sense\\repository\\postgresql\\bin\\postgres.exe",
            2068,
        ),
        "qes" => (
            "\\device\\harddiskvolume2\\program files\\qlik\\sense\\engine\\engine.exe",
            2816,
        ),
        "qss-manager" | "qss-worker" => (
            "\\device\\harddiskvolume2\\program files\\qlik\\sense\\scheduler\\scheduler.exe",
            3620,
        ),
        "qpr" => (
            "\\device\\harddiskvolume2\\program files\\qlik\\sense\\printing\\printing.exe",
            3988,
        ),
        "qsd" => (
            "\\device\\harddiskvolume2\\program files\\qlik\\sense\\servicedispatcher\\servicedispatcher.exe",
            2412,
        ),
        _ => ("System", 4),
    }
}

/// `YYYY-MM-DD HH:MM:SS` in `tz`, whole seconds.
fn local(tz: &TimeZone, t: u64) -> String {
    let secs = (BASE_SECS + t / MICROS) as i64;
    jiff::Timestamp::from_second(secs)
        .expect("in range")
        .to_zoned(tz.clone())
        .strftime("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// `pfirewall.log` as Windows writes it: the header, then CRLF lines.
/// `ALLOW` of TCP carries no flags (`0 - 0 0 0`, as real logs have it); a
/// dropped SYN its size, flags, sequence number and window.
fn pfirewall(tz: &TimeZone, records: &[Record]) -> String {
    let mut out = String::from(HEADER);
    for r in records {
        let (action, tcp, path) = match r.kind {
            Kind::Send => ("ALLOW", "0 - 0 0 0".to_string(), "SEND"),
            Kind::Receive => ("ALLOW", "0 - 0 0 0".to_string(), "RECEIVE"),
            Kind::Drop => ("DROP", format!("52 S {} 0 64240", r.isn), "RECEIVE"),
        };
        let _ = write!(
            out,
            "{} {action} TCP {} {} {} {} {tcp} - - - {path}\r\n",
            local(tz, r.t),
            r.client,
            r.server,
            r.client_port,
            r.port
        );
    }
    out
}

/// `@timestamp` as Winlogbeat writes it: UTC, milliseconds.
fn utc_millis(t: u64) -> String {
    let secs = (BASE_SECS + t / MICROS) as i64;
    let ts = jiff::Timestamp::from_second(secs).expect("in range");
    format!(
        "{}.{:03}Z",
        ts.strftime("%Y-%m-%dT%H:%M:%S"),
        (t % MICROS) / 1000
    )
}

/// The 5156/5157 events, one JSON object a line as Winlogbeat's file
/// output writes them (ECS; the event's fields under
/// `winlog.event_data`, every value a string as the Security log gives it).
fn winlogbeat(node: &str, records: &[Record]) -> String {
    let host = format!("{}.{DOMAIN}", node.to_uppercase());
    let mut out = String::new();
    for (i, r) in records.iter().enumerate() {
        let (code, outcome, keyword, message, filter) = match r.kind {
            Kind::Send => (
                5156,
                "success",
                "Audit Success",
                "The Windows Filtering Platform has permitted a connection.",
                ALLOW_OUT_FILTER,
            ),
            Kind::Receive => (
                5156,
                "success",
                "Audit Success",
                "The Windows Filtering Platform has permitted a connection.",
                ALLOW_IN_FILTER,
            ),
            Kind::Drop => (
                5157,
                "failure",
                "Audit Failure",
                "The Windows Filtering Platform has blocked a connection.",
                BLOCK_FILTER,
            ),
        };
        let (direction, layer, layer_rtid) = match r.kind {
            Kind::Send => ("%%14593", "%%14611", "48"),
            Kind::Receive | Kind::Drop => ("%%14592", "%%14610", "44"),
        };
        let event = json!({
            "@timestamp": utc_millis(r.t),
            "agent": {"type": "winlogbeat", "version": "8.15.0"},
            "ecs": {"version": "8.0.0"},
            "event": {
                "action": "Filtering Platform Connection",
                "code": code.to_string(),
                "kind": "event",
                "outcome": outcome,
                "provider": "Microsoft-Windows-Security-Auditing",
            },
            "host": {"name": host},
            "log": {"level": "information"},
            "message": message,
            "winlog": {
                "api": "wineventlog",
                "channel": "Security",
                "computer_name": host,
                "event_id": code.to_string(),
                "keywords": [keyword],
                "opcode": "Info",
                "provider_guid": "{54849625-5478-4994-a5ba-3e3b0328c30d}",
                "provider_name": "Microsoft-Windows-Security-Auditing",
                "record_id": (1_204_000 + i).to_string(),
                "task": "Filtering Platform Connection",
                "event_data": {
                    "ProcessID": r.pid.to_string(),
                    "Application": r.exe,
                    "Direction": direction,
                    "SourceAddress": r.client.to_string(),
                    "SourcePort": r.client_port.to_string(),
                    "DestAddress": r.server.to_string(),
                    "DestPort": r.port.to_string(),
                    "Protocol": "6",
                    "FilterRTID": filter.to_string(),
                    "LayerName": layer,
                    "LayerRTID": layer_rtid,
                    "RemoteUserID": "S-1-0-0",
                    "RemoteMachineID": "S-1-0-0",
                },
            },
        });
        let _ = writeln!(out, "{event}");
    }
    out
}
