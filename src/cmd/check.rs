//! `portwatch check`: load the site and rules, say whether they are valid.

use super::{load, print, Error, Status};
use crate::cli::SiteArgs;

pub fn check(site: &SiteArgs) -> Result<Status, Error> {
    let l = load(site)?;
    let p = &l.policy;
    let required = p.edges.iter().filter(|e| e.required).count();
    print(&format!(
        "{}: site `{}` is valid against model `{}`: {} nodes, {} expected edges ({} required)\n",
        l.site_path.display(),
        p.site.name,
        p.model.id,
        p.site.nodes.len(),
        p.edge_count(),
        required
    ))?;
    Ok(Status::Clean)
}
