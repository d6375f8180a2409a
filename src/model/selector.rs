//! Selectors name the nodes a rule applies to, by the services they run and
//! the roles they hold: `qrs`, `qrs@central`, `qrs@!central` (rim nodes),
//! `qrs+qes` (QRS on a node that also runs QES).

use std::fmt;

/// Matches a service on nodes that satisfy optional conditions.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Selector {
    pub service: String,
    /// Other services the node must also run.
    pub with: Vec<String>,
    /// A role the node must hold (`true`) or must not hold (`false`).
    pub role: Option<(String, bool)>,
}

/// Who may open a connection.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Client {
    /// Any node of the site.
    AnyNode,
    /// The site's user networks.
    Users,
    /// Nodes matching a selector.
    Nodes(Selector),
}

impl Selector {
    /// Parse the selector grammar; the error says what is wrong.
    pub fn parse(s: &str) -> Result<Selector, String> {
        let (svcs, role) = match s.split_once('@') {
            Some((a, r)) => {
                let (name, want) = match r.strip_prefix('!') {
                    Some(n) => (n, false),
                    None => (r, true),
                };
                if !is_ident(name) {
                    return Err(format!("`{s}`: role after `@` must be a name"));
                }
                (a, Some((name.to_string(), want)))
            }
            None => (s, None),
        };
        let mut parts = svcs.split('+');
        let service = parts.next().unwrap_or_default();
        if !is_ident(service) {
            return Err(format!(
                "`{s}` is not a selector: expected SERVICE[+SERVICE][@[!]ROLE]"
            ));
        }
        let with: Vec<String> = parts.map(str::to_string).collect();
        if let Some(bad) = with.iter().find(|w| !is_ident(w)) {
            return Err(format!("`{s}`: `{bad}` after `+` must be a service name"));
        }
        Ok(Selector {
            service: service.to_string(),
            with,
            role,
        })
    }

    /// Does a node with these roles and services match?
    pub fn matches(&self, roles: &[String], services: &[String]) -> bool {
        let runs = |s: &String| services.contains(s);
        runs(&self.service)
            && self.with.iter().all(runs)
            && match &self.role {
                None => true,
                Some((r, want)) => roles.contains(r) == *want,
            }
    }
}

impl Client {
    pub fn parse(s: &str) -> Result<Client, String> {
        match s {
            "node" => Ok(Client::AnyNode),
            "users" => Ok(Client::Users),
            _ => Selector::parse(s).map(Client::Nodes),
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.service)?;
        for w in &self.with {
            write!(f, "+{w}")?;
        }
        if let Some((r, want)) = &self.role {
            write!(f, "@{}{r}", if *want { "" } else { "!" })?;
        }
        Ok(())
    }
}

impl fmt::Display for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Client::AnyNode => f.write_str("node"),
            Client::Users => f.write_str("users"),
            Client::Nodes(s) => s.fmt(f),
        }
    }
}

fn is_ident(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(xs: &[&str]) -> Vec<String> {
        xs.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_and_matches() {
        let s = Selector::parse("qrs+qes@!central").unwrap();
        assert_eq!(s.to_string(), "qrs+qes@!central");
        assert!(s.matches(&v(&["engine"]), &v(&["qrs", "qes"])));
        assert!(!s.matches(&v(&["central"]), &v(&["qrs", "qes"])));
        assert!(!s.matches(&v(&["engine"]), &v(&["qrs"])));
        assert_eq!(Client::parse("node").unwrap(), Client::AnyNode);
        assert!(Selector::parse("QRS").is_err());
        assert!(Selector::parse("qrs@").is_err());
        assert!(Selector::parse("qrs+").is_err());
    }
}
