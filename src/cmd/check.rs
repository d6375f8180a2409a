//! `portwatch check`: load the site and rules, say whether they are valid,
//! and which services each node runs and why.

use std::fmt::Write;

use std::time::Duration;

use super::{load, print, Error, Status};
use crate::cli::CheckArgs;
use crate::policy::Policy;
use crate::quote::log_field;
use crate::site::{ServicesFrom, Site};
use crate::time::Timestamp;

/// `now`: the wall clock, against which acceptances expire.
pub fn check(args: &CheckArgs, now: Timestamp) -> Result<Status, Error> {
    let l = load(&args.site)?;
    let p = &l.policy;
    let required = p.edges.iter().filter(|e| e.required).count();
    print(&format!(
        "{}: site `{}` is valid against model `{}`: {} nodes, {} expected edges ({} required)\n{}",
        l.site_path.display(),
        p.site.name,
        p.model.id,
        p.site.nodes.len(),
        p.edge_count(),
        required,
        services_table(&p.site)
    ))?;
    let soon = Duration::from_secs(u64::from(args.expiry_warning_days) * 86_400);
    for line in accept_warnings(p, &l.site_path.display().to_string(), now, soon) {
        eprintln!("{line}");
    }
    Ok(Status::Clean)
}

/// One `warning:` line per remark on an acceptance, located in the site
/// file like a load error.
pub fn accept_warnings(p: &Policy, file: &str, now: Timestamp, soon: Duration) -> Vec<String> {
    (p.accept_notes(now, soon).into_iter())
        .map(|(a, note)| {
            format!(
                "warning: {}:{}:{}: accepted[{}]: {}",
                log_field(file),
                a.pos.line,
                a.pos.column,
                a.index,
                log_field(&note.message(a))
            )
        })
        .collect()
}

/// Per node: where its services come from (its `services:` list or its
/// roles' defaults), those services, and how many more they start.
fn services_table(site: &Site) -> String {
    let rows: Vec<(&str, String, String)> = (site.nodes.iter())
        .map(|n| {
            let from = match n.services_from {
                ServicesFrom::List => "services: list".to_string(),
                ServicesFrom::RoleDefaults => format!("role defaults ({})", n.roles.join(", ")),
            };
            let started = n.services.len() - n.named_services.len();
            let services = format!("{} (+{started} they start)", n.named_services.join(", "));
            (n.name.as_str(), from, services)
        })
        .collect();
    let w0 = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(4);
    let w1 = rows.iter().map(|r| r.1.len()).max().unwrap_or(0).max(13);
    let mut s = format!("{:w0$}  {:w1$}  SERVICES\n", "NODE", "SERVICES FROM");
    for (name, from, services) in &rows {
        let _ = writeln!(s, "{name:w0$}  {from:w1$}  {services}");
    }
    if site
        .nodes
        .iter()
        .any(|n| n.services_from == ServicesFrom::RoleDefaults)
    {
        s.push_str(
            "A node without `services:` runs every default of its roles; list `services:` \
             (model ids or Windows service names) to narrow them.\n",
        );
    }
    s
}
