//! The Windows Filtering Platform readers on the real samples of
//! `../shared/sensors/wfp/` (read in place; the zips are unpacked into a
//! scratch directory with `unzip`): event counts by id, protocol and
//! direction as its SOURCE.md states them, and three events of each file,
//! checked by hand against the rendered `Message` or the raw fields, give
//! the right ends, initiator, fate and process.

use std::path::{Path, PathBuf};
use std::process::Command;

use portwatch::source::wfp::read::{read, Shape, WfpFile};
use portwatch::source::wfp::{
    Direction, Ends, EventId, Field, Reason, Sides, Unresolved, WfpEvent,
};

use crate::prereq::needs;
use crate::util::TempDir;

fn wfp_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/sensors/wfp");
    assert!(
        dir.join("SOURCE.md").is_file(),
        "{} is absent: run the tests from a checkout beside shared/ \
         (CI has it; the samples are never copied into the repository)",
        dir.display()
    );
    dir
}

fn sample(name: &str) -> WfpFile {
    read(&wfp_dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The one file of a sample zip, unpacked into `tmp`.
fn unzipped(name: &str, tmp: &TempDir) -> WfpFile {
    let st = Command::new("unzip")
        .args(["-q", "-o"])
        .arg(wfp_dir().join(name))
        .arg("-d")
        .arg(&tmp.0)
        .status()
        .unwrap();
    assert!(st.success(), "unzip {name}");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&tmp.0)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{name} holds one file");
    read(&files.remove(0)).unwrap()
}

/// Every event with its ends, oriented in file order as a replay does.
fn oriented(f: &WfpFile) -> Vec<(WfpEvent, Result<Ends, Unresolved>)> {
    let mut sides = Sides::new();
    (f.events.iter())
        .map(|e| (e.clone(), sides.orient(e)))
        .collect()
}

/// How many events of `id` with this protocol and direction.
fn count(f: &WfpFile, id: EventId, proto: u8, dir: Option<Direction>) -> usize {
    (f.events.iter())
        .filter(|e| e.id == id && e.protocol == proto && dir.is_none_or(|d| e.direction == d))
        .count()
}

/// The one event from `source` to `dest` of this id and host.
fn find<'a>(
    all: &'a [(WfpEvent, Result<Ends, Unresolved>)],
    id: EventId,
    host: &str,
    source: &str,
    dest: &str,
) -> &'a (WfpEvent, Result<Ends, Unresolved>) {
    let hits: Vec<_> = all
        .iter()
        .filter(|(e, _)| {
            e.id == id
                && e.host.as_deref() == Some(host)
                && e.source.to_string() == source
                && e.dest.to_string() == dest
        })
        .collect();
    assert!(!hits.is_empty(), "no {id:?} {source} -> {dest} on {host}");
    hits[0]
}

/// Checks one hand-checked event: initiator and responder, whether the
/// logging node opened it, the executable's file name and pid, the filter.
#[allow(clippy::too_many_arguments)]
fn check(
    (e, ends): &(WfpEvent, Result<Ends, Unresolved>),
    time: &str,
    initiator: &str,
    responder: &str,
    node_initiated: bool,
    exe: Option<&str>,
    pid: u32,
    filter: u64,
) {
    assert_eq!(e.time.rfc3339(), time, "{e:?}");
    let ends = ends.unwrap_or_else(|u| panic!("{e:?} not oriented: {u:?}"));
    assert_eq!(ends.initiator.to_string(), initiator, "{e:?}");
    assert_eq!(ends.responder.to_string(), responder, "{e:?}");
    assert_eq!(ends.node_initiated, node_initiated, "{e:?}");
    let name = e
        .application
        .as_deref()
        .map(|a| a.rsplit('\\').next().unwrap());
    assert_eq!(name, exe, "{e:?}");
    assert_eq!((e.pid, e.filter_rtid), (Some(pid), Some(filter)), "{e:?}");
}

