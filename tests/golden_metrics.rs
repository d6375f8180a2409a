//! The `/metrics` golden: `fixtures/demo.pcap` replayed through the library
//! (file source → pipeline → metrics recorder, as the daemon wires them,
//! with capture time as the clock), rendered, and compared with
//! `fixtures/demo.expected.prom`. The build labels are written as
//! `VERSION`, `REVISION` and `RUSTVERSION` so a commit, a release or a new
//! compiler does not churn the golden.
//!
//! `UPDATE_GOLDEN=1 cargo test --test main golden` rewrites it (with the
//! report goldens); review the diff before committing.

use std::path::Path;
use std::sync::Arc;

use portwatch::config::load_policy;
use portwatch::export::metrics::{Metrics, Recorder};
use portwatch::pipeline::Pipeline;
use portwatch::policy::Visibility;
use portwatch::source::file::MergedFiles;
use portwatch::source::{Poll, Source};
use portwatch::state::TrackConfig;

fn render_demo() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let policy = Arc::new(load_policy(Path::new("multi-node"), None).unwrap().policy);
    let m = Metrics::new();
    let mut rec = Recorder::new(&m, &["replay".to_string()]);
    rec.set_policy(&policy, &Visibility::default());
    let mut pl = Pipeline::new(policy.clone(), TrackConfig::default());
    pl.record_events(true);
    let mut files = MergedFiles::open(&[root.join("fixtures/demo.pcap")]).unwrap();
    // Findings are held on the wall clock: none expires within this render.
    let wall = std::time::Instant::now();
    rec.capture_up(0, true);
    loop {
        let poll = files.poll(&mut |f| {
            let what = pl.ingest(f);
            rec.packet(0, what);
        });
        for e in pl.drain_events() {
            rec.observe(&policy, &e, wall);
        }
        if poll.expect("demo.pcap reads") == Poll::End {
            break;
        }
    }
    let (start, end) = pl.span().expect("frames");
    pl.finish(end);
    for e in pl.drain_events() {
        rec.observe(&policy, &e, wall);
    }
    rec.capture_up(0, false);
    m.config_loaded(&policy, start);
    rec.tick(&pl, start, end);
    m.render()
        .replace(
            &format!("version=\"{}\"", env!("CARGO_PKG_VERSION")),
            "version=\"VERSION\"",
        )
        .replace(
            &format!("revision=\"{}\"", env!("PORTWATCH_REVISION")),
            "revision=\"REVISION\"",
        )
        .replace(
            &format!("rustversion=\"{}\"", env!("PORTWATCH_RUSTVERSION")),
            "rustversion=\"RUSTVERSION\"",
        )
}

#[test]
fn golden_metrics_of_the_demo_replay() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/demo.expected.prom");
    let got = render_demo();
    // The run is deterministic: a second one renders the same text.
    assert_eq!(got, render_demo(), "two replays rendered differently");
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v != "0") {
        std::fs::write(&path, &got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; UPDATE_GOLDEN=1 cargo test --test main golden writes it",
            path.display()
        )
    });
    if got != want {
        if got.lines().count() != want.lines().count() {
            eprintln!("got:\n{got}");
        }
        let diff: Vec<String> = want
            .lines()
            .zip(got.lines())
            .filter(|(w, g)| w != g)
            .take(10)
            .map(|(w, g)| format!("- {w}\n+ {g}"))
            .collect();
        panic!(
            "/metrics of the demo replay differs from {} ({} vs {} lines):\n{}\n\
             after a deliberate change: UPDATE_GOLDEN=1 cargo test --test main golden",
            path.display(),
            want.lines().count(),
            got.lines().count(),
            diff.join("\n")
        );
    }
}

/// The golden is valid exposition text by promtool's standard (lint
/// included), so what it pins is what Prometheus accepts.
#[test]
fn golden_metrics_pass_promtool() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let Some(promtool) = crate::deploy::promtool_bin() else {
        crate::util::skip(
            "golden_metrics_pass_promtool",
            "promtool not installed (apt-get install prometheus)",
        );
        return;
    };
    let text = render_demo();
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool:\n{said}"
    );
}
