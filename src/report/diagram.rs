//! The site drawn: endpoints grouped by role with their addresses, the
//! expected edges, and what a capture showed on them. Pure: a [`Diagram`]
//! is built from the policy (and a report), then written as Graphviz DOT
//! (laid out by `dot` when the caller has it) or laid out here as SVG by a
//! simple layered layout: geometry first ([`Layout`]), then drawn with
//! maud's `html!`, which escapes every value spliced in.
//!
//! Element ids are the same in both: `node:<name>` for an endpoint,
//! `edge:<src>:<dst>:<port>` for an expected edge, `flow:<kind>:<src>:<dst>`
//! for the findings between two endpoints, so a page (and its tests) can
//! find every one.

use std::collections::BTreeMap;
use std::fmt::Write;

use maud::{html, Markup, Render};

use super::Report;
use crate::policy::{EndpointKind, Policy};
use crate::state::tally::FindingKind;
use crate::state::EdgeState;

/// One endpoint box.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub name: String,
    /// Addresses or networks, one per line.
    pub addresses: Vec<String>,
    /// Index into [`Diagram::groups`].
    pub group: usize,
}

/// Endpoints drawn together: a role (or set of roles), the user networks,
/// the externals, hosts outside the inventory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    pub label: String,
    pub kind: GroupKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum GroupKind {
    Users,
    Roles,
    Externals,
    Unknown,
}

/// How a line is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Style {
    /// An expected edge in the plain site graph (`expect --format dot`).
    Expected { required: bool },
    /// A required edge in an audit, by its state.
    Required(EdgeState),
    /// A required edge whose handshakes were refused or unanswered.
    Blocked,
    /// Findings between two endpoints.
    Finding(FindingKind),
}

impl Style {
    /// CSS class (and DOT `class`): the state or finding kind.
    pub fn class(self) -> &'static str {
        match self {
            Style::Expected { required: true } => "expected required",
            Style::Expected { required: false } => "expected",
            Style::Required(s) => s.as_str(),
            Style::Blocked => "blocked",
            Style::Finding(k) => k.as_str(),
        }
    }

    pub fn color(self) -> &'static str {
        match self {
            Style::Expected { required: true } => "#263238",
            Style::Expected { required: false } => "#90a4ae",
            Style::Required(EdgeState::Seen) => "#2e7d32",
            Style::Required(EdgeState::Missing) => "#c62828",
            Style::Required(EdgeState::NotObserved) => "#757575",
            Style::Blocked => "#ef6c00",
            Style::Finding(FindingKind::LocalOnly) => "#ad1457",
            Style::Finding(FindingKind::UnknownHost) => "#5d4037",
            Style::Finding(_) => "#6a1b9a",
        }
    }

    fn dashed(self) -> bool {
        matches!(
            self,
            Style::Finding(_) | Style::Required(EdgeState::NotObserved)
        )
    }

    fn bold(self) -> bool {
        matches!(
            self,
            Style::Expected { required: true }
                | Style::Required(EdgeState::Missing)
                | Style::Blocked
                | Style::Finding(_)
        )
    }
}

/// One line from `src` to `dst` (indexes into [`Diagram::endpoints`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub id: String,
    pub src: usize,
    pub dst: usize,
    pub label: String,
    pub style: Style,
    /// Hover text: what the line stands for.
    pub title: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagram {
    pub title: String,
    pub groups: Vec<Group>,
    pub endpoints: Vec<Endpoint>,
    pub lines: Vec<Line>,
}

/// The name of the box for hosts outside the inventory.
pub const UNKNOWN: &str = "unknown";

impl Diagram {
    /// The index of the group with this label and kind, added if new.
    fn group(&mut self, label: String, kind: GroupKind) -> usize {
        match self
            .groups
            .iter()
            .position(|g| g.label == label && g.kind == kind)
        {
            Some(i) => i,
            None => {
                self.groups.push(Group { label, kind });
                self.groups.len() - 1
            }
        }
    }

