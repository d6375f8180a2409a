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
