//! The HTML report page: the diagram laid out (Graphviz `dot` or the
//! report's own layout) and the report around it. Shared by `replay
//! --format html`, `watch --format html` and the live page `run` serves
//! at `/` (from the report the capture thread leaves at its ticks while
//! someone is looking).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cli::DiagramLayout;
use crate::export::graphviz;
use crate::export::http::IndexPage;
use crate::policy::Policy;
use crate::report::diagram::Diagram;
use crate::report::html::{render, Page, SignOff};
use crate::report::Report;

/// The latest report and the policy it was judged under, left by the
/// capture thread for the live page. The capture thread only builds one
/// while the page is being looked at: nobody watching costs nothing.
#[derive(Default)]
pub(super) struct Snapshot {
    latest: Mutex<Option<(Arc<Policy>, Report)>>,
    /// When the page was last asked for.
    asked: Mutex<Option<Instant>>,
}

/// How long after the last request the capture thread keeps reporting.
const VIEWER_GRACE: Duration = Duration::from_secs(60);

impl Snapshot {
    /// For the capture thread: should it build a report at this tick?
    pub(super) fn wanted(&self) -> bool {
        self.asked
            .lock()
            .ok()
            .and_then(|a| *a)
            .is_some_and(|t| t.elapsed() < VIEWER_GRACE)
    }

    pub(super) fn put(&self, policy: Arc<Policy>, report: Report) {
        if let Ok(mut l) = self.latest.lock() {
            *l = Some((policy, report));
        }
    }

    /// For the HTTP side: the latest report, waiting up to `wait` for the
    /// first one.
    fn get(&self, wait: Duration) -> Option<(Arc<Policy>, Report)> {
        if let Ok(mut a) = self.asked.lock() {
            *a = Some(Instant::now());
        }
        let until = Instant::now() + wait;
        loop {
            if let Some(r) = self.latest.lock().ok()?.clone() {
                return Some(r);
            }
            if Instant::now() >= until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// How often the live page reloads itself.
const PAGE_REFRESH_SECONDS: u32 = 5;

/// The diagram as SVG, and a sentence on how it was laid out and why.
pub(super) fn diagram_svg(
    d: &Diagram,
    layout: DiagramLayout,
) -> Result<(String, String), graphviz::GraphvizError> {
    let own = || d.to_svg();
    match layout {
        DiagramLayout::Builtin => Ok((
            own(),
            "portwatch's own layered layout (users, then one row per role group, then externals), as asked (--layout builtin)".into(),
        )),
        DiagramLayout::Dot | DiagramLayout::Auto => match graphviz::svg(&d.to_dot()) {
            Ok(svg) => Ok((
                svg,
                format!(
                    "Graphviz dot ({}): its layered layout reduces edge crossings and routes edges around boxes",
                    graphviz::version().unwrap_or_else(|| "version unknown".into())
                ),
            )),
            Err(e) if layout == DiagramLayout::Auto => Ok((
                own(),
                format!("portwatch's own layered layout (users, then one row per role group, then externals), because {e}"),
            )),
            Err(e) => Err(e),
        },
    }
}

/// The whole page.
pub(super) fn report_page(
    p: &Policy,
    r: &Report,
    layout: DiagramLayout,
    subtitle: String,
    refresh_seconds: Option<u32>,
    links: Vec<(String, String)>,
    signoff: Option<SignOff>,
) -> Result<String, graphviz::GraphvizError> {
    let (svg, layout) = diagram_svg(&Diagram::audit(p, r), layout)?;
    Ok(render(
        r,
        &Page {
            svg,
            layout,
            refresh_seconds,
            links,
            subtitle,
            signoff,
        },
    ))
}

/// Who runs this command (`$USER`, `$LOGNAME`, else the uid) and the wall
/// clock now: the HTML report's sign-off block.
pub(super) fn signoff_now() -> SignOff {
    let user = ["USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| format!("uid {}", nix::unistd::getuid()));
    SignOff {
        user,
        at: crate::time::Timestamp::now(),
    }
}

/// The live page at `/`: the HTML report of what was seen so far, with the
/// other endpoints linked. `None` until the first report.
pub(super) fn live_page(
    snapshot: Arc<Snapshot>,
    subtitle: String,
    links: Vec<(String, String)>,
) -> IndexPage {
    Arc::new(move || {
        // The first request waits for the capture thread's next tick.
        let (policy, report) = snapshot.get(Duration::from_secs(3))?;
        report_page(
            &policy,
            &report,
            DiagramLayout::Auto,
            subtitle.clone(),
            Some(PAGE_REFRESH_SECONDS),
            links.clone(),
            None,
        )
        .ok()
    })
}