#[test]
fn wfp_rdp_tunnel_evtx_windows_7_names_the_local_listener_as_source() {
    let f = sample("sbousseaden_DE_RDP_Tunnel_5156.evtx");
    assert_eq!(f.shape, Shape::Evtx);
    assert_eq!(f.stopped, None);
    // 101 records: 5156 x63, 5158 x9, plus 4688/4624/4648/4672/1102.
    assert_eq!(f.tally.of(EventId::Permitted), 63);
    assert_eq!(
        (f.tally.of(EventId::Blocked), f.tally.of(EventId::Dropped)),
        (0, 0)
    );
    assert_eq!(f.tally.other, 101 - 63);
    assert!(f.tally.bad.is_empty(), "{:?}", f.tally.bad);
    let (i, o) = (Some(Direction::Inbound), Some(Direction::Outbound));
    let p = EventId::Permitted;
    assert_eq!(count(&f, p, 6, o), 22);
    assert_eq!(count(&f, p, 6, i), 3);
    assert_eq!(count(&f, p, 17, o), 14);
    assert_eq!(count(&f, p, 17, i), 24);
    let all = oriented(&f);
    let host = "PC01.example.corp";
    let kerberos = find(&all, p, host, "10.0.2.17:49263", "10.0.2.15:88");
    #[rustfmt::skip]
    check(kerberos, "2019-02-13T18:02:04.426662Z", "10.0.2.17:49263", "10.0.2.15:88", true, Some("lsass.exe"), 520, 0);
    // The tunnel: plink connects to the local RDP listener; the inbound
    // event names the listener first.
    let rdp = find(&all, p, host, "127.0.0.2:3389", "127.0.0.1:49271");
    #[rustfmt::skip]
    check(rdp, "2019-02-13T18:04:01.632120Z", "127.0.0.1:49271", "127.0.0.2:3389", false, Some("System"), 4, 0);
    let wsd = find(&all, p, host, "127.0.0.1:5357", "127.0.0.1:49284");
    #[rustfmt::skip]
    check(wsd, "2019-02-13T18:05:19.734426Z", "127.0.0.1:49284", "127.0.0.1:5357", false, Some("System"), 4, 0);
    let unresolved = all.iter().filter(|(e, r)| e.protocol == 6 && r.is_err());
    assert_eq!(unresolved.count(), 0, "every TCP event oriented");
}

#[test]
fn wfp_security_short_evtx_gives_drops_and_a_block() {
    let f = sample("omerbenamram_Security_short_selected.evtx");
    assert_eq!(f.shape, Shape::Evtx);
    assert_eq!(f.stopped, None);
    // 7 records: 5152 x2 (1 TCP inbound, 1 ICMP), 5157 x1 (ICMP inbound).
    assert_eq!(f.tally.of(EventId::Dropped), 2);
    assert_eq!(f.tally.of(EventId::Blocked), 1);
    assert_eq!(f.tally.of(EventId::Permitted), 0);
    assert_eq!(f.tally.other, 4);
    assert!(f.tally.bad.is_empty(), "{:?}", f.tally.bad);
    let i = Some(Direction::Inbound);
    assert_eq!(count(&f, EventId::Dropped, 6, i), 1);
    assert_eq!(count(&f, EventId::Dropped, 1, i), 1);
    assert_eq!(count(&f, EventId::Blocked, 1, i), 1);
    let all = oriented(&f);
    let rdp = find(
        &all,
        EventId::Dropped,
        "temporal",
        "23.94.153.202:59639",
        "169.46.6.101:3389",
    );
    #[rustfmt::skip]
    check(rdp, "2016-06-29T15:24:34.346000Z", "23.94.153.202:59639", "169.46.6.101:3389", false, None, 0, 67607);
    let ping = find(
        &all,
        EventId::Dropped,
        "temporal",
        "169.46.118.42:0",
        "169.46.6.101:8",
    );
    #[rustfmt::skip]
    check(ping, "2016-06-29T15:24:57.090800Z", "169.46.118.42:0", "169.46.6.101:8", false, Some("System"), 4, 67249);
    // The 5157 of the same echo request names the local end first (an
    // older release): the node's address, learnt from the drops, tells.
    let block = find(
        &all,
        EventId::Blocked,
        "temporal",
        "169.46.6.101:8",
        "169.46.118.42:0",
    );
    #[rustfmt::skip]
    check(block, "2016-06-29T15:24:57.090800Z", "169.46.118.42:0", "169.46.6.101:8", false, Some("System"), 4, 67249);
}

