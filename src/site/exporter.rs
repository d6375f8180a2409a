//! Flow exporters: a switch, router or firewall that sends NetFlow or
//! IPFIX to `run --flow-listen`, named, known by the address its datagrams
//! come from (and an observation domain, when one address speaks for
//! several observation points), with what passes its observation point.
//! Its records cover exactly that: required edges touching a covered node
//! or network can go missing, others are not its to judge.

use std::net::IpAddr;

use ipnet::IpNet;
use serde_saphyr::Spanned;

use super::raw::RawExporter;
use super::Pos;
use crate::diag::Diagnostics;

/// Most entries of `exporters:`: each datagram is matched against them.
pub const MAX_DECLARED_EXPORTERS: usize = 256;

/// What an exporter covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Covered {
    /// A node or user network of the site, by name.
    Name(String),
    /// The nodes and networks inside this block.
    Net(IpNet),
}

/// An entry of the site's `exporters:` list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exporter {
    /// A label value of the per-exporter metrics.
    pub name: String,
    /// The source address of its datagrams, as the collector sees it.
    pub address: IpAddr,
    /// NetFlow v9 source id or IPFIX observation domain; `None`: any.
    pub observation_domain: Option<u32>,
    pub covers: Vec<Covered>,
    pub pos: Pos,
}

impl Exporter {
    /// Whether a datagram from `from` in `domain` is this exporter's.
    pub fn sent(&self, from: IpAddr, domain: Option<u32>) -> bool {
        from.to_canonical() == self.address.to_canonical()
            && self.observation_domain.is_none_or(|d| Some(d) == domain)
    }
}

/// The declared exporter a datagram from `from` in `domain` comes from: one
/// naming its domain before one for the whole address.
pub fn exporter_of(list: &[Exporter], from: IpAddr, domain: Option<u32>) -> Option<&Exporter> {
    exporter_index(list, from, domain).map(|i| &list[i])
}

/// As [`exporter_of`], its position in `list`.
pub fn exporter_index(list: &[Exporter], from: IpAddr, domain: Option<u32>) -> Option<usize> {
    (list.iter().enumerate())
        .filter(|(_, e)| e.sent(from, domain))
        .max_by_key(|(_, e)| e.observation_domain.is_some())
        .map(|(i, _)| i)
}

/// The `exporters:` list: identifier names, unique; an address; a domain
/// that fits 32 bits; covers naming the site's nodes or user networks, or
/// CIDR blocks. Two entries may not claim the same address and domain.
pub(super) fn exporters(
    text: &str,
    d: &mut Diagnostics,
    raw: &[RawExporter],
    is_covered: &dyn Fn(&str) -> bool,
) -> Vec<Exporter> {
    if let Some(x) = raw.get(MAX_DECLARED_EXPORTERS) {
        let (f, m) = (
            format!("exporters[{MAX_DECLARED_EXPORTERS}]"),
            format!("more than {MAX_DECLARED_EXPORTERS} exporters"),
        );
        d.on(&x.name, f, m);
        return Vec::new();
    }
    let mut out: Vec<Exporter> = Vec::new();
    for (i, x) in raw.iter().enumerate() {
        let at = |f: &str| format!("exporters[{i}].{f}");
        let name = exporter_name(text, d, &x.name, at("name"), &out);
        let address = (x.address.value.trim().parse::<IpAddr>())
            .map_err(|_| {
                let m = format!("`{}` is not an address", x.address.value);
                d.on(&x.address, at("address"), m)
            })
            .ok();
        let domain = x.observation_domain.as_ref().map(|v| {
            u32::try_from(v.value).map_err(|_| {
                let m = format!("{} is not an observation domain (0 to 4294967295)", v.value);
                d.on(v, at("observation_domain"), m)
            })
        });
        let covers = covers(text, d, &x.covers, i, is_covered);
        if x.covers.is_empty() {
            let m = "an exporter covers at least one node, user network or CIDR block";
            d.on(&x.name, at("covers"), m);
        }
        let (Some(name), Some(address), Some(covers)) = (name, address, covers) else {
            continue;
        };
        let Ok(observation_domain) = domain.transpose() else {
            continue;
        };
        if let Some(o) = (out.iter())
            .find(|o| o.address == address && o.observation_domain == observation_domain)
        {
            let m = format!("exporter `{}` already has this address and domain", o.name);
            d.on(&x.address, at("address"), m);
            continue;
        }
        out.push(Exporter {
            name,
            address,
            observation_domain,
            covers,
            pos: Pos {
                line: x.name.referenced.line(),
                column: x.name.referenced.column(),
            },
        });
    }
    out
}

/// A metric label value: an identifier, unique, not `undeclared`.
fn exporter_name(
    text: &str,
    d: &mut Diagnostics,
    v: &Spanned<String>,
    field: String,
    seen: &[Exporter],
) -> Option<String> {
    if crate::name::check(&v.value).is_err() {
        d.name(text, v, field);
        return None;
    }
    if v.value == UNDECLARED || seen.iter().any(|e| e.name == v.value) {
        let m = format!("`{}` is taken; choose another name", v.value);
        d.on(v, field, m);
        return None;
    }
    Some(v.value.clone())
}

/// The label value of exporters the site does not declare.
pub const UNDECLARED: &str = "undeclared";

fn covers(
    text: &str,
    d: &mut Diagnostics,
    raw: &[Spanned<String>],
    i: usize,
    is_covered: &dyn Fn(&str) -> bool,
) -> Option<Vec<Covered>> {
    let mut ok = true;
    let mut out = Vec::new();
    for (j, v) in raw.iter().enumerate() {
        let field = format!("exporters[{i}].covers[{j}]");
        if let Ok(net) = super::load::parse_net(&v.value) {
            out.push(Covered::Net(net));
        } else if is_covered(&v.value) {
            out.push(Covered::Name(v.value.clone()));
        } else if crate::name::check(&v.value).is_err() {
            d.name(text, v, field);
            ok = false;
        } else {
            let m = format!(
                "`{}` names no node or user network, and is not an address or CIDR",
                v.value
            );
            d.on(v, field, m);
            ok = false;
        }
    }
    ok.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exporter(name: &str, address: &str, domain: Option<u32>) -> Exporter {
        Exporter {
            name: name.into(),
            address: address.parse().unwrap(),
            observation_domain: domain,
            covers: vec![Covered::Name("a".into())],
            pos: Pos { line: 1, column: 1 },
        }
    }

    #[test]
    fn a_datagram_is_the_exporter_of_its_address_and_domain() {
        let list = [
            exporter("any", "192.0.2.250", None),
            exporter("two", "192.0.2.250", Some(2)),
            exporter("v6", "2001:db8::1", None),
        ];
        let of = |from: &str, d: Option<u32>| {
            exporter_of(&list, from.parse().unwrap(), d).map(|x| x.name.as_str())
        };
        assert_eq!(of("192.0.2.250", Some(2)), Some("two"));
        assert_eq!(of("192.0.2.250", Some(3)), Some("any"));
        assert_eq!(of("192.0.2.250", None), Some("any"));
        // An IPv4 exporter heard on a dual-stack socket.
        assert_eq!(of("::ffff:192.0.2.250", Some(2)), Some("two"));
        assert_eq!(of("2001:db8::1", Some(7)), Some("v6"));
        assert_eq!(of("192.0.2.251", None), None);
    }
}
