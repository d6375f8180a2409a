//! `run --state-dir DIR`: the state kept over a restart
//! ([`crate::state::saved`]) in `DIR/state.json`. Written atomically (a
//! temporary file in DIR, synced, renamed over the old one, the directory
//! synced), so a crash at any moment leaves the previous state or the new
//! one, never part of one. A file that cannot be taken (unreadable,
//! truncated, corrupt, another format version, site or model revision) is
//! logged in one line naming it and why, and renamed `state.json.bad-<time>`;
//! the daemon starts without it. Only the newest [`KEEP_BAD`] set-aside
//! files are kept.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use std::collections::BTreeMap;

use super::eventlog::EventLog;
use super::Error;
use crate::export::findings::{Counted, Occurrences};
use crate::export::metrics::Recorder;
use crate::pipeline::Pipeline;
use crate::policy::{Policy, Visibility};
use crate::quote::log_field;
use crate::state::saved::{
    Identity, Saved, SavedReport, StateError, MAX_BYTES, MAX_REPORTED, UNREADABLE,
};
use crate::time::Timestamp;

/// The state file's name in its directory.
pub const FILE: &str = "state.json";
/// Set-aside files kept; older ones are removed.
pub const KEEP_BAD: usize = 5;
/// Temporary files are named `.state.json.tmp-<pid>`.
const TMP_PREFIX: &str = ".state.json.tmp-";

/// What [`StateDir::load`] found.
#[derive(Debug, PartialEq)]
pub enum Loaded {
    /// No state file: the first start.
    Absent,
    Taken(Box<Saved>),
    /// Bad, and set aside, for this reason ([`REJECT_REASONS`]).
    SetAside(&'static str),
}

impl Loaded {
    pub fn saved(self) -> Option<Saved> {
        match self {
            Loaded::Taken(s) => Some(*s),
            _ => None,
        }
    }
}

pub struct StateDir {
    dir: PathBuf,
    /// Made by [`StateDir::open`] (it did not exist).
    made: bool,
    /// A write failed and the next that works is logged.
    failing: bool,
}

impl StateDir {
    /// Make `dir` if needed; temporary files a killed process left behind
    /// are removed.
    pub fn open(dir: &Path) -> Result<StateDir, Error> {
        let made = !dir.exists();
        fs::create_dir_all(dir).map_err(|e| Error::StateDir {
            path: dir.to_path_buf(),
            source: e,
        })?;
        if let Ok(entries) = fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        Ok(StateDir {
            dir: dir.to_path_buf(),
            made,
            failing: false,
        })
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether [`StateDir::open`] made the directory.
    pub fn made(&self) -> bool {
        self.made
    }

    /// Whether this process (after dropping privileges) can write there: a
    /// directory it cannot write is bad input at start, not a surprise at
    /// the first write.
    pub fn check_writable(&self) -> Result<(), Error> {
        write_atomic(&self.dir, ".state.probe", b"")
            .and_then(|()| fs::remove_file(self.dir.join(".state.probe")))
            .map_err(|e| Error::StateDir {
                path: self.dir.clone(),
                source: e,
            })
    }

    /// The state written for `want`, if there is one it can take; a bad
    /// one is logged and set aside (`now` names it), and why is returned.
    pub fn load(&self, want: &Identity, now: Timestamp) -> Loaded {
        let path = self.path();
        let read = match fs::metadata(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                tracing::info!(file = %log_field(&path.to_string_lossy()), "no state file yet: starting afresh");
                return Loaded::Absent;
            }
            Ok(m) if m.len() > MAX_BYTES => {
                let e = StateError::TooLarge {
                    size: m.len(),
                    max: MAX_BYTES,
                };
                Err((e.reason(), e.to_string()))
            }
            _ => fs::read(&path).map_err(|e| (UNREADABLE, format!("cannot read it: {e}"))),
        };
        let (reason, why) = match read.map(|bytes| Saved::decode(&bytes, want)) {
            Ok(Ok(saved)) => return Loaded::Taken(Box::new(saved)),
            Ok(Err(e)) => (e.reason(), e.to_string()),
            Err(e) => e,
        };
        self.set_aside(&path, &why, now);
        Loaded::SetAside(reason)
    }

    /// Rename a bad state file out of the way, in one log line.
    fn set_aside(&self, path: &Path, why: &str, now: Timestamp) {
        let bad = bad_name(path, now);
        let shown = log_field(&path.to_string_lossy()).into_owned();
        match fs::rename(path, &bad) {
            Ok(()) => tracing::warn!(
                file = %shown,
                "state file not used, set aside as {}: {}; starting afresh",
                log_field(&bad.to_string_lossy()),
                log_field(why)
            ),
            Err(e) => tracing::warn!(
                file = %shown,
                "state file not used: {}; starting afresh (it could not be set aside: {e}, and is replaced at the first write)",
                log_field(why)
            ),
        }
        prune_bad(&self.dir, KEEP_BAD);
    }

