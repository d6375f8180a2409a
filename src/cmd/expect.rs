//! `portwatch expect`: the ports each node needs open and every expected edge.

use super::{load, print, Error, Status};
use crate::cli::{ExpectFormat as Format, SiteArgs};
use crate::policy::Expectation;
use crate::report::diagram::Diagram;

pub fn expect(site: &SiteArgs, format: Format, node: Option<&str>) -> Result<Status, Error> {
    let loaded = load(site)?;
    let p = &loaded.policy;
    let only = node.map(|n| p.node_id(n)).transpose()?;
    let e = match node {
        Some(name) => Expectation::of(p).only(name),
        None => Expectation::of(p),
    };
    match format {
        Format::Table => print(&e.to_table())?,
        Format::Json => print(&format!(
            "{}\n",
            serde_json::to_string_pretty(&e).expect("serializable")
        ))?,
        Format::Dot => {
            let d = Diagram::expected(p);
            let d = match only {
                Some(id) => d.touching(id.0 as usize),
                None => d,
            };
            print(&d.to_dot())?
        }
    }
    Ok(Status::Clean)
}
