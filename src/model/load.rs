//! Rules file → [`Model`], reporting every problem at once.

use std::collections::BTreeSet;
use std::path::Path;

use super::raw::RawModel;
use super::{Client, Model, PortRule, Role, Scope, Selector, Service};
use crate::diag::{parse_duration, parse_port, parse_yaml_all, ConfigError, Diagnostics};

/// The models built into the binary: (id, file name, text).
pub const BUNDLED_MODELS: &[(&str, &str, &str)] = &[
    (
        "qlik-sense-enterprise",
        "rules/qlik-sense-enterprise.yaml",
        include_str!("../../rules/qlik-sense-enterprise.yaml"),
    ),
    (
        "qlik-sense-desktop",
        "rules/qlik-sense-desktop.yaml",
        include_str!("../../rules/qlik-sense-desktop.yaml"),
    ),
    (
        "qlik-datatransfer",
        "rules/qlik-datatransfer.yaml",
        include_str!("../../rules/qlik-datatransfer.yaml"),
    ),
];

const DEFAULT_WINDOW: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// The model's id and the ids of its services and roles are identifiers;
/// selectors and `starts` only refer to them.
fn check_names(text: &str, raw: &RawModel, d: &mut Diagnostics) {
    d.name(text, &raw.model, "model");
    for (i, s) in raw.services.iter().enumerate() {
        d.name(text, &s.id, format!("services[{i}].id"));
    }
    for (i, r) in raw.roles.iter().enumerate() {
        d.name(text, &r.id, format!("roles[{i}].id"));
    }
}

