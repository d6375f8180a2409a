//! `--follow` for `watch` and `run`: node logs (Windows Firewall logs, WFP
//! events as NDJSON) and AWS VPC flow logs read as they grow, their records fed to the same
//! pipeline as the packets, counted in the metrics by node, format and
//! reason. The files are checked when following starts (an EVTX file, a
//! gzip file, an Azure flow log, or one that is none of these, is refused);
//! a file not there yet is waited for, and refused when it appears as one
//! of the first three (logged once, not read until replaced).
//!
//! Coverage: a node log covers its node; a VPC flow log covers the nodes
//! owning its logged interfaces, told as `replay` tells them
//! (`source::flows::Interfaces`), and lists the required edges outside
//! them as `not_observed` as `replay` does.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use jiff::tz::TimeZone;

use super::input::{flow_coverage, record_context, Records};
use crate::export::metrics::Recorder;
use crate::pipeline::Pipeline;
use crate::policy::{Policy, Visibility};
use crate::quote::log_field;
use crate::report::SourceFacts;
use crate::source::flows::vpc::JOIN_WAIT;
use crate::source::flows::FlowFormat;
use crate::source::follow::{Change, Head, StartAt, HEAD, MAX_FOLLOWED};
use crate::source::records::follow::{Followed, FollowedFile};
use crate::source::records::pfirewall::HOLD_FOR;
use crate::source::records::{RecordContext, RecordFormat};
use crate::source::SourceError;

/// What to follow, validated.
#[derive(Clone, Debug)]
pub struct FollowSpec {
    pub paths: Vec<PathBuf>,
    pub start_at: StartAt,
    /// `--timezone`, resolved: for firewall logs whose node has none.
    pub timezone: Option<(String, TimeZone)>,
}

/// The label of a record's format before it was told.
const UNKNOWN: &str = "unknown";

pub(super) struct Follow {
    files: Vec<FollowedFile>,
    ctx: RecordContext,
    timezone: Option<(String, TimeZone)>,
    sensors: Vec<String>,
    out: Vec<Followed>,
    /// The nodes whose logs these are (firewall logs, WFP events), as
    /// found from their content (site nodes only, so bounded by the site).
    nodes: Vec<Arc<str>>,
    /// The nodes owning the VPC flow logs' interfaces, in site order
    /// (bounded by the site).
    owners: Vec<String>,
    /// Per file, what of its interfaces `owners` was told from (`None`:
    /// not a VPC flow log, or not known to be yet).
    told: Vec<Option<Told>>,
    /// `nodes` or `owners` changed since [`Follow::take_new_nodes`].
    new_nodes: bool,
}

/// What of a VPC flow log's interfaces was looked at.
#[derive(Clone, Copy, Debug, Default)]
struct Told {
    /// [`crate::source::flows::Interfaces::changes`] then.
    changes: u64,
    /// Interfaces beyond the capacity were warned of.
    untracked: bool,
}

/// What one poll of the followed files did.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Polled {
    pub records: usize,
    /// A file has more to read at once.
    pub more: bool,
}

impl Follow {
    /// Check the files that are there (each must be a firewall log or NDJSON,
    /// not EVTX); none is opened for good yet.
    pub fn open(
        spec: &FollowSpec,
        policy: &Policy,
        sensors: &[String],
    ) -> Result<Follow, SourceError> {
        if spec.paths.len() > MAX_FOLLOWED {
            return Err(SourceError::Refused {
                path: spec.paths[MAX_FOLLOWED].display().to_string(),
                what: format!("--follow: at most {MAX_FOLLOWED} files"),
            });
        }
        for p in &spec.paths {
            check(p)?;
        }
        Ok(Follow {
            files: (spec.paths.iter())
                .map(|p| FollowedFile::new(p, spec.start_at))
                .collect(),
            ctx: record_context(policy, spec.timezone.clone(), sensors),
            timezone: spec.timezone.clone(),
            sensors: sensors.to_vec(),
            out: Vec::new(),
            nodes: Vec::new(),
            owners: Vec::new(),
            told: vec![None; spec.paths.len()],
            new_nodes: false,
        })
    }

    /// How many files are followed.
    pub fn files(&self) -> usize {
        self.files.len()
    }

    /// Read what is new in each file (each looked at when due at `now`),
    /// into the pipeline and the metrics.
    pub fn poll(
        &mut self,
        now: Instant,
        pl: &mut Pipeline,
        mut rec: Option<&mut Recorder>,
    ) -> Polled {
        let mut polled = Polled::default();
        for i in 0..self.files.len() {
            self.out.clear();
            polled.more |= self.files[i].poll(now, &self.ctx, &mut self.out);
            polled.records += self.deliver(i, pl, rec.as_deref_mut());
        }
        if self.interfaces_changed() {
            self.tell_owners(pl.policy());
        }
        polled
    }

