//! Service-account authentication: an RS256-signed JWT exchanged for an OAuth2 access token
//! (the JWT-bearer grant). One token carries both scopes the backend needs.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rsa::PrivateKey;
use rsa::pkcs8::DecodePrivateKey;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::outbound::percent_encode;

pub const SCOPES: &str = "https://www.googleapis.com/auth/androidpublisher https://www.googleapis.com/auth/pubsub";
pub const DEFAULT_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";
pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Lifetime asked for in the assertion.
pub const ASSERTION_LIFETIME_S: i64 = 3600;

/// The parts of a service-account key file the backend uses.
pub struct ServiceAccount {
    pub client_email: String,
    pub private_key_id: Option<String>,
    /// `token_uri` of the key file, if it names one.
    pub token_uri: Option<String>,
    key: PrivateKey,
}

impl std::fmt::Debug for ServiceAccount {
    // The private key is a secret: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("client_email", &self.client_email)
            .field("private_key_id", &self.private_key_id)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

impl ServiceAccount {
    /// Reads the JSON key file's contents.
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("the key file is not JSON: {e}"))?;
        let field = |k: &str| v.get(k).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
        let client_email = field("client_email").ok_or("the key file has no client_email")?;
        let pem = field("private_key").ok_or("the key file has no private_key")?;
        let key = PrivateKey::from_pkcs8_pem(&pem)
            .map_err(|e| format!("the key file's private_key is not a PKCS#8 RSA key: {e}"))?;
        Ok(Self { client_email, private_key_id: field("private_key_id"), token_uri: field("token_uri"), key })
    }

    /// The signed assertion for `audience` (the token endpoint), valid from `now_s` for an hour.
    pub fn assertion(&self, audience: &str, now_s: i64) -> Result<String, String> {
        let mut header = json!({"alg": "RS256", "typ": "JWT"});
        if let Some(kid) = &self.private_key_id {
            header["kid"] = json!(kid);
        }
        let claims = json!({
            "iss": self.client_email,
            "scope": SCOPES,
            "aud": audience,
            "iat": now_s,
            "exp": now_s + ASSERTION_LIFETIME_S,
        });
        let signing_input =
            format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
        let sig = self
            .key
            .pkcs1v15_sign::<Sha256>(signing_input.as_bytes())
            .map_err(|e| format!("signing the token request failed: {e}"))?;
        Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig)))
    }

    /// The form body of the token request.
    pub fn token_request_body(&self, audience: &str, now_s: i64) -> Result<String, String> {
        Ok(format!("grant_type={}&assertion={}", percent_encode(GRANT_TYPE), self.assertion(audience, now_s)?))
    }
}

/// A token endpoint's answer: the access token and its lifetime in seconds.
pub fn parse_token_response(body: &[u8]) -> Result<(String, i64), String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("token response is not JSON: {e}"))?;
    let token = v
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or("token response has no access_token")?;
    let expires_in = v.get("expires_in").and_then(Value::as_i64).unwrap_or(ASSERTION_LIFETIME_S);
    Ok((token.to_string(), expires_in))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::pkcs1v15::{Signature, VerifyingKey};
    use rsa::signature::Verifier;

    // A throw-away 2048-bit test key (never used anywhere else).
    pub(crate) const TEST_KEY_PEM: &str = include_str!("../../tests/data/google-test-key.pem");

    fn account() -> ServiceAccount {
        let file = json!({"type": "service_account", "client_email": "svc@proj.iam.gserviceaccount.com",
            "private_key_id": "kid1", "private_key": TEST_KEY_PEM, "token_uri": "https://oauth2.googleapis.com/token"});
        ServiceAccount::from_json(file.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn assertion_is_a_verifiable_rs256_jwt() {
        let acc = account();
        let jwt = acc.assertion("http://127.0.0.1:9/token", 1_700_000_000).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header, json!({"alg": "RS256", "typ": "JWT", "kid": "kid1"}));
        let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["iss"], "svc@proj.iam.gserviceaccount.com");
        assert_eq!(claims["aud"], "http://127.0.0.1:9/token");
        assert_eq!(claims["scope"], SCOPES);
        assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 3600);
        let vk = VerifyingKey::<Sha256>::new(acc.key.to_public_key());
        let sig = Signature::try_from(URL_SAFE_NO_PAD.decode(parts[2]).unwrap().as_slice()).unwrap();
        vk.verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig).unwrap();
        let body = acc.token_request_body("http://127.0.0.1:9/token", 1).unwrap();
        assert!(body.starts_with("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=ey"));
    }

    #[test]
    fn bad_key_files_are_errors() {
        assert!(ServiceAccount::from_json(b"nope").is_err());
        assert!(ServiceAccount::from_json(br#"{"private_key": "x"}"#).is_err());
        assert!(ServiceAccount::from_json(br#"{"client_email": "a", "private_key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}"#).is_err());
        assert!(format!("{:?}", account()).contains("svc@proj"));
        assert!(!format!("{:?}", account()).contains("PRIVATE"));
    }

    #[test]
    fn token_responses() {
        assert_eq!(
            parse_token_response(br#"{"access_token":"abc","expires_in":3599,"token_type":"Bearer"}"#),
            Ok(("abc".into(), 3599))
        );
        assert_eq!(parse_token_response(br#"{"access_token":"abc"}"#), Ok(("abc".into(), 3600)));
        assert!(parse_token_response(br#"{"error":"invalid_grant"}"#).is_err());
        assert!(parse_token_response(b"<html>").is_err());
    }
}
