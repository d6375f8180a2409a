//! Every sample in `../shared/sensors/vpcflow/` and `azure/`: the record
//! counts of its SOURCE.md and a hand-checked record each; bad input.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use super::*;
use crate::observation::{Fate, Outcome};

fn sample(dir: &str, name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/sensors")
        .join(dir)
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn read_sample(dir: &str, name: &str) -> FlowFile {
    let bytes = sample(dir, name);
    let format = FlowFormat::detect(&bytes[..bytes.len().min(512)]);
    let format = format.unwrap_or_else(|| panic!("{name}: not detected"));
    read(format, bytes)
}

fn counts(f: &FlowFile) -> BTreeMap<&'static str, u64> {
    f.counts.clone()
}

fn outcomes(f: &FlowFile) -> Vec<Outcome> {
    f.observations().filter_map(Observation::outcome).collect()
}

fn obs(client: &str, cp: u16, server: &str, sp: u16) -> FlowKey {
    FlowKey {
        client: client.parse().unwrap(),
        client_port: cp,
        server: server.parse().unwrap(),
        server_port: sp,
    }
}

fn find(f: &FlowFile, k: FlowKey) -> &Observation {
    f.observations()
        .find(|o| o.key == k)
        .unwrap_or_else(|| panic!("no observation of {k:?} in {:?}", f.items))
}

fn ended(o: &Observation) -> (Outcome, bool) {
    match o.fate {
        Fate::Ended { outcome, inferred } => (outcome, inferred),
        Fate::Attempted => panic!("a record is never only attempted"),
    }
}

#[test]
fn vpc_v2_default_without_header() {
    let f = read_sample("vpcflow", "awsdocs_v2_default.log");
    // SOURCE.md: 7 records: TCP ACCEPT, TCP REJECT, NODATA, SKIPDATA, ICMP
    // ACCEPT and REJECT, IPv6 TCP ACCEPT.
    assert_eq!(f.records, 7);
    let c = counts(&f);
    assert_eq!(
        (
            c["tcp"],
            c["nodata"],
            c["skipdata"],
            c["not_tcp"],
            c["observed"]
        ),
        (3, 1, 1, 2, 3)
    );
    let gaps = f
        .items
        .iter()
        .filter(|i| matches!(i, FlowItem::Gap { .. }))
        .count();
    assert_eq!(gaps, 2);
    // By hand: 172.31.16.139:20641 -> 172.31.16.21:22 ACCEPT, no flags.
    let ssh = find(&f, obs("172.31.16.139", 20641, "172.31.16.21", 22));
    assert_eq!(ended(ssh), (Outcome::Permitted, false));
    assert_eq!(ssh.initiator, Initiator::Inferred);
    assert_eq!(ssh.ts, Timestamp::from_secs_nanos(1418530010, 0));
    let rdp = find(&f, obs("172.31.9.69", 49761, "172.31.9.12", 3389));
    assert_eq!(ended(rdp).0, Outcome::Denied);
    assert!(f.stopped.is_none());
}

#[test]
fn vpc_v3_tcp_flags_join_both_directions() {
    let f = read_sample("vpcflow", "awsdocs_v3_tcp_flags.log");
    // SOURCE.md: 8 version-3 TCP records.
    assert_eq!(f.records, 8);
    let c = counts(&f);
    // Three connections opened (SYN, SYN-ACK back); the FIN-only interval
    // pair continues one of them.
    assert_eq!((c["tcp"], c["observed"], c["continued"]), (8, 3, 1));
    assert_eq!(outcomes(&f), vec![Outcome::Established; 3]);
    // By hand: 52.213.180.42:43416 sent SYN (2) to 10.0.0.62:5001, which
    // answered SYN-ACK (18).
    let o = find(&f, obs("52.213.180.42", 43416, "10.0.0.62", 5001));
    assert_eq!(o.initiator, Initiator::Syn);
    assert_eq!(o.ts, Timestamp::from_secs_nanos(1566848875, 0));
    // The double space of the last record is tolerated: SYN+FIN (3) and
    // SYN-ACK+FIN (19).
    find(&f, obs("52.213.180.42", 43638, "10.0.0.62", 5001));
}

/// A connection's end is its records' latest `end`, as a flow export
/// record's is.
#[test]
fn vpc_end_is_the_observations_end() {
    let f = read_sample("vpcflow", "awsdocs_v3_tcp_flags.log");
    let o = find(&f, obs("52.213.180.42", 43416, "10.0.0.62", 5001));
    assert_eq!(o.end, Some(Timestamp::from_secs_nanos(1566848933, 0)));
    // The two directions' ends differ: the later one.
    let text =
        "version srcaddr dstaddr srcport dstport protocol start end action tcp-flags log-status\n\
                3 10.0.0.1 10.0.0.2 40000 443 6 100 150 ACCEPT 2 OK\n\
                3 10.0.0.2 10.0.0.1 443 40000 6 100 160 ACCEPT 18 OK\n";
    let f = read(FlowFormat::VpcFlowLog, text.as_bytes().to_vec());
    let o = find(&f, obs("10.0.0.1", 40000, "10.0.0.2", 443));
    assert_eq!(o.end, Some(Timestamp::from_secs_nanos(160, 0)));
    assert_eq!(counts(&f).get("time_implausible"), None);
}

