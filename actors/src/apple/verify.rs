//! Checking Apple's signed payloads (compact JWS with an `x5c` certificate chain), the way
//! Apple's own server library does with its online checks switched off:
//!
//! 1. the header names `ES256` and carries a non-empty `x5c`;
//! 2. exactly three certificates, of which only the leaf and the intermediate are used: the
//!    intermediate must be issued by one of the *configured* roots (never the third `x5c`
//!    entry), with signatures, validity, CA flags, key usage and path length checked at the
//!    payload's own `signedDate`;
//! 3. Apple's marker extensions on the leaf and the intermediate;
//! 4. the ES256 signature (raw `r‖s`, P-256 leaf) over `header.payload`.
//!
//! On top of that, a `signedDate` more than five minutes ahead of our clock is refused, so an
//! old certificate cannot be used with a made-up date far in the future.
//!
//! The status codes and the order in which they are produced follow Apple's library, so
//! operators can compare logs.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
use serde_json::{Map, Value};
use sha2::Digest as _;
use x509_cert::Certificate;
use x509_cert::der::{Decode, DecodePem, Encode};
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage};
use x509_cert::spki::ObjectIdentifier;

/// How far ahead of our clock a payload's `signedDate` may be.
pub const MAX_FUTURE_SKEW_MS: i64 = 5 * 60 * 1000;

/// Extension Apple puts on the certificate that signs App Store payloads.
pub const LEAF_MARKER_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113635.100.6.11.1");
/// Extension Apple puts on its Worldwide Developer Relations intermediate.
pub const INTERMEDIATE_MARKER_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113635.100.6.2.1");

const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const CURVE_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const CURVE_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const ECDSA_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.4");

/// Critical extensions a path validator understands; any other critical extension makes the
/// certificate unusable, as it does for OpenSSL.
const UNDERSTOOD_CRITICAL: [&str; 11] = [
    "2.5.29.14", // subject key identifier
    "2.5.29.15", // key usage
    "2.5.29.17", // subject alternative name
    "2.5.29.18", // issuer alternative name
    "2.5.29.19", // basic constraints
    "2.5.29.30", // name constraints
    "2.5.29.32", // certificate policies
    "2.5.29.33", // policy mappings
    "2.5.29.35", // authority key identifier
    "2.5.29.36", // policy constraints
    "2.5.29.37", // extended key usage
];

/// The App Store environment a deployment serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Environment {
    Sandbox,
    Production,
}

impl Environment {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sandbox => "Sandbox",
            Self::Production => "Production",
        }
    }
}

/// Apple's verification status codes (the numbers are the library's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VerifyStatus {
    VerificationFailure = 1,
    InvalidAppIdentifier = 2,
    InvalidCertificate = 3,
    InvalidChainLength = 4,
    /// Listed by Apple's library but never produced by it.
    InvalidChain = 5,
    InvalidEnvironment = 6,
}

impl VerifyStatus {
    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::VerificationFailure => "VERIFICATION_FAILURE",
            Self::InvalidAppIdentifier => "INVALID_APP_IDENTIFIER",
            Self::InvalidCertificate => "INVALID_CERTIFICATE",
            Self::InvalidChainLength => "INVALID_CHAIN_LENGTH",
            Self::InvalidChain => "INVALID_CHAIN",
            Self::InvalidEnvironment => "INVALID_ENVIRONMENT",
        }
    }
}

/// A refused payload: Apple's status plus a sentence for the logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} ({detail})", status.name())]
pub struct VerifyError {
    pub status: VerifyStatus,
    pub detail: String,
}

impl VerifyError {
    fn new(status: VerifyStatus, detail: impl Into<String>) -> Self {
        Self { status, detail: detail.into() }
    }
}

fn failure(detail: impl Into<String>) -> VerifyError {
    VerifyError::new(VerifyStatus::VerificationFailure, detail)
}

/// A public key able to check certificate and payload signatures.
#[derive(Clone)]
enum EcKey {
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
}

