//! serde mirror of a rules file. Values the loader checks are `Spanned` so
//! that every semantic problem can name its line and column.

use serde::Deserialize;
use serde_saphyr::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    pub model: Spanned<String>,
    pub title: String,
    /// Where the model comes from (the vendor page and its revision).
    pub source: String,
    #[serde(default)]
    pub defaults: RawDefaults,
    pub services: Vec<RawService>,
    #[serde(default)]
    pub roles: Vec<RawRole>,
    pub ports: Vec<RawPortRule>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDefaults {
    /// Evidence window of a required edge that names none.
    pub window: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    pub id: Spanned<String>,
    pub name: String,
    /// Services this one launches on the same node (QSD starts several).
    #[serde(default)]
    pub starts: Vec<Spanned<String>>,
    /// Runs outside the site's nodes (license backend, file share, map server).
    #[serde(default)]
    pub external: bool,
    /// The display name of the Windows service it runs as, which a site's
    /// `services:` may give instead of the id.
    pub windows: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRole {
    pub id: Spanned<String>,
    pub description: String,
    pub services: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPortRule {
    pub port: Spanned<i64>,
    /// The listener: `SERVICE[+SERVICE…][@[!]ROLE]`.
    pub to: Spanned<String>,
    /// `users`, `local`, `site` or `external`.
    pub scope: Spanned<String>,
    /// Clients: selectors as in `to`, or `node` (any node), or `users`.
    #[serde(default)]
    pub from: Vec<Spanned<String>>,
    #[serde(default)]
    pub required: bool,
    pub window: Option<Spanned<String>>,
    pub purpose: String,
    /// The section and table of the vendor page this rule comes from.
    pub cite: Spanned<String>,
}
