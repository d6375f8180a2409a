//! Every name a site file gives (the site, its nodes, user networks and
//! external endpoints) is an identifier; other fields only refer to names.

use super::raw::RawSite;
use crate::diag::Diagnostics;

pub(super) fn check(text: &str, raw: &RawSite, d: &mut Diagnostics) {
    d.name(text, &raw.site, "site");
    for (i, n) in raw.nodes.iter().enumerate() {
        d.name(text, &n.name, format!("nodes[{i}].name"));
    }
    for (i, u) in raw.user_networks.iter().enumerate() {
        d.name(text, &u.name, format!("user_networks[{i}].name"));
    }
    for (i, x) in raw.externals.iter().enumerate() {
        d.name(text, &x.name, format!("externals[{i}].name"));
    }
}