    /// Write `saved` atomically; whether it was written. A failure is
    /// logged once (and its recovery); the previous file stays whole.
    pub fn write(&mut self, saved: &Saved) -> bool {
        let written = write_atomic(&self.dir, FILE, &saved.encode());
        let ok = written.is_ok();
        match written {
            Ok(()) if self.failing => {
                self.failing = false;
                tracing::info!(file = %log_field(&self.path().to_string_lossy()), "state written again");
            }
            Ok(()) => {}
            Err(e) if !self.failing => {
                self.failing = true;
                tracing::warn!(file = %log_field(&self.path().to_string_lossy()), error = %e, "cannot write the state file; the previous one stays, retrying at the next interval");
            }
            Err(_) => {}
        }
        ok
    }
}

/// What reported findings before a restart: the event log, the printer
/// and the metrics' alert series.
pub(super) struct Reporters<'a> {
    pub events: &'a mut EventLog,
    pub printed: Option<&'a mut Occurrences>,
    pub rec: Option<&'a mut Recorder>,
}

/// The state at `now` (observing since `since`, capture time): the
/// pipeline's, and what the reporters already reported.
pub(super) fn snapshot(
    pl: &Pipeline,
    vis: &Visibility,
    (since, now): (Timestamp, Timestamp),
    r: Reporters<'_>,
) -> Saved {
    let Reporters {
        events,
        printed,
        rec,
    } = r;
    let printed = printed.map(|p| &*p);
    let mut saved = Saved::new(Identity::of(pl.policy()), now.as_nanos());
    pl.save(&mut saved, vis, since, now);
    if let Some(rec) = rec {
        saved.alerts = rec.saved_alerts(std::time::Instant::now(), Timestamp::now());
    }
    // Both count every finding; the larger count of each is kept.
    let mut reported: BTreeMap<Counted<'_>, u64> = BTreeMap::new();
    let logged = events.formatter().map(|f| &*f.occurrences());
    for occ in [logged, printed].into_iter().flatten() {
        for c in occ.entries() {
            let key = Counted {
                occurrences: 0,
                ..c
            };
            let was = reported.entry(key).or_insert(0);
            *was = (*was).max(c.occurrences);
        }
    }
    saved.reported = (reported.into_iter().take(MAX_REPORTED))
        .map(|(c, occurrences)| SavedReport {
            kind: c.kind,
            src: c.src.to_string(),
            dst: c.dst.to_string(),
            port: c.port,
            accepted: c.accepted,
            occurrences,
        })
        .collect();
    saved
}

/// Take `saved` back into the pipeline and the reporters' memory of what
/// was reported; one log line says what was taken.
pub(super) fn restore(saved: &Saved, file: &Path, pl: &mut Pipeline, r: Reporters<'_>) {
    let Reporters {
        events,
        mut printed,
        rec,
    } = r;
    let taken = pl.restore(saved);
    let p: std::sync::Arc<Policy> = pl.policy().clone();
    let mut reported = 0;
    let mut skipped = taken.skipped;
    let mut alerts = 0;
    if let Some(rec) = rec {
        let (wall, now) = (std::time::Instant::now(), Timestamp::now());
        for a in &saved.alerts {
            match rec.restore_alert(&p, a, wall, now) {
                true => alerts += 1,
                false => skipped += 1,
            }
        }
    }
    if let Some(f) = events.formatter() {
        for e in saved.edges.iter().filter(|e| e.missing) {
            if let Some(id) = crate::pipeline::saved_edge(&p, e) {
                f.reported_missing(&p, id);
            }
        }
    }
    for rep in &saved.reported {
        let known = p.peer_named(&rep.src).is_some() && p.peer_named(&rep.dst).is_some();
        if !known {
            skipped += 1;
            continue;
        }
        let c = Counted {
            kind: rep.kind,
            src: &rep.src,
            dst: &rep.dst,
            port: rep.port,
            accepted: rep.accepted,
            occurrences: rep.occurrences,
        };
        let logged = events.formatter().map(|f| f.occurrences().restore(&c));
        let shown = printed.as_mut().map(|o| o.restore(&c));
        reported += usize::from(logged.or(shown).unwrap_or(true));
    }
    tracing::info!(
        file = %log_field(&file.to_string_lossy()),
        written = %Timestamp(saved.written_ns).rfc3339(),
        edges = taken.edges,
        findings = taken.findings,
        reported,
        alerts,
        skipped,
        "state restored"
    );
}

/// `DIR/state.json.bad-<RFC 3339 time>`.
fn bad_name(path: &Path, now: Timestamp) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".bad-{}", now.rfc3339()));
    PathBuf::from(name)
}

/// Keep the newest `keep` set-aside files (their names sort by time).
fn prune_bad(dir: &Path, keep: usize) {
    let prefix = format!("{FILE}.bad-");
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut bad: Vec<PathBuf> = (entries.flatten())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect();
    bad.sort();
    let excess = bad.len().saturating_sub(keep);
    for p in &bad[..excess] {
        let _ = fs::remove_file(p);
    }
}

