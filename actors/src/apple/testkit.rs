//! Test support: a generated certificate chain shaped like Apple's (P-384 root and
//! intermediate, P-256 leaf, Apple's marker extensions) and helpers that sign notifications
//! with it. Every part of the chain can be bent to exercise one refusal at a time.
//! Built for this crate's tests and, with the `test-support` feature, for other crates' tests.

use std::str::FromStr;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use p256::ecdsa::signature::Signer as _;
use serde_json::{Value, json};
use x509_cert::builder::profile::BuilderProfile;
use x509_cert::builder::{Builder, CertificateBuilder};
use x509_cert::certificate::TbsCertificate;
use x509_cert::der::asn1::{GeneralizedTime, OctetString};
use x509_cert::der::{Encode, oid::ObjectIdentifier};
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage, KeyUsages};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{SubjectPublicKeyInfoOwned, SubjectPublicKeyInfoRef};
use x509_cert::time::{Time, Validity};

use super::verify::{INTERMEDIATE_MARKER_OID, LEAF_MARKER_OID};

pub const BUNDLE_ID: &str = "com.loki-project.loki-messenger";
pub const APP_APPLE_ID: i64 = 1470168868;
pub const PRODUCT_1_MONTH: &str = "com.getsession.org.pro_sub_1_month";
pub const PRODUCT_3_MONTHS: &str = "com.getsession.org.pro_sub_3_months";

/// 2000-01-01 and 2049-12-31, in Unix seconds.
pub const Y2000: i64 = 946_684_800;
pub const Y2049: i64 = 2_524_521_600;

/// A signing key of either curve Apple's chains use.
#[derive(Clone)]
pub enum Key {
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
}

impl Key {
    /// A deterministic key from one seed byte (tests need no randomness).
    pub fn p256(seed: u8) -> Self {
        let mut b = [seed; 32];
        b[0] = 1;
        Self::P256(p256::ecdsa::SigningKey::from_slice(&b).expect("a valid P-256 scalar"))
    }

    pub fn p384(seed: u8) -> Self {
        let mut b = [seed; 48];
        b[0] = 1;
        Self::P384(p384::ecdsa::SigningKey::from_slice(&b).expect("a valid P-384 scalar"))
    }

    fn spki(&self) -> SubjectPublicKeyInfoOwned {
        match self {
            Self::P256(k) => SubjectPublicKeyInfoOwned::from_key(k.verifying_key()),
            Self::P384(k) => SubjectPublicKeyInfoOwned::from_key(k.verifying_key()),
        }
        .expect("an encodable public key")
    }

    /// The raw `r‖s` signature of `msg` (SHA-256 for P-256, SHA-384 for P-384).
    pub fn sign_raw(&self, msg: &[u8]) -> Vec<u8> {
        match self {
            Self::P256(k) => {
                let s: p256::ecdsa::Signature = k.sign(msg);
                s.to_bytes().to_vec()
            }
            Self::P384(k) => {
                let s: p384::ecdsa::Signature = k.sign(msg);
                s.to_bytes().to_vec()
            }
        }
    }

    /// The same signature in ASN.1 DER, as JWS must not carry it.
    pub fn sign_der(&self, msg: &[u8]) -> Vec<u8> {
        match self {
            Self::P256(k) => {
                let s: p256::ecdsa::Signature = k.sign(msg);
                s.to_der().as_bytes().to_vec()
            }
            Self::P384(k) => {
                let s: p384::ecdsa::Signature = k.sign(msg);
                s.to_der().as_bytes().to_vec()
            }
        }
    }
}

/// What goes into one certificate.
#[derive(Clone)]
pub struct CertSpec {
    pub subject: String,
    pub not_before: i64,
    pub not_after: i64,
    /// (critical, CA, path length)
    pub basic_constraints: Option<(bool, bool, Option<u8>)>,
    pub key_usage: Option<KeyUsage>,
    pub marker: Option<ObjectIdentifier>,
    pub extra: Vec<Extension>,
}

struct FixedProfile {
    subject: Name,
    issuer: Name,
}

impl BuilderProfile for FixedProfile {
    fn get_issuer(&self, _: &Name) -> Name {
        self.issuer.clone()
    }
    fn get_subject(&self) -> Name {
        self.subject.clone()
    }
    fn build_extensions(
        &self,
        _: SubjectPublicKeyInfoRef<'_>,
        _: SubjectPublicKeyInfoRef<'_>,
        _: &TbsCertificate,
    ) -> x509_cert::builder::Result<Vec<Extension>> {
        Ok(Vec::new())
    }
}

