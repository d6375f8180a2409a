//! Which roles a node holds, from the services its listeners show: the
//! role set of least cost, where a service seen but not explained costs
//! more than one the roles run that nobody reached.

use std::collections::BTreeSet;

use crate::model::{Model, PortRule, Scope};

/// Cost of a role set: a service seen but not explained costs more than a
/// service the roles would run but nobody reached (a site need not use
/// every listener), and each role costs a little (fewest roles win ties).
const MISS: u32 = 6;
const EXTRA: u32 = 2;
const ROLE: u32 = 1;
/// Nodes in the bundled model hold at most two roles; three leaves room.
const MAX_ROLES: usize = 3;
/// Rules of a scope.
pub(super) fn rules_of(model: &Model, scope: Scope) -> impl Iterator<Item = &PortRule> {
    model.rules.iter().filter(move |r| r.scope == scope)
}

/// Rules of a scope whose listener is a node service (not an external one).
pub(super) fn listener_rules(model: &Model, scope: Scope) -> impl Iterator<Item = &PortRule> {
    rules_of(model, scope).filter(|r| !model.service(&r.to.service).is_some_and(|s| s.external))
}

/// A chosen role set and how well it explains what was seen.
#[derive(Clone, Debug)]
pub(super) struct Choice {
    pub roles: Vec<String>,
    /// Explicit services when the roles' defaults do not cover what was seen.
    pub services: Option<Vec<String>>,
    explained: Vec<String>,
    unused: Vec<String>,
    beyond: Vec<String>,
}

impl Choice {
    pub fn explain(&self) -> String {
        let mut s = if self.explained.is_empty() {
            format!(
                "roles {}: none of their services was reached",
                self.roles.join(", ")
            )
        } else {
            format!(
                "roles {} explain {}",
                self.roles.join(", "),
                self.explained.join(", ")
            )
        };
        if !self.unused.is_empty() {
            s.push_str(&format!(
                "; they also run {} but nothing reached {} here",
                self.unused.join(", "),
                if self.unused.len() == 1 { "it" } else { "them" }
            ));
        }
        if !self.beyond.is_empty() {
            s.push_str(&format!(
                "; {} seen beyond the roles' defaults, so `services` lists them",
                self.beyond.join(", ")
            ));
        }
        s
    }
}

/// The services of `roles` that traffic can show: listeners of site and
/// user rules that would match such a node.
fn visible_services(model: &Model, roles: &[String]) -> BTreeSet<String> {
    let services = model.expand_services(roles.iter().map(String::as_str), &[]);
    model
        .rules
        .iter()
        .filter(|r| matches!(r.scope, Scope::Site | Scope::Users))
        .filter(|r| !model.service(&r.to.service).is_some_and(|s| s.external))
        .filter(|r| r.to.matches(roles, &services))
        .flat_map(|r| std::iter::once(r.to.service.clone()).chain(r.to.with.iter().cloned()))
        .collect()
}

/// The role set (up to [`MAX_ROLES`] roles; containing `must` if given) of
/// least cost for the services seen.
pub(super) fn best_roles(model: &Model, seen: &BTreeSet<String>, must: Option<&str>) -> Choice {
    let ids: Vec<&str> = model.roles.iter().map(|r| r.id.as_str()).collect();
    let mut best: Option<(u32, Vec<usize>, BTreeSet<String>)> = None;
    for set in role_sets(ids.len(), MAX_ROLES) {
        let roles: Vec<String> = set.iter().map(|i| ids[*i].to_string()).collect();
        if must.is_some_and(|m| !roles.iter().any(|r| r == m)) {
            continue;
        }
        let visible = visible_services(model, &roles);
        let miss = seen.difference(&visible).count() as u32;
        let extra = visible.difference(seen).count() as u32;
        let cost = MISS * miss + EXTRA * extra + ROLE * roles.len() as u32;
        let better = match &best {
            None => true,
            Some((c, s, _)) => (cost, set.len(), &set) < (*c, s.len(), s),
        };
        if better {
            best = Some((cost, set, visible));
        }
    }
    let (_, set, visible) = best.unwrap_or_default();
    let roles: Vec<String> = set.iter().map(|i| ids[*i].to_string()).collect();
    let beyond: Vec<String> = seen.difference(&visible).cloned().collect();
    let services = (!beyond.is_empty()).then(|| {
        let mut s: BTreeSet<String> = roles
            .iter()
            .filter_map(|r| model.role(r))
            .flat_map(|r| r.services.iter().cloned())
            .collect();
        s.extend(beyond.iter().cloned());
        s.into_iter().collect()
    });
    Choice {
        services,
        explained: seen.intersection(&visible).cloned().collect(),
        unused: visible.difference(seen).cloned().collect(),
        beyond,
        roles,
    }
}

/// Every set of 1 to `max` indices below `n`, each in increasing order:
/// O(n^max), so a model with many roles stays cheap.
fn role_sets(n: usize, max: usize) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = (0..n).map(|i| vec![i]).collect();
    let mut frontier = out.clone();
    for _ in 1..max {
        let mut next = Vec::new();
        for set in &frontier {
            let last = *set.last().expect("non-empty");
            for i in last + 1..n {
                let mut s = set.clone();
                s.push(i);
                next.push(s);
            }
        }
        out.extend(next.iter().cloned());
        frontier = next;
    }
    out
}

pub(super) fn has(roles: &[String], r: &str) -> bool {
    roles.iter().any(|x| x == r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{load_model, BUNDLED_MODELS};
    use std::path::Path;

    fn model() -> Model {
        let (_, file, text) = BUNDLED_MODELS[0];
        load_model(Path::new(file), text).unwrap()
    }

    fn set(s: &[&str]) -> BTreeSet<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn role_sets_are_every_small_combination() {
        let sets = role_sets(5, 3);
        assert_eq!(sets.len(), 5 + 10 + 10);
        assert!(sets.contains(&vec![0, 2, 4]));
        assert!(sets.iter().all(|s| s.windows(2).all(|w| w[0] < w[1])));
    }

    #[test]
    fn roles_from_listeners() {
        let m = model();
        let roles = |seen: &[&str]| best_roles(&m, &set(seen), None).roles;
        assert_eq!(
            roles(&["qes", "qrs", "qpr", "broker", "data-profiling", "hub"]),
            ["engine"]
        );
        assert_eq!(roles(&["qss-worker", "qrs"]), ["scheduler"]);
        assert_eq!(roles(&["qps", "qrs"]), ["proxy"]);
        assert_eq!(
            roles(&["qps", "qrs", "qrd", "qpr", "broker", "qss-manager"]),
            ["central"]
        );
        // A scheduler that also runs QES (but not QSD's broker): the
        // scheduler role plus an explicit service, not an engine.
        let c = best_roles(&m, &set(&["qss-worker", "qrs", "qes"]), None);
        assert_eq!(c.roles, ["scheduler"]);
        assert_eq!(
            c.services.unwrap(),
            ["qes", "qrs", "qsd", "qss-worker"].map(String::from)
        );
    }
}