/// The covenant sample: three hosts forwarded to one collector (NXLog, flat).
fn check_covenant(f: &WfpFile) {
    assert_eq!(f.shape, Shape::Ndjson);
    assert_eq!(f.stopped, None);
    assert!(f.tally.bad.is_empty(), "{:?}", f.tally.bad);
    // 5156 x53 (TCP out 40, TCP in 8, UDP 5), 5157 x5 (all TCP inbound).
    let (i, o) = (Some(Direction::Inbound), Some(Direction::Outbound));
    assert_eq!(f.tally.of(EventId::Permitted), 53);
    assert_eq!(f.tally.of(EventId::Blocked), 5);
    assert_eq!(count(&f.clone(), EventId::Permitted, 6, o), 40);
    assert_eq!(count(f, EventId::Permitted, 6, i), 8);
    assert_eq!(count(f, EventId::Permitted, 17, None), 5);
    assert_eq!(count(f, EventId::Blocked, 6, i), 5);
    let all = oriented(f);
    // Windows 10: an inbound event names the remote initiator first.
    let w6 = "WORKSTATION6.theshire.local";
    let rpc = find(
        &all,
        EventId::Permitted,
        w6,
        "172.18.39.5:54358",
        "172.18.39.6:135",
    );
    #[rustfmt::skip]
    check(rpc, "2020-08-06T05:20:26.671000Z", "172.18.39.5:54358", "172.18.39.6:135", false, Some("svchost.exe"), 992, 68894);
    let blocked = find(
        &all,
        EventId::Blocked,
        w6,
        "172.18.39.5:54359",
        "172.18.39.6:50115",
    );
    #[rustfmt::skip]
    check(blocked, "2020-08-06T05:20:26.672000Z", "172.18.39.5:54359", "172.18.39.6:50115", false, Some("services.exe"), 732, 69408);
    // Loopback LDAP: the client's Connect, then lsass's Receive/Accept.
    let dc = "MORDORDC.theshire.local";
    let ldap: Vec<_> = (all.iter())
        .filter(|(e, _)| e.host.as_deref() == Some(dc) && e.source.to_string() == "[::1]:64470")
        .collect();
    assert_eq!(ldap.len(), 2);
    #[rustfmt::skip]
    check(ldap[0], "2020-08-06T05:21:00.840000Z", "[::1]:64470", "[::1]:389", true, Some("microsoft.activedirectory.webservices.exe"), 3532, 65853);
    #[rustfmt::skip]
    check(ldap[1], "2020-08-06T05:21:00.840000Z", "[::1]:64470", "[::1]:389", false, Some("lsass.exe"), 704, 65851);
    let tcp_unresolved = all.iter().filter(|(e, r)| e.protocol == 6 && r.is_err());
    assert_eq!(tcp_unresolved.count(), 0, "every TCP event oriented");
}

#[test]
fn wfp_covenant_ndjson_subset_windows_10_names_the_remote_initiator_as_source() {
    let f = sample("otrf_covenant_sharpsc_query_dcerpc_smb_svcctl_wfp_only.ndjson");
    assert_eq!(f.tally.other, 0);
    check_covenant(&f);
}

#[test]
fn wfp_covenant_zip_every_channel_gives_the_same_events_as_its_subset() {
    let f = zip_as_subset(
        "otrf_covenant_sharpsc_query_dcerpc_smb_svcctl.zip",
        "otrf_covenant_sharpsc_query_dcerpc_smb_svcctl_wfp_only.ndjson",
        349,
    );
    if let Some(f) = f {
        check_covenant(&f);
    }
}

