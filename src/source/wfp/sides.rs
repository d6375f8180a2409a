//! Who opened a connection, and which end is the logging node.
//!
//! Microsoft documents `SourceAddress` of 5156/5157 as the *local* address
//! on which the application received the connection. Real inbound events
//! disagree, and not even with each other: on Windows 7 (the RDP tunnel
//! sample) an inbound Receive/Accept event names the local listener as
//! source (`127.0.0.2:3389 -> 127.0.0.1:49271`, Application `System`);
//! on Windows 10 and Server 2016 and later (the OTRF samples) it names the
//! remote initiator as source (`172.18.39.5:54358 -> 172.18.39.6:135` on
//! host 172.18.39.6, and `::1:64470 -> ::1:389` logged by `lsass.exe`, the
//! LDAP server). Outbound Connect events name the local initiator as
//! source everywhere, and packet layers (Transport, IP Packet) and dropped
//! packets (5152, on any layer) give the packet's own source and
//! destination: the sender is taken as the initiator, since a packet with no
//! connection to belong to opens one (its flags are not logged). An ICMP
//! Error layer event is about a reply or an error, so it is not oriented.
//!
//! So an inbound ALE event is oriented from what the node itself showed:
//! the addresses it opened connections from (or that the inventory gives
//! it), and the connections it opened (a loopback connection is logged
//! twice, Connect then Receive/Accept, with the same ends). Once one
//! inbound event of a host is resolved that way, the host's convention is
//! known and applies to the rest. An inbound event with none of these is
//! [`Unresolved::Ambiguous`], counted, not guessed.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;

use super::{Direction, Endpoint, EventId, Layer, WfpEvent};

/// Hosts remembered at once; the least recently seen makes room.
pub const MAX_HOSTS: usize = 256;
/// Addresses remembered per host; the oldest makes room.
pub const MAX_ADDRESSES: usize = 64;
/// Outbound connections remembered per host (to pair loopback events);
/// the oldest makes room.
pub const MAX_OPENED: usize = 4096;

/// The two ends of one connection, and which is the logging node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ends {
    pub initiator: Endpoint,
    pub responder: Endpoint,
    /// The logging node is the initiator (outbound) or the responder.
    pub node_initiated: bool,
}

/// Why an event's ends are not known.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Unresolved {
    /// An ICMP Error or other layer: the record does not say who opened
    /// the exchange the packet belongs to.
    Layer,
    /// An inbound connection event whose local end could not be told from
    /// its remote one (see the module documentation).
    Ambiguous,
}

impl Unresolved {
    pub fn as_str(self) -> &'static str {
        match self {
            Unresolved::Layer => "layer_without_direction",
            Unresolved::Ambiguous => "ambiguous_inbound",
        }
    }
}

/// Whether a host names the local end of inbound ALE events as source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Convention {
    SourceIsLocal,
    SourceIsRemote,
}

#[derive(Default)]
struct Host {
    addresses: VecDeque<IpAddr>,
    opened: VecDeque<(Endpoint, Endpoint)>,
    opened_set: HashSet<(Endpoint, Endpoint)>,
    convention: Option<Convention>,
    seen: u64,
}

impl Host {
    fn is_local(&self, a: IpAddr) -> bool {
        a.is_loopback() || self.addresses.contains(&a)
    }

    fn learn(&mut self, a: IpAddr, forgotten: &mut u64) {
        if a.is_loopback() || a.is_unspecified() || self.addresses.contains(&a) {
            return;
        }
        if self.addresses.len() == MAX_ADDRESSES {
            self.addresses.pop_front();
            *forgotten += 1;
        }
        self.addresses.push_back(a);
    }

    fn opened(&mut self, pair: (Endpoint, Endpoint), forgotten: &mut u64) {
        if !self.opened_set.insert(pair) {
            return;
        }
        self.opened.push_back(pair);
        if self.opened.len() > MAX_OPENED {
            if let Some(old) = self.opened.pop_front() {
                self.opened_set.remove(&old);
                *forgotten += 1;
            }
        }
    }

    /// The convention an inbound event shows, if it shows one.
    fn shown(&self, src: Endpoint, dst: Endpoint) -> Option<Convention> {
        if self.opened_set.contains(&(src, dst)) {
            return Some(Convention::SourceIsRemote);
        }
        if self.opened_set.contains(&(dst, src)) {
            return Some(Convention::SourceIsLocal);
        }
        match (self.is_local(src.addr), self.is_local(dst.addr)) {
            (true, false) => Some(Convention::SourceIsLocal),
            (false, true) => Some(Convention::SourceIsRemote),
            _ => None,
        }
    }
}

/// What is known of each logging host, to orient its events. Bounded (see
/// the constants); `forgotten` counts what made room.
#[derive(Default)]
pub struct Sides {
    hosts: HashMap<String, Host>,
    clock: u64,
    pub forgotten: u64,
}

impl Sides {
    pub fn new() -> Sides {
        Sides::default()
    }

    /// Tell that `addr` is one of `host`'s own addresses (from the inventory).
    pub fn node_address(&mut self, host: &str, addr: IpAddr) {
        let mut forgotten = 0;
        self.host(host).learn(addr, &mut forgotten);
        self.forgotten += forgotten;
    }

    /// Orient one event, learning from it for the events after it.
    pub fn orient(&mut self, e: &WfpEvent) -> Result<Ends, Unresolved> {
        let mut forgotten = 0;
        let host = self.host(e.host.as_deref().unwrap_or(""));
        let (src, dst) = (e.source, e.dest);
        let r = match (names_a_packet(e), e.layer.is_ale(), e.direction) {
            (true, _, Direction::Outbound) => {
                host.learn(src.addr, &mut forgotten);
                Ok(ends(src, dst, true))
            }
            (true, _, Direction::Inbound) => {
                host.learn(dst.addr, &mut forgotten);
                Ok(ends(src, dst, false))
            }
            (false, true, Direction::Outbound) => {
                host.learn(src.addr, &mut forgotten);
                host.opened((src, dst), &mut forgotten);
                Ok(ends(src, dst, true))
            }
            (false, true, Direction::Inbound) => {
                if let Some(c) = host.shown(src, dst) {
                    host.convention = Some(c);
                }
                match host.convention {
                    Some(Convention::SourceIsRemote) => Ok(ends(src, dst, false)),
                    Some(Convention::SourceIsLocal) => Ok(ends(dst, src, false)),
                    None => Err(Unresolved::Ambiguous),
                }
            }
            (false, false, _) => Err(Unresolved::Layer),
        };
        self.forgotten += forgotten;
        r
    }

    fn host(&mut self, name: &str) -> &mut Host {
        self.clock += 1;
        if !self.hosts.contains_key(name) && self.hosts.len() >= MAX_HOSTS {
            let oldest = (self.hosts.iter().min_by_key(|(_, h)| h.seen)).map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.hosts.remove(&k);
                self.forgotten += 1;
            }
        }
        let h = self.hosts.entry(name.to_string()).or_default();
        h.seen = self.clock;
        h
    }
}

/// Whether `e` names a packet as it travelled (its sender as source): a
/// dropped packet (5152) on any layer but ICMP Error, and the packet layers.
pub fn names_a_packet(e: &WfpEvent) -> bool {
    e.layer != Layer::IcmpError
        && (e.id == EventId::Dropped || matches!(e.layer, Layer::Transport | Layer::IpPacket))
}

fn ends(initiator: Endpoint, responder: Endpoint, node_initiated: bool) -> Ends {
    Ends {
        initiator,
        responder,
        node_initiated,
    }
}
