//! The `check` command on bad site and rules files: exit status 2, and every
//! problem named by file, `line:column` and field path, without a panic.
//! Also: every bundled site checks clean and `expect --format json` has the
//! documented shape.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

const BIN: &str = env!("CARGO_BIN_EXE_portwatch");

/// A fresh directory per call, unique across tests and test runs.
fn scratch() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "portwatch-validation-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(name: &str, text: &str) -> PathBuf {
    let f = scratch().join(name);
    std::fs::write(&f, text).unwrap();
    f
}

fn portwatch(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn check(site: &Path, rules: Option<&Path>) -> Output {
    let mut args = vec!["check", "--site", site.to_str().unwrap()];
    if let Some(r) = rules {
        args.extend(["--rules", r.to_str().unwrap()]);
    }
    portwatch(&args)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit status 2, no panic, and a diagnostic `FILE:LINE:COLUMN: FIELD: ...`
/// whose message contains `says`. Returns stderr.
fn assert_bad(o: &Output, file: &Path, line: u64, column: u64, field: &str, says: &str) -> String {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "exit status; stderr:\n{err}");
    assert!(!err.contains("panicked"), "{err}");
    let head = format!("{}:{line}:{column}: {field}: ", file.display());
    let hit = err
        .lines()
        .find(|l| l.contains(&head))
        .unwrap_or_else(|| panic!("no `{head}` in stderr:\n{err}"));
    assert!(hit.contains(says), "`{says}` not in `{hit}`");
    err
}

const NODE: &str =
    "site: t\nnodes:\n  - name: a\n    addresses: [192.0.2.1]\n    roles: [central]\n";

#[test]
fn unknown_field_lists_valid_names() {
    let f = write(
        "unknown-field.yaml",
        "site: t\nnodes:\n  - name: a\n    addresses: [192.0.2.1]\n    roles: [central]\n    colour: red\n",
    );
    assert_bad(
        &check(&f, None),
        &f,
        6,
        5,
        "nodes[0].colour",
        "unknown field `colour`, expected one of name, addresses, roles, services",
    );
}

#[test]
fn unknown_role() {
    let f = write(
        "unknown-role.yaml",
        "site: t\nnodes:\n  - name: a\n    addresses: [192.0.2.1]\n    roles: [central, wizard]\n",
    );
    assert_bad(
        &check(&f, None),
        &f,
        5,
        22,
        "nodes[0].roles[1]",
        "unknown role `wizard`; known: central, proxy",
    );
}

#[test]
fn unknown_service() {
    let f = write(
        "unknown-service.yaml",
        "site: t\nnodes:\n  - name: a\n    addresses: [192.0.2.1]\n    services: [qps, zzz]\n",
    );
    assert_bad(
        &check(&f, None),
        &f,
        5,
        21,
        "nodes[0].services[1]",
        "unknown service `zzz`; known: qps",
    );
}

#[test]
fn duplicate_node_name() {
    let f = write(
        "duplicate-node.yaml",
        &format!("{NODE}  - name: a\n    addresses: [192.0.2.2]\n    roles: [engine]\n"),
    );
    assert_bad(
        &check(&f, None),
        &f,
        6,
        11,
        "nodes[1].name",
        "duplicate name `a`",
    );
}

#[test]
fn address_claimed_by_two_nodes() {
    let f = write(
        "shared-address.yaml",
        &format!("{NODE}  - name: b\n    addresses: [192.0.2.1]\n    roles: [engine]\n"),
    );
    assert_bad(
        &check(&f, None),
        &f,
        7,
        17,
        "nodes[1].addresses[0]",
        "address 192.0.2.1 is already claimed by node `a`",
    );
}

#[test]
fn bad_cidr_in_user_networks() {
    let f = write(
        "bad-cidr.yaml",
        &format!("{NODE}user_networks:\n  - name: u\n    cidrs: [198.51.100.0/33]\n"),
    );
    assert_bad(
        &check(&f, None),
        &f,
        8,
        13,
        "user_networks[0].cidrs[0]",
        "is not a CIDR block",
    );
}

#[test]
fn bad_address() {
    let f = write(
        "bad-address.yaml",
        "site: t\nnodes:\n  - name: a\n    addresses: [192.0.2.300]\n    roles: [central]\n",
    );
    assert_bad(
        &check(&f, None),
        &f,
        4,
        17,
        "nodes[0].addresses[0]",
        "`192.0.2.300` is not an IPv4 or IPv6 address",
    );
}

#[test]
fn port_0_in_allow() {
    let f = write(
        "allow-port-0.yaml",
        &format!("{NODE}allow:\n  - from: users\n    to: a\n    port: 0\n"),
    );
    assert_bad(
        &check(&f, None),
        &f,
        9,
        11,
        "allow[0].port",
        "port 0 is out of range 1-65535",
    );
}

#[test]
fn port_70000_in_overrides() {
    let f = write(
        "override-port-70000.yaml",
        &format!("{NODE}overrides:\n  - from: users\n    to: a\n    port: 70000\n"),
    );
    assert_bad(
        &check(&f, None),
        &f,
        9,
        11,
        "overrides[0].port",
        "port 70000 is out of range 1-65535",
    );
}

/// A small valid rules file; `PORT` is replaced per test.
const RULES: &str = "model: tiny\ntitle: Tiny\nsource: test\nservices:\n  - id: web\n    name: Web\nroles:\n  - id: server\n    description: d\n    services: [web]\nports:\n  - port: PORT\n    to: web\n    scope: users\n    purpose: p\n    cite: c\n";
const TINY_SITE: &str =
    "site: t\nmodel: tiny\nnodes:\n  - name: a\n    addresses: [192.0.2.1]\n    roles: [server]\n";

fn rules_with_port(name: &str, port: &str) -> (PathBuf, PathBuf) {
    let r = write(name, &RULES.replace("PORT", port));
    let s = write("tiny-site.yaml", TINY_SITE);
    (r, s)
}

#[test]
fn tiny_rules_file_is_valid() {
    let (r, s) = rules_with_port("tiny-ok.yaml", "8080");
    let o = check(&s, Some(&r));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn port_0_in_rules_file() {
    let (r, s) = rules_with_port("rules-port-0.yaml", "0");
    assert_bad(
        &check(&s, Some(&r)),
        &r,
        12,
        11,
        "ports[0].port",
        "port 0 is out of range 1-65535",
    );
}

#[test]
fn port_70000_in_rules_file() {
    let (r, s) = rules_with_port("rules-port-70000.yaml", "70000");
    assert_bad(
        &check(&s, Some(&r)),
        &r,
        12,
        11,
        "ports[0].port",
        "port 70000 is out of range 1-65535",
    );
}

#[test]
fn override_for_an_edge_that_cannot_occur() {
    // The model has no rule for the central node reaching users on 4242.
    let f = write(
        "impossible-override.yaml",
        &format!(
            "{NODE}overrides:\n  - from: a\n    to: users\n    port: 4242\n    required: true\n"
        ),
    );
    assert_bad(
        &check(&f, None),
        &f,
        7,
        11,
        "overrides[0]",
        "no edge a -> users port 4242 can occur in this site",
    );
}

#[test]
fn unknown_model() {
    let f = write(
        "unknown-model.yaml",
        "site: t\nmodel: nope\nnodes:\n  - name: a\n    addresses: [192.0.2.1]\n    roles: [central]\n",
    );
    assert_bad(
        &check(&f, None),
        &f,
        2,
        8,
        "model",
        "no bundled model `nope`; bundled: qlik-sense-enterprise",
    );
}

#[test]
fn several_problems_are_reported_together() {
    let f = write(
        "several.yaml",
        "site: t\nnodes:\n  - name: a\n    addresses: [192.0.2.1, bogus]\n    roles: [central, wizard]\n  - name: a\n    addresses: [192.0.2.1]\n    services: [qps, zzz]\nuser_networks:\n  - name: u\n    cidrs: [300.0.0.0/8]\nallow:\n  - from: u\n    to: a\n    port: 0\n",
    );
    let o = check(&f, None);
    let want = [
        (4, 28, "nodes[0].addresses[1]"),
        (5, 22, "nodes[0].roles[1]"),
        (6, 11, "nodes[1].name"),
        (7, 17, "nodes[1].addresses[0]"),
        (8, 21, "nodes[1].services[1]"),
        (11, 13, "user_networks[0].cidrs[0]"),
        (15, 11, "allow[0].port"),
    ];
    let err = stderr(&o);
    for (line, column, field) in want {
        assert_bad(&o, &f, line, column, field, "");
    }
    let errors = err.lines().filter(|l| l.starts_with("error: ")).count();
    assert_eq!(errors, want.len(), "{err}");
    assert!(
        err.contains(&format!("{} problems found", want.len())),
        "{err}"
    );
}

#[test]
fn yaml_syntax_error() {
    let f = write("syntax.yaml", "site: t\nnodes: [\n");
    assert_bad(&check(&f, None), &f, 2, 8, "nodes", "");
}

#[test]
fn missing_file() {
    let f = scratch().join("does-not-exist.yaml");
    let o = check(&f, None);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains(&f.display().to_string()), "{err}");
}

/// The bundled example sites, by name.
fn sites() -> impl Iterator<Item = &'static str> {
    portwatch::config::BUNDLED_SITES
        .iter()
        .map(|(name, _, _)| *name)
}