/// The zip's one file read: `lines` in all, its other channels counted as
/// other events, its WFP events those of `subset`. `None` without `unzip`.
fn zip_as_subset(zip: &str, subset: &str, lines: u64) -> Option<WfpFile> {
    if !needs(zip, false, &["unzip"]) {
        return None;
    }
    let tmp = TempDir::new(zip);
    let f = unzipped(zip, &tmp);
    let sub = sample(subset);
    assert_eq!(
        f.tally.other,
        lines - sub.events.len() as u64,
        "the other channels' events"
    );
    assert_eq!(f.events, sub.events);
    Some(f)
}

fn check_ninjacopy(f: &WfpFile) {
    assert_eq!(f.shape, Shape::Ndjson);
    assert_eq!(f.stopped, None);
    assert!(f.tally.bad.is_empty(), "{:?}", f.tally.bad);
    // 5156 x352 (TCP 19, UDP 313, ICMPv6 18, IGMP 2), 5152 x49 (UDP in).
    let p = EventId::Permitted;
    assert_eq!(f.tally.of(p), 352);
    assert_eq!(f.tally.of(EventId::Dropped), 49);
    assert_eq!(f.tally.of(EventId::Blocked), 0);
    #[rustfmt::skip]
    assert_eq!([6, 17, 58, 2].map(|proto| count(f, p, proto, None)), [19, 313, 18, 2]);
    let i = Some(Direction::Inbound);
    assert_eq!(count(f, EventId::Dropped, 17, i), 49);
    let all = oriented(f);
    let dc = "DC01.pandalab.com";
    let c2 = find(&all, p, dc, "192.168.1.4:59559", "192.168.56.40:8888");
    #[rustfmt::skip]
    check(c2, "2023-07-19T05:33:05.144000Z", "192.168.1.4:59559", "192.168.56.40:8888", true, Some("powershell.exe"), 6448, 71113);
    let ldap = (all.iter())
        .filter(|(e, _)| e.source.to_string() == "[::1]:59560")
        .nth(1)
        .unwrap();
    #[rustfmt::skip]
    check(ldap, "2023-07-19T05:33:42.009000Z", "[::1]:59560", "[::1]:389", false, Some("lsass.exe"), 600, 67584);
    // A late DNS answer dropped on the ICMP Error layer: not a connection
    // the record can orient.
    let late = find(
        &all,
        EventId::Dropped,
        dc,
        "192.203.230.10:53",
        "192.168.1.4:51440",
    );
    assert_eq!(late.1, Err(Unresolved::Layer));
    assert_eq!((late.0.filter_rtid, late.0.pid), (Some(71098), Some(0)));
    assert_eq!(late.0.application, None);
    let tcp_unresolved = all.iter().filter(|(e, r)| e.protocol == 6 && r.is_err());
    assert_eq!(tcp_unresolved.count(), 0, "every TCP event oriented");
}

#[test]
fn wfp_ninjacopy_ndjson_subset_newer_schema() {
    let f = sample("otrf_empire_ninjacopy_dumping_ntds_dit_file_wfp_only.ndjson");
    assert_eq!(f.tally.other, 0);
    check_ninjacopy(&f);
}

#[test]
fn wfp_ninjacopy_zip_every_channel_gives_the_same_events_as_its_subset() {
    let f = zip_as_subset(
        "otrf_empire_ninjacopy_dumping_ntds_dit_file.zip",
        "otrf_empire_ninjacopy_dumping_ntds_dit_file_wfp_only.ndjson",
        13969,
    );
    if let Some(f) = f {
        check_ninjacopy(&f);
    }
}

/// A sample's bytes with `edit` applied, written to `tmp/name`.
fn edited(sample: &str, tmp: &TempDir, name: &str, edit: impl FnOnce(&mut Vec<u8>)) -> WfpFile {
    let mut bytes = std::fs::read(wfp_dir().join(sample)).unwrap();
    edit(&mut bytes);
    let path = tmp.0.join(name);
    std::fs::write(&path, bytes).unwrap();
    read(&path).unwrap()
}

