//! Unit tests of transfers: key files, signed and unsigned requests.

use super::*;

#[test]
fn a_key_file_is_read_with_located_errors() {
    let k = TsigKey::parse("# veer's transfer key\n\nhmac-sha256:veer-xfr:dmVlci10ZXN0LWtleS0zMi1ieXRlcy1sb25nLW9rIQ==\n", "k.key")
        .expect("key");
    assert_eq!(k.name.to_ascii(), "veer-xfr.");
    assert_eq!(k.algorithm, TsigAlgorithm::HmacSha256);
    assert!(k.signer().is_some());
    assert!(!format!("{k:?}").contains("dmVl"), "the secret stays out of logs: {k:?}");
    let err = |text: &str| TsigKey::parse(text, "k.key").err().map(|e| e.to_string()).unwrap_or_default();
    assert_eq!(
        err("\nhmac-md5:k:c2VjcmV0LXNlY3JldC1zZWNyZXQ="),
        "k.key:2: algorithm \"hmac-md5\" is not one of hmac-sha224, hmac-sha256, hmac-sha384, hmac-sha512"
    );
    assert!(err("hmac-sha256:k:not base64!").starts_with("k.key:1: the secret is not base64"));
    assert_eq!(err("hmac-sha256:k:c2hvcnQ="), "k.key:1: the secret has 5 bytes; at least 16 are needed");
    assert_eq!(err("hmac-sha256-only"), "k.key:1: expected algorithm:name:base64-secret (as dig -y)");
    assert_eq!(err("# nothing\n"), "k.key:1: no key in the file");
    let two = "hmac-sha256:a:dmVlci10ZXN0LWtleS0zMi1ieXRlcy1sb25nLW9rIQ==\nhmac-sha256:b:dmVlci10ZXN0LWtleS0zMi1ieXRlcy1sb25nLW9rIQ==";
    assert_eq!(err(two), "k.key:2: one key per file");
}

#[test]
fn only_axfr_and_ixfr_are_transfers() {
    assert!(is_transfer(RecordType::AXFR) && is_transfer(RecordType::IXFR));
    assert!(!is_transfer(RecordType::SOA) && !is_transfer(RecordType::A));
}

#[test]
fn a_notify_names_the_zone_and_is_signed_with_the_key() {
    let zone = Name::from_ascii("example.com.").expect("name");
    let k = TsigKey::parse("hmac-sha256:veer-xfr:dmVlci10ZXN0LWtleS0zMi1ieXRlcy1sb25nLW9rIQ==", "k").expect("key");
    let bytes = signed_notify(7, &zone, None, k.signer().as_ref(), 1_700_000_000).expect("encoded");
    let m = Message::from_vec(&bytes).expect("decodes");
    assert_eq!((m.metadata.op_code, m.metadata.authoritative, m.metadata.id), (OpCode::Notify, true, 7));
    assert_eq!(m.queries[0].query_type(), RecordType::SOA);
    assert_eq!(m.signature().map(|s| s.name.to_ascii()), Some("veer-xfr.".to_string()));
}