impl EcKey {
    fn from_cert(cert: &Certificate) -> Option<Self> {
        let spki = cert.tbs_certificate().subject_public_key_info();
        if spki.algorithm.oid != EC_PUBLIC_KEY {
            return None;
        }
        let curve: ObjectIdentifier = spki.algorithm.parameters.as_ref()?.decode_as().ok()?;
        let point = spki.subject_public_key.as_bytes()?;
        if curve == CURVE_P256 {
            p256::ecdsa::VerifyingKey::from_sec1_bytes(point).ok().map(Self::P256)
        } else if curve == CURVE_P384 {
            p384::ecdsa::VerifyingKey::from_sec1_bytes(point).ok().map(Self::P384)
        } else {
            None
        }
    }

    /// Checks a DER-encoded ECDSA signature over an already hashed message.
    fn verify_der_prehash(&self, prehash: &[u8], der_sig: &[u8]) -> bool {
        match self {
            Self::P256(k) => {
                p256::ecdsa::Signature::from_der(der_sig).is_ok_and(|s| k.verify_prehash(prehash, &s).is_ok())
            }
            Self::P384(k) => {
                p384::ecdsa::Signature::from_der(der_sig).is_ok_and(|s| k.verify_prehash(prehash, &s).is_ok())
            }
        }
    }
}

/// A configured root certificate.
struct Anchor {
    cert: Certificate,
    subject_der: Vec<u8>,
    /// None for roots whose key cannot sign an ECDSA chain (Apple's old RSA root).
    key: Option<EcKey>,
}

/// Checks Apple's signed payloads for one deployment.
pub struct Verifier {
    anchors: Vec<Anchor>,
    environment: Environment,
    bundle_id: String,
    /// Compared in Production only (Apple's library ignores it in Sandbox).
    app_apple_id: Option<i64>,
}

/// Reads one root certificate, DER or PEM.
pub fn parse_certificate(bytes: &[u8]) -> Result<Certificate, String> {
    if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
        Certificate::from_pem(bytes).map_err(|e| format!("not a PEM X.509 certificate: {e}"))
    } else {
        Certificate::from_der(bytes).map_err(|e| format!("not a DER X.509 certificate: {e}"))
    }
}

impl Verifier {
    /// `roots` are (name for messages, file contents). Production needs the app id.
    pub fn new(
        roots: &[(String, Vec<u8>)],
        environment: Environment,
        bundle_id: &str,
        app_apple_id: Option<i64>,
    ) -> Result<Self, String> {
        if environment == Environment::Production && app_apple_id.is_none() {
            return Err("the Apple app id is required in the Production environment".into());
        }
        let mut anchors = Vec::with_capacity(roots.len());
        for (name, bytes) in roots {
            let cert = parse_certificate(bytes).map_err(|e| format!("root certificate {name} is {e}"))?;
            let subject_der = cert
                .tbs_certificate()
                .subject()
                .to_der()
                .map_err(|e| format!("root certificate {name} has an unusable subject: {e}"))?;
            let key = EcKey::from_cert(&cert);
            anchors.push(Anchor { cert, subject_der, key });
        }
        Ok(Self { anchors, environment, bundle_id: bundle_id.to_string(), app_apple_id })
    }

    pub fn environment(&self) -> Environment {
        self.environment
    }

    /// The outer notification payload (`signedPayload`): bundle id, app id (Production only)
    /// and environment are taken from `data`, else `summary`, else `externalPurchaseToken`.
    pub fn verify_notification(&self, jws: &str, now_ms: i64) -> Result<Map<String, Value>, VerifyError> {
        let payload = self.decode_signed(jws, now_ms)?;
        let (bundle, app_id, environment) = notification_identity(&payload);
        let app_id_ok = self.environment != Environment::Production || app_id == self.app_apple_id;
        if bundle.as_deref() != Some(self.bundle_id.as_str()) || !app_id_ok {
            return Err(VerifyError::new(
                VerifyStatus::InvalidAppIdentifier,
                "the notification is for another app (bundle id or app id differs)",
            ));
        }
        self.check_environment(environment.as_deref(), "notification")?;
        Ok(payload)
    }