#[test]
fn wfp_evtx_cut_inside_a_chunk_reads_the_whole_chunks_and_says_where_it_stopped() {
    let tmp = TempDir::new("wfp-cut");
    let second =
        std::fs::read(wfp_dir().join("omerbenamram_Security_short_selected.evtx")).unwrap();
    let f = edited(
        "sbousseaden_DE_RDP_Tunnel_5156.evtx",
        &tmp,
        "cut.evtx",
        |b| {
            b.extend_from_slice(&second[4096..4096 + 30_000]);
        },
    );
    assert_eq!(f.tally.of(EventId::Permitted), 63, "the whole first chunk");
    let st = f.stopped.expect("a cut file is reported");
    assert_eq!((st.offset, st.records), (4096 + 65536, 101));
    assert!(st.reason.contains("30000 bytes"), "{}", st.reason);
}

#[test]
fn wfp_evtx_corrupt_records_are_counted_and_the_rest_read() {
    let tmp = TempDir::new("wfp-corrupt");
    // Record 49 (a 5156) starts at byte 36840: its binary XML is spoilt
    // just after the 24-byte record header.
    let f = edited(
        "sbousseaden_DE_RDP_Tunnel_5156.evtx",
        &tmp,
        "bad.evtx",
        |b| {
            b[36840 + 24..36840 + 40].fill(0xff);
        },
    );
    assert_eq!(f.stopped, None);
    assert_eq!(f.tally.bad_total(), 1, "{:?}", f.tally);
    assert_eq!(f.tally.bad.get(&Reason::CorruptRecord), Some(&1));
    assert_eq!(f.tally.of(EventId::Permitted), 62);
    assert_eq!(f.tally.other, 101 - 63);
}

#[test]
fn wfp_garbage_and_a_cut_last_line_in_ndjson() {
    let tmp = TempDir::new("wfp-garbage");
    let f = edited(
        "otrf_covenant_sharpsc_query_dcerpc_smb_svcctl_wfp_only.ndjson",
        &tmp,
        "bad.ndjson",
        |b| {
            let cut = b.len() - 700;
            b.truncate(cut);
            let second = 1 + b.iter().position(|c| *c == b'\n').unwrap();
            b.splice(
                second..second,
                b"\x00\x01 garbage\n{\"EventID\":5156}\n".iter().copied(),
            );
        },
    );
    assert_eq!(f.tally.bad.get(&Reason::NotJson), Some(&1), "{:?}", f.tally);
    assert_eq!(
        f.tally.bad.get(&Reason::MissingField(Field::Time)),
        Some(&1),
        "{:?}",
        f.tally
    );
    assert_eq!(
        f.tally.of(EventId::Permitted) + f.tally.of(EventId::Blocked),
        57
    );
    let st = f.stopped.expect("a cut last line is reported");
    assert_eq!(st.records, 57 + 2);
    assert!(st.reason.contains("cut short"), "{}", st.reason);
}

/// A 5156 as central (192.0.2.10) of the multi-node site would log proxy
/// opening the repository service, in NXLog's flat shape.
const CENTRAL_ACCEPTS_PROXY: &str = r#"{"EventID":5156,"Hostname":"central.corp.example","TimeCreated":"2026-01-05T10:00:00.250Z","Direction":"%%14592","SourceAddress":"192.0.2.11","SourcePort":"50123","DestAddress":"192.0.2.10","DestPort":"4242","Protocol":"6","LayerName":"%%14610","LayerRTID":"44","FilterRTID":"68894","Application":"\\device\\harddiskvolume2\\program files\\qlik\\sense\\repository\\repository.exe","ProcessID":"2716"}"#;