/// An `end` before the start, past the longest interval, or not a time is
/// counted and not used: the connection ends at its start.
#[test]
fn vpc_implausible_end_is_counted_and_the_start_stands() {
    let text = "version srcaddr dstaddr srcport dstport protocol start end action log-status\n\
                2 10.0.0.1 10.0.0.2 40000 443 6 100 99 ACCEPT OK\n\
                2 10.0.0.1 10.0.0.2 40001 443 6 100 761 ACCEPT OK\n\
                2 10.0.0.1 10.0.0.2 40002 443 6 100 - ACCEPT OK\n\
                2 10.0.0.1 10.0.0.2 40003 443 6 100 760 ACCEPT OK\n";
    let f = read(FlowFormat::VpcFlowLog, text.as_bytes().to_vec());
    let c = counts(&f);
    assert_eq!((f.records, c["tcp"], c["time_implausible"]), (4, 4, 3));
    for port in [40000, 40001, 40002] {
        let o = find(&f, obs("10.0.0.1", port, "10.0.0.2", 443));
        assert_eq!(o.end, Some(o.ts), "{port}");
    }
    let o = find(&f, obs("10.0.0.1", 40003, "10.0.0.2", 443));
    assert_eq!(o.end, Some(Timestamp::from_secs_nanos(760, 0)));
}

#[test]
fn vpc_transit_gateway_records_have_no_time() {
    let f = read_sample("vpcflow", "awsdocs_v3_transit_gateway.log");
    // SOURCE.md: 4 records, no start/end fields: nothing can be placed.
    assert_eq!(f.records, 4);
    assert_eq!(counts(&f)["no_time"], 4);
    assert_eq!(f.observations().count(), 0);
}

#[test]
fn vpc_v5_flow_direction_uses_the_syn_ack() {
    let f = read_sample("vpcflow", "awsdocs_v5_flow_direction.log");
    // SOURCE.md: 2 version-5 records, ingress (19) and egress (3).
    assert_eq!(f.records, 2);
    let o = find(&f, obs("10.0.0.71", 34210, "52.95.128.179", 80));
    assert_eq!(ended(o), (Outcome::Established, false));
    assert_eq!(o.initiator, Initiator::Syn);
    assert_eq!(f.observations().count(), 1);
}

#[test]
fn vpc_default_header_from_elastic() {
    let f = read_sample("vpcflow", "elastic_beats_accept-reject-traffic.log");
    // SOURCE.md: a header line plus 4 v2 records.
    assert_eq!(f.records, 4);
    let o = find(&f, obs("78.24.182.42", 49761, "158.109.0.1", 3389));
    assert_eq!(ended(o).0, Outcome::Denied);
    assert_eq!(outcomes(&f), vec![Outcome::Permitted, Outcome::Denied]);
}

#[test]
fn pkt_addresses_replace_the_interface_addresses() {
    let text = "version srcaddr dstaddr srcport dstport protocol start end action tcp-flags pkt-srcaddr pkt-dstaddr log-status\n\
                3 10.40.1.175 10.40.2.236 39812 80 6 100 160 ACCEPT 2 10.20.33.164 10.40.2.236 OK\n";
    let f = read(FlowFormat::VpcFlowLog, text.as_bytes().to_vec());
    let o = find(&f, obs("10.20.33.164", 39812, "10.40.2.236", 80));
    assert_eq!(ended(o).0, Outcome::Permitted);
}

#[test]
fn rst_back_without_syn_ack_is_refused() {
    let text =
        "version srcaddr dstaddr srcport dstport protocol start end action tcp-flags log-status\n\
                3 10.0.0.1 10.0.0.2 40000 443 6 100 160 ACCEPT 2 OK\n\
                3 10.0.0.2 10.0.0.1 443 40000 6 100 160 ACCEPT 4 OK\n";
    let f = read(FlowFormat::VpcFlowLog, text.as_bytes().to_vec());
    assert_eq!(outcomes(&f), vec![Outcome::Refused]);
}

