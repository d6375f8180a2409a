//! `portwatch expect`: the ports each node needs open and every expected edge.

use super::{load, print, Error, Status};
use crate::cli::{Format, SiteArgs};
use crate::policy::Expectation;

pub fn expect(site: &SiteArgs, format: Format) -> Result<Status, Error> {
    let loaded = load(site)?;
    let e = Expectation::of(&loaded.policy);
    match format {
        Format::Table => print(&e.to_table())?,
        Format::Json => print(&format!(
            "{}\n",
            serde_json::to_string_pretty(&e).expect("serializable")
        ))?,
    }
    Ok(Status::Clean)
}
