//! Certificates of the webhook, as pure functions: a CA that lives 10 years (its PEM is baked
//! into every injected sidecar, so it must not change), serving certificates it signs that live
//! 90 days and are replaced a third of their life before they expire.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};
use x509_parser::extensions::GeneralName;

use crate::Error;

pub const CA_VALIDITY: Duration = Duration::days(3650);
pub const SERVING_VALIDITY: Duration = Duration::days(90);
/// A serving certificate is replaced when less than this is left (a month of slack for a
/// cluster whose operator was down, or whose clock is off).
pub const RENEW_BEFORE: Duration = Duration::days(30);
/// Certificates start a little in the past: the API server's clock may lag ours.
const BACKDATE: Duration = Duration::minutes(5);

/// A certificate and its private key, both PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct CertPem {
    pub cert: String,
    pub key: String,
}

impl std::fmt::Debug for CertPem {
    // The key stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertPem").field("cert", &self.cert).finish_non_exhaustive()
    }
}

/// What the operator needs to know of a certificate it finds (in its Secret or on disk).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub not_after: OffsetDateTime,
    /// DNS names and IP addresses, as text.
    pub sans: Vec<String>,
    pub serial: Vec<u8>,
}

/// The names the API server (and sidecars) use to reach the operator's Service, then `extra`
/// (e.g. `127.0.0.1` when the webhook is registered by URL in tests).
pub fn serving_sans(service: &str, namespace: &str, extra: &[String]) -> Vec<String> {
    let mut sans = vec![format!("{service}.{namespace}.svc"), format!("{service}.{namespace}.svc.cluster.local")];
    for s in extra {
        if !sans.contains(s) {
            sans.push(s.clone());
        }
    }
    sans
}

/// A new self-signed CA, valid from `now` for [`CA_VALIDITY`].
pub fn generate_ca(now: OffsetDateTime) -> Result<CertPem, Error> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, "dumpwatch operator CA");
    params.distinguished_name.push(DnType::OrganizationName, "dumpwatch.dev");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.not_before = now - BACKDATE;
    params.not_after = now + CA_VALIDITY;
    let cert = params.self_signed(&key)?;
    Ok(CertPem { cert: cert.pem(), key: key.serialize_pem() })
}

/// A serving certificate for `sans`, signed by `ca`, valid from `now` for `validity`.
pub fn issue_serving(ca: &CertPem, sans: &[String], now: OffsetDateTime, validity: Duration) -> Result<CertPem, Error> {
    let ca_key = KeyPair::from_pem(&ca.key)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert, ca_key)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(sans.to_vec())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, sans.first().map(String::as_str).unwrap_or("dumpwatch"));
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = now - BACKDATE;
    params.not_after = now + validity;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(CertPem { cert: cert.pem(), key: key.serialize_pem() })
}

/// Reads the first certificate of a PEM text.
pub fn inspect(cert_pem: &str) -> Result<CertInfo, Error> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).map_err(|e| Error::bad_cert("PEM", e))?;
    inspect_der(&pem.contents)
}

/// Reads a DER certificate (as presented in a TLS handshake).
pub fn inspect_der(der: &[u8]) -> Result<CertInfo, Error> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| Error::bad_cert("X.509", e))?;
    let not_after = cert.validity().not_after.to_datetime();
    let mut sans = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for name in &ext.value.general_names {
            match name {
                GeneralName::DNSName(d) => sans.push(d.to_string()),
                GeneralName::IPAddress(ip) => match ip.len() {
                    4 => sans.push(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*ip).unwrap()).to_string()),
                    16 => sans.push(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*ip).unwrap()).to_string()),
                    _ => {}
                },
                _ => {}
            }
        }
    }
    Ok(CertInfo { not_after, sans, serial: cert.raw_serial().to_vec() })
}

/// Whether a serving certificate expiring at `not_after` must be replaced at `now`.
pub fn needs_rotation(not_after: OffsetDateTime, now: OffsetDateTime) -> bool {
    now + RENEW_BEFORE >= not_after
}

/// Why the serving certificate in hand must be replaced, if it must: it expires soon, or it
/// does not name every SAN wanted (the Service or `--extra-san` changed).
pub fn rotation_reason(serving: &CertInfo, wanted_sans: &[String], now: OffsetDateTime) -> Option<String> {
    if needs_rotation(serving.not_after, now) {
        return Some(format!("it expires at {}", serving.not_after));
    }
    let missing: Vec<&str> = wanted_sans.iter().filter(|s| !serving.sans.contains(s)).map(String::as_str).collect();
    (!missing.is_empty()).then(|| format!("it does not name {}", missing.join(", ")))
}

#[cfg(test)]
#[path = "certs_tests.rs"]
mod tests;
