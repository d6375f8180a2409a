//! The `check` command on bad site and rules files: exit status 2, and every
//! problem named by file, `line:column` and field path, without a panic.
//! Also: every bundled site checks clean and `expect --format json` has the
//! documented shape.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::util::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_portwatch");

/// A fresh directory per call, unique across tests and test runs, removed
/// when dropped.
fn scratch() -> TempDir {
    static N: AtomicUsize = AtomicUsize::new(0);
    TempDir::new(&format!("validation-{}", N.fetch_add(1, Ordering::SeqCst)))
}

/// A file written in a [`scratch`] directory, which goes with it.
struct Scratch {
    _dir: TempDir,
    path: PathBuf,
}

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

fn write(name: &str, text: &str) -> Scratch {
    let dir = scratch();
    let path = dir.0.join(name);
    std::fs::write(&path, text).unwrap();
    Scratch { _dir: dir, path }
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
/// whose message contains `says`; or what is wrong.
fn diagnosed(
    o: &Output,
    file: &Path,
    line: u64,
    column: u64,
    field: &str,
    says: &str,
) -> Result<(), String> {
    let err = stderr(o);
    if o.status.code() != Some(2) {
        return Err(format!("exit status {:?}; stderr:\n{err}", o.status.code()));
    }
    if err.contains("panicked") {
        return Err(format!("panicked:\n{err}"));
    }
    let head = format!("{}:{line}:{column}: {field}: ", file.display());
    let hit = err
        .lines()
        .find(|l| l.contains(&head))
        .ok_or_else(|| format!("no `{head}` in stderr:\n{err}"))?;
    if !hit.contains(says) {
        return Err(format!("`{says}` not in `{hit}`"));
    }
    Ok(())
}

fn assert_bad(o: &Output, file: &Path, line: u64, column: u64, field: &str, says: &str) {
    if let Err(e) = diagnosed(o, file, line, column, field, says) {
        panic!("{e}");
    }
}

const NODE: &str =
    "site: t\nnodes:\n  - name: a\n    addresses: [192.0.2.1]\n    roles: [central]\n";

/// A small valid rules file; `PORT` is replaced per case.
const RULES: &str = "model: tiny\ntitle: Tiny\nsource: test\nservices:\n  - id: web\n    name: Web\nroles:\n  - id: server\n    description: d\n    services: [web]\nports:\n  - port: PORT\n    to: web\n    scope: users\n    purpose: p\n    cite: c\n";
const TINY_SITE: &str =
    "site: t\nmodel: tiny\nnodes:\n  - name: a\n    addresses: [192.0.2.1]\n    roles: [server]\n";

/// An `exporters:` list of one entry, `sw1` (its name on line 2 of it).
fn exporter(address: &str, covers: &str) -> String {
    format!("exporters:\n  - name: sw1\n    address: {address}\n    covers: {covers}\n")
}

/// An `accepted:` list of one entry (its `from` on line 2 of it).
fn accepted(from: &str, to: &str, port: &str, ticket: &str, expires: &str) -> String {
    format!(
        "accepted:\n  - from: {from}\n    to: {to}\n    port: {port}\n    reason: known\n    \
         ticket: {ticket}\n    owner: ops\n    expires: {expires}\n"
    )
}

/// The file a case gets wrong.
enum Bad {
    /// This site file, with the bundled model.
    Site(String),
    /// The tiny rules file with this port, and a site using it.
    RulesPort(&'static str),
}

/// One bad input and the one diagnostic it must produce.
struct Case {
    name: &'static str,
    bad: Bad,
    line: u64,
    column: u64,
    field: &'static str,
    says: &'static str,
}

fn cases() -> Vec<Case> {
    let site = |t: &str| Bad::Site(t.to_string());
    let case = |name, bad, (line, column), field, says| Case {
        name,
        bad,
        line,
        column,
        field,
        says,
    };
    vec![
        case(
            "unknown field lists valid names",
            site("site: t\nnodes:\n  - name: a\n    addresses: [192.0.2.1]\n    roles: [central]\n    colour: red\n"),
            (6, 5),
            "nodes[0].colour",
            "unknown field `colour`, expected one of name, addresses, roles, services",
        ),
        case(
            "unknown role",
            site("site: t\nnodes:\n  - name: a\n    addresses: [192.0.2.1]\n    roles: [central, wizard]\n"),
            (5, 22),
            "nodes[0].roles[1]",
            "unknown role `wizard`; known: central, proxy",
        ),
        case(
            "unknown service",
            site("site: t\nnodes:\n  - name: a\n    addresses: [192.0.2.1]\n    services: [qps, zzz]\n"),
            (5, 21),
            "nodes[0].services[1]",
            "unknown service `zzz`; known: qps",
        ),
        case(
            "duplicate node name",
            site(&format!("{NODE}  - name: a\n    addresses: [192.0.2.2]\n    roles: [engine]\n")),
            (6, 11),
            "nodes[1].name",
            "duplicate name `a`",
        ),
        case(
            "address claimed by two nodes",
            site(&format!("{NODE}  - name: b\n    addresses: [192.0.2.1]\n    roles: [engine]\n")),
            (7, 17),
            "nodes[1].addresses[0]",
            "address 192.0.2.1 is already claimed by node `a`",
        ),
        case(
            "bad CIDR in user networks",
            site(&format!("{NODE}user_networks:\n  - name: u\n    cidrs: [198.51.100.0/33]\n")),
            (8, 13),
            "user_networks[0].cidrs[0]",
            "is not a CIDR block",
        ),
        case(
            "bad address",
            site("site: t\nnodes:\n  - name: a\n    addresses: [192.0.2.300]\n    roles: [central]\n"),
            (4, 17),
            "nodes[0].addresses[0]",
            "`192.0.2.300` is not an IPv4 or IPv6 address",
        ),
        case(
            "port 0 in allow",
            site(&format!("{NODE}allow:\n  - from: users\n    to: a\n    port: 0\n")),
            (9, 11),
            "allow[0].port",
            "port 0 is out of range 1-65535",
        ),
        case(
            "port 70000 in overrides",
            site(&format!("{NODE}overrides:\n  - from: users\n    to: a\n    port: 70000\n")),
            (9, 11),
            "overrides[0].port",
            "port 70000 is out of range 1-65535",
        ),
        case(
            "port 0 in a rules file",
            Bad::RulesPort("0"),
            (12, 11),
            "ports[0].port",
            "port 0 is out of range 1-65535",
        ),
        case(
            "port 70000 in a rules file",
            Bad::RulesPort("70000"),
            (12, 11),
            "ports[0].port",
            "port 70000 is out of range 1-65535",
        ),
        // The model has no rule for the central node reaching users on 4242.
        case(
            "override for an edge that cannot occur",
            site(&format!(
                "{NODE}overrides:\n  - from: a\n    to: users\n    port: 4242\n    required: true\n"
            )),
            (7, 11),
            "overrides[0]",
            "no edge a -> users port 4242 can occur in this site",
        ),
        case(
            "unknown model",
            site("site: t\nmodel: nope\nnodes:\n  - name: a\n    addresses: [192.0.2.1]\n    roles: [central]\n"),
            (2, 8),
            "model",
            "no bundled model `nope`; bundled: qlik-sense-enterprise",
        ),
        // Names are identifiers: the refused character, where it is.
        case(
            "site name with a line break",
            site("site: \"t\\ntable inet backdoor {\"\nnodes:\n  - name: a\n    addresses: [192.0.2.1]\n    roles: [central]\n"),
            (1, 9),
            "site",
            "character \\n (U+000A) is not allowed in a name; names use ASCII letters",
        ),
        case(
            "node name with a typographic quote",
            site("site: t\nnodes:\n  - name: it\u{2019}s\n    addresses: [192.0.2.1]\n    roles: [central]\n"),
            (3, 13),
            "nodes[0].name",
            "character \u{2019} (U+2019) is not allowed in a name",
        ),
        case(
            "accepted: an end that names nothing",
            site(&format!("{NODE}{}", accepted("nowhere", "a", "4747", "T-1", "2027-01-31"))),
            (7, 11),
            "accepted[0].from",
            "`nowhere` names no node, user network or external endpoint, and is not an address or CIDR",
        ),
        case(
            "accepted: an end that is no identifier",
            site(&format!("{NODE}{}", accepted("users", "a\u{2019}b", "4747", "T-1", "2027-01-31"))),
            (8, 10),
            "accepted[0].to",
            "character \u{2019} (U+2019) is not allowed in a name",
        ),
        case(
            "accepted: port 0",
            site(&format!("{NODE}{}", accepted("users", "a", "0", "T-1", "2027-01-31"))),
            (9, 11),
            "accepted[0].port",
            "port 0 is out of range 1-65535",
        ),
        case(
            "accepted: an empty ticket",
            site(&format!("{NODE}{}", accepted("users", "a", "4747", "\"\"", "2027-01-31"))),
            (11, 13),
            "accepted[0].ticket",
            "an accepted deviation needs a ticket",
        ),
        case(
            "accepted: an expiry that is no date",
            site(&format!("{NODE}{}", accepted("users", "a", "4747", "T-1", "2027-02-30"))),
            (13, 14),
            "accepted[0].expires",
            "`2027-02-30` is not a date (YYYY-MM-DD, its last day)",
        ),
        case(
            "accepted: a field it does not have",
            site(&format!("{NODE}{}    kind: unexpected\n", accepted("users", "a", "4747", "T-1", "2027-01-31"))),
            (14, 5),
            "accepted[0].kind",
            "unknown field `kind`",
        ),
        case(
            "exporters: a cover that names nothing",
            site(&format!("{NODE}{}", exporter("192.0.2.200", "[a, nowhere]"))),
            (9, 17),
            "exporters[0].covers[1]",
            "`nowhere` names no node or user network, and is not an address or CIDR",
        ),
        case(
            "exporters: a cover that is an external endpoint",
            site(&format!(
                "{NODE}externals:\n  - name: mail\n    addresses: [203.0.113.5]\n    services: []\n{}",
                exporter("192.0.2.200", "[mail]")
            )),
            (13, 14),
            "exporters[0].covers[0]",
            "`mail` names no node or user network, and is not an address or CIDR",
        ),
        case(
            "exporters: an address that is a host name",
            site(&format!("{NODE}{}", exporter("sw1.example", "[a]"))),
            (8, 14),
            "exporters[0].address",
            "`sw1.example` is not an address",
        ),
        case(
            "exporters: a negative observation domain",
            site(&format!(
                "{NODE}{}    observation_domain: -1\n",
                exporter("192.0.2.200", "[a]")
            )),
            (10, 25),
            "exporters[0].observation_domain",
            "-1 is not an observation domain (0 to 4294967295)",
        ),
        case(
            "exporters: nothing covered",
            site(&format!("{NODE}{}", exporter("192.0.2.200", "[]"))),
            (7, 11),
            "exporters[0].covers",
            "an exporter covers at least one node, user network or CIDR block",
        ),
        case(
            "exporters: two with one address and domain",
            site(&format!(
                "{NODE}{}{}",
                exporter("192.0.2.200", "[a]"),
                &exporter("192.0.2.200", "[192.0.2.0/24]")["exporters:\n".len()..]
                    .replace("sw1", "sw2")
            )),
            (11, 14),
            "exporters[1].address",
            "exporter `sw1` already has this address and domain",
        ),
        case(
            "exporters: the name of undeclared exporters",
            site(&format!(
                "{NODE}{}",
                exporter("192.0.2.200", "[a]").replace("sw1", "undeclared")
            )),
            (7, 11),
            "exporters[0].name",
            "`undeclared` is taken; choose another name",
        ),
        case(
            "YAML syntax error",
            site("site: t\nnodes: [\n"),
            (2, 8),
            "nodes",
            "",
        ),
    ]
}

/// Every case of the table: exit 2 and its diagnostic, located. All
/// failures are reported together.
#[test]
fn each_bad_input_is_located() {
    let mut failures = Vec::new();
    for c in cases() {
        let (o, file) = match &c.bad {
            Bad::Site(text) => {
                let f = write("site.yaml", text);
                (check(&f, None), f)
            }
            Bad::RulesPort(port) => {
                let r = write("rules.yaml", &RULES.replace("PORT", port));
                let s = write("tiny-site.yaml", TINY_SITE);
                (check(&s, Some(&r)), r)
            }
        };
        if let Err(e) = diagnosed(&o, &file, c.line, c.column, c.field, c.says) {
            failures.push(format!("{}: {e}", c.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn tiny_rules_file_is_valid() {
    let r = write("tiny-ok.yaml", &RULES.replace("PORT", "8080"));
    let s = write("tiny-site.yaml", TINY_SITE);
    let o = check(&s, Some(&r));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn several_problems_are_reported_together() {
    let f = write(
        "several.yaml",
        "site: t\nnodes:\n  - name: a\n    addresses: [192.0.2.1, bogus]\n    roles: [central, wizard]\n  - name: a\n    addresses: [192.0.2.1]\n    services: [qps, zzz]\nuser_networks:\n  - name: u\n    cidrs: [300.0.0.0/8]\nallow:\n  - from: u\n    to: a\n    port: 0\n",
    );
    let o = check(&f, None);
    let want = [
        (4, 28, "nodes[0].addresses[1]", ""),
        (5, 22, "nodes[0].roles[1]", ""),
        (6, 11, "nodes[1].name", ""),
        (7, 17, "nodes[1].addresses[0]", ""),
        (8, 21, "nodes[1].services[1]", ""),
        (11, 13, "user_networks[0].cidrs[0]", ""),
        (15, 11, "allow[0].port", ""),
    ];
    assert_exactly(&o, &f, &want);
}

/// Exit 2 and exactly these diagnostics `(line, column, field, says)`.
fn assert_exactly(o: &Output, file: &Path, want: &[(u64, u64, &str, &str)]) {
    for (line, column, field, says) in want {
        assert_bad(o, file, *line, *column, field, says);
    }
    let err = stderr(o);
    let errors = err.lines().filter(|l| l.starts_with("error: ")).count();
    assert_eq!(errors, want.len(), "{err}");
    assert!(
        err.contains(&format!("{} problems found", want.len())),
        "{err}"
    );
}

#[test]
fn missing_file() {
    let dir = scratch();
    let f = dir.0.join("does-not-exist.yaml");
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

fn expect_json(site: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "expect",
        "--site",
        site.to_str().unwrap(),
        "--format",
        "json",
    ];
    args.extend(extra);
    let o = portwatch(&args);
    assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
    serde_json::from_slice(&o.stdout).expect("JSON")
}

/// `expect --node N`: N's own entry, unchanged, and exactly the edges N is
/// an end of; the Graphviz graph draws only those edges.
#[test]
fn expect_node_keeps_only_that_node_and_its_edges() {
    let path = site_path("multi-node");
    let all = expect_json(&path, &[]);
    let edges = all["edges"].as_array().unwrap();
    for n in all["nodes"].as_array().unwrap() {
        let name = n["name"].as_str().unwrap();
        let one = expect_json(&path, &["--node", name]);
        assert_eq!(one["nodes"], serde_json::json!([n]), "{name}");
        let mine: Vec<_> = (edges.iter())
            .filter(|e| e["src"] == name || e["dst"] == name)
            .cloned()
            .collect();
        assert!(!mine.is_empty() && mine.len() < edges.len(), "{name}");
        assert_eq!(one["edges"], serde_json::Value::Array(mine), "{name}");
    }
    let name = all["nodes"][0]["name"].as_str().unwrap();
    let dot = portwatch(&[
        "expect",
        "--site",
        path.to_str().unwrap(),
        "--format",
        "dot",
        "--node",
        name,
    ]);
    assert_eq!(dot.status.code(), Some(0), "{}", stderr(&dot));
    let dot = String::from_utf8_lossy(&dot.stdout);
    let lines: Vec<_> = (dot.lines())
        .filter(|l| l.contains(" [id=\"edge:"))
        .collect();
    assert!(!lines.is_empty(), "{dot}");
    let mine = (edges.iter())
        .filter(|e| e["src"] == name || e["dst"] == name)
        .count();
    assert_eq!(lines.len(), mine, "{dot}");
}

/// An `--node` the site does not have: exit 2, the flag and the nodes named.
#[test]
fn expect_node_unknown_is_a_usage_error() {
    let path = site_path("multi-node");
    let o = portwatch(&[
        "expect",
        "--site",
        path.to_str().unwrap(),
        "--node",
        "nosuch",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("--node nosuch") && err.contains("nodes:"),
        "{err}"
    );
    assert!(o.stdout.is_empty());
}

/// `--max-flows 0` is refused (exit 2, the flag named), not taken as 1.
#[test]
fn max_flows_zero_is_refused() {
    let pcap = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/demo.pcap");
    for cmd in ["replay", "run"] {
        let mut args = vec![cmd, "--site", "multi-node", "--max-flows", "0"];
        if cmd == "run" {
            args.push("--replay");
        }
        args.push(pcap.to_str().unwrap());
        let o = portwatch(&args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{cmd}: {err}");
        // Refused by the argument parser, which names the flag and value.
        assert!(err.contains("'0' for '--max-flows"), "{cmd}: {err}");
    }
}

/// stdout of a `check` that must pass.
fn checked(site: &Path) -> String {
    let o = check(site, None);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The row of `check`'s services table for `node`.
fn services_row<'a>(out: &'a str, node: &str) -> &'a str {
    out.lines()
        .find(|l| l.split_whitespace().next() == Some(node))
        .unwrap_or_else(|| panic!("no row for {node}:\n{out}"))
}

/// `check` says which services each node runs and where they come from:
/// a node with only `roles:` gets every default of its roles (the central
/// role's include QPS and QES), a `services:` list replaces them.
#[test]
fn check_lists_each_nodes_services_and_their_origin() {
    let f = write(
        "origin.yaml",
        "site: t\nnodes:\n  - name: central\n    addresses: [192.0.2.10]\n    roles: [central]\n  - name: lean\n    addresses: [192.0.2.11]\n    roles: [central]\n    services: [qrs, qrd, qsd]\n",
    );
    let out = checked(&f);
    let policy = portwatch::config::load_policy(&f, None).unwrap().policy;
    let mut defaults = policy.model.role("central").unwrap().services.clone();
    defaults.sort();
    assert!(defaults.contains(&"qps".to_string()) && defaults.contains(&"qes".to_string()));
    for (node, from, named) in [
        ("central", "role defaults (central)", defaults.join(", ")),
        ("lean", "services: list", "qrd, qrs, qsd".to_string()),
    ] {
        let row = services_row(&out, node);
        assert!(row.contains(from), "{row}");
        let n = policy.site.node(node).unwrap();
        let started = n.services.len() - named.split(", ").count();
        assert!(
            row.contains(&format!("{named} (+{started} they start)")),
            "{row}"
        );
    }
    assert!(
        out.contains("A node without `services:` runs every default of its roles"),
        "{out}"
    );
    // The bundled sites list services on every node: no hint there.
    let bundled = checked(&site_path("multi-node"));
    assert!(services_row(&bundled, "proxy").contains("services: list"));
    assert!(!bundled.contains("A node without"), "{bundled}");
}

/// A node's `services:` takes the Windows service names an admin sees in
/// the Services console (display or service name, any case); the
/// scheduler's, shared by the manager and the worker, is told apart by the
/// node's roles, or refused with both ids named.
#[test]
fn windows_service_names_are_accepted_and_shown() {
    let f = write(
        "windows.yaml",
        "site: t\nnodes:\n  - name: central\n    addresses: [192.0.2.10]\n    roles: [central]\n    services: [Qlik Sense Proxy Service, QlikSenseRepositoryService, qlik sense scheduler service, qsd]\n  - name: sched\n    addresses: [192.0.2.31]\n    roles: [scheduler]\n    services: [\"Qlik Sense Scheduler Service\", Qlik Sense Repository Service]\n",
    );
    let out = checked(&f);
    assert!(
        services_row(&out, "central").contains("qps, qrs, qsd, qss-manager (+"),
        "{out}"
    );
    assert!(
        services_row(&out, "sched").contains("qrs, qss-worker (+"),
        "{out}"
    );

    let bad = write(
        "windows-bad.yaml",
        "site: t\nnodes:\n  - name: both\n    addresses: [192.0.2.10]\n    roles: [central, scheduler]\n    services: [Qlik Sense Scheduler Service, Qlik Sense Proxy Servce]\n",
    );
    let o = check(&bad, None);
    assert_bad(
        &o,
        &bad,
        6,
        16,
        "nodes[0].services[0]",
        "`Qlik Sense Scheduler Service` runs as `qss-manager`",
    );
    assert_bad(&o, &bad, 6, 16, "nodes[0].services[0]", "or `qss-worker`");
    // The unknown one: the list pairs ids with the names on the node.
    assert_bad(
        &o,
        &bad,
        6,
        46,
        "nodes[0].services[1]",
        "known: qps (Qlik Sense Proxy Service), qes (Qlik Sense Engine Service)",
    );
}

/// A schema error no longer hides the rest: a misspelled key is reported
/// (with the name it is a near miss of) and read as that name, an unknown
/// key is skipped, and the semantic checks still run, every problem
/// located in the file as written.
#[test]
fn schema_errors_are_reported_with_every_other_problem() {
    let f = write(
        "schema.yaml",
        "site: t\nnodes:\n  - name: a\n    adresses: [192.0.2.1, 192.0.2.300]\n    roles: [central, wizard]\n  - name: b\n    addresses: [192.0.2.2]\n    colour:\n      - red\n      - blue\n    roles: [engine]\nuser_network:\n  - name: u\n    cidrs: [198.51.100.7/24]\n",
    );
    let o = check(&f, None);
    let want = [
        (4, 5, "nodes[0].adresses", "did you mean `addresses`?"),
        // Found in the value of the misspelled key, at its column as written.
        (
            4,
            27,
            "nodes[0].addresses[1]",
            "`192.0.2.300` is not an IPv4",
        ),
        (5, 22, "nodes[0].roles[1]", "unknown role `wizard`"),
        (8, 5, "nodes[1].colour", "unknown field `colour`"),
        (12, 1, "user_network", "did you mean `user_networks`?"),
        (
            14,
            13,
            "user_networks[0].cidrs[0]",
            "did you mean 198.51.100.0/24?",
        ),
    ];
    assert_exactly(&o, &f, &want);
}

/// A capture or site file named with a line break cannot forge a line of
/// the table or of an error: each is printed as one field (`\n`).
#[test]
fn file_names_with_line_breaks_stay_on_their_line() {
    let dir = scratch();
    let forged = "ERROR forged";
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/demo.pcap");
    let capture = dir.0.join(format!("demo\n{forged}.pcap"));
    std::fs::copy(&demo, &capture).unwrap();
    let capture = capture.to_str().unwrap();
    let table = portwatch(&["replay", "--site", "multi-node", capture]);
    let missing = dir.0.join(format!("none\n{forged}.pcap"));
    let error = portwatch(&["replay", "--site", "multi-node", missing.to_str().unwrap()]);
    let site = write(&format!("s\n{forged}.yaml"), "site: t\nnodes: []\n");
    let diag = check(&site, None);
    for (what, o) in [("table", &table), ("error", &error), ("check", &diag)] {
        let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(o));
        assert!(text.contains(&format!("\\n{forged}")), "{what}: {text}");
        assert!(
            !text.lines().any(|l| l.starts_with(forged)),
            "{what} forged a line:\n{text}"
        );
    }
}

/// `check` on a site whose acceptances expired, expire soon (within
/// `--expiry-warning-days`), or cannot match: exit 0, one located warning
/// each; none for one that is far off and can match.
#[test]
fn check_warns_about_acceptances_expired_expiring_or_matching_nothing() {
    let today = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    let day = |n: i64| {
        today
            .checked_add(jiff::Span::new().days(n))
            .unwrap()
            .to_string()
    };
    let entries = [
        ("users", "a", "4747", day(-1)),  // expired yesterday
        ("users", "a", "4747", day(10)),  // within 30 days
        ("users", "a", "4747", day(300)), // fine
        ("users", "a", "443", day(300)),  // users may reach the central node's proxy port
        ("a", "a", "4747", day(300)),     // the same host on a port the model knows
    ];
    let mut text = NODE.to_string() + "accepted:\n";
    for (from, to, port, date) in &entries {
        text += &accepted(from, to, port, "T-1", date)["accepted:\n".len()..];
    }
    let f = write("site.yaml", &text);
    let o = check(&f, None);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let warnings: Vec<&str> = err.lines().filter(|l| l.starts_with("warning: ")).collect();
    let at = |i: usize| format!("{}:{}:11: accepted[{i}]: ", f.display(), 7 + 7 * i);
    let want = [
        (
            0,
            format!(
                "users -> a:4747 (T-1) expired on {}: its findings alert again",
                day(-1)
            ),
        ),
        (
            1,
            format!("users -> a:4747 (T-1) expires on {} (in 10 days)", day(10)),
        ),
        (
            3,
            "users -> a:443: the policy already allows this flow".to_string(),
        ),
        (4, "a -> a:4747 can match nothing".to_string()),
    ];
    assert_eq!(warnings.len(), want.len(), "{err}");
    for (w, (i, says)) in warnings.iter().zip(&want) {
        assert!(
            w.contains(&at(*i)) && w.contains(says.as_str()),
            "`{w}` is not `{}{says}`",
            at(*i)
        );
    }
    // A longer warning period takes in the far one too.
    let o = portwatch(&[
        "check",
        "--site",
        f.to_str().unwrap(),
        "--expiry-warning-days",
        "400",
    ]);
    assert_eq!(
        stderr(&o)
            .lines()
            .filter(|l| l.contains("expires on"))
            .count(),
        4
    );
    // No acceptance: no warning.
    let o = check(&write("plain.yaml", NODE), None);
    assert!(!stderr(&o).contains("warning"), "{}", stderr(&o));
}
