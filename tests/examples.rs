//! The eight bundled sites against the "Ports examples" section of the vendor
//! page (shared/seed/qlik-sense-ports.txt), node by node.
//!
//! Three checks, over every site:
//! - every port the page lists for a node is in `expect`'s list for that node
//!   and direction, unless [`DEVIATIONS`] records why the model disagrees;
//! - every port `expect` adds beyond the page's list is explained by an
//!   expected edge whose rule cites one of the page's canonical tables (not
//!   only an example);
//! - every deviation is a port the page lists and `expect` really leaves
//!   out, so the table cannot go stale.

use std::collections::BTreeSet;
use std::path::PathBuf;

use portwatch::config::load_policy;
use portwatch::policy::Expectation;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    In,
    Out,
}

use Dir::{In, Out};

/// One node of one example as the page lists it.
struct PageNode {
    site: &'static str,
    node: &'static str,
    inbound: &'static [u16],
    outbound: &'static [u16],
}

const fn n(
    site: &'static str,
    node: &'static str,
    inbound: &'static [u16],
    outbound: &'static [u16],
) -> PageNode {
    PageNode {
        site,
        node,
        inbound,
        outbound,
    }
}

/// Transcribed from "Ports examples". Nodes the page draws as identical
/// ("Both Engine nodes", "Proxy nodes (multiple)") are repeated under the
/// site file's names. Where the page gives no port list for a node, the ports
/// come from the connections it describes for that node.
const PAGE: &[PageNode] = &[
    // Single node site.
    n("single-node", "central", &[80, 443], &[]),
    // Multi-node site.
    n(
        "multi-node",
        "proxy",
        &[80, 443, 4242, 4444],
        &[4747, 4239, 4242, 4899, 4900, 4949],
    ),
    n(
        "multi-node",
        "engine1",
        &[4747, 4239, 4242, 4444, 4899, 4949],
        &[4242],
    ),
    n(
        "multi-node",
        "engine2",
        &[4747, 4239, 4242, 4444, 4899, 4949],
        &[4242],
    ),
    n(
        "multi-node",
        "central",
        &[4242, 4432, 4900, 5050],
        &[4242, 4444, 5151],
    ),
    n(
        "multi-node",
        "scheduler",
        &[4242, 4444, 5151],
        &[4242, 5050],
    ),
    // Proxy node in demilitarized zone.
    n(
        "dmz-proxy",
        "proxy",
        &[80, 443, 4242, 4444],
        &[4242, 4747, 4239, 4899, 4949, 4900],
    ),
    n(
        "dmz-proxy",
        "central",
        &[4242, 4747, 4239, 4899, 4949, 4900, 9028, 4432],
        &[4242, 4444],
    ),
    // Separate proxy and engine node.
    n(
        "proxy-engine",
        "proxy-engine",
        &[80, 443, 4242, 4444],
        &[4900, 4899, 4242],
    ),
    n(
        "proxy-engine",
        "central",
        &[4900, 4899, 4432, 4242],
        &[4242, 4444],
    ),
    // High availability proxy and engine nodes.
    n(
        "ha-proxy-engine",
        "proxy-engine1",
        &[80, 443, 4242, 4899, 4747, 4239, 4949, 4444],
        &[4242, 4899, 4747, 4239, 4900, 4949],
    ),
    n(
        "ha-proxy-engine",
        "proxy-engine2",
        &[80, 443, 4242, 4899, 4747, 4239, 4949, 4444],
        &[4242, 4899, 4747, 4239, 4900, 4949],
    ),
    n(
        "ha-proxy-engine",
        "central",
        &[4900, 4899, 4432, 4242],
        &[4242, 4444],
    ),
    // Separate scheduler node and high availability proxy and engine nodes.
    n(
        "ha-proxy-engine-scheduler",
        "proxy-engine1",
        &[80, 443, 4242, 4899, 4747, 4239, 4949, 4444],
        &[4242, 4899, 4747, 4239, 4900, 4949],
    ),
    n(
        "ha-proxy-engine-scheduler",
        "proxy-engine2",
        &[80, 443, 4242, 4899, 4747, 4239, 4949, 4444],
        &[4242, 4899, 4747, 4239, 4900, 4949],
    ),
    n(
        "ha-proxy-engine-scheduler",
        "central",
        &[4900, 4899, 4432, 4242, 5050],
        &[4242, 5151, 4444],
    ),
    n(
        "ha-proxy-engine-scheduler",
        "scheduler",
        &[5151, 4444],
        &[5050],
    ),
    // Separate proxy and scheduler nodes and high availability engine nodes.
    n(
        "ha-engine",
        "proxy",
        &[80, 443, 4242, 4444],
        &[4242, 4899, 4747, 4239, 4900, 4949],
    ),
    n(
        "ha-engine",
        "engine1",
        &[4242, 4899, 4747, 4239, 4949, 4444],
        &[4242],
    ),
    n(
        "ha-engine",
        "engine2",
        &[4242, 4899, 4747, 4239, 4949, 4444],
        &[4242],
    ),
    n(
        "ha-engine",
        "central",
        &[4900, 4899, 4432, 4242, 5151],
        &[4242, 5050, 4444],
    ),
    // No list: "an incoming connection from the Scheduler node on port 5151
    // (QSS) and an outgoing connection to the Scheduler node on port 5050".
    n("ha-engine", "scheduler", &[5050], &[5151]),
    // Generic scale out.
    n(
        "scale-out",
        "proxy1",
        &[80, 443, 4242, 4444, 4899],
        &[4242, 4899, 4747, 4239, 4949, 4444, 4900],
    ),
    n(
        "scale-out",
        "proxy2",
        &[80, 443, 4242, 4444, 4899],
        &[4242, 4899, 4747, 4239, 4949, 4444, 4900],
    ),
    n(
        "scale-out",
        "engine1",
        &[4242, 4899, 4747, 4239, 4949, 4444],
        &[4242, 4444],
    ),
    n(
        "scale-out",
        "engine2",
        &[4242, 4899, 4747, 4239, 4949, 4444],
        &[4242, 4444],
    ),
    n(
        "scale-out",
        "central",
        &[4900, 4899, 4432, 4242, 5151],
        &[4242, 5050, 4444],
    ),
    // No list: "incoming traffic from Scheduler nodes on port 5151 (QSS), and
    // outgoing traffic to Schedular nodes on port 5050 (QSS)".
    n("scale-out", "scheduler1", &[5050], &[5151]),
    n("scale-out", "scheduler2", &[5050], &[5151]),
];

