//! The HTML report page: the diagram laid out (Graphviz `dot` or the
//! report's own layout) and the report around it. Shared by `replay
//! --format html` and the live page `run` serves at `/`.

use crate::cli::DiagramLayout;
use crate::export::graphviz;
use crate::policy::Policy;
use crate::report::diagram::Diagram;
use crate::report::html::{render, Page};
use crate::report::Report;

/// The diagram as SVG, and a sentence on how it was laid out and why.
pub fn diagram_svg(d: &Diagram, layout: DiagramLayout) -> Result<(String, String), String> {
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
            Err(e) => Err(format!("--layout dot: {e}")),
        },
    }
}

/// The whole page.
pub fn report_page(
    p: &Policy,
    r: &Report,
    layout: DiagramLayout,
    subtitle: String,
    refresh_seconds: Option<u32>,
    links: Vec<(String, String)>,
) -> Result<String, String> {
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