#[test]
fn wfp_process_reaches_the_report_edge_and_the_ecs_event() {
    use portwatch::config::load_policy;
    use portwatch::export::ecs::Observer;
    use portwatch::export::eventlog::EventLog;
    use portwatch::observation::Outcome;
    use portwatch::pipeline::Pipeline;
    use portwatch::report::Report;
    use portwatch::source::wfp::ndjson::parse_line;
    use portwatch::source::wfp::observe::observation;
    use portwatch::state::TrackConfig;
    use std::sync::Arc;
    use std::time::Duration;

    let policy = Arc::new(load_policy(Path::new("multi-node"), None).unwrap().policy);
    let track = TrackConfig {
        capacity: 64,
        syn_timeout: Duration::from_secs(3),
        idle_timeout: Duration::from_secs(60),
    };
    let mut pl = Pipeline::new(policy.clone(), track);
    pl.record_events(true);
    let e = parse_line(CENTRAL_ACCEPTS_PROXY.as_bytes())
        .unwrap()
        .unwrap();
    let mut sides = Sides::new();
    sides.node_address("central.corp.example", "192.0.2.10".parse().unwrap());
    let obs = observation(&e, sides.orient(&e), Some("central".into())).unwrap();
    assert_eq!(obs.outcome(), Some(Outcome::Permitted));
    pl.observe(&obs);
    let events = pl.drain_events();

    let tmp = TempDir::new("wfp-ecs");
    let path = tmp.0.join("events.ndjson");
    let observer = Observer {
        name: "central".into(),
        hostname: "test".into(),
    };
    let mut log = EventLog::open(
        &path,
        portwatch::export::eventlog::EventsFormat::Ecs,
        observer,
        64,
    )
    .unwrap();
    log.write(&policy, &events);
    log.finish().unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let docs: Vec<serde_json::Value> = (text.lines())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let conn = (docs.iter())
        .find(|d| d["process"].is_object())
        .unwrap_or_else(|| panic!("no event with a process: {text}"));
    assert_eq!(
        conn["process"]["executable"],
        r"\device\harddiskvolume2\program files\qlik\sense\repository\repository.exe"
    );
    assert_eq!(conn["process"]["pid"], 2716);
    assert_eq!(conn["source"]["ip"], "192.0.2.11");
    assert_eq!(conn["destination"]["port"], 4242);

    let report = Report::build(&pl, Vec::new(), pl.span(), &Default::default());
    let edge = (report.edges.iter())
        .find(|x| x.src == "proxy" && x.dst == "central" && x.port == 4242)
        .expect("the proxy -> central repository edge");
    assert_eq!(edge.executables.len(), 1, "{edge:?}");
    assert!(edge.executables[0].ends_with(r"\repository.exe"));
    let table = report.to_table();
    assert!(
        table.contains("processes on proxy -> central 4242/tcp: repository.exe"),
        "{table}"
    );
}

/// One flat NXLog line of a WFP event.
#[allow(clippy::too_many_arguments)]
fn nxlog(
    id: u32,
    host: &str,
    time: &str,
    dir: &str,
    layer: &str,
    src: &str,
    dst: &str,
    app: &str,
    pid: u32,
    filter: u32,
) -> String {
    let (sa, sp) = src.rsplit_once(':').unwrap();
    let (da, dp) = dst.rsplit_once(':').unwrap();
    serde_json::json!({
        "EventID": id, "Hostname": host, "TimeCreated": time, "Direction": dir,
        "SourceAddress": sa, "SourcePort": sp, "DestAddress": da, "DestPort": dp,
        "Protocol": "6", "LayerName": layer, "FilterRTID": filter.to_string(),
        "Application": app, "ProcessID": pid.to_string(),
    })
    .to_string()
}

