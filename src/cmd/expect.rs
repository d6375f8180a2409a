//! `portwatch expect`: the ports each node needs open and every expected edge.

use super::{load, print, Error, Status};
use crate::cli::{ExpectFormat as Format, SiteArgs};
use crate::policy::Expectation;
use crate::report::diagram::Diagram;

pub fn expect(site: &SiteArgs, format: Format) -> Result<Status, Error> {
    let loaded = load(site)?;
    let e = Expectation::of(&loaded.policy);
    match format {
        Format::Table => print(&e.to_table())?,
        Format::Json => print(&format!(
            "{}\n",
            serde_json::to_string_pretty(&e).expect("serializable")
        ))?,
        Format::Dot => print(&Diagram::expected(&loaded.policy).to_dot())?,
    }
    Ok(Status::Clean)
}