    /// Every endpoint of the site, grouped.
    fn endpoints_of(p: &Policy) -> Diagram {
        let mut d = Diagram {
            title: format!("site {} (model {})", p.site.name, p.model.id),
            groups: Vec::new(),
            endpoints: Vec::new(),
            lines: Vec::new(),
        };
        for e in &p.endpoints {
            let (group, addresses) = match e.kind {
                EndpointKind::Node => {
                    let n = &p.site.nodes[e.index];
                    let label = if n.roles.is_empty() {
                        "no role".to_string()
                    } else {
                        n.roles.join(" + ")
                    };
                    (
                        d.group(label, GroupKind::Roles),
                        n.addresses.iter().map(|a| a.to_string()).collect(),
                    )
                }
                EndpointKind::UserNetwork => {
                    let u = &p.site.user_networks[e.index];
                    let nets = if u.cidrs.is_empty() {
                        vec!["any other address".to_string()]
                    } else {
                        u.cidrs.iter().map(|c| c.to_string()).collect()
                    };
                    (d.group("users".into(), GroupKind::Users), nets)
                }
                EndpointKind::External => {
                    let x = &p.site.externals[e.index];
                    (
                        d.group("externals".into(), GroupKind::Externals),
                        x.nets.iter().map(|c| c.to_string()).collect(),
                    )
                }
            };
            d.endpoints.push(Endpoint {
                name: e.name.clone(),
                addresses,
                group,
            });
        }
        d
    }

    /// The site's expected graph: every expected edge, required ones bold.
    pub fn expected(p: &Policy) -> Diagram {
        let mut d = Diagram::endpoints_of(p);
        for e in &p.all_edges() {
            let (src, dst) = (&p.endpoint(e.src).name, &p.endpoint(e.dst).name);
            d.lines.push(Line {
                id: format!("edge:{src}:{dst}:{}", e.port),
                src: e.src.0 as usize,
                dst: e.dst.0 as usize,
                label: e.port.to_string(),
                style: Style::Expected {
                    required: e.required,
                },
                title: format!(
                    "{src} -> {dst}:{} {}{}",
                    e.port,
                    e.service,
                    if e.required { " (required)" } else { "" }
                ),
            });
        }
        d
    }

    /// Only the lines with this endpoint at one end (`expect --node`).
    pub fn touching(mut self, endpoint: usize) -> Diagram {
        self.lines
            .retain(|l| l.src == endpoint || l.dst == endpoint);
        self
    }

    /// An audit: every required edge of the report coloured by its state
    /// (blocked when its handshakes failed), and the findings' flows with
    /// their counts.
    pub fn audit(p: &Policy, r: &Report) -> Diagram {
        let mut d = Diagram::endpoints_of(p);
        for e in &r.edges {
            d.required_edge(r, e);
        }
        for ((kind, src, dst), ports) in finding_flows(r) {
            d.finding_flow(kind, src, dst, &ports);
        }
        d
    }

    /// The index of the endpoint named `name`, added to the hosts outside
    /// the inventory if it is not one of the site's.
    fn index(&mut self, name: &str) -> usize {
        if let Some(i) = self.endpoints.iter().position(|e| e.name == name) {
            return i;
        }
        let group = self.group("outside the inventory".into(), GroupKind::Unknown);
        self.endpoints.push(Endpoint {
            name: name.to_string(),
            addresses: Vec::new(),
            group,
        });
        self.endpoints.len() - 1
    }

    /// A required edge of the report, by its state (blocked when a blocked
    /// finding is on it).
    fn required_edge(&mut self, r: &Report, e: &super::EdgeEntry) {
        let blocked = r.findings.iter().find(|f| {
            f.kind == FindingKind::Blocked && f.src == e.src && f.dst == e.dst && f.port == e.port
        });
        let (style, note) = match blocked {
            Some(f) => (Style::Blocked, format!(", blocked x{}", f.count)),
            None => (Style::Required(e.state), String::new()),
        };
        let (src, dst) = (self.index(&e.src), self.index(&e.dst));
        let reason = (e.reason.as_ref())
            .map(|r| format!(" ({r})"))
            .unwrap_or_default();
        self.lines.push(Line {
            id: format!("edge:{}:{}:{}", e.src, e.dst, e.port),
            src,
            dst,
            label: e.port.to_string(),
            style,
            title: format!(
                "{} -> {}:{} {}: {}{note}{reason}",
                e.src,
                e.dst,
                e.port,
                e.service,
                e.state.as_str(),
            ),
        });
    }

