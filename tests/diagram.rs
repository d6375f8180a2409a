//! The site diagram's line labels: on every bundled site, with its
//! expected edges and with the demo capture's audit, in both layouts, no
//! two label boxes intersect. Each box is estimated from the label's text
//! and the font size the SVG gives it.

use std::path::PathBuf;
use std::process::Command;

use portwatch::config::{load_policy, BUNDLED_SITES};
use portwatch::export::graphviz;
use portwatch::report::diagram::Diagram;

use crate::prereq::needs;
use crate::util::{bin, fixture};

/// A label's box: left, top, width, height.
#[derive(Debug)]
struct LabelBox {
    label: String,
    line: String,
    rect: (f64, f64, f64, f64),
}

/// Helvetica's advance widths (in em) of what port labels hold; wider
/// than Helvetica's widest lowercase letter for anything else.
fn em_width(c: char) -> f64 {
    match c {
        '0'..='9' => 0.556,
        'x' => 0.5,
        ',' | ' ' | '.' => 0.278,
        _ => 0.9,
    }
}

fn attr(tag: &str, name: &str) -> Option<f64> {
    let (_, rest) = tag.split_once(&format!(" {name}=\""))?;
    rest.split('"').next()?.parse().ok()
}

fn unescape(s: &str) -> String {
    (s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\""))
    .replace("&#39;", "'")
    .replace("&#45;", "-")
    .replace("&amp;", "&")
}

/// The label boxes of the lines (`<g id="edge:…">` and `<g id="flow:…">`,
/// up to the next element or comment) of an SVG, our own or Graphviz's.
fn label_boxes(svg: &str) -> Vec<LabelBox> {
    let root_font = svg
        .split_once("<svg")
        .and_then(|(_, r)| attr(r.split('>').next()?, "font-size"))
        .unwrap_or(14.0);
    let mut boxes = Vec::new();
    let mut line = "";
    for part in svg.split("<g id=\"").skip(1) {
        let id = part.split('"').next().unwrap_or_default();
        // Graphviz nests the link of an edge (`a_<id>`) before its label.
        if id.starts_with("edge:") || id.starts_with("flow:") {
            line = id;
        } else if !id.starts_with("a_") {
            line = "";
        }
        if line.is_empty() {
            continue;
        }
        let body = part.split("<!--").next().unwrap_or(part);
        for text in body.split("<text").skip(1) {
            let (tag, rest) = text.split_once('>').unwrap();
            let label = unescape(rest.split("</text>").next().unwrap());
            let font = attr(tag, "font-size").unwrap_or(root_font);
            let (x, y) = (attr(tag, "x").unwrap(), attr(tag, "y").unwrap());
            let width = label.chars().map(em_width).sum::<f64>() * font;
            let left = if tag.contains("text-anchor=\"middle\"") {
                x - width / 2.0
            } else {
                x
            };
            boxes.push(LabelBox {
                label,
                line: line.to_string(),
                rect: (left, y - 0.8 * font, width, font),
            });
        }
    }
    boxes
}

/// Every pair of intersecting label boxes, named.
fn overlaps(boxes: &[LabelBox]) -> Vec<String> {
    let mut found = Vec::new();
    for (i, a) in boxes.iter().enumerate() {
        for b in &boxes[i + 1..] {
            let ((ax, ay, aw, ah), (bx, by, bw, bh)) = (a.rect, b.rect);
            if ax < bx + bw && bx < ax + aw && ay < by + bh && by < ay + ah {
                found.push(format!(
                    "{:?} of {} over {:?} of {}",
                    a.label, a.line, b.label, b.line
                ));
            }
        }
    }
    found
}

/// The diagram's SVG in the HTML report of the demo capture on `site`.
fn audit_svg(site: &str, layout: &str) -> String {
    let out = Command::new(bin())
        .args([
            "replay", "--site", site, "--format", "html", "--layout", layout,
        ])
        .arg(fixture("demo.pcap"))
        .output()
        .unwrap();
    let page = String::from_utf8(out.stdout).unwrap();
    let start = page
        .find("<svg")
        .unwrap_or_else(|| panic!("{site}: no svg"));
    let end = page[start..].find("</svg>").unwrap() + start;
    page[start..end].to_string()
}

#[test]
fn diagram_labels_do_not_overlap_on_the_bundled_sites() {
    let dot = needs(
        "diagram_labels_do_not_overlap_on_the_bundled_sites",
        false,
        &["dot"],
    );
    let mut bad = Vec::new();
    let mut labels = 0;
    for (site, _, _) in BUNDLED_SITES {
        let path =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("deploy/sites/{site}.yaml"));
        let expected = Diagram::expected(&load_policy(&path, None).unwrap().policy);
        let mut svgs = vec![
            ("expected, builtin", expected.to_svg()),
            ("demo audit, builtin", audit_svg(site, "builtin")),
        ];
        if dot {
            svgs.push(("expected, dot", graphviz::svg(&expected.to_dot()).unwrap()));
            svgs.push(("demo audit, dot", audit_svg(site, "dot")));
        }
        for (what, svg) in svgs {
            let boxes = label_boxes(&svg);
            assert!(!boxes.is_empty(), "{site} {what}: no line labels found");
            labels += boxes.len();
            bad.extend(
                overlaps(&boxes)
                    .into_iter()
                    .map(|o| format!("{site} {what}: {o}")),
            );
        }
    }
    assert!(
        bad.is_empty(),
        "{} of {labels} labels overlap:\n{}",
        bad.len(),
        bad.join("\n")
    );
}