#[test]
fn wfp_replay_of_node_events_gives_permitted_denied_blocked_and_processes() {
    let dir = TempDir::new("wfp-replay");
    let (inb, out) = ("%%14592", "%%14593");
    let (accept, connect) = ("%%14610", "%%14611");
    let repo = r"\device\harddiskvolume2\program files\qlik\sense\repository\repository.exe";
    let proxy = r"\device\harddiskvolume2\program files\qlik\sense\proxy\proxy.exe";
    #[rustfmt::skip]
    let central = [
        // proxy opens the repository service: central's Receive/Accept.
        nxlog(5156, "CENTRAL.corp.example", "2026-01-05T10:00:00.250Z", inb, accept, "192.0.2.11:50123", "192.0.2.10:4242", repo, 2716, 68894),
        // The same edge later, blocked by central's firewall.
        nxlog(5157, "CENTRAL.corp.example", "2026-01-05T10:05:00Z", inb, accept, "192.0.2.11:50200", "192.0.2.10:4242", repo, 2716, 70001),
    ];
    #[rustfmt::skip]
    let proxy_side = [
        nxlog(5156, "proxy", "2026-01-05T10:00:00.240Z", out, connect, "192.0.2.11:50123", "192.0.2.10:4242", proxy, 3100, 68900),
        // ECS and flat shapes may share a file; an unreadable line is counted.
        "not json".to_string(),
    ];
    let a = dir.0.join("central.ndjson");
    let b = dir.0.join("proxy.ndjson");
    std::fs::write(&a, central.join("\n") + "\n").unwrap();
    std::fs::write(&b, proxy_side.join("\n") + "\n").unwrap();
    let run = Command::new(crate::util::bin())
        .args(["replay", "--site", "multi-node", "--format", "json"])
        .args([&a, &b])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "findings: {stderr}");
    let r: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let sources = r["capture"]["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 2, "{sources:?}");
    let central_src = &sources[0];
    assert_eq!(central_src["format"], "wfp_events");
    assert_eq!(central_src["fidelity"]["kind"], "wfp_events");
    assert_eq!(central_src["fidelity"]["sensor"], "central");
    assert_eq!(central_src["fidelity"]["records"]["observed"], 2);
    assert_eq!(sources[1]["fidelity"]["sensor"], "proxy");
    assert_eq!(sources[1]["fidelity"]["records"]["not_json"], 1);
    // proxy's outbound event and central's inbound one are one connection,
    // counted once.
    assert_eq!(
        r["summary"]["outcomes"],
        serde_json::json!({"denied": 1, "permitted": 1})
    );
    assert_eq!(r["capture"]["record_duplicates"], 1);
    let blocked: Vec<&serde_json::Value> = (r["findings"].as_array().unwrap().iter())
        .filter(|f| f["kind"] == "blocked")
        .collect();
    assert_eq!(blocked.len(), 1, "{blocked:?}");
    let why = blocked[0]["explanation"].as_str().unwrap();
    assert!(why.contains("denied by the node's firewall 1x"), "{why}");
    assert!(why.contains("70001"), "the filter is cited: {why}");
    let edge = (r["edges"].as_array().unwrap().iter())
        .find(|e| e["src"] == "proxy" && e["dst"] == "central" && e["port"] == 4242)
        .unwrap();
    let exes: Vec<&str> = (edge["executables"].as_array().unwrap().iter())
        .map(|e| e.as_str().unwrap())
        .collect();
    assert_eq!(
        exes,
        [proxy, repo],
        "both ends' processes, first seen first"
    );
}

#[test]
fn wfp_replay_of_a_cut_evtx_exits_3_and_says_where_it_stopped() {
    let tmp = TempDir::new("wfp-cut-replay");
    let mut bytes = std::fs::read(wfp_dir().join("sbousseaden_DE_RDP_Tunnel_5156.evtx")).unwrap();
    bytes.extend_from_slice(&[0u8; 1000]);
    let path = tmp.0.join("cut.evtx");
    std::fs::write(&path, bytes).unwrap();
    let run = Command::new(crate::util::bin())
        .args(["replay", "--site", "multi-node", "--format", "json"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(
        run.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let src = &r["capture"]["sources"][0];
    assert_eq!(src["stopped"]["offset"], 4096 + 65536);
    assert_eq!(
        src["fidelity"]["records"]["not_tcp"], 38,
        "63 5156 of which 25 TCP"
    );
}