    /// One line for the findings of a kind between two endpoints, its
    /// ports with their counts.
    fn finding_flow(&mut self, kind: FindingKind, src: &str, dst: &str, ports: &[(u16, u64)]) {
        let label = (ports.iter())
            .map(|(p, n)| format!("{p} x{n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let (s, t) = (self.index(src), self.index(dst));
        self.lines.push(Line {
            id: format!("flow:{}:{src}:{dst}", kind.as_str()),
            src: s,
            dst: t,
            title: format!("{}: {src} -> {dst} port {label}", kind.as_str()),
            label,
            // A blocked flow off the required edges is still drawn as
            // blocked, in the legend's colour, not as a finding flow.
            style: match kind {
                FindingKind::Blocked => Style::Blocked,
                k => Style::Finding(k),
            },
        });
    }

    /// Graphviz DOT, with the same ids and classes as [`Diagram::to_svg`].
    pub fn to_dot(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "digraph {} {{\n  graph [rankdir=TB, fontname=\"Helvetica\", fontsize=12, nodesep=0.4, \
             ranksep=0.8, newrank=true, bgcolor=\"transparent\", label={}, labelloc=t];\n  \
             node [shape=box, style=\"rounded,filled\", fillcolor=\"#ffffff\", color=\"#546e7a\", \
             fontname=\"Helvetica\", fontsize=11];\n  edge [fontname=\"Helvetica\", fontsize=9, arrowsize=0.7];",
            q(&self.title),
            q(&self.title)
        );
        self.dot_clusters(&mut s);
        self.dot_ranks(&mut s);
        self.dot_lines(&mut s);
        s.push_str("}\n");
        s
    }

    /// One cluster per group, its endpoints inside.
    fn dot_clusters(&self, s: &mut String) {
        for (gi, g) in self.groups.iter().enumerate() {
            let _ = writeln!(
                s,
                "  subgraph {} {{\n    label={}; style=\"rounded,filled\"; fillcolor={}; color=\"#b0bec5\"; id={};",
                q(&format!("cluster_{gi}")),
                q(&g.label),
                q(group_fill(g.kind)),
                q(&format!("group:{}", g.label))
            );
            for e in self.endpoints.iter().filter(|e| e.group == gi) {
                let mut label = e.name.clone();
                for a in &e.addresses {
                    label.push('\n');
                    label.push_str(a);
                }
                let _ = writeln!(
                    s,
                    "    {} [id={}, class=\"endpoint\", label={}];",
                    q(&e.name),
                    q(&format!("node:{}", e.name)),
                    q(&label)
                );
            }
            s.push_str("  }\n");
        }
    }

    fn dot_ranks(&self, s: &mut String) {
        // Sources on top, externals at the bottom, as the vendor page draws it.
        for (rank, kinds) in [
            ("min", &[GroupKind::Users, GroupKind::Unknown][..]),
            ("max", &[GroupKind::Externals][..]),
        ] {
            let names: Vec<String> = (self.endpoints.iter())
                .filter(|e| kinds.contains(&self.groups[e.group].kind))
                .map(|e| q(&e.name))
                .collect();
            if !names.is_empty() {
                let _ = writeln!(s, "  {{ rank={rank}; {}; }}", names.join("; "));
            }
        }
        // rank=max alone leaves endpoints without lines on top: invisible
        // edges hang the externals below the nodes.
        if let Some(x) =
            (self.endpoints.iter()).find(|e| self.groups[e.group].kind == GroupKind::Externals)
        {
            for e in
                (self.endpoints.iter()).filter(|e| self.groups[e.group].kind == GroupKind::Roles)
            {
                let _ = writeln!(
                    s,
                    "  {} -> {} [style=invis, weight=0];",
                    q(&e.name),
                    q(&x.name)
                );
            }
        }
    }

    fn dot_lines(&self, s: &mut String) {
        for l in &self.lines {
            let style = match (l.style.dashed(), l.style.bold()) {
                (true, true) => "dashed,bold",
                (true, false) => "dashed",
                (false, true) => "bold",
                (false, false) => "solid",
            };
            let _ = writeln!(
                s,
                "  {} -> {} [id={}, class={}, color={}, fontcolor={}, style={}, label={}, tooltip={}];",
                q(&self.endpoints[l.src].name),
                q(&self.endpoints[l.dst].name),
                q(&l.id),
                q(l.style.class()),
                q(l.style.color()),
                q(l.style.color()),
                q(style),
                q(&l.label),
                q(&l.title)
            );
        }
    }

    /// A simple layered layout of its own, for when Graphviz is absent:
    /// users on top, then one row per role group in the site's order,
    /// externals and unknown hosts at the bottom; lines are curves between
    /// box edges, parallel lines spread apart, each label placed clear of
    /// the others.
    pub fn to_svg(&self) -> String {
        self.draw(&self.layout()).into_string()
    }

    /// The endpoints of group `g`, in order.
    fn members(&self, g: usize) -> Vec<usize> {
        (0..self.endpoints.len())
            .filter(|i| self.endpoints[*i].group == g)
            .collect()
    }

    /// Rows of groups: sources (users, unknown hosts) on top, the role
    /// groups side by side (wrapped at `MAX_ROW` boxes), externals last.
    fn rows(&self) -> Vec<Vec<usize>> {
        const MAX_ROW: usize = 6;
        let mut rows: Vec<Vec<usize>> = Vec::new();
        for band in [
            &[GroupKind::Users, GroupKind::Unknown][..],
            &[GroupKind::Roles][..],
            &[GroupKind::Externals][..],
        ] {
            let mut row: Vec<usize> = Vec::new();
            let mut boxes = 0;
            for g in (0..self.groups.len()).filter(|g| band.contains(&self.groups[*g].kind)) {
                let n = self.members(g).len();
                if n == 0 {
                    continue;
                }
                if boxes > 0 && boxes + n > MAX_ROW {
                    rows.push(std::mem::take(&mut row));
                    boxes = 0;
                }
                row.push(g);
                boxes += n;
            }
            if !row.is_empty() {
                rows.push(row);
            }
        }
        rows
    }

    /// Where every frame, box, line and label goes.
    fn layout(&self) -> Layout {
        let rows = self.rows();
        let row_width = |row: &[usize]| -> f64 {
            row.iter()
                .map(|g| self.members(*g).len() as f64 * (BOX_W + GAP) - GAP + 24.0)
                .sum::<f64>()
                + GAP * (row.len() as f64 - 1.0)
        };
        let width = rows.iter().map(|r| row_width(r)).fold(500.0, f64::max) + 2.0 * GAP;
        let mut frames = Vec::new();
        let mut boxes = vec![(0.0, 0.0, 0.0); self.endpoints.len()];
        for (r, row) in rows.iter().enumerate() {
            let y = 50.0 + r as f64 * ROW;
            let mut x = (width - row_width(row)) / 2.0;
            for g in row {
                let m = self.members(*g);
                let span = m.len() as f64 * (BOX_W + GAP) - GAP;
                frames.push(Frame {
                    group: *g,
                    x,
                    y,
                    span,
                });
                for (k, i) in m.iter().enumerate() {
                    let h = 22.0 + LINE * self.endpoints[*i].addresses.len() as f64;
                    boxes[*i] = (x + 12.0 + k as f64 * (BOX_W + GAP), y, h);
                }
                x += span + 24.0 + GAP;
            }
        }
        let curves = self.curves(&boxes, BOX_W);
        let labels = place_labels(&curves, &self.lines);
        let height = (labels.iter().map(|b| b.y + LABEL_FONT))
            .fold(50.0 + rows.len() as f64 * ROW, f64::max);
        Layout {
            width,
            height,
            frames,
            boxes,
            curves,
            labels,
        }
    }

    /// The SVG of a layout: markers, group frames, lines, then boxes on top.
    fn draw(&self, l: &Layout) -> Markup {
        let mut styles: Vec<Style> = self.lines.iter().map(|l| l.style).collect();
        styles.sort();
        styles.dedup();
        let size = |v: f64| format!("{v:.0}");
        html! {
            svg xmlns="http://www.w3.org/2000/svg" viewBox=(format!("0 0 {:.0} {:.0}", l.width, l.height))
                width=(size(l.width)) height=(size(l.height))
                font-family="Helvetica, Arial, sans-serif" font-size="11" {
                "\n" title { (self.title) } "\n"
                defs {
                    "\n"
                    @for st in &styles {
                        marker id=(format!("arrow-{}", st.class().replace(' ', "-"))) viewBox="0 0 10 10" refX="10" refY="5"
                            markerWidth="7" markerHeight="7" orient="auto-start-reverse" {
                            path d="M0,0 L10,5 L0,10 z" fill=(st.color()) {}
                        }
                        "\n"
                    }
                }
                "\n"
                @for f in &l.frames { (self.draw_frame(f)) "\n" }
                @for ((line, c), b) in self.lines.iter().zip(&l.curves).zip(&l.labels) {
                    (draw_line(line, c, b)) "\n"
                }
                @for (e, b) in self.endpoints.iter().zip(&l.boxes) {
                    (draw_endpoint(e, *b)) "\n"
                }
            }
            "\n"
        }
    }

    fn draw_frame(&self, f: &Frame) -> Markup {
        let g = &self.groups[f.group];
        html! {
            g class="group" id=(format!("group:{}", g.label)) {
                rect x=(Px(f.x)) y=(Px(f.y - 24.0)) width=(Px(f.span + 24.0)) height=(Px(ROW - 60.0))
                    rx="8" fill=(group_fill(g.kind)) stroke="#b0bec5" {}
                text x=(Px(f.x + 6.0)) y=(Px(f.y - 10.0)) class="group-label" { (g.label) }
            }
        }
    }

    /// Each line as a curve between its boxes' edges (`pos`: x, y, height
    /// of each endpoint's box, `w` its width): lines within a row arc below
    /// it, parallel lines between the same two boxes fan out.
    fn curves(&self, pos: &[(f64, f64, f64)], w: f64) -> Vec<Curve> {
        let mut seen: BTreeMap<(usize, usize), usize> = BTreeMap::new();
        (self.lines.iter())
            .map(|l| {
                let pair = (l.src.min(l.dst), l.src.max(l.dst));
                let k = *seen.entry(pair).and_modify(|n| *n += 1).or_insert(0) as f64;
                let ((sx, sy, sh), (dx, dy, dh)) = (pos[l.src], pos[l.dst]);
                let (x1, x2) = (sx + w / 2.0, dx + w / 2.0);
                let (y1, y2, bend) = if (sy - dy).abs() < 1.0 {
                    (sy + sh, dy + dh, 40.0 + 18.0 * k)
                } else if sy < dy {
                    (sy + sh, dy, 0.0)
                } else {
                    (sy, dy + dh, 0.0)
                };
                let spread = k * 16.0 * if l.src < l.dst { 1.0 } else { -1.0 };
                Curve {
                    from: (x1, y1),
                    via: ((x1 + x2) / 2.0 + spread, (y1 + y2) / 2.0 + bend),
                    to: (x2, y2),
                }
            })
            .collect()
    }
}

/// Font size of the line labels in the own layout.
const LABEL_FONT: f64 = 10.0;

/// A quadratic Bézier curve.
#[derive(Clone, Copy, Debug)]
struct Curve {
    from: (f64, f64),
    via: (f64, f64),
    to: (f64, f64),
}

impl Curve {
    /// The point at `t` in 0..=1 along the curve.
    fn at(&self, t: f64) -> (f64, f64) {
        let (a, b, c) = ((1.0 - t) * (1.0 - t), 2.0 * (1.0 - t) * t, t * t);
        (
            a * self.from.0 + b * self.via.0 + c * self.to.0,
            a * self.from.1 + b * self.via.1 + c * self.to.1,
        )
    }
}

/// A label's box, estimated from its text: centred on `x`, baseline at `y`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct LabelBox {
    x: f64,
    y: f64,
    width: f64,
}

