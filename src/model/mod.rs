//! The port model of a product: its services, the roles nodes take, and
//! which clients may open which listener port in which scope. Loaded from a
//! rules file (`rules/*.yaml`) and checked as a whole before use.

mod load;
mod raw;
mod selector;

pub use load::{load_model, BUNDLED_MODELS};
pub use selector::{Client, Selector};

use std::time::Duration;

/// Where a listener may be reached from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// From the site's user networks (browsers).
    Users,
    /// Between the site's nodes.
    Site,
    /// From the same host only.
    Local,
    /// From the site's nodes to an endpoint outside them.
    External,
}

impl Scope {
    pub fn parse(s: &str) -> Option<Scope> {
        Some(match s {
            "users" => Scope::Users,
            "site" => Scope::Site,
            "local" => Scope::Local,
            "external" => Scope::External,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Users => "users",
            Scope::Site => "site",
            Scope::Local => "local",
            Scope::External => "external",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub id: String,
    pub name: String,
    pub starts: Vec<String>,
    pub external: bool,
    /// Display name of the Windows service, e.g. "Qlik Sense Proxy Service".
    pub windows: Option<String>,
}

/// What a site's service entry names (see [`Model::node_service`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Named<'a> {
    Service(&'a Service),
    /// A Windows service several model services run as, and the node's
    /// roles do not pick one.
    Ambiguous(Vec<&'a Service>),
    Unknown,
}

/// A name reduced to its lower-case letters and digits.
fn squash(s: &str) -> String {
    (s.chars().filter(|c| c.is_alphanumeric()))
        .flat_map(char::to_lowercase)
        .collect()
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Role {
    pub id: String,
    pub description: String,
    pub services: Vec<String>,
}

/// Index of a rule in [`Model::rules`], stable for one loaded model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleId(pub usize);

/// One listener port and who may open it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortRule {
    pub port: u16,
    pub to: Selector,
    pub scope: Scope,
    pub from: Vec<Client>,
    pub required: bool,
    pub window: Duration,
    pub purpose: String,
    pub cite: String,
}

impl PortRule {
    /// The listening service, used as the `service` label.
    pub fn service(&self) -> &str {
        &self.to.service
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Model {
    pub id: String,
    pub title: String,
    pub source: String,
    pub default_window: Duration,
    pub services: Vec<Service>,
    pub roles: Vec<Role>,
    pub rules: Vec<PortRule>,
}

impl Model {
    pub fn service(&self, id: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.id == id)
    }

    pub fn role(&self, id: &str) -> Option<&Role> {
        self.roles.iter().find(|r| r.id == id)
    }

    pub fn rule(&self, id: RuleId) -> &PortRule {
        &self.rules[id.0]
    }

    /// What a node's `services:` entry names: a service id, or the display
    /// name of the Windows service it runs as (case, spaces and punctuation
    /// ignored, so the service name `QlikSenseProxyService` works too). A
    /// display name several services share is the one the node's roles
    /// list by default.
    pub fn node_service(&self, name: &str, roles: &[String]) -> Named<'_> {
        if let Some(s) = self.service(name) {
            return Named::Service(s);
        }
        let key = squash(name);
        let all: Vec<&Service> = (self.services.iter())
            .filter(|s| s.windows.as_deref().is_some_and(|w| squash(w) == key))
            .collect();
        let by_role: Vec<&Service> = (all.iter().copied())
            .filter(|s| {
                (roles.iter().filter_map(|r| self.role(r))).any(|r| r.services.contains(&s.id))
            })
            .collect();
        match (all.as_slice(), by_role.as_slice()) {
            ([], _) => Named::Unknown,
            ([s], _) | (_, [s]) => Named::Service(s),
            _ => Named::Ambiguous(all),
        }
    }

    /// The services a site may name, for an error message: those that run
    /// as Windows services with their display names first, then the rest.
    pub fn known_services(&self) -> String {
        let (windows, rest): (Vec<&Service>, Vec<&Service>) =
            self.services.iter().partition(|s| s.windows.is_some());
        let mut out: Vec<String> = (windows.iter())
            .map(|s| format!("{} ({})", s.id, s.windows.as_deref().unwrap_or_default()))
            .collect();
        let rest: Vec<&str> = rest.iter().map(|s| s.id.as_str()).collect();
        if out.is_empty() {
            return rest.join(", ");
        }
        if !rest.is_empty() {
            out.push(format!(
                "and the services these start or reach: {}",
                rest.join(", ")
            ));
        }
        out.join(", ")
    }

    /// The services a node runs: what its roles and explicit list name, and
    /// what those start, transitively.
    pub fn expand_services<'a>(
        &self,
        roles: impl IntoIterator<Item = &'a str>,
        explicit: &[String],
    ) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut todo: Vec<String> = explicit.to_vec();
        for r in roles {
            if let Some(role) = self.role(r) {
                todo.extend(role.services.iter().cloned());
            }
        }
        while let Some(s) = todo.pop() {
            if out.contains(&s) {
                continue;
            }
            if let Some(svc) = self.service(&s) {
                todo.extend(svc.starts.iter().cloned());
            }
            out.push(s);
        }
        out.sort();
        out
    }
}