    /// A nested `signedTransactionInfo`: bundle id and environment.
    pub fn verify_transaction(&self, jws: &str, now_ms: i64) -> Result<Map<String, Value>, VerifyError> {
        let payload = self.decode_signed(jws, now_ms)?;
        if payload.get("bundleId").and_then(Value::as_str) != Some(self.bundle_id.as_str()) {
            return Err(VerifyError::new(VerifyStatus::InvalidAppIdentifier, "the transaction is for another app"));
        }
        self.check_environment(payload.get("environment").and_then(Value::as_str), "transaction")?;
        Ok(payload)
    }

    /// A nested `signedRenewalInfo`: environment only.
    pub fn verify_renewal_info(&self, jws: &str, now_ms: i64) -> Result<Map<String, Value>, VerifyError> {
        let payload = self.decode_signed(jws, now_ms)?;
        self.check_environment(payload.get("environment").and_then(Value::as_str), "renewal info")?;
        Ok(payload)
    }

    fn check_environment(&self, found: Option<&str>, what: &str) -> Result<(), VerifyError> {
        if found == Some(self.environment.as_str()) {
            Ok(())
        } else {
            Err(VerifyError::new(
                VerifyStatus::InvalidEnvironment,
                format!(
                    "the {what} is for the {} environment, this server serves {}",
                    found.unwrap_or("(unnamed)"),
                    self.environment.as_str()
                ),
            ))
        }
    }