    /// Release, without reading, what each file holds that waited long
    /// enough by `now` (at the stop: everything read).
    pub fn settle(&mut self, now: Instant, pl: &mut Pipeline, mut rec: Option<&mut Recorder>) {
        for i in 0..self.files.len() {
            self.out.clear();
            self.files[i].settle(now, &self.ctx, &mut self.out);
            self.deliver(i, pl, rec.as_deref_mut());
        }
        if self.interfaces_changed() {
            self.tell_owners(pl.policy());
        }
    }

    /// Stopped: what the files hold is read, at most `polls` looks each
    /// (a file written faster than it is read must not keep the process
    /// from ending), due at `read`; then, without reading more, what waits
    /// for its node or its connection's other direction goes out as if its
    /// wait had ended. Returns whether a file had more left unread.
    pub fn finish(
        &mut self,
        read: Instant,
        polls: usize,
        pl: &mut Pipeline,
        mut rec: Option<&mut Recorder>,
    ) -> bool {
        let mut more = false;
        for _ in 0..polls {
            more = self.poll(read, pl, rec.as_deref_mut()).more;
            if !more {
                break;
            }
        }
        self.settle(read + HOLD_FOR.max(JOIN_WAIT), pl, rec);
        more
    }

    /// What file `i` put out: its records into the pipeline and the
    /// metrics, its changes logged, its node noted. Returns the records.
    fn deliver(&mut self, i: usize, pl: &mut Pipeline, mut rec: Option<&mut Recorder>) -> usize {
        let f = &self.files[i];
        let mut records = 0;
        for e in self.out.drain(..) {
            match e {
                Followed::Record { format, counted } => {
                    records += 1;
                    if let Some(rec) = rec.as_deref_mut() {
                        if let Some(f) = format {
                            rec.source_read(f.kind().into());
                        }
                        let format = format.map_or(UNKNOWN, RecordFormat::name);
                        rec.record(counted.node.as_ref(), format, counted.reason);
                    }
                    if let Some(item) = counted.item {
                        Records::feed(pl, item);
                    }
                }
                Followed::Change(c) => {
                    say(f.path(), c);
                    if let Some(rec) = rec.as_deref_mut() {
                        rec.followed_change(f.sensor(), c.as_str());
                    }
                }
            }
        }
        // A VPC flow log's first record's node is only a label: it covers
        // the owners of its interfaces.
        if let (Some(s), false) = (f.sensor(), f.interfaces().is_some()) {
            if !self.nodes.contains(s) {
                self.nodes.push(s.clone());
                self.new_nodes = true;
            }
        }
        records
    }

    /// Whether a VPC flow log was found, or its interfaces narrowed, since
    /// the owners were told; warns (once a file) of interfaces beyond the
    /// capacity or with an overlong id.
    fn interfaces_changed(&mut self) -> bool {
        let (mut changed, mut found) = (false, false);
        for (f, told) in self.files.iter().zip(&mut self.told) {
            let Some(i) = f.interfaces() else { continue };
            let t = told.get_or_insert_with(|| {
                found = true;
                Told::default()
            });
            changed |= found || i.changes != t.changes;
            if i.untracked > 0 && !t.untracked {
                t.untracked = true;
                let file = f.path().display().to_string();
                tracing::warn!(
                    file = %log_field(&file),
                    capacity = crate::source::flows::INTERFACE_CAPACITY,
                    max_id_bytes = crate::source::flows::MAX_INTERFACE_ID,
                    "records of interfaces beyond the capacity, or of an overlong id, cover nothing"
                );
            }
        }
        // What is judged changes: the edges outside it are listed.
        self.new_nodes |= found;
        changed
    }

    /// The owners of the VPC flow logs' interfaces, by `policy`.
    fn tell_owners(&mut self, policy: &Policy) {
        let mut seen = std::collections::BTreeSet::new();
        for (f, told) in self.files.iter().zip(&mut self.told) {
            let Some(i) = f.interfaces() else { continue };
            seen.extend(i.owners(|a| policy.interface_owner(a)));
            told.get_or_insert_with(Told::default).changes = i.changes;
        }
        let owners: Vec<String> = (seen.into_iter())
            .map(|id| policy.endpoint(id).name.to_string())
            .collect();
        if owners != self.owners {
            self.owners = owners;
            self.new_nodes = true;
        }
    }

    /// Whether a file's node was found since the last call.
    pub fn take_new_nodes(&mut self) -> bool {
        std::mem::take(&mut self.new_nodes)
    }

    /// A new site: nodes, addresses, time zones and interface owners from
    /// now on.
    pub fn set_policy(&mut self, policy: &Policy) {
        self.ctx = record_context(policy, self.timezone.clone(), &self.sensors);
        self.tell_owners(policy);
    }