impl LabelBox {
    fn new((x, y): (f64, f64), text: &str) -> LabelBox {
        // 0.6 em per character is at least Helvetica's digits, `x`, `,`
        // and space, which are all a port label holds.
        let width = text.chars().count() as f64 * LABEL_FONT * 0.6;
        LabelBox { x, y, width }
    }

    /// Whether the two boxes (with a pixel of margin) intersect.
    fn hits(&self, o: &LabelBox) -> bool {
        (self.x - o.x).abs() < (self.width + o.width) / 2.0 + 2.0
            && (self.y - o.y).abs() < LABEL_FONT + 2.0
    }
}

/// Where each line's label goes, in line order: the first of several
/// points along its curve whose box is clear of the labels placed before,
/// else the curve's middle moved down until clear. Deterministic.
fn place_labels(curves: &[Curve], lines: &[Line]) -> Vec<LabelBox> {
    const ALONG: [f64; 9] = [0.5, 0.4, 0.6, 0.3, 0.7, 0.2, 0.8, 0.12, 0.88];
    let mut placed: Vec<LabelBox> = Vec::with_capacity(lines.len());
    for (c, l) in curves.iter().zip(lines) {
        let clear = |b: &LabelBox| !placed.iter().any(|p| p.hits(b));
        let mut along = ALONG.iter().map(|t| LabelBox::new(c.at(*t), &l.label));
        let b = along.find(|b| clear(b)).unwrap_or_else(|| {
            let mut b = LabelBox::new(c.at(0.5), &l.label);
            while !clear(&b) {
                b.y += LABEL_FONT + 3.0;
            }
            b
        });
        placed.push(b);
    }
    placed
}