    /// Header, chain and signature of one compact JWS; returns its payload.
    pub fn decode_signed(&self, jws: &str, now_ms: i64) -> Result<Map<String, Value>, VerifyError> {
        let mut parts = jws.split('.');
        let (Some(header_b64), Some(payload_b64), Some(sig_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(failure("not a compact JWS (three dot-separated parts expected)"));
        };
        let header = json_object(header_b64).ok_or_else(|| failure("the JWS header is not a JSON object"))?;
        let payload = json_object(payload_b64).ok_or_else(|| failure("the JWS payload is not a JSON object"))?;

        let x5c = match header.get("x5c") {
            Some(Value::Array(certs)) if !certs.is_empty() => certs,
            _ => return Err(failure("the JWS header has no x5c certificate chain")),
        };
        if header.get("alg").and_then(Value::as_str) != Some("ES256") {
            return Err(failure("the JWS algorithm is not ES256"));
        }

        let signed_ms = effective_date_ms(&payload)?.unwrap_or(now_ms);
        let leaf_key = self.verify_chain(x5c, signed_ms.div_euclid(1000))?;

        let EcKey::P256(leaf_key) = leaf_key else {
            return Err(failure("the signing certificate's key is not P-256"));
        };
        let sig = b64url(sig_b64).ok_or_else(|| failure("the JWS signature is not base64url"))?;
        let sig = p256::ecdsa::Signature::from_slice(&sig)
            .map_err(|_| failure("the JWS signature is not a 64-byte r||s value"))?;
        let signing_input = &jws[..header_b64.len() + 1 + payload_b64.len()];
        leaf_key.verify(signing_input.as_bytes(), &sig).map_err(|_| failure("the JWS signature does not verify"))?;

        if signed_ms > now_ms.saturating_add(MAX_FUTURE_SKEW_MS) {
            return Err(failure(format!("signedDate {signed_ms} lies in the future (now {now_ms})")));
        }
        Ok(payload)
    }

    /// Checks `x5c` against the configured roots at `at_secs`; returns the leaf's key.
    fn verify_chain(&self, x5c: &[Value], at_secs: i64) -> Result<EcKey, VerifyError> {
        if self.anchors.is_empty() {
            return Err(VerifyError::new(VerifyStatus::InvalidCertificate, "no root certificates are configured"));
        }
        if x5c.len() != 3 {
            return Err(VerifyError::new(
                VerifyStatus::InvalidChainLength,
                format!("the x5c chain has {} certificates, 3 expected", x5c.len()),
            ));
        }
        let leaf = chain_cert(&x5c[0], "leaf")?;
        let intermediate = chain_cert(&x5c[1], "intermediate")?;
        // x5c[2] is deliberately ignored: only configured roots are trusted.
        let leaf_key = self.validate_path(&leaf, &intermediate, at_secs).map_err(failure)?;
        if !has_extension(&leaf, LEAF_MARKER_OID) {
            return Err(failure("the signing certificate lacks Apple's App Store marker extension"));
        }
        if !has_extension(&intermediate, INTERMEDIATE_MARKER_OID) {
            return Err(failure("the intermediate certificate lacks Apple's WWDR marker extension"));
        }
        Ok(leaf_key)
    }

    /// leaf → intermediate → a configured root: names, signatures, validity, CA constraints.
    fn validate_path(&self, leaf: &Certificate, intermediate: &Certificate, at_secs: i64) -> Result<EcKey, String> {
        let der = |n: &x509_cert::name::Name| n.to_der().map_err(|e| format!("unreadable name: {e}"));
        if der(leaf.tbs_certificate().issuer())? != der(intermediate.tbs_certificate().subject())? {
            return Err("the signing certificate was not issued by the intermediate".into());
        }
        let inter_issuer = der(intermediate.tbs_certificate().issuer())?;
        let mut candidates = self.anchors.iter().filter(|a| a.subject_der == inter_issuer).peekable();
        if candidates.peek().is_none() {
            return Err("the intermediate was not issued by a configured root".into());
        }
        let root = candidates
            .find(|a| a.key.as_ref().is_some_and(|k| signed_by(intermediate, k)))
            .ok_or("the intermediate's signature does not verify with a configured root")?;
        let inter_key = EcKey::from_cert(intermediate).ok_or("the intermediate's key is not P-256 or P-384")?;
        if !signed_by(leaf, &inter_key) {
            return Err("the signing certificate's signature does not verify with the intermediate".into());
        }
        for (what, cert) in [("signing", leaf), ("intermediate", intermediate), ("root", &root.cert)] {
            check_validity(cert, at_secs).map_err(|e| format!("the {what} certificate {e}"))?;
            check_critical_extensions(cert).map_err(|e| format!("the {what} certificate {e}"))?;
        }
        // One intermediate sits below the root, none below the intermediate.
        check_ca(intermediate, 0).map_err(|e| format!("the intermediate certificate {e}"))?;
        check_ca(&root.cert, 1).map_err(|e| format!("the root certificate {e}"))?;
        EcKey::from_cert(leaf).ok_or_else(|| "the signing certificate's key is not P-256 or P-384".into())
    }
}

/// Bundle id, app id and environment of a notification payload.
fn notification_identity(payload: &Map<String, Value>) -> (Option<String>, Option<i64>, Option<String>) {
    let text = |o: &Map<String, Value>, k: &str| o.get(k).and_then(Value::as_str).map(str::to_string);
    for key in ["data", "summary"] {
        if let Some(Value::Object(o)) = payload.get(key) {
            return (text(o, "bundleId"), o.get("appAppleId").and_then(Value::as_i64), text(o, "environment"));
        }
    }
    if let Some(Value::Object(o)) = payload.get("externalPurchaseToken") {
        let environment = match o.get("externalPurchaseId").and_then(Value::as_str) {
            Some(id) if id.starts_with("SANDBOX") => Environment::Sandbox,
            _ => Environment::Production,
        };
        return (text(o, "bundleId"), o.get("appAppleId").and_then(Value::as_i64), Some(environment.as_str().into()));
    }
    (None, None, None)
}

/// The payload's `signedDate`, else `receiptCreationDate`, in ms; None when neither is there.
fn effective_date_ms(payload: &Map<String, Value>) -> Result<Option<i64>, VerifyError> {
    for key in ["signedDate", "receiptCreationDate"] {
        match payload.get(key) {
            None | Some(Value::Null) => continue,
            Some(v) => {
                let ms = v
                    .as_i64()
                    .or_else(|| v.as_f64().filter(|f| f.is_finite() && f.abs() < 9.0e15).map(|f| f.floor() as i64))
                    .ok_or_else(|| failure(format!("{key} is not a number")))?;
                return Ok(Some(ms));
            }
        }
    }
    Ok(None)
}

fn b64url(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).ok()
}