/// A port the page lists for a node that the model deliberately leaves out.
struct Deviation {
    site: &'static str,
    node: &'static str,
    dir: Dir,
    port: u16,
    reason: &'static str,
}

const SCHED_5151: &str = "Ports used between manager and worker schedulers: QSS 5151 Inbound \
     (from the central node only): 5151 listens on the worker, the central manager connects to it";
const SCHED_5050: &str = "Ports used between manager and worker schedulers: QSS 5050 Inbound \
     (from scheduler nodes only): 5050 listens on the central manager, workers connect to it";
const RIM_4444: &str = "Minimum ports used for communication in multi-node sites: QRS 4444 \
     Between the central node and all rim nodes; Ports overview: QRS 4444 inbound on rim nodes, \
     outbound on the central node: a rim node never opens 4444 to another node";

const fn dev(
    site: &'static str,
    node: &'static str,
    dir: Dir,
    port: u16,
    reason: &'static str,
) -> Deviation {
    Deviation {
        site,
        node,
        dir,
        port,
        reason,
    }
}

/// Where the examples contradict the canonical tables; the tables win.
/// rules/README.md ("Where the page contradicts itself") explains each.
const DEVIATIONS: &[Deviation] = &[
    dev("ha-engine", "central", In, 5151, SCHED_5151),
    dev("ha-engine", "central", Out, 5050, SCHED_5050),
    dev("ha-engine", "scheduler", In, 5050, SCHED_5050),
    dev("ha-engine", "scheduler", Out, 5151, SCHED_5151),
    dev("scale-out", "central", In, 5151, SCHED_5151),
    dev("scale-out", "central", Out, 5050, SCHED_5050),
    dev("scale-out", "scheduler1", In, 5050, SCHED_5050),
    dev("scale-out", "scheduler1", Out, 5151, SCHED_5151),
    dev("scale-out", "scheduler2", In, 5050, SCHED_5050),
    dev("scale-out", "scheduler2", Out, 5151, SCHED_5151),
    dev("scale-out", "proxy1", Out, 4444, RIM_4444),
    dev("scale-out", "proxy2", Out, 4444, RIM_4444),
    dev("scale-out", "engine1", Out, 4444, RIM_4444),
    dev("scale-out", "engine2", Out, 4444, RIM_4444),
];

/// The page's tables that state a rule, as opposed to its examples.
const CANONICAL_TABLES: &[&str] = &[
    "Ports overview",
    "Ports used internally within a node",
    "Minimum ports used for communication in multi-node sites",
    "Ports used between manager and worker schedulers",
    "Ports used between a proxy node and an engine node",
    "Ports used between a proxy node and a node running the printing service",
    "Ports used from user web browser",
];