/// Box width, gap between boxes, row height and address line height of the
/// own layout.
const BOX_W: f64 = 150.0;
const GAP: f64 = 30.0;
const ROW: f64 = 150.0;
const LINE: f64 = 14.0;

/// The own layout's geometry, computed apart from the drawing.
struct Layout {
    width: f64,
    height: f64,
    frames: Vec<Frame>,
    /// x, y and height of each endpoint's box, in endpoint order.
    boxes: Vec<(f64, f64, f64)>,
    /// Each line's curve and label, in line order.
    curves: Vec<Curve>,
    labels: Vec<LabelBox>,
}

/// A group's frame: its members' boxes side by side from `x`, in the row
/// at `y`, `span` wide.
struct Frame {
    group: usize,
    x: f64,
    y: f64,
    span: f64,
}

/// A coordinate as the SVG writes it: one decimal.
struct Px(f64);

impl Render for Px {
    fn render_to(&self, w: &mut String) {
        let _ = write!(w, "{:.1}", self.0);
    }
}

fn draw_line(l: &Line, c: &Curve, b: &LabelBox) -> Markup {
    let ((x1, y1), (cx, cy), (x2, y2)) = (c.from, c.via, c.to);
    let class = l.style.class();
    html! {
        g id=(l.id) class=(format!("line {class}")) {
            title { (l.title) }
            path d=(format!("M{x1:.1},{y1:.1} Q{cx:.1},{cy:.1} {x2:.1},{y2:.1}")) fill="none"
                stroke=(l.style.color()) stroke-width=(if l.style.bold() { "2.2" } else { "1.2" })
                stroke-dasharray=[l.style.dashed().then_some("6 4")]
                marker-end=(format!("url(#arrow-{})", class.replace(' ', "-"))) {}
            text x=(Px(b.x)) y=(Px(b.y)) text-anchor="middle" font-size=(LABEL_FONT) fill=(l.style.color())
                class="line-label" { (l.label) }
        }
    }
}