fn time(secs: i64) -> Time {
    let d = Duration::from_secs(u64::try_from(secs).expect("a time after 1970"));
    Time::GeneralTime(GeneralizedTime::from_unix_duration(d).expect("a representable time"))
}

fn extension(oid: ObjectIdentifier, critical: bool, value: Vec<u8>) -> Extension {
    Extension { extn_id: oid, critical, extn_value: OctetString::new(value).expect("an octet string") }
}

/// DER NULL, the value Apple gives its marker extensions.
pub fn marker(oid: ObjectIdentifier) -> Extension {
    extension(oid, false, vec![0x05, 0x00])
}

/// Issues a certificate for `subject_key`, signed by `issuer_key` in the name `issuer`.
pub fn issue(spec: &CertSpec, subject_key: &Key, issuer: &str, issuer_key: &Key, serial: u32) -> Vec<u8> {
    let profile = FixedProfile {
        subject: Name::from_str(&spec.subject).expect("a subject name"),
        issuer: Name::from_str(issuer).expect("an issuer name"),
    };
    let validity = Validity::new(time(spec.not_before), time(spec.not_after));
    let mut b = CertificateBuilder::new(profile, SerialNumber::from(serial), validity, subject_key.spki())
        .expect("a certificate builder");
    if let Some((critical, ca, path_len_constraint)) = spec.basic_constraints {
        let value = BasicConstraints { ca, path_len_constraint }.to_der().expect("basic constraints");
        b.add_extension(extension(ObjectIdentifier::new_unwrap("2.5.29.19"), critical, value)).expect("extension");
    }
    if let Some(ku) = spec.key_usage {
        let value = ku.to_der().expect("key usage");
        b.add_extension(extension(ObjectIdentifier::new_unwrap("2.5.29.15"), true, value)).expect("extension");
    }
    if let Some(oid) = spec.marker {
        b.add_extension(marker(oid)).expect("extension");
    }
    for e in &spec.extra {
        b.add_extension(e.clone()).expect("extension");
    }
    let cert = match issuer_key {
        Key::P256(k) => b.build::<_, p256::ecdsa::DerSignature>(k),
        Key::P384(k) => b.build::<_, p384::ecdsa::DerSignature>(k),
    }
    .expect("a signed certificate");
    cert.to_der().expect("an encodable certificate")
}

/// The shape of a test chain.
#[derive(Clone)]
pub struct ChainSpec {
    pub seed: u8,
    pub root: CertSpec,
    pub intermediate: CertSpec,
    pub leaf: CertSpec,
    pub leaf_p384: bool,
}

impl ChainSpec {
    /// A chain built like Apple's; `seed` makes different chains (and different roots).
    pub fn apple_like(seed: u8) -> Self {
        let ca_usage = KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign);
        Self {
            seed,
            root: CertSpec {
                subject: format!("CN=Test Root CA {seed},O=Test"),
                not_before: Y2000,
                not_after: Y2049,
                basic_constraints: Some((true, true, None)),
                key_usage: Some(ca_usage),
                marker: None,
                extra: vec![],
            },
            intermediate: CertSpec {
                subject: format!("CN=Test WWDR {seed},O=Test"),
                not_before: Y2000,
                not_after: Y2049,
                basic_constraints: Some((true, true, Some(0))),
                key_usage: Some(ca_usage),
                marker: Some(INTERMEDIATE_MARKER_OID),
                extra: vec![],
            },
            leaf: CertSpec {
                subject: format!("CN=Test Store Signing {seed},O=Test"),
                not_before: Y2000,
                not_after: Y2049,
                basic_constraints: Some((true, false, None)),
                key_usage: Some(KeyUsage(KeyUsages::DigitalSignature.into())),
                marker: Some(LEAF_MARKER_OID),
                extra: vec![],
            },
            leaf_p384: false,
        }
    }
}

/// A generated chain and its keys.
#[derive(Clone)]
pub struct TestChain {
    pub root_der: Vec<u8>,
    pub intermediate_der: Vec<u8>,
    pub leaf_der: Vec<u8>,
    pub leaf_key: Key,
}

