//! The HTML report page: the diagram laid out (Graphviz `dot` or the
//! report's own layout) and the report around it. Shared by `replay
//! --format html`, `watch --format html` and the live page `run` serves
//! at `/` (from the report the capture thread leaves at each tick).

use std::sync::{Arc, Mutex};

use crate::cli::DiagramLayout;
use crate::export::graphviz;
use crate::export::http::{IndexPage, LINKS};
use crate::policy::Policy;
use crate::report::diagram::Diagram;
use crate::report::html::{render, Page};
use crate::report::Report;

/// The latest report and the policy it was judged under, left by the
/// capture thread for the live page.
pub(super) type Snapshot = Arc<Mutex<Option<(Arc<Policy>, Report)>>>;

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
        },
    ))
}

/// The live page at `/`: the HTML report of what was seen so far, with the
/// other endpoints linked. `None` until the first report.
pub(super) fn live_page(snapshot: Snapshot, subtitle: String) -> IndexPage {
    let links: Vec<(String, String)> = LINKS
        .iter()
        .map(|(p, t)| (p.to_string(), t.to_string()))
        .collect();
    Arc::new(move || {
        let (policy, report) = snapshot.lock().ok()?.clone()?;
        report_page(
            &policy,
            &report,
            DiagramLayout::Auto,
            subtitle.clone(),
            Some(PAGE_REFRESH_SECONDS),
            links.clone(),
        )
        .ok()
    })
}
