use super::*;

fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
}

#[test]
fn the_serving_cert_names_the_service_and_extra_sans_and_expires_in_90_days() {
    let sans = serving_sans(
        "dumpwatch-operator",
        "dumpwatch",
        &["127.0.0.1".into(), "dumpwatch-operator.dumpwatch.svc".into()],
    );
    assert_eq!(
        sans,
        ["dumpwatch-operator.dumpwatch.svc", "dumpwatch-operator.dumpwatch.svc.cluster.local", "127.0.0.1"],
        "duplicates are dropped"
    );
    let ca = generate_ca(now()).unwrap();
    let ca_info = inspect(&ca.cert).unwrap();
    assert_eq!(ca_info.not_after, now() + CA_VALIDITY);
    let serving = issue_serving(&ca, &sans, now(), SERVING_VALIDITY).unwrap();
    let info = inspect(&serving.cert).unwrap();
    assert_eq!(info.sans, sans);
    assert_eq!(info.not_after, now() + Duration::days(90));
    assert!(serving.key.contains("PRIVATE KEY"));
    assert!(!format!("{serving:?}").contains("PRIVATE KEY"), "Debug keeps the key out of logs");
}

#[test]
fn the_serving_cert_chains_to_the_ca_for_a_real_tls_verifier() {
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject};
    let ca = generate_ca(OffsetDateTime::now_utc()).unwrap();
    let sans = serving_sans("op", "ns", &["127.0.0.1".into()]);
    let serving = issue_serving(&ca, &sans, OffsetDateTime::now_utc(), SERVING_VALIDITY).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca.cert.as_bytes()).unwrap()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(std::sync::Arc::new(roots), provider)
        .build()
        .unwrap();
    let leaf = CertificateDer::from_pem_slice(serving.cert.as_bytes()).unwrap();
    for name in ["op.ns.svc", "op.ns.svc.cluster.local", "127.0.0.1"] {
        let server = ServerName::try_from(name).unwrap();
        verifier
            .verify_server_cert(&leaf, &[], &server, &[], UnixTime::now())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let other = ServerName::try_from("other.ns.svc").unwrap();
    assert!(verifier.verify_server_cert(&leaf, &[], &other, &[], UnixTime::now()).is_err());
    // A serving cert signed by another CA is not trusted.
    let stranger = issue_serving(
        &generate_ca(OffsetDateTime::now_utc()).unwrap(),
        &sans,
        OffsetDateTime::now_utc(),
        SERVING_VALIDITY,
    )
    .unwrap();
    let leaf = CertificateDer::from_pem_slice(stranger.cert.as_bytes()).unwrap();
    let server = ServerName::try_from("op.ns.svc").unwrap();
    assert!(verifier.verify_server_cert(&leaf, &[], &server, &[], UnixTime::now()).is_err());
}

#[test]
fn rotation_starts_thirty_days_before_expiry() {
    let not_after = now() + Duration::days(90);
    assert!(!needs_rotation(not_after, now()));
    assert!(!needs_rotation(not_after, now() + Duration::days(59)));
    assert!(needs_rotation(not_after, now() + Duration::days(60)));
    assert!(needs_rotation(not_after, not_after + Duration::days(1)), "expired");
}

#[test]
fn a_cert_missing_a_wanted_san_is_replaced_even_when_fresh() {
    let info = CertInfo { not_after: now() + Duration::days(90), sans: vec!["a.ns.svc".into()], serial: vec![1] };
    assert_eq!(rotation_reason(&info, &["a.ns.svc".into()], now()), None);
    let reason = rotation_reason(&info, &["a.ns.svc".into(), "127.0.0.1".into()], now()).unwrap();
    assert!(reason.contains("127.0.0.1"), "{reason}");
    let reason = rotation_reason(&info, &["a.ns.svc".into()], now() + Duration::days(80)).unwrap();
    assert!(reason.contains("expires"), "{reason}");
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    assert!(inspect("not a certificate").is_err());
    assert!(inspect("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").is_err());
}