    /// Which required edges are judged: a capture of the whole site sees
    /// them all; otherwise those touching the capture's `--sensor` nodes
    /// and the logs' nodes (a log covers none until it names its node).
    /// As in `replay`, without `--sensor` a VPC flow log covers the owners
    /// of its interfaces and lists the other required edges as not judged,
    /// saying what it covers; `--sensor` names what it covers instead.
    pub fn visibility(&self, vis: Visibility, captures: bool) -> Visibility {
        if captures && !vis.limited {
            return vis;
        }
        let vpc = !vis.limited && self.told.iter().any(Option::is_some);
        let unjudged = vpc.then(|| flow_coverage(&self.owners));
        let owners = self.owners.iter().filter(|_| vpc).map(String::as_str);
        let mut nodes = vis.nodes;
        for n in self.nodes.iter().map(|n| &**n).chain(owners) {
            if !nodes.iter().any(|m| m == n) {
                nodes.push(n.to_string());
            }
        }
        Visibility {
            nodes,
            limited: true,
            unjudged,
        }
    }

    /// What the report says about each file.
    pub fn facts(&self) -> Vec<SourceFacts> {
        let facts = self.files.iter().map(|f| {
            let format = f.format();
            let base = SourceFacts {
                path: f.path().display().to_string(),
                format: format.map_or(UNKNOWN, RecordFormat::name).into(),
                packets: f.records(),
                ..SourceFacts::default()
            };
            match format {
                Some(format) => base.with_fidelity(
                    format.kind(),
                    f.sensor().map(|s| s.to_string()),
                    f.counts().clone(),
                ),
                None => base,
            }
        });
        facts.collect()
    }
}

/// A file given to `--follow`, if there: a firewall log, NDJSON or a VPC
/// flow log (or empty so far). EVTX, gzip, Azure flow logs and JSON
/// documents over lines are refused: they are not files that grow by lines.
fn check(path: &Path) -> Result<(), SourceError> {
    let name = path.display().to_string();
    let mut head = Vec::with_capacity(HEAD);
    let opened = std::fs::File::open(path).and_then(|f| f.take(HEAD as u64).read_to_end(&mut head));
    match opened {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(SourceError::Io { path: name, source }),
    }
    if let Head::Refused(r) = Head::of(&head, true) {
        return Err(SourceError::Refused {
            what: format!("{name}: {}", r.why()),
            path: name,
        });
    }
    let flow = FlowFormat::detect(&head);
    let empty = head.iter().all(u8::is_ascii_whitespace);
    if empty || RecordFormat::detect(&head).is_some() || flow == Some(FlowFormat::VpcFlowLog) {
        return Ok(());
    }
    Err(SourceError::Refused {
        what: format!(
            "{name}: --follow reads Windows Firewall logs (pfirewall.log), WFP events as NDJSON \
             and AWS VPC flow logs (plain text); this is none of these (captures go to -i or replay)"
        ),
        path: name,
    })
}