/// Write `bytes` to `dir/name` so that a reader (or a restart after a
/// crash) sees the old contents or the new, never a mix: a temporary file
/// in the same directory, synced, then renamed over it, then the
/// directory synced so the rename itself is on disk.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{TMP_PREFIX}{}", std::process::id()));
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, dir.join(name))?;
        File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::saved::SavedEdge;

    struct Dir(PathBuf);

    impl Dir {
        fn new(tag: &str) -> Dir {
            let d = std::env::temp_dir()
                .join(format!("portwatch-statedir-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&d);
            fs::create_dir_all(&d).unwrap();
            Dir(d)
        }

        fn names(&self) -> Vec<String> {
            let mut v: Vec<String> = (fs::read_dir(&self.0).unwrap().flatten())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn identity() -> Identity {
        Identity {
            site: "multi-node".into(),
            model: "qlik-sense-enterprise".into(),
            model_sha256: "ab".into(),
        }
    }

    fn saved(count: u64) -> Saved {
        let mut s = Saved::new(identity(), 1);
        s.edges.push(SavedEdge {
            src: "proxy".into(),
            dst: "central".into(),
            port: 4242,
            first_ns: Some(1),
            last_ns: Some(2),
            count,
            missing: false,
        });
        s
    }

    #[test]
    fn a_written_state_reads_back_and_no_temporary_file_stays() {
        let d = Dir::new("roundtrip");
        let mut sd = StateDir::open(&d.0.join("sub")).unwrap();
        sd.check_writable().unwrap();
        sd.write(&saved(1));
        sd.write(&saved(2));
        assert_eq!(
            sd.load(&identity(), Timestamp(0)),
            Loaded::Taken(Box::new(saved(2)))
        );
        assert_eq!(
            fs::read_dir(sd.dir()).unwrap().count(),
            1,
            "only state.json"
        );
    }

    /// A write that cannot be completed leaves the file as it was and no
    /// temporary file; one a killed process left is removed at start.
    #[test]
    fn a_failed_or_killed_write_leaves_the_previous_state_whole() {
        let d = Dir::new("atomic");
        let mut sd = StateDir::open(&d.0).unwrap();
        sd.write(&saved(1));
        let before = fs::read(sd.path()).unwrap();
        // The rename cannot replace a non-empty directory.
        let blocked = d.0.join("blocked");
        fs::create_dir_all(blocked.join("x")).unwrap();
        assert!(write_atomic(&d.0, "blocked", &saved(2).encode()).is_err());
        assert_eq!(d.names(), ["blocked", FILE]);
        assert_eq!(fs::read(sd.path()).unwrap(), before);
        // A process killed between writing its temporary file and renaming.
        fs::write(d.0.join(format!("{TMP_PREFIX}999999")), b"{\"form").unwrap();
        let sd = StateDir::open(&d.0).unwrap();
        assert_eq!(d.names(), ["blocked", FILE]);
        assert_eq!(
            sd.load(&identity(), Timestamp(0)),
            Loaded::Taken(Box::new(saved(1)))
        );
    }

    /// Truncated, corrupt, foreign and other-version files are set aside
    /// under a `.bad-<time>` name, never fatal; the newest few are kept.
    #[test]
    fn bad_files_are_set_aside() {
        let d = Dir::new("bad");
        let sd = StateDir::open(&d.0).unwrap();
        let good = saved(1).encode();
        let text = String::from_utf8(good.clone()).unwrap();
        let other_site = text.replacen("multi-node", "single-node", 1);
        let v9 = text.replacen("\"version\":1", "\"version\":9", 1);
        let cases: [(&[u8], &str); 5] = [
            (&good[..good.len() - 9], "truncated"),
            (b"\xff\xfe not json", "corrupt"),
            (b"{\"format\":\"zeek\"}", "foreign"),
            (v9.as_bytes(), "version"),
            (other_site.as_bytes(), "other_site"),
        ];
        for (i, (bytes, why)) in cases.iter().enumerate() {
            fs::write(sd.path(), bytes).unwrap();
            let now = Timestamp::from_secs_nanos(1_800_000_000 + i as u64, 0);
            assert_eq!(sd.load(&identity(), now), Loaded::SetAside(why), "case {i}");
            assert!(!sd.path().exists(), "case {i}");
            let aside = d.0.join(format!("{FILE}.bad-{}", now.rfc3339()));
            assert_eq!(fs::read(&aside).unwrap(), *bytes, "case {i}");
        }
        fs::write(sd.path(), &good).unwrap();
        fs::write(sd.path(), b"").unwrap();
        assert_eq!(
            sd.load(&identity(), Timestamp(1)),
            Loaded::SetAside("truncated")
        );
        let bad = d.names().iter().filter(|n| n.contains(".bad-")).count();
        assert_eq!(bad, KEEP_BAD);
        // No file at all: nothing to set aside.
        assert_eq!(sd.load(&identity(), Timestamp(2)), Loaded::Absent);
        assert_eq!(
            d.names().iter().filter(|n| n.contains(".bad-")).count(),
            KEEP_BAD
        );
    }
}