/// The bundled example sites, by name.
fn sites() -> impl Iterator<Item = &'static str> {
    portwatch::config::BUNDLED_SITES
        .iter()
        .map(|(name, _, _)| *name)
}

fn expectation(site: &str) -> Expectation {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/sites")
        .join(format!("{site}.yaml"));
    let loaded = load_policy(&path, None).unwrap_or_else(|e| panic!("{site}: {e}"));
    Expectation::of(&loaded.policy)
}

fn expected_ports<'a>(e: &'a Expectation, node: &str, dir: Dir) -> &'a [u16] {
    let np = e
        .nodes
        .iter()
        .find(|n| n.name == node)
        .unwrap_or_else(|| panic!("{}: no node `{node}`", e.site));
    match dir {
        In => &np.inbound,
        Out => &np.outbound,
    }
}

fn page_ports(p: &PageNode, dir: Dir) -> &'static [u16] {
    match dir {
        In => p.inbound,
        Out => p.outbound,
    }
}

fn deviation(site: &str, node: &str, dir: Dir, port: u16) -> Option<&'static Deviation> {
    DEVIATIONS
        .iter()
        .find(|d| d.site == site && d.node == node && d.dir == dir && d.port == port)
}

#[test]
fn transcription_covers_every_node_of_every_bundled_site() {
    for site in sites() {
        let e = expectation(site);
        let on_page: BTreeSet<&str> = PAGE
            .iter()
            .filter(|p| p.site == site)
            .map(|p| p.node)
            .collect();
        let in_site: BTreeSet<&str> = e.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(on_page, in_site, "{site}: page nodes vs site nodes");
    }
    for p in PAGE {
        assert!(
            sites().any(|s| s == p.site),
            "{}: not a bundled site",
            p.site
        );
    }
}

#[test]
fn every_port_the_page_lists_is_expected_or_a_documented_deviation() {
    let mut missing = Vec::new();
    for site in sites() {
        let e = expectation(site);
        for p in PAGE.iter().filter(|p| p.site == site) {
            for dir in [In, Out] {
                let have = expected_ports(&e, p.node, dir);
                for &port in page_ports(p, dir) {
                    if !have.contains(&port) && deviation(site, p.node, dir, port).is_none() {
                        missing.push(format!("{site} {} {dir:?} {port}", p.node));
                    }
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "ports the page lists that `expect` lacks, with no deviation recorded:\n{}",
        missing.join("\n")
    );
}

#[test]
fn every_extra_port_is_explained_by_a_canonical_table() {
    let mut unexplained = Vec::new();
    for site in sites() {
        let e = expectation(site);
        for p in PAGE.iter().filter(|p| p.site == site) {
            for dir in [In, Out] {
                let listed = page_ports(p, dir);
                for &port in expected_ports(&e, p.node, dir) {
                    if listed.contains(&port) {
                        continue;
                    }
                    let explained = e.edges.iter().any(|edge| {
                        let ends_here = match dir {
                            In => edge.dst == p.node,
                            Out => edge.src == p.node,
                        };
                        ends_here
                            && edge.port == port
                            && edge
                                .because
                                .iter()
                                .any(|c| CANONICAL_TABLES.iter().any(|t| c.contains(t)))
                    });
                    if !explained {
                        unexplained.push(format!("{site} {} {dir:?} {port}", p.node));
                    }
                }
            }
        }
    }
    assert!(
        unexplained.is_empty(),
        "ports `expect` adds with no edge citing a canonical table:\n{}",
        unexplained.join("\n")
    );
}

#[test]
fn every_deviation_is_listed_by_the_page_and_absent_from_expect() {
    for d in DEVIATIONS {
        assert!(!d.reason.is_empty());
        assert!(
            CANONICAL_TABLES.iter().any(|t| d.reason.contains(t)),
            "{} {} {:?} {}: the reason must cite a canonical table",
            d.site,
            d.node,
            d.dir,
            d.port
        );
        let page = PAGE
            .iter()
            .find(|p| p.site == d.site && p.node == d.node)
            .unwrap_or_else(|| panic!("{} {}: not on the page", d.site, d.node));
        assert!(
            page_ports(page, d.dir).contains(&d.port),
            "{} {} {:?} {}: the page does not list this port, so it is no deviation",
            d.site,
            d.node,
            d.dir,
            d.port
        );
        let e = expectation(d.site);
        assert!(
            !expected_ports(&e, d.node, d.dir).contains(&d.port),
            "{} {} {:?} {}: `expect` has this port now; drop the deviation",
            d.site,
            d.node,
            d.dir,
            d.port
        );
    }
}