fn json_object(segment: &str) -> Option<Map<String, Value>> {
    match serde_json::from_slice(&b64url(segment)?).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

fn chain_cert(v: &Value, what: &str) -> Result<Certificate, VerifyError> {
    let bad = |why: &str| VerifyError::new(VerifyStatus::InvalidCertificate, format!("the {what} certificate {why}"));
    let text = v.as_str().ok_or_else(|| bad("is not a string"))?;
    let der = STANDARD.decode(text).map_err(|_| bad("is not standard base64"))?;
    Certificate::from_der(&der).map_err(|_| bad("is not a DER X.509 certificate"))
}

fn has_extension(cert: &Certificate, oid: ObjectIdentifier) -> bool {
    cert.tbs_certificate().extensions().is_some_and(|exts| exts.iter().any(|e| e.extn_id == oid))
}

/// Whether `issuer_key` made `cert`'s signature.
fn signed_by(cert: &Certificate, issuer_key: &EcKey) -> bool {
    let alg = cert.signature_algorithm();
    if alg != cert.tbs_certificate().signature() || alg.parameters.is_some() {
        return false;
    }
    let (Ok(tbs), Some(sig)) = (cert.tbs_certificate().to_der(), cert.signature().as_bytes()) else {
        return false;
    };
    let digest: Vec<u8> = match alg.oid {
        oid if oid == ECDSA_SHA256 => sha2::Sha256::digest(&tbs).to_vec(),
        oid if oid == ECDSA_SHA384 => sha2::Sha384::digest(&tbs).to_vec(),
        oid if oid == ECDSA_SHA512 => sha2::Sha512::digest(&tbs).to_vec(),
        _ => return false,
    };
    issuer_key.verify_der_prehash(&digest, sig)
}

fn check_validity(cert: &Certificate, at_secs: i64) -> Result<(), String> {
    let v = cert.tbs_certificate().validity();
    let secs = |t: x509_cert::time::Time| i64::try_from(t.to_unix_duration().as_secs()).unwrap_or(i64::MAX);
    if at_secs < secs(v.not_before) {
        return Err("is not valid yet at the payload's signing date".into());
    }
    if at_secs > secs(v.not_after) {
        return Err("had expired at the payload's signing date".into());
    }
    Ok(())
}

fn check_critical_extensions(cert: &Certificate) -> Result<(), String> {
    for ext in cert.tbs_certificate().extensions().into_iter().flatten() {
        if ext.critical && !UNDERSTOOD_CRITICAL.contains(&ext.extn_id.to_string().as_str()) {
            return Err(format!("has an unsupported critical extension {}", ext.extn_id));
        }
    }
    Ok(())
}

/// A certificate that signs others: CA basic constraints (critical), key usage allowing
/// certificate signing, and a path length that admits `below` intermediates under it.
fn check_ca(cert: &Certificate, below: u8) -> Result<(), String> {
    let tbs = cert.tbs_certificate();
    let bc = match tbs.get_extension::<BasicConstraints>() {
        Ok(Some((critical, bc))) => {
            if !critical {
                return Err("has non-critical basic constraints".into());
            }
            bc
        }
        Ok(None) => return Err("is not a CA (no basic constraints)".into()),
        Err(_) => return Err("has unreadable basic constraints".into()),
    };
    if !bc.ca {
        return Err("is not a CA".into());
    }
    if bc.path_len_constraint.is_some_and(|n| n < below) {
        return Err("has a path length constraint that forbids this chain".into());
    }
    match tbs.get_extension::<KeyUsage>() {
        Ok(Some((_, ku))) if ku.key_cert_sign() => Ok(()),
        Ok(Some(_)) => Err("may not sign certificates (key usage)".into()),
        Ok(None) => Err("has no key usage extension".into()),
        Err(_) => Err("has an unreadable key usage extension".into()),
    }
}