fn draw_endpoint(e: &Endpoint, (x, y, h): (f64, f64, f64)) -> Markup {
    let mid = Px(x + BOX_W / 2.0);
    html! {
        g id=(format!("node:{}", e.name)) class="endpoint" {
            title { (e.name) }
            rect x=(Px(x)) y=(Px(y)) width=(BOX_W) height=(Px(h)) rx="6" fill="#ffffff" stroke="#546e7a" {}
            text x=(mid) y=(Px(y + 15.0)) text-anchor="middle" font-weight="bold" { (e.name) }
            @for (j, a) in e.addresses.iter().enumerate() {
                text x=(mid) y=(Px(y + 15.0 + LINE * (j + 1) as f64)) text-anchor="middle" fill="#455a64" { (a) }
            }
        }
    }
}

/// The findings not drawn as required edges: (kind, src, dst) -> the
/// ports with their counts, in order. Missing edges and blocked findings
/// on a required edge are drawn as that edge.
type Flows<'a> = BTreeMap<(FindingKind, &'a str, &'a str), Vec<(u16, u64)>>;

fn finding_flows(r: &Report) -> Flows<'_> {
    let mut flows: Flows = BTreeMap::new();
    for f in &r.findings {
        let drawn = matches!(f.kind, FindingKind::Missing)
            || (f.kind == FindingKind::Blocked
                && (r.edges.iter()).any(|e| e.src == f.src && e.dst == f.dst && e.port == f.port));
        if drawn {
            continue;
        }
        let ports = flows.entry((f.kind, &f.src, &f.dst)).or_default();
        match ports.iter_mut().find(|(p, _)| *p == f.port) {
            Some((_, n)) => *n += f.count,
            None => ports.push((f.port, f.count)),
        }
    }
    flows
}