/// Parse and check a rules file's text; `file` is used in diagnostics only.
pub fn load_model(file: &Path, text: &str) -> Result<Model, ConfigError> {
    let (raw, mut d) = parse_yaml_all::<RawModel>(file, text);
    let Some(raw) = raw else {
        return Err(d.into_error());
    };
    check_names(text, &raw, &mut d);

    let default_window = match &raw.defaults.window {
        Some(w) => parse_duration(&w.value).unwrap_or_else(|e| {
            d.on(w, "defaults.window", e);
            DEFAULT_WINDOW
        }),
        None => DEFAULT_WINDOW,
    };

    let mut ids = BTreeSet::new();
    for (i, s) in raw.services.iter().enumerate() {
        if !ids.insert(s.id.value.as_str()) {
            d.on(
                &s.id,
                format!("services[{i}].id"),
                format!("duplicate service `{}`", s.id.value),
            );
        }
    }
    let role_ids: BTreeSet<&str> = raw.roles.iter().map(|r| r.id.value.as_str()).collect();
    let known_services = ids.iter().copied().collect::<Vec<_>>().join(", ");
    let known_roles = role_ids.iter().copied().collect::<Vec<_>>().join(", ");
    let check_service =
        |d: &mut Diagnostics, name: &str, loc: &serde_saphyr::Location, field: String| {
            if !ids.contains(name) {
                d.at(
                    loc,
                    field,
                    format!("unknown service `{name}`; known: {known_services}"),
                );
            }
        };

    let mut services = Vec::new();
    for (i, s) in raw.services.iter().enumerate() {
        for (j, st) in s.starts.iter().enumerate() {
            check_service(
                &mut d,
                &st.value,
                &st.referenced,
                format!("services[{i}].starts[{j}]"),
            );
        }
        services.push(Service {
            id: s.id.value.clone(),
            name: s.name.clone(),
            starts: s.starts.iter().map(|x| x.value.clone()).collect(),
            external: s.external,
            windows: s.windows.clone(),
        });
    }

    let mut seen_roles = BTreeSet::new();
    let mut roles = Vec::new();
    for (i, r) in raw.roles.iter().enumerate() {
        if !seen_roles.insert(r.id.value.as_str()) {
            d.on(
                &r.id,
                format!("roles[{i}].id"),
                format!("duplicate role `{}`", r.id.value),
            );
        }
        if ids.contains(r.id.value.as_str()) {
            d.on(
                &r.id,
                format!("roles[{i}].id"),
                "a role may not share a service's id",
            );
        }
        for (j, s) in r.services.iter().enumerate() {
            check_service(
                &mut d,
                &s.value,
                &s.referenced,
                format!("roles[{i}].services[{j}]"),
            );
        }
        roles.push(Role {
            id: r.id.value.clone(),
            description: r.description.clone(),
            services: r.services.iter().map(|x| x.value.clone()).collect(),
        });
    }

    let check_selector =
        |d: &mut Diagnostics, sel: &Selector, loc: &serde_saphyr::Location, field: &str| {
            for s in std::iter::once(&sel.service).chain(&sel.with) {
                check_service(d, s, loc, field.to_string());
            }
            if let Some((r, _)) = &sel.role {
                if !role_ids.contains(r.as_str()) {
                    d.at(
                        loc,
                        field,
                        format!("unknown role `{r}`; known: {known_roles}"),
                    );
                }
            }
        };

    let mut rules = Vec::new();
    for (i, r) in raw.ports.iter().enumerate() {
        let at = |f: &str| format!("ports[{i}].{f}");
        let port = parse_port(r.port.value).unwrap_or_else(|e| {
            d.on(&r.port, at("port"), e);
            0
        });
        let scope = Scope::parse(&r.scope.value).unwrap_or_else(|| {
            d.on(
                &r.scope,
                at("scope"),
                format!(
                    "unknown scope `{}`; valid: users, site, local, external",
                    r.scope.value
                ),
            );
            Scope::Site
        });
        let to = match Selector::parse(&r.to.value) {
            Ok(s) => {
                check_selector(&mut d, &s, &r.to.referenced, &at("to"));
                s
            }
            Err(e) => {
                d.on(&r.to, at("to"), e);
                continue;
            }
        };
        let mut from = Vec::new();
        for (j, c) in r.from.iter().enumerate() {
            match Client::parse(&c.value) {
                Ok(Client::Nodes(s)) => {
                    check_selector(&mut d, &s, &c.referenced, &at(&format!("from[{j}]")));
                    from.push(Client::Nodes(s));
                }
                Ok(other) => from.push(other),
                Err(e) => d.on(c, at(&format!("from[{j}]")), e),
            }
        }
        match scope {
            Scope::Local if !from.is_empty() => d.on(
                &r.scope,
                at("from"),
                "a local port takes no `from`: only its own host may connect",
            ),
            Scope::Users if from.is_empty() => from.push(Client::Users),
            Scope::Site | Scope::External if from.is_empty() => d.on(
                &r.to,
                at("from"),
                "a site or external port needs `from` (who may connect)",
            ),
            _ => {}
        }
        if r.required && scope == Scope::Local {
            d.on(
                &r.scope,
                at("required"),
                "a local port cannot be a required edge: no sensor sees it cross hosts",
            );
        }
        let window = match &r.window {
            Some(w) => parse_duration(&w.value).unwrap_or_else(|e| {
                d.on(w, at("window"), e);
                default_window
            }),
            None => default_window,
        };
        if r.cite.value.trim().is_empty() {
            d.on(
                &r.cite,
                at("cite"),
                "every rule cites the page section it comes from",
            );
        }
        rules.push(PortRule {
            port,
            to,
            scope,
            from,
            required: r.required,
            window,
            purpose: r.purpose.clone(),
            cite: r.cite.value.clone(),
        });
    }

    d.finish(Model {
        id: raw.model.value,
        title: raw.title,
        source: raw.source,
        default_window,
        services,
        roles,
        rules,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_models_load() {
        for (id, file, text) in BUNDLED_MODELS {
            let m = load_model(Path::new(file), text).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(&m.id, id);
            assert!(!m.rules.is_empty());
        }
    }

    #[test]
    fn ids_are_identifiers_and_the_refused_character_is_located() {
        let text =
            "model: m\ntitle: t\nsource: s\nservices:\n  - id: 'we$b'\n    name: W\nports: []\n";
        let e = load_model(Path::new("r.yaml"), text).unwrap_err();
        let d = &e.diagnostics[0];
        assert_eq!(
            (d.line, d.column, d.field.as_str()),
            (5, 12, "services[0].id")
        );
        assert!(d.message.contains("character $ (U+0024)"), "{}", d.message);
    }

    const BAD: &str = "model: m\ntitle: t\nsource: s\nservices:\n  - id: a\n    name: A\n  - id: a\n    name: A2\n    starts: [zz]\nroles:\n  - id: r\n    description: d\n    services: [a, nope]\nports:\n  - port: 70000\n    to: a@ghost\n    scope: wide\n    from: [a]\n    purpose: p\n    cite: c\n  - port: 1\n    to: a\n    scope: local\n    from: [a]\n    window: 0s\n    purpose: p\n    cite: ' '\n";

    #[test]
    fn reports_every_problem_at_once_with_location_and_field() {
        let e = load_model(Path::new("m.yaml"), BAD).unwrap_err();
        let got: Vec<(u64, &str, bool)> = e
            .diagnostics
            .iter()
            .map(|d| (d.line, d.field.as_str(), d.file == Path::new("m.yaml")))
            .collect();
        let want = [
            (7, "services[1].id"),
            (9, "services[1].starts[0]"),
            (13, "roles[0].services[1]"),
            (15, "ports[0].port"),
            (16, "ports[0].to"),
            (17, "ports[0].scope"),
            (23, "ports[1].from"),
            (25, "ports[1].window"),
            (27, "ports[1].cite"),
        ];
        for (line, field) in want {
            assert!(
                got.contains(&(line, field, true)),
                "missing {line} {field} in\n{e}"
            );
        }
        let text = e.to_string();
        assert!(
            text.contains("m.yaml:15:11: ports[0].port: port 70000 is out of range"),
            "{text}"
        );
        assert!(text.contains("unknown role `ghost`; known: r"), "{text}");
        assert!(text.contains("unknown service `nope`; known: a"), "{text}");
    }
}
