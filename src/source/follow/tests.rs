//! The tailer on real files in a scratch directory, with the time of each
//! poll passed in: lines exactly once through rotations, truncation, a file
//! that appears late, partial and overlong lines.

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

/// A test's scratch directory, removed when the test ends.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Scratch {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "portwatch-follow-test-{}-{n}-{test}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn log(&self) -> PathBuf {
        self.0.join("pfirewall.log")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn append(path: &Path, bytes: &[u8]) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(bytes).unwrap();
}

fn rotate(path: &Path) {
    let mut old = path.as_os_str().to_owned();
    old.push(".old");
    std::fs::rename(path, old).unwrap();
}

/// A tail and the time of its polls: each `poll` is [`POLL_EVERY`] after
/// the one before, so it is due.
struct Clock {
    tail: Tail,
    now: Instant,
}

impl Clock {
    fn new(path: &Path, start_at: StartAt) -> Clock {
        Clock {
            tail: Tail::new(path, start_at),
            now: Instant::now(),
        }
    }

    /// What one due poll delivers, as short strings.
    fn poll(&mut self) -> Vec<String> {
        self.now += POLL_EVERY;
        self.poll_at(self.now)
    }

    fn poll_at(&mut self, now: Instant) -> Vec<String> {
        let mut out = Vec::new();
        let more = self.tail.poll(now, &mut |e| out.push(show(&e)));
        assert!(!more, "small files are read in one poll");
        out
    }
}