fn group_fill(kind: GroupKind) -> &'static str {
    match kind {
        GroupKind::Users => "#e3f2fd",
        GroupKind::Roles => "#eceff1",
        GroupKind::Externals => "#f1f8e9",
        GroupKind::Unknown => "#fff3e0",
    }
}

/// A DOT quoted string.
fn q(s: &str) -> String {
    format!(
        "\"{}\"",
        s.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    )
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::load_policy;

    fn policy() -> Policy {
        load_policy(Path::new("multi-node"), None).unwrap().policy
    }

    #[test]
    fn expected_graph_groups_nodes_by_role_and_draws_every_edge() {
        let p = policy();
        let d = Diagram::expected(&p);
        let all = p.all_edges();
        assert_eq!(d.lines.len(), all.len());
        assert_eq!(d.endpoints.len(), p.endpoints.len());
        let engine = d.groups.iter().position(|g| g.label == "engine").unwrap();
        let in_engine: Vec<&str> = (d.endpoints.iter())
            .filter(|e| e.group == engine)
            .map(|e| e.name.as_str())
            .collect();
        assert_eq!(in_engine, ["engine1", "engine2"]);
        let required = d
            .lines
            .iter()
            .filter(|l| l.style == Style::Expected { required: true });
        assert_eq!(required.count(), all.iter().filter(|e| e.required).count());
    }

    #[test]
    fn dot_and_own_svg_carry_the_same_ids() {
        let d = Diagram::expected(&policy());
        let (dot, svg) = (d.to_dot(), d.to_svg());
        for id in ["node:central", "node:corp-users", "edge:proxy:central:4242"] {
            assert!(dot.contains(&format!("id=\"{id}\"")), "dot: {id}");
            assert!(svg.contains(&format!("id=\"{id}\"")), "svg: {id}");
        }
        // Externals hang below the nodes; users sit on top.
        assert!(dot.contains("rank=min; \"corp-users\""));
        assert!(dot.contains("\"central\" -> \"license-backend\" [style=invis"));
    }

    #[test]
    fn text_is_escaped_for_html_and_dot() {
        assert_eq!(crate::quote::html("a<b>&\"c'"), "a&lt;b&gt;&amp;&quot;c'");
        assert_eq!(q("say \"hi\"\nthere"), "\"say \\\"hi\\\"\\nthere\"");
    }
}
