//! `portwatch report`: the audit report of a site drawn from the metrics
//! store (the same report and site diagram as `replay --format html`), for
//! an auditor who has the central store but not the captures.

use super::page::{report_page, signoff_now};
use super::{load, print, print_json, Error, Status};
use crate::cli::{ReportFormat, SiteArgs, StoreReportArgs};
use crate::report::{Report, StoreAnswers, StoreFacts};
use crate::store::promql::SiteQueries;
use crate::store::{Store, StoreConfig};
use crate::time::Timestamp;

pub fn report(a: &StoreReportArgs, now: Timestamp) -> Result<Status, Error> {
    let policy = load(&SiteArgs {
        site: a.site.clone(),
        rules: a.rules.clone(),
        strict_loopback: false,
    })?
    .policy;
    let site = a
        .site_name
        .clone()
        .unwrap_or_else(|| policy.site.name.clone());
    let store = Store::open(&StoreConfig {
        url: a.prometheus.clone(),
        basic_auth_user: a.basic_auth_user.clone(),
        basic_auth_password_file: a.basic_auth_password_file.clone(),
        ca_file: a.ca_file.clone(),
    })?;
    let at = a.at.unwrap_or(now);
    let answers = ask(&store, &SiteQueries::new(&site, a.range), at)?;
    if answers.site_info.is_empty() {
        return Err(Error::NoSite {
            url: store.url.clone(),
            site,
            range: humantime::format_duration(a.range).to_string(),
            at: at.rfc3339(),
        });
    }
    let facts = StoreFacts {
        url: store.url.clone(),
        site: site.clone(),
        at: at.rfc3339(),
        range_seconds: a.range.as_secs(),
    };
    let report = Report::from_store(&policy, &answers, facts, at, a.range);
    match a.format {
        ReportFormat::Table => print(&report.to_table())?,
        ReportFormat::Json => print_json(&report)?,
        ReportFormat::Html => print(&report_page(
            &policy,
            &report,
            a.layout,
            format!(
                "from the store {} at {}, the {} before",
                store.url,
                at.rfc3339(),
                humantime::format_duration(a.range)
            ),
            None,
            Vec::new(),
            Some(signoff_now()),
        )?)?,
    }
    Ok(Status::of(&report))
}

/// Every query of the site, at `at`; the first failure stops.
fn ask(store: &Store, q: &SiteQueries, at: Timestamp) -> Result<StoreAnswers, Error> {
    let get = |expr: String| store.query(&expr, at);
    let site_info = get(q.site_info())?;
    if site_info.is_empty() {
        return Ok(StoreAnswers::default());
    }
    Ok(StoreAnswers {
        site_info,
        edge_window: get(q.edge_window())?,
        edge_missing: get(q.edge_missing())?,
        edge_covering: get(q.edge_covering())?,
        edge_last_seen: get(q.edge_last_seen())?,
        connections: get(q.connections())?,
        handshakes: get(q.handshakes())?,
        sensors_up: get(q.sensors_up())?,
        sensors_covering: get(q.sensors_covering())?,
        sensor_kinds: get(q.sensor_kinds())?,
        disagreements: get(q.disagreements())?,
        handshakes_by_kind: get(q.handshakes_by_kind())?,
    })
}