fn show(e: &TailEvent<'_>) -> String {
    match e {
        TailEvent::Change(c) => c.as_str().to_uppercase(),
        TailEvent::Line {
            text,
            history: false,
        } => text.to_string(),
        TailEvent::Line {
            text,
            history: true,
        } => format!("history:{text}"),
        TailEvent::TooLong { history } => format!("too_long(history={history})"),
        TailEvent::Cut => "CUT".into(),
    }
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn a_partial_line_waits_for_its_end() {
    let s = Scratch::new("partial");
    append(&s.log(), b"one\ntw");
    let mut c = Clock::new(&s.log(), StartAt::Start);
    assert_eq!(c.poll(), strs(&["OPENED", "one"]));
    assert_eq!(c.poll(), strs(&[]), "no line end yet");
    append(&s.log(), b"o\r\nthree\n");
    assert_eq!(c.poll(), strs(&["two\r", "three"]));
    assert_eq!(c.poll(), strs(&[]));
}

#[test]
fn polls_are_spaced_by_the_time_passed_in() {
    let s = Scratch::new("spaced");
    append(&s.log(), b"one\n");
    let mut c = Clock::new(&s.log(), StartAt::Start);
    let t0 = c.now;
    assert_eq!(c.poll_at(t0), strs(&["OPENED", "one"]));
    append(&s.log(), b"two\n");
    assert_eq!(c.poll_at(t0 + POLL_EVERY / 2), strs(&[]), "not due");
    assert_eq!(c.poll_at(t0 + POLL_EVERY), strs(&["two"]));
}

#[test]
fn a_rotated_file_is_finished_through_its_descriptor_before_the_new_one() {
    let s = Scratch::new("rotated");
    append(&s.log(), b"a1\n");
    let mut c = Clock::new(&s.log(), StartAt::Start);
    assert_eq!(c.poll(), strs(&["OPENED", "a1"]));
    // Written, then rotated, before the next poll: a2 is only in .old.
    append(&s.log(), b"a2\n");
    rotate(&s.log());
    assert_eq!(
        c.poll(),
        strs(&["a2"]),
        "no new file yet: the old one stays"
    );
    append(&s.log(), b"b1\n");
    assert_eq!(c.poll(), strs(&["ROTATED", "OPENED", "b1"]));
    append(&s.log(), b"b2\n");
    rotate(&s.log());
    append(&s.log(), b"c1\n");
    assert_eq!(c.poll(), strs(&["b2", "ROTATED", "OPENED", "c1"]));
    assert_eq!(c.poll(), strs(&[]));
}

#[test]
fn a_generation_rotated_away_between_two_polls_is_read_from_old() {
    let s = Scratch::new("twice");
    append(&s.log(), b"a1\n");
    let mut c = Clock::new(&s.log(), StartAt::Start);
    assert_eq!(c.poll(), strs(&["OPENED", "a1"]));
    append(&s.log(), b"a2\n");
    rotate(&s.log());
    append(&s.log(), b"b1\nb2\n");
    rotate(&s.log()); // a's .old is replaced by b
    append(&s.log(), b"c1\n");
    assert_eq!(
        c.poll(),
        strs(&["a2", "ROTATED", "OPENED", "b1", "b2", "ROTATED", "OPENED", "c1"])
    );
    assert_eq!(c.poll(), strs(&[]));
}

#[test]
fn a_truncated_file_is_read_again_from_its_start() {
    let s = Scratch::new("truncated");
    append(&s.log(), b"one\ntwo\n");
    let mut c = Clock::new(&s.log(), StartAt::Start);
    assert_eq!(c.poll(), strs(&["OPENED", "one", "two"]));
    append(&s.log(), b"cut sh");
    assert_eq!(c.poll(), strs(&[]));
    std::fs::write(s.log(), b"new\n").unwrap();
    assert_eq!(c.poll(), strs(&["CUT", "TRUNCATED", "OPENED", "new"]));
    append(&s.log(), b"next\n");
    assert_eq!(c.poll(), strs(&["next"]));
}

#[test]
fn a_file_that_appears_later_is_waited_for_and_read_from_its_start() {
    let s = Scratch::new("later");
    let mut c = Clock::new(&s.log(), StartAt::End);
    assert_eq!(c.poll(), strs(&["MISSING"]));
    assert_eq!(c.poll(), strs(&[]), "said once");
    append(&s.log(), b"first\n");
    assert_eq!(
        c.poll(),
        strs(&["OPENED", "first"]),
        "a file that appears is new: no history"
    );
    std::fs::remove_file(s.log()).unwrap();
    assert_eq!(
        c.poll(),
        strs(&[]),
        "the open file stays while none replaces it"
    );
    append(&s.log(), b"second\n");
    assert_eq!(c.poll(), strs(&["ROTATED", "OPENED", "second"]));
}

#[test]
fn at_end_the_lines_already_there_are_history() {
    let s = Scratch::new("history");
    append(&s.log(), b"#Fields: a b\nold\npart");
    let mut c = Clock::new(&s.log(), StartAt::End);
    assert_eq!(
        c.poll(),
        strs(&["OPENED", "history:#Fields: a b", "history:old"])
    );
    append(&s.log(), b"ial\nnew\n");
    assert_eq!(
        c.poll(),
        strs(&["partial", "new"]),
        "a line ending after the start is new"
    );
    rotate(&s.log());
    append(&s.log(), b"#Fields: a b\nafter\n");
    assert_eq!(
        c.poll(),
        strs(&["ROTATED", "OPENED", "#Fields: a b", "after"])
    );
}

#[test]
fn an_overlong_line_is_reported_once_and_skipped_to_its_end() {
    let s = Scratch::new("overlong");
    append(&s.log(), b"before\n");
    let mut c = Clock::new(&s.log(), StartAt::Start);
    assert_eq!(c.poll(), strs(&["OPENED", "before"]));
    // Longer than one read and than the cap, written in pieces.
    let long = vec![b'x'; MAX_LINE + CHUNK];
    append(&s.log(), &long);
    assert_eq!(c.poll(), strs(&["too_long(history=false)"]));
    append(&s.log(), &long);
    assert_eq!(c.poll(), strs(&[]), "still the same line");
    append(&s.log(), b"xx\nafter\n");
    assert_eq!(c.poll(), strs(&["after"]));
    // A long line in one piece, between two short ones.
    let mut one = b"a\n".to_vec();
    one.extend(vec![b'y'; MAX_LINE + 1]);
    one.extend(b"\nb\n");
    append(&s.log(), &one);
    assert_eq!(c.poll(), strs(&["a", "too_long(history=false)", "b"]));
}

#[test]
fn utf16_files_are_split_on_whole_units() {
    let s = Scratch::new("utf16");
    let utf16 = |t: &str| -> Vec<u8> { t.encode_utf16().flat_map(u16::to_le_bytes).collect() };
    // U+0A0A's bytes are 0x0A 0x0A: not a line end.
    let mut bytes = vec![0xFF, 0xFE];
    bytes.extend(utf16("a\u{0A0A}b\r\nsecond"));
    append(&s.log(), &bytes[..bytes.len() - 1]); // half a unit at the end
    let mut c = Clock::new(&s.log(), StartAt::Start);
    assert_eq!(c.poll(), strs(&["OPENED", "a\u{0A0A}b\r"]));
    append(&s.log(), &bytes[bytes.len() - 1..]);
    append(&s.log(), &utf16("\n"));
    assert_eq!(c.poll(), strs(&["second"]));
    // Rotated to a UTF-8 file: its own encoding.
    rotate(&s.log());
    append(&s.log(), b"\xEF\xBB\xBFutf8\n");
    assert_eq!(c.poll(), strs(&["ROTATED", "OPENED", "utf8"]));
}

#[test]
fn an_evtx_file_is_refused_until_replaced() {
    let s = Scratch::new("evtx");
    let mut evtx = EVTX_MAGIC.to_vec();
    evtx.extend(b"\n\n\n{not text}\n");
    append(&s.log(), &evtx[..4]);
    let mut c = Clock::new(&s.log(), StartAt::Start);
    assert_eq!(c.poll(), strs(&["OPENED"]), "too short to tell");
    append(&s.log(), &evtx[4..]);
    assert_eq!(c.poll(), strs(&["BINARY"]));
    append(&s.log(), b"more\n");
    assert_eq!(c.poll(), strs(&[]));
    rotate(&s.log());
    append(&s.log(), b"text\n");
    assert_eq!(c.poll(), strs(&["ROTATED", "OPENED", "text"]));
}

#[test]
fn a_file_appearing_as_gzip_or_an_azure_flow_log_is_refused_until_replaced() {
    let s = Scratch::new("refused-later");
    let mut c = Clock::new(&s.log(), StartAt::End);
    assert_eq!(c.poll(), strs(&["MISSING"]));
    append(&s.log(), &[0x1f]);
    assert_eq!(c.poll(), strs(&["OPENED"]), "too short to tell");
    append(&s.log(), b"\x8b\x08\nline\n");
    assert_eq!(c.poll(), strs(&["GZIP"]));
    append(&s.log(), b"more\n");
    assert_eq!(c.poll(), strs(&[]));
    // An Azure blob written in pieces: told once its head holds a marker.
    rotate(&s.log());
    append(
        &s.log(),
        b"{\"records\":[{\"time\":\"2022-09-14T09:00:52Z\",",
    );
    assert_eq!(c.poll(), strs(&["ROTATED", "OPENED"]));
    append(&s.log(), b"\"flowLogVersion\":4}]}\n");
    assert_eq!(c.poll(), strs(&["AZURE_FLOW_LOG"]));
    // NDJSON events are read as they come.
    rotate(&s.log());
    append(&s.log(), b"{\"EventID\": 5156}\n");
    assert_eq!(
        c.poll(),
        strs(&["ROTATED", "OPENED", "{\"EventID\": 5156}"])
    );
}

/// A pretty-printed copy of the Azure VNet sample: a long first field
/// (`marks_late`) puts its kind past the first [`HEAD`] bytes.
fn pretty_azure(marks_late: bool) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/sensors/azure/elastic_integrations_vnet_sample_logs_testdata.json");
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
    let pretty = serde_json::to_string_pretty(&doc).unwrap();
    let note = if marks_late {
        "x".repeat(600)
    } else {
        String::new()
    };
    let rest = pretty.strip_prefix("{\n").unwrap();
    format!("{{\n  \"note\": \"{note}\",\n{rest}\n").into_bytes()
}