/// Log what happened to a followed file.
fn say(path: &Path, c: Change) {
    let file = path.display().to_string();
    let file = log_field(&file);
    match c {
        Change::Missing => {
            tracing::warn!(%file, "followed file not there (yet): waiting for it to appear")
        }
        Change::Opened => tracing::info!(%file, "followed file opened"),
        Change::Rotated => tracing::info!(%file, "rotated: the old file was read to its end"),
        Change::Truncated => tracing::warn!(%file, "truncated: read again from its start"),
        // Said once a file: a refused file is not looked at again until
        // replaced.
        Change::Refused(r) => tracing::error!(%file, "{}; not followed until replaced", r.why()),
        Change::Unreadable(kind) => {
            tracing::warn!(%file, error = %std::io::Error::from(kind), "cannot read; trying again")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn following(nodes: &[&str]) -> Follow {
        Follow {
            files: Vec::new(),
            ctx: RecordContext::default(),
            timezone: None,
            sensors: Vec::new(),
            out: Vec::new(),
            nodes: nodes.iter().map(|n| Arc::from(*n)).collect(),
            owners: Vec::new(),
            told: Vec::new(),
            new_nodes: false,
        }
    }

    fn judged(v: &Visibility) -> (Vec<&str>, bool) {
        (v.nodes.iter().map(String::as_str).collect(), v.limited)
    }

    #[test]
    fn logs_add_their_nodes_to_what_is_judged_unless_a_capture_sees_everything() {
        let f = following(&["proxy"]);
        let whole_site = Visibility::default();
        assert_eq!(
            judged(&f.visibility(whole_site.clone(), true)),
            (vec![], false),
            "a capture of the whole site judges every edge"
        );
        let central = Visibility {
            nodes: vec!["central".into()],
            limited: true,
            unjudged: None,
        };
        assert_eq!(
            judged(&f.visibility(central, true)),
            (vec!["central", "proxy"], true)
        );
        assert_eq!(
            judged(&f.visibility(whole_site.clone(), false)),
            (vec!["proxy"], true),
            "logs alone judge their nodes' edges"
        );
        assert_eq!(
            judged(&following(&[]).visibility(whole_site, false)),
            (vec![], true),
            "a log that named no node yet covers nothing"
        );
    }

    #[test]
    fn a_vpc_flow_log_covers_its_interfaces_owners_and_lists_the_rest() {
        let mut f = following(&[]);
        f.owners = vec!["engine1".into()];
        f.told = vec![Some(Told::default())];
        let v = f.visibility(Visibility::default(), false);
        assert_eq!(judged(&v), (vec!["engine1"], true));
        assert_eq!(
            v.unjudged.as_deref(),
            Some("outside what the flow logs cover: the interfaces of engine1")
        );
        let sensor = Visibility {
            nodes: vec!["proxy".into()],
            limited: true,
            unjudged: None,
        };
        let v = f.visibility(sensor, false);
        assert_eq!(
            judged(&v),
            (vec!["proxy"], true),
            "--sensor names what is covered"
        );
        assert_eq!(v.unjudged, None);
    }

    /// At the stop, a file longer than the looks allowed: what was read
    /// all goes out (every connection's SYN released, none held), the rest
    /// is said to be unread.
    #[test]
    fn the_stop_releases_everything_it_read() {
        let dir = std::env::temp_dir().join(format!("portwatch-finish-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("vpc.log");
        let mut log = String::from(
            "version srcaddr dstaddr srcport dstport protocol start end action tcp-flags log-status\n",
        );
        let mut n = 0u32;
        while log.len() <= crate::source::follow::READ_PER_POLL * 13 / 4 {
            let (a, port) = (n / 60_000, 1024 + n % 60_000);
            log += &format!("3 10.1.{a}.1 10.2.0.2 {port} 443 6 100 160 ACCEPT 2 OK\n");
            n += 1;
        }
        std::fs::write(&path, log).unwrap();
        let policy = crate::config::load_policy(Path::new("multi-node"), None)
            .unwrap()
            .policy;
        let spec = FollowSpec {
            paths: vec![path],
            start_at: StartAt::Start,
            timezone: None,
        };
        let mut f = Follow::open(&spec, &policy, &[]).unwrap();
        let mut pl = Pipeline::new(Arc::new(policy), Default::default());
        let unread = f.finish(Instant::now(), 2, &mut pl, None);
        let counts = f.files[0].counts();
        let tcp = counts["tcp"];
        assert_eq!(counts.get("observed"), Some(&tcp), "{counts:?}");
        assert!(unread && tcp < u64::from(n), "{counts:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_logs_are_followed() {
        let dir =
            std::env::temp_dir().join(format!("portwatch-follow-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = |name: &str, bytes: &[u8]| {
            let p = dir.join(name);
            std::fs::write(&p, bytes).unwrap();
            p
        };
        let refused = |p: &Path| match check(p) {
            Err(SourceError::Refused { what, .. }) => what,
            other => panic!("{}: {other:?}", p.display()),
        };
        assert!(check(&dir.join("not-there-yet.log")).is_ok());
        assert!(check(&file("empty.log", b"")).is_ok());
        assert!(check(&file("pfirewall.log", b"#Version: 1.5\r\n")).is_ok());
        assert!(check(&file("wfp.ndjson", b"{\"EventID\": 5156}\n")).is_ok());
        let evtx = refused(&file("Security.evtx", b"ElfFile\0rest"));
        assert!(evtx.contains("EVTX file cannot be followed"), "{evtx}");
        let pcap = refused(&file("capture.pcap", &[0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0]));
        assert!(pcap.contains("none of these"), "{pcap}");
        let vpc = "version account-id interface-id srcaddr dstaddr srcport dstport protocol \
                   packets bytes start end action log-status\n";
        assert!(check(&file("vpc.log", vpc.as_bytes())).is_ok());
        let gz = refused(&file("vpc.log.gz", &[0x1f, 0x8b, 8, 0, 0, 0]));
        assert!(
            gz.contains("vpc.log.gz: a gzip file cannot be followed"),
            "{gz}"
        );
        let azure = refused(&file("PT1H.json", b"{\"records\": [{\"flowLogVersion\": 4"));
        assert!(
            azure.contains("Azure flow log cannot be followed"),
            "{azure}"
        );
        let pretty = refused(&file("PT1H-pretty.json", b"{\n  \"records\": [\n"));
        assert!(
            pretty.contains("JSON document over several lines cannot be followed"),
            "{pretty}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
