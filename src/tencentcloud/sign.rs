//! TC3-HMAC-SHA256, the request signature of Tencent Cloud API 3.0 (design §2).
//!
//! Written here on `hmac` + `sha2` because no maintained Rust SDK covers TIW; the vectors computed by
//! Tencent's own SDK (`tests/fixtures/tc3-vectors.json`) pin it down byte for byte. The simulator
//! verifies requests with the same function, so a bug here cannot hide behind a matching bug there.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The algorithm name that opens the `Authorization` header and the string to sign.
pub const ALGORITHM: &str = "TC3-HMAC-SHA256";
/// The only headers Tencent requires to be signed; we sign exactly these.
pub const SIGNED_HEADERS: &str = "content-type;host";

/// Everything that goes into one signature. `content_type` and `host` must be byte-identical to the
/// headers actually sent.
pub struct SignInput<'a> {
    pub secret_id: &'a str,
    pub secret_key: &'a str,
    pub service: &'a str,
    pub host: &'a str,
    pub content_type: &'a str,
    pub timestamp: i64,
    pub body: &'a [u8],
}

/// The intermediate strings and the final header, kept apart so tests can compare each stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub canonical_request: String,
    pub string_to_sign: String,
    /// Lowercase hex HMAC of the string to sign.
    pub signature: String,
    /// The full `Authorization` header value.
    pub authorization: String,
}

/// UTC calendar date (`YYYY-MM-DD`) of a unix timestamp, as used in the credential scope.
pub fn utc_date(timestamp: i64) -> Option<String> {
    let dt = time::OffsetDateTime::from_unix_timestamp(timestamp).ok()?;
    dt.format(time::macros::format_description!("[year]-[month]-[day]"))
        .ok()
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail here.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(msg);
    mac.finalize().into_bytes().to_vec()
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Signs one `POST /` request. Returns `None` only for a timestamp outside the calendar's range.
pub fn sign(input: &SignInput<'_>) -> Option<Signature> {
    let date = utc_date(input.timestamp)?;
    let canonical_request = format!(
        "POST\n/\n\ncontent-type:{}\nhost:{}\n\n{}\n{}",
        input.content_type,
        input.host,
        SIGNED_HEADERS,
        sha256_hex(input.body)
    );
    let scope = format!("{date}/{}/tc3_request", input.service);
    let string_to_sign = format!(
        "{ALGORITHM}\n{}\n{scope}\n{}",
        input.timestamp,
        sha256_hex(canonical_request.as_bytes())
    );
    let k_date = hmac_sha256(format!("TC3{}", input.secret_key).as_bytes(), date.as_bytes());
    let k_service = hmac_sha256(&k_date, input.service.as_bytes());
    let k_signing = hmac_sha256(&k_service, b"tc3_request");
    let signature = hex::encode(hmac_sha256(&k_signing, string_to_sign.as_bytes()));
    let authorization = format!(
        "{ALGORITHM} Credential={}/{scope}, SignedHeaders={SIGNED_HEADERS}, Signature={signature}",
        input.secret_id
    );
    Some(Signature {
        canonical_request,
        string_to_sign,
        signature,
        authorization,
    })
}

/// The parts of an `Authorization` header, as the simulator needs them to verify a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedAuthorization {
    pub secret_id: String,
    pub date: String,
    pub service: String,
    pub signed_headers: String,
    pub signature: String,
}

/// Parses `TC3-HMAC-SHA256 Credential=ID/DATE/SERVICE/tc3_request, SignedHeaders=..., Signature=...`.
pub fn parse_authorization(header: &str) -> Option<ParsedAuthorization> {
    let rest = header.strip_prefix(ALGORITHM)?.strip_prefix(' ')?;
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let (key, value) = part.trim().split_once('=')?;
        match key {
            "Credential" => credential = Some(value),
            "SignedHeaders" => signed_headers = Some(value),
            "Signature" => signature = Some(value),
            _ => return None,
        }
    }
    let mut scope = credential?.split('/');
    let secret_id = scope.next()?.to_string();
    let date = scope.next()?.to_string();
    let service = scope.next()?.to_string();
    if scope.next()? != "tc3_request" || scope.next().is_some() || secret_id.is_empty() {
        return None;
    }
    Some(ParsedAuthorization {
        secret_id,
        date,
        service,
        signed_headers: signed_headers?.to_string(),
        signature: signature?.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct Vector {
        name: String,
        secret_id: String,
        secret_key: String,
        host: String,
        service: String,
        timestamp: i64,
        body: String,
        canonical_request: String,
        string_to_sign: String,
        authorization: String,
    }

    #[test]
    fn every_sdk_vector_matches_byte_for_byte() {
        let text = include_str!("../../tests/fixtures/tc3-vectors.json");
        let vectors: Vec<Vector> = serde_json::from_str(text).unwrap();
        assert!(vectors.len() >= 5);
        for v in vectors {
            let s = sign(&SignInput {
                secret_id: &v.secret_id,
                secret_key: &v.secret_key,
                service: &v.service,
                host: &v.host,
                content_type: "application/json",
                timestamp: v.timestamp,
                body: v.body.as_bytes(),
            })
            .unwrap();
            assert_eq!(s.canonical_request, v.canonical_request, "{}", v.name);
            assert_eq!(s.string_to_sign, v.string_to_sign, "{}", v.name);
            assert_eq!(s.authorization, v.authorization, "{}", v.name);
        }
    }

    #[test]
    fn tencent_documented_cvm_vector() {
        let s = sign(&SignInput {
            secret_id: "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE",
            secret_key: "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE",
            service: "cvm",
            host: "cvm.tencentcloudapi.com",
            content_type: "application/json; charset=utf-8",
            timestamp: 1551113065,
            body: br#"{"Limit": 1, "Filters": [{"Values": ["\u672a\u547d\u540d"], "Name": "instance-name"}]}"#,
        })
        .unwrap();
        assert_eq!(
            s.signature,
            "72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168"
        );
        assert!(s.authorization.starts_with(
            "TC3-HMAC-SHA256 Credential=AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE/2019-02-25/cvm/tc3_request, SignedHeaders=content-type;host, Signature="
        ));
    }

    #[test]
    fn date_is_utc_not_local() {
        assert_eq!(utc_date(1735689599).unwrap(), "2024-12-31");
        assert_eq!(utc_date(1735689600).unwrap(), "2025-01-01");
    }

    #[test]
    fn authorization_round_trips_through_the_parser() {
        let s = sign(&SignInput {
            secret_id: "AKIDx",
            secret_key: "k",
            service: "tiw",
            host: "127.0.0.1:1",
            content_type: "application/json",
            timestamp: 1_700_000_000,
            body: b"{}",
        })
        .unwrap();
        let p = parse_authorization(&s.authorization).unwrap();
        assert_eq!(p.secret_id, "AKIDx");
        assert_eq!(p.date, "2023-11-14");
        assert_eq!(p.service, "tiw");
        assert_eq!(p.signed_headers, SIGNED_HEADERS);
        assert_eq!(p.signature, s.signature);
        assert!(parse_authorization("Bearer x").is_none());
        assert!(parse_authorization("TC3-HMAC-SHA256 Credential=a/b/c/d, SignedHeaders=x, Signature=y").is_none());
        assert!(parse_authorization("TC3-HMAC-SHA256 Credential=a/b/c/tc3_request, Signature=y").is_none());
    }
}
