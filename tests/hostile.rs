//! Hostile input, as an attacker or a broken producer sends it: every limit of the
//! boundary (README, "Bad input"), through `import` and through Kafka. Each record is
//! refused with its own reason code, nothing panics, and the good records around it are
//! appended.
use std::time::Duration;

use ledger_kafka::{Outgoing, Producer, ACCOUNTS, DEADLETTER, IMAGES};
use ledger_proto::pb;
use prost::Message as _;

use crate::kafka::{drain, drain_until, Broker};
use crate::support::{ul, ul_ok};

fn image(id: &str, team: &str, at: &str, extra: &str) -> String {
    format!(
        r#"{{"imageProcessed":{{"eventId":"{id}","teamId":"{team}","occurredAt":"{at}","api":"API_REMOVE_BACKGROUND","images":1{extra}}}}}"#
    )
}

fn account(id: &str, team: &str, at: &str, change: &str) -> String {
    format!(r#"{{"accountEvent":{{"eventId":"{id}","teamId":"{team}","occurredAt":"{at}",{change}}}}}"#)
}

fn contract(rate: &str, tiers: usize) -> String {
    let tiers: Vec<String> =
        (0..tiers).map(|k| format!(r#"{{"fromImages":"{}","discountPercent":"1"}}"#, 300_000 + k)).collect();
    format!(
        r#""contractSigned":{{"termMonths":12,"committedImagesPerYear":"240000","rateRemoveBackground":"{rate}","rateImageEditing":"0.08","annualFee":"3600.00","rollover":true,"tiers":[{}]}}"#,
        tiers.join(",")
    )
}

const T: &str = "2026-04-02T00:00:00Z";

/// The good records: a plan for each team, then images around the hostile ones.
fn good() -> Vec<String> {
    vec![
        account(
            "h1-start",
            "h1",
            "2026-04-01T00:00:00Z",
            r#""planStarted":{"plan":"api_basic","bucketImages":"1000"}"#,
        ),
        account(
            "h3-start",
            "h3",
            "2026-04-01T00:00:00Z",
            r#""planStarted":{"plan":"app_pro","billingInterval":"monthly"}"#,
        ),
        image("h1-ok-1", "h1", T, ""),
    ]
}

/// `(line, reason code)`: each breaks one limit.
fn hostile() -> Vec<(String, &'static str)> {
    let big = "x".repeat(300);
    vec![
        (account("h2-rate", "h2", T, &contract("100000000000000000000000", 0)), "amount_out_of_range"),
        (account("h2-tiers", "h2", T, &contract("0.015", 20)), "too_many_items"),
        (
            account(
                "h3-topup",
                "h3",
                T,
                r#""creditsPurchased":{"credits":"10","amount":"79228162514264337593543950335"}"#,
            ),
            "amount_out_of_range",
        ),
        (
            account("h3-cents", "h3", T, r#""creditsPurchased":{"credits":"10","amount":"9.999"}"#),
            "amount_out_of_range",
        ),
        (
            account("h3-credits", "h3", T, r#""creditsPurchased":{"credits":"18446744073709551615","amount":"1"}"#),
            "too_large",
        ),
        // Dot segments: clients rewrite `/v1/teams/../portal-links` to `/v1/portal-links`.
        (image("dot-1", "..", T, ""), "reserved_team_id"),
        (account("dot-2", ".", T, r#""planStarted":{"plan":"api_basic","bucketImages":"1000"}"#), "reserved_team_id"),
        (image("h1-2199", "h1", "2199-01-01T00:00:00Z", ""), "future_event"),
        (image("h1-2023", "h1", "2024-01-01T00:00:00Z", ""), "before_catalog"),
        (image("h1-many", "h1", T, "").replace(r#""images":1"#, r#""images":4000000"#), "too_large"),
        (image("h1-req", "h1", T, &format!(r#","requestId":"{big}""#)), "text_too_long"),
        (
            image("h1-ops", "h1", T, &format!(r#","operations":[{}]"#, vec![r#""crop""#; 100].join(","))),
            "too_many_items",
        ),
        (
            account(
                "h1-refund",
                "h1",
                T,
                &format!(r#""qualityRefund":{{"originalEventId":"h1-ok-1","reason":"{}"}}"#, "y".repeat(1000)),
            ),
            "text_too_long",
        ),
        (account("h1-plan", "h1", T, &format!(r#""planChanged":{{"plan":"{big}"}}"#)), "text_too_long"),
        (
            account(
                "h3-seats",
                "h3",
                T,
                r#""planChanged":{"plan":"app_max","billingInterval":"monthly","seats":1000000}"#,
            ),
            "too_large",
        ),
        (
            account("h1-bucket", "h1", T, r#""planChanged":{"plan":"api_basic","bucketImages":"1000000000000"}"#),
            "too_large",
        ),
    ]
}

fn tail() -> Vec<String> {
    vec![image("h1-ok-2", "h1", "2026-04-03T00:00:00Z", ""), image("h1-ok-3", "h1", "2026-04-04T00:00:00Z", "")]
}

/// Team h1 billed its three good images and nothing else: no cycle was closed by the
/// image dated 2199.
fn assert_only_the_good_were_billed(dir: &std::path::Path) {
    let balance: serde_json::Value = serde_json::from_str(&ul_ok(dir, &["balance", "--team", "h1"])).unwrap();
    assert_eq!(balance["allowances"][0]["consumed"], "0.06", "{balance}");
    assert_eq!(balance["cycle"]["start"], "2026-04-01T00:00:00Z", "{balance}");
    assert_eq!(ul_ok(dir, &["invoices", "--team", "h1"]).trim(), "[]", "no cycle closed");
    assert!(ul_ok(dir, &["verify"]).starts_with("ok: 2 teams"), "h1 and h3 have entries, h2 none");
}

#[test]
fn every_limit_is_refused_with_its_code_through_import() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut lines = good();
    let first_hostile = lines.len() + 1;
    lines.extend(hostile().into_iter().map(|(l, _)| l));
    lines.push(format!(r#"{{"imageProcessed":{{"eventId":"{}"}}}}"#, "z".repeat(2 << 20)));
    lines.extend(tail());
    let mut bytes = lines.join("\n").into_bytes();
    bytes.extend_from_slice(b"\n{\"imageProcessed\":\xff\xfe}\n");
    let file = tmp.path().join("hostile.jsonl");
    std::fs::write(&file, bytes).unwrap();
    let run = ul(&dir, &["import", file.to_str().unwrap()]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    for (k, (_, code)) in hostile().iter().enumerate() {
        let n = first_hostile + k;
        assert!(run.stderr.contains(&format!("line {n}: {code}: ")), "line {n} ({code}):\n{}", run.stderr);
    }
    let long_line = first_hostile + hostile().len();
    assert!(run.stderr.contains(&format!("line {long_line}: text_too_long: line is")), "{}", run.stderr);
    assert!(run.stderr.contains(&format!("line {}: undecodable: ", long_line + 3)), "{}", run.stderr);
    assert_only_the_good_were_billed(&dir);

    // A close past now + the skew is irreversible: refused unless meant.
    let close = ul(&dir, &["close", "--until", "2199-01-01T00:00:00Z"]);
    assert_eq!(close.code, 1, "{}", close.stderr);
    assert_eq!(close.stderr.lines().count(), 1, "{}", close.stderr);
    assert!(close.stderr.contains("pass --allow-future"), "{}", close.stderr);
    assert_eq!(ul_ok(&dir, &["invoices", "--team", "h1"]).trim(), "[]", "nothing closed");
    let beyond = ul(&dir, &["close", "--until", "2262-01-01T00:00:00Z", "--allow-future"]);
    assert_eq!(beyond.code, 1, "past the ledger's range even when meant: {}", beyond.stderr);
}

/// A broker with the topics (one partition) and a producer to it.
fn on_a_broker() -> (tempfile::TempDir, Broker, Producer) {
    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::start(tmp.path());
    ledger_kafka::create_topics(&broker.address, 1).unwrap();
    let producer = Producer::new(&broker.address).unwrap();
    (tmp, broker, producer)
}

/// One JSONL line as the record its topic carries.
fn record(line: &str, key: &str) -> Outgoing {
    let input: pb::LedgerInput = serde_json::from_str(line).unwrap();
    let (topic, payload) = match input.event.unwrap() {
        pb::ledger_input::Event::ImageProcessed(m) => (IMAGES, m.encode_to_vec()),
        pb::ledger_input::Event::AccountEvent(m) => (ACCOUNTS, m.encode_to_vec()),
    };
    Outgoing { topic: topic.into(), key: key.as_bytes().to_vec(), payload, headers: Vec::new(), partition: None }
}

fn team_of(line: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    let e = v.get("imageProcessed").or(v.get("accountEvent")).unwrap();
    e["teamId"].as_str().unwrap().to_string()
}

#[test]
fn every_limit_is_dead_lettered_with_its_code_and_the_stream_goes_on() {
    let (tmp, broker, producer) = on_a_broker();
    let dir = tmp.path().join("data");
    let keyed = |line: &String| record(line, &team_of(line));
    producer.send_all(&good().iter().map(keyed).collect::<Vec<_>>()).unwrap();
    drain_until(&dir, &broker.address, 3);
    let mut bad: Vec<Outgoing> = hostile().iter().map(|(l, _)| keyed(l)).collect();
    // Keyed by another team: it would start a second history in another partition.
    bad.push(record(&image("h1-key", "h1", T, ""), "h9"));
    // Near the broker's size limit: its dead letter must still fit one.
    let huge = Outgoing {
        topic: IMAGES.into(),
        key: b"h1".to_vec(),
        payload: vec![0xff; 900 << 10],
        headers: Vec::new(),
        partition: None,
    };
    producer.send_all(&bad).unwrap();
    producer.send_all(std::slice::from_ref(&huge)).unwrap();
    producer.send_all(&tail().iter().map(keyed).collect::<Vec<_>>()).unwrap();
    drain_until(&dir, &broker.address, 5);
    drain(&dir, &broker.address);

    let dead = ledger_kafka::read_topic(&broker.address, DEADLETTER, Duration::from_secs(3)).unwrap();
    let mut seen: Vec<(String, Vec<u8>)> =
        dead.iter().map(|r| (r.header("reason.code").unwrap().to_string(), r.payload.clone())).collect();
    seen.sort();
    seen.dedup();
    let mut want: Vec<(String, Vec<u8>)> =
        hostile().iter().zip(&bad).map(|((_, code), r)| (code.to_string(), r.payload.clone())).collect();
    want.push(("key_mismatch".into(), bad.last().unwrap().payload.clone()));
    want.push(("undecodable".into(), huge.payload[..4 << 10].to_vec()));
    want.sort();
    assert_eq!(seen, want, "every hostile record is dead-lettered once, with its code and its bytes");
    for r in &dead {
        let size = r.payload.len() + r.headers.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
        assert!(size < 64 << 10, "dead letters stay small: {size} bytes");
    }
    let cut = dead.iter().find(|r| r.header("payload.size").is_some()).expect("the oversized record's dead letter");
    assert_eq!(cut.header("payload.size"), Some((900 << 10).to_string().as_str()));
    use sha2::Digest as _;
    assert_eq!(cut.header("payload.sha256"), Some(hex::encode(sha2::Sha256::digest(&huge.payload)).as_str()));
    assert_only_the_good_were_billed(&dir);
}

/// A message the broker refuses for good (here: every invoice, with the producer's
/// message limit set below an invoice's size) is set aside in the failed table, named by
/// `outbox`, and the alerts behind it are published; nothing is retried forever.
#[test]
fn a_message_refused_for_good_is_set_aside_and_the_rest_flow() {
    let (tmp, broker, producer) = on_a_broker();
    let dir = tmp.path().join("data");
    let mut lines = vec![account(
        "w-start",
        "w1",
        "2026-04-01T00:00:00Z",
        r#""planStarted":{"plan":"api_basic","bucketImages":"1000"}"#,
    )];
    lines.push(image("w-1", "w1", T, "").replace(r#""images":1"#, r#""images":1000"#));
    // May: April closes, its invoice is due.
    lines.push(image("w-2", "w1", "2026-05-03T00:00:00Z", ""));
    producer.send_all(&lines.iter().map(|l| record(l, "w1")).collect::<Vec<_>>()).unwrap();
    let out = crate::kafka::service(
        &dir,
        &broker.address,
        &["--exit-when-idle-ms", "5000", "--producer-property", "message.max.bytes=1000"],
    )
    .wait_with_output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the service does not wedge: {stderr}");
    let alerts = ledger_kafka::read_topic(&broker.address, ledger_kafka::ALERTS, Duration::from_secs(3)).unwrap();
    assert_eq!(alerts.len(), 2, "the 80 % and 100 % alerts were published");
    let invoices = ledger_kafka::read_topic(&broker.address, ledger_kafka::INVOICES, Duration::from_secs(3)).unwrap();
    assert!(invoices.is_empty(), "the invoice was refused: {invoices:?}");
    let listed = ul(&dir, &["outbox"]);
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    let failed: Vec<serde_json::Value> = listed.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(failed.len(), 1, "{}", listed.stdout);
    assert_eq!(failed[0]["kind"], "Invoice");
    assert_eq!(failed[0]["id"], "w1:2026-04-01T00:00:00Z");
    assert!(failed[0]["reason"].as_str().unwrap().to_lowercase().contains("size"), "{}", failed[0]);
    assert!(listed.stderr.contains("0 message(s) waiting to be published, 1 refused for good"), "{}", listed.stderr);
}

#[test]
fn kafka_properties_pass_through_but_never_the_ones_the_ledger_rests_on() {
    let tmp = tempfile::tempdir().unwrap();
    let run = ul(tmp.path(), &["--kafka-property", "enable.auto.commit=true", "outbox"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(
        run.stderr.trim(),
        "error: kafka properties: enable.auto.commit is set by the ledger and cannot be overridden"
    );
    let run = ul(tmp.path(), &["--kafka-property", "no-equals-sign", "outbox"]);
    assert_eq!(run.code, 2, "clap refuses it: {}", run.stderr);
}

/// Refunds waiting for their image are bounded per team: past 10,000 one is refused at
/// once, the rest of the file goes on.
#[test]
fn waiting_refunds_are_bounded_per_team() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut lines = good();
    for k in 0..=ledger_store::PARKED_PER_TEAM_MAX {
        let refund = format!(r#""qualityRefund":{{"originalEventId":"ghost-{k}","reason":"later"}}"#);
        lines.push(account(&format!("w-{k}"), "h1", T, &refund));
    }
    lines.push(image("h1-after", "h1", T, ""));
    let file = tmp.path().join("refunds.jsonl");
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let run = ul(&dir, &["import", file.to_str().unwrap()]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let n = ledger_store::PARKED_PER_TEAM_MAX;
    let refused = format!("event w-{n}): refund_unknown_event: {n} refunds of the team already wait for their image");
    assert!(run.stderr.contains(&refused), "{}", run.stderr);
    assert!(run.stderr.contains(&format!("{n} refund(s) wait for the image event they name")), "{}", run.stderr);
    let balance: serde_json::Value = serde_json::from_str(&ul_ok(&dir, &["balance", "--team", "h1"])).unwrap();
    assert_eq!(balance["allowances"][0]["consumed"], "0.04", "the image after them was appended: {balance}");
}