/// A pretty-printed Azure blob written in pieces, its first piece `{` and
/// a line end, is not taken for NDJSON: it waits for its marks (refused
/// as an Azure flow log), or is refused as a JSON document once [`HEAD`]
/// bytes show none.
#[test]
fn a_pretty_printed_azure_blob_is_refused_not_read_as_lines() {
    let s = Scratch::new("pretty-azure");
    let mut c = Clock::new(&s.log(), StartAt::End);
    assert_eq!(c.poll(), strs(&["MISSING"]));
    let early = pretty_azure(false);
    append(&s.log(), &early[..2]);
    assert_eq!(&early[..2], b"{\n");
    assert_eq!(c.poll(), strs(&["OPENED"]), "a document's first line");
    append(&s.log(), &early[2..]);
    assert_eq!(c.poll(), strs(&["AZURE_FLOW_LOG"]));
    let late = pretty_azure(true);
    rotate(&s.log());
    append(&s.log(), &late[..HEAD - 1]);
    assert_eq!(c.poll(), strs(&["ROTATED", "OPENED"]));
    append(&s.log(), &late[HEAD - 1..]);
    assert_eq!(c.poll(), strs(&["AZURE_FLOW_LOG"]));
    // Another document over lines: refused once its head is full.
    rotate(&s.log());
    let other = format!(
        "{{\n  \"EventID\": 5156,\n  \"note\": \"{}\"\n}}\n",
        "x".repeat(HEAD)
    );
    append(&s.log(), other.as_bytes());
    assert_eq!(c.poll(), strs(&["ROTATED", "OPENED", "JSON_DOCUMENT"]));
    // A head checked whole: told at once.
    assert_eq!(Head::of(b"{\n", false), Head::Short);
    assert_eq!(Head::of(b"{\n", true), Head::Refused(Refusal::JsonDocument));
    assert_eq!(Head::of(b"{\"EventID\": 5156}\n", false), Head::Text);
}

#[test]
fn a_long_file_is_read_over_several_polls() {
    let s = Scratch::new("long");
    let line = [b'z'; 1023];
    let mut all = Vec::new();
    for _ in 0..(READ_PER_POLL / 1024 + 10) {
        all.extend_from_slice(&line);
        all.push(b'\n');
    }
    append(&s.log(), &all);
    let mut tail = Tail::new(&s.log(), StartAt::Start);
    let now = Instant::now();
    let mut lines = 0;
    assert!(
        tail.poll(now, &mut |e| lines +=
            usize::from(matches!(e, TailEvent::Line { .. }))),
        "more waiting"
    );
    assert_eq!(lines, READ_PER_POLL / 1024);
    assert!(
        !tail.poll(now, &mut |e| lines +=
            usize::from(matches!(e, TailEvent::Line { .. }))),
        "due at once, whatever the time"
    );
    assert_eq!(lines, READ_PER_POLL / 1024 + 10);
}