#[test]
fn vpc_bad_input_is_counted_never_fatal() {
    let text = "version srcaddr dstaddr srcport dstport protocol start end action log-status\n\
                2 10.0.0.1 10.0.0.2 40000 443 6 100 160 ACCEPT OK\n\
                version srcaddr dstaddr srcport dstport protocol start end action tcp-flags log-status\n\
                3 10.0.0.1 10.0.0.2 40001 443 6 100 160 ACCEPT 2 OK\n\
                3 10.0.0.x 10.0.0.2 40002 443 6 100 160 ACCEPT 2 OK\n\
                3 10.0.0.1 10.0.0.2 40003 443 6 100 160 MAYBE 2 OK\n\
                3 10.0.0.1 10.0.0.2 40004 443 6 100 160 ACCEPT 2\n\
                3 10.0.0.1 10.0.0.2 40005 443 6 100";
    let f = read(FlowFormat::VpcFlowLog, text.as_bytes().to_vec());
    let c = counts(&f);
    assert_eq!(c["header_again"], 1);
    assert_eq!(c["malformed_address"], 1);
    assert_eq!(c["malformed_action"], 1);
    assert_eq!(c["malformed_field_count"], 1);
    assert_eq!(c["truncated"], 1);
    assert_eq!(f.observations().count(), 2);
    let stop = f.stopped.expect("a cut line stops the file");
    assert_eq!(stop.offset as usize, text.rfind('\n').unwrap() + 1);
}

/// A format wider than the fields a line is split into: lines are still
/// told by their whole field count, and the columns past are absent.
#[test]
fn a_vpc_format_of_more_than_64_fields_is_counted_whole() {
    let extra: String = (0..60).map(|i| format!(" x{i}")).collect();
    let dashes = " -".repeat(60);
    let text = format!(
        "version srcaddr dstaddr srcport dstport protocol start end action log-status{extra}\n\
         2 10.0.0.1 10.0.0.2 40000 443 6 100 160 ACCEPT OK{dashes}\n\
         2 10.0.0.1 10.0.0.2 40001 443 6 100 160 ACCEPT OK{dashes} -\n\
         2 10.0.0.1 10.0.0.2 40002 443 6 100 160 ACCEPT OK{}\n",
        " -".repeat(59)
    );
    let f = read(FlowFormat::VpcFlowLog, text.into_bytes());
    let c = counts(&f);
    assert_eq!((f.records, c["tcp"], c["malformed_field_count"]), (3, 1, 2));
    find(&f, obs("10.0.0.1", 40000, "10.0.0.2", 443));
}

#[test]
fn vpc_gzip_reads_like_plain_and_a_cut_stream_says_so() {
    let plain = sample("vpcflow", "awsdocs_v3_tcp_flags.log");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&plain).unwrap();
    let gz = gz.finish().unwrap();
    let path = std::env::temp_dir().join(format!("portwatch-flows-{}.log.gz", std::process::id()));
    std::fs::write(&path, &gz).unwrap();
    assert_eq!(detect_file(&path).unwrap(), Some(FlowFormat::VpcFlowLog));
    let f = read_file(&path, FlowFormat::VpcFlowLog).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(f.items, read(FlowFormat::VpcFlowLog, plain).items);
    let cut = read(FlowFormat::VpcFlowLog, gz[..gz.len() - 12].to_vec());
    assert!(cut.stopped.is_some(), "{:?}", cut.counts);
}

#[test]
fn azure_vnet_sample() {
    let f = read_sample(
        "azure",
        "elastic_integrations_vnet_sample_logs_testdata.json",
    );
    // SOURCE.md: 19 flowTuples: 10 outbound B/E (5 flows), 9 inbound D.
    assert_eq!(f.records, 19);
    let o = outcomes(&f);
    assert_eq!(o.iter().filter(|o| **o == Outcome::Denied).count(), 9);
    assert_eq!(o.iter().filter(|o| **o == Outcome::Established).count(), 5);
    assert_eq!(o.len(), 14);
    assert_eq!(f.denied_by.values().sum::<u64>(), 9);
    // By hand: 10.0.0.6:36776 -> 104.16.218.84:443 began at
    // 1663146017343 ms and ended with 22 packets out, 33 back.
    let k = obs("10.0.0.6", 36776, "104.16.218.84", 443);
    let e = find(&f, k);
    assert_eq!(ended(e), (Outcome::Established, true));
    assert_eq!(e.ts, Timestamp::from_secs_nanos(1663146017, 343_000_000));
    assert!(f.stopped.is_none());
}

#[test]
fn azure_nsg_v2_sample() {
    let f = read_sample("azure", "elastic_integrations_test-nsg.ndjson");
    // SOURCE.md: 1 v2 tuple, allowed, ended, one packet each way: a
    // refusal would read the same, so only permitted.
    assert_eq!(f.records, 1);
    let o = find(&f, obs("1.128.0.0", 59932, "1.128.0.1", 443));
    assert_eq!(ended(o), (Outcome::Permitted, false));
    assert_eq!(o.ts, Timestamp::from_secs_nanos(1542110379, 0));
}