fn site_path(site: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("deploy/sites/{site}.yaml"))
}

#[test]
fn every_bundled_site_checks_clean() {
    for site in sites() {
        let o = check(&site_path(site), None);
        assert_eq!(o.status.code(), Some(0), "{site}: {}", stderr(&o));
        assert!(String::from_utf8_lossy(&o.stdout).contains("is valid"));
    }
}

#[test]
fn expect_json_has_the_documented_shape() {
    for site in sites() {
        let path = site_path(site);
        let o = portwatch(&[
            "expect",
            "--site",
            path.to_str().unwrap(),
            "--format",
            "json",
        ]);
        assert_eq!(o.status.code(), Some(0), "{site}: {}", stderr(&o));
        let v: serde_json::Value =
            serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{site}: not JSON: {e}"));
        let nodes = v["nodes"].as_array().expect("nodes array");
        assert!(!nodes.is_empty(), "{site}");
        for n in nodes {
            assert!(n["name"].is_string(), "{site}: {n}");
            for dir in ["inbound", "outbound"] {
                let ports = n[dir].as_array().unwrap_or_else(|| panic!("{site}: {n}"));
                assert!(ports
                    .iter()
                    .all(|p| p.as_u64().is_some_and(|p| p > 0 && p < 65536)));
            }
        }
        let edges = v["edges"].as_array().expect("edges array");
        for e in edges {
            assert!(e["src"].is_string() && e["dst"].is_string(), "{site}: {e}");
            assert!(e["port"].as_u64().is_some(), "{site}: {e}");
            assert!(e["service"].is_string(), "{site}: {e}");
            assert!(e["required"].is_boolean(), "{site}: {e}");
            assert!(e["window_seconds"].as_u64().is_some(), "{site}: {e}");
        }
        // Every port in a node's list comes from an edge at that node.
        for n in nodes {
            let name = n["name"].as_str().unwrap();
            for (dir, end) in [("inbound", "dst"), ("outbound", "src")] {
                for p in n[dir].as_array().unwrap() {
                    assert!(
                        edges.iter().any(|e| e[end] == name && e["port"] == *p),
                        "{site}: {name} {dir} {p} has no edge"
                    );
                }
            }
        }
    }
}