impl TestChain {
    pub fn new(spec: &ChainSpec) -> Self {
        let s = spec.seed;
        let root_key = Key::p384(s.wrapping_mul(3).wrapping_add(1));
        let inter_key = Key::p384(s.wrapping_mul(3).wrapping_add(2));
        let leaf_key =
            if spec.leaf_p384 { Key::p384(s.wrapping_mul(3).wrapping_add(3)) } else { Key::p256(s.wrapping_add(7)) };
        let root_der = issue(&spec.root, &root_key, &spec.root.subject, &root_key, 1);
        let intermediate_der = issue(&spec.intermediate, &inter_key, &spec.root.subject, &root_key, 2);
        let leaf_der = issue(&spec.leaf, &leaf_key, &spec.intermediate.subject, &inter_key, 3);
        Self { root_der, intermediate_der, leaf_der, leaf_key }
    }

    pub fn apple_like(seed: u8) -> Self {
        Self::new(&ChainSpec::apple_like(seed))
    }

    /// `x5c` as Apple sends it: standard base64 DER, leaf first, root last.
    pub fn x5c(&self) -> Vec<String> {
        [&self.leaf_der, &self.intermediate_der, &self.root_der].iter().map(|d| STANDARD.encode(d)).collect()
    }

    pub fn header(&self) -> Value {
        json!({ "alg": "ES256", "x5c": self.x5c() })
    }

    /// A compact JWS of `payload` under `header`, signed by the leaf.
    pub fn sign_with_header(&self, header: &Value, payload: &Value) -> String {
        let input =
            format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(payload.to_string()));
        let sig = self.leaf_key.sign_raw(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    pub fn sign(&self, payload: &Value) -> String {
        self.sign_with_header(&self.header(), payload)
    }

    /// Signs the nested transaction and renewal info into `body.data`, then the body.
    pub fn sign_notification(&self, body: &Value, tx: Option<&Value>, renewal: Option<&Value>) -> String {
        let mut body = body.clone();
        if let Some(data) = body.get_mut("data").and_then(Value::as_object_mut) {
            if let Some(tx) = tx {
                data.insert("signedTransactionInfo".into(), Value::String(self.sign(tx)));
            }
            if let Some(r) = renewal {
                data.insert("signedRenewalInfo".into(), Value::String(self.sign(r)));
            }
        }
        self.sign(&body)
    }
}

/// A notification body for `environment` ("Sandbox" or "Production").
pub fn notification_body(kind: &str, subtype: Option<&str>, uuid: &str, signed_date: i64, environment: &str) -> Value {
    let mut body = json!({
        "notificationType": kind,
        "notificationUUID": uuid,
        "version": "2.0",
        "signedDate": signed_date,
        "data": {
            "appAppleId": APP_APPLE_ID,
            "bundleId": BUNDLE_ID,
            "bundleVersion": "1",
            "environment": environment,
            "status": 1,
        },
    });
    if let Some(s) = subtype {
        body["subtype"] = Value::String(s.into());
    }
    body
}

/// The identifiers and dates of one test transaction.
#[derive(Debug, Clone)]
pub struct TxSpec {
    pub original: String,
    pub tx_id: String,
    pub web_order: String,
    pub product: String,
    pub purchase: i64,
    pub expires: i64,
}

/// A decoded `signedTransactionInfo` payload for an auto-renewable purchase.
pub fn transaction_payload(t: &TxSpec, signed_date: i64, environment: &str) -> Value {
    json!({
        "transactionId": t.tx_id,
        "originalTransactionId": t.original,
        "webOrderLineItemId": t.web_order,
        "bundleId": BUNDLE_ID,
        "productId": t.product,
        "subscriptionGroupIdentifier": "21752814",
        "purchaseDate": t.purchase,
        "originalPurchaseDate": t.purchase,
        "expiresDate": t.expires,
        "quantity": 1,
        "type": "Auto-Renewable Subscription",
        "inAppOwnershipType": "PURCHASED",
        "signedDate": signed_date,
        "environment": environment,
        "transactionReason": "PURCHASE",
        "storefront": "AUS",
        "storefrontId": "143460",
        "price": 1990,
        "currency": "AUD",
    })
}

/// A decoded `signedRenewalInfo` payload.
pub fn renewal_payload(t: &TxSpec, signed_date: i64, environment: &str) -> Value {
    json!({
        "originalTransactionId": t.original,
        "autoRenewProductId": t.product,
        "productId": t.product,
        "autoRenewStatus": 1,
        "signedDate": signed_date,
        "environment": environment,
        "recentSubscriptionStartDate": t.purchase,
        "renewalDate": t.expires,
    })
}