#[test]
fn azure_bad_input_is_counted_never_fatal() {
    let text = r#"{"records":[{"flowRecords":{"flows":[{"flowGroups":[{"rule":"R","flowTuples":[
        "1000,10.0.0.1,10.0.0.2,40000,443,6,O,X,NX,0,0,0,0",
        "1000,10.0.0.1,10.0.0.2,40000,443,6,O,B,NX",
        "1000,10.0.0.1,10.0.0.2,40000,443,17,O,D,NX,1,1,0,0",
        "1000,10.0.0.1,10.0.0.2,40001,443,6,O,B,NX,0,0,0,0",
        "2000,10.0.0.1,10.0.0.2,40002,443,6,I,D,NX,1,60,0,0",
        42]}]}]}},
      {"category":"FlowLogFlowEvent"}]}
{"records":[{"flowRecords":{"flows":[{"flowGroups":[{"rule":"R","flowTuples":["#;
    let f = read(FlowFormat::AzureFlowLog, text.as_bytes().to_vec());
    let c = counts(&f);
    assert_eq!(c["malformed_state"], 1);
    assert_eq!(c["malformed_tuple_fields"], 2);
    assert_eq!(c["not_tcp"], 1);
    assert_eq!(c["malformed_record"], 1);
    assert_eq!(c["not_ended"], 1);
    assert_eq!(c["truncated"], 1);
    assert_eq!(outcomes(&f), vec![Outcome::Permitted, Outcome::Denied]);
    assert_eq!(f.denied_by["R"], 1);
    let stop = f.stopped.expect("cut JSON stops the file");
    assert_eq!(stop.offset as usize, text.rfind("\n{").unwrap());
}

/// `json` pretty-printed (two-space indents), a long first field pushing
/// its kind's marks past the first look of detection.
fn pretty_with_long_first_field(json: &[u8]) -> String {
    let doc: serde_json::Value = serde_json::from_slice(json.trim_ascii()).unwrap();
    let pretty = serde_json::to_string_pretty(&doc).unwrap();
    let rest = pretty.strip_prefix("{\n").unwrap();
    format!("{{\n  \"note\": \"{}\",\n{rest}\n", "x".repeat(600))
}

/// A pretty-printed Azure blob is one JSON document over lines, not NDJSON:
/// told apart, detected though its kind is named past the first 512 bytes,
/// and read as the compact sample is.
#[test]
fn a_pretty_printed_azure_blob_is_a_document_not_ndjson() {
    let dir = std::env::temp_dir().join(format!("portwatch-pretty-azure-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for name in [
        "elastic_integrations_vnet_sample_logs_testdata.json",
        "elastic_integrations_test-nsg.ndjson",
    ] {
        let compact = sample("azure", name);
        let pretty = pretty_with_long_first_field(&compact);
        assert!(pretty.find("FlowEvent").unwrap() > 512, "{name}");
        assert_eq!(azure::json_shape(&compact), Some(azure::JsonShape::Lines));
        assert_eq!(
            azure::json_shape(pretty.as_bytes()),
            Some(azure::JsonShape::Document)
        );
        let path = dir.join(name);
        std::fs::write(&path, &pretty).unwrap();
        assert_eq!(
            detect_file(&path).unwrap(),
            Some(FlowFormat::AzureFlowLog),
            "{name}"
        );
        let (a, b) = (
            read(FlowFormat::AzureFlowLog, compact),
            read(FlowFormat::AzureFlowLog, pretty.into_bytes()),
        );
        assert!(a.records > 0, "{name}");
        assert_eq!((b.records, &b.counts), (a.records, &a.counts), "{name}");
        assert_eq!(b.items, a.items, "{name}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    // NDJSON with a broken first line is still lines; text is no JSON.
    assert_eq!(
        azure::json_shape(b"{\"EventID\": 5156,,}\n{}\n"),
        Some(azure::JsonShape::Lines)
    );
    assert_eq!(azure::json_shape(b"{\"EventID\": 5156"), None);
    assert_eq!(azure::json_shape(b"version srcaddr\n"), None);
}

#[test]
fn detection_tells_flow_logs_from_others() {
    assert_eq!(FlowFormat::detect(b"#Version: 1.5\n"), None);
    assert_eq!(FlowFormat::detect(&[0xd4, 0xc3, 0xb2, 0xa1]), None);
    assert_eq!(FlowFormat::detect(br#"{"EventID":5156}"#), None);
    assert_eq!(
        FlowFormat::detect(b"version srcaddr dstaddr log-status\n"),
        Some(FlowFormat::VpcFlowLog)
    );
}
