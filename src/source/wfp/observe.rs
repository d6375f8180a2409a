//! A WFP event as an [`Observation`]: 5156 is `permitted` (the platform
//! let the connection through; whether its handshake completed is not
//! logged), 5157 and 5152 are `denied`, citing the filter (`FilterRTID`).
//! The process is the event's `Application` and pid. Only TCP events
//! become observations; the others are counted.

use std::net::IpAddr;
use std::sync::Arc;

use super::sides::names_a_packet;
use super::{Ends, EventId, Unresolved, WfpEvent};
use crate::observation::{FlowKey, Initiator, Observation, Outcome, Process, SourceKind};

const TCP: u8 = 6;

/// Why an event gave no observation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Skipped {
    NotTcp,
    Unresolved(Unresolved),
}

impl Skipped {
    pub fn as_str(self) -> &'static str {
        match self {
            Skipped::NotTcp => "not_tcp",
            Skipped::Unresolved(u) => u.as_str(),
        }
    }
}

/// The observation of `e`, oriented as `ends`, logged by `sensor`.
pub fn observation(
    e: &WfpEvent,
    ends: Result<Ends, Unresolved>,
    sensor: Option<Arc<str>>,
) -> Result<Observation, Skipped> {
    if e.protocol != TCP {
        return Err(Skipped::NotTcp);
    }
    let ends = ends.map_err(Skipped::Unresolved)?;
    let outcome = match e.id {
        EventId::Permitted => Outcome::Permitted,
        EventId::Blocked | EventId::Dropped => Outcome::Denied,
    };
    let key = FlowKey {
        client: ends.initiator.addr,
        client_port: ends.initiator.port,
        server: ends.responder.addr,
        server_port: ends.responder.port,
    };
    let mut obs = Observation::record(e.time, key, outcome, SourceKind::WfpEvents);
    // A dropped packet's sender is taken as the initiator: its flags are
    // not logged, so it may be a late reply.
    if names_a_packet(e) {
        obs.initiator = Initiator::Inferred;
    }
    obs.sensor = sensor;
    obs.process = Process {
        executable: e.application.as_deref().map(Arc::from),
        // Pid 0 is the idle process: no process owned the packet.
        pid: e.pid.filter(|p| *p != 0),
    };
    // FilterRTID 0 names no filter (Windows 7 logs it so).
    obs.filter = e
        .filter_rtid
        .filter(|f| *f != 0 && outcome == Outcome::Denied);
    Ok(obs)
}

/// The site node that logged `e`: the one its host name names (the whole
/// name or its first label, in any case), else the one owning the node's
/// end of the connection.
pub fn sensor<'a>(
    host: Option<&str>,
    local: Option<IpAddr>,
    nodes: impl Iterator<Item = (&'a str, &'a [IpAddr])> + Clone,
) -> Option<&'a str> {
    let by_name = host.and_then(|h| {
        let first = h.split('.').next().unwrap_or(h);
        (nodes.clone())
            .find(|(n, _)| n.eq_ignore_ascii_case(h) || n.eq_ignore_ascii_case(first))
            .map(|(n, _)| n)
    });
    by_name.or_else(|| {
        let a = local?;
        nodes
            .clone()
            .find(|(_, addrs)| addrs.contains(&a))
            .map(|(n, _)| n)
    })
}

/// The node's own end of an oriented event.
pub fn local_end(ends: &Ends) -> IpAddr {
    if ends.node_initiated {
        ends.initiator.addr
    } else {
        ends.responder.addr
    }
}
