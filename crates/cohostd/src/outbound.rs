//! Outgoing webhooks: the endpoints file, and signing as the Standard Webhooks specification says, so a receiver
//! verifies with the official libraries. Delivery (a follower per endpoint over the log) builds on these; see
//! ARCHITECTURE.md, "Outgoing webhooks".

use std::collections::BTreeSet;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use cohost_proto::{Event, RoomId};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

/// Endpoints a deployment may configure.
pub const ENDPOINTS_MAX: usize = 64;
/// A secret's key, decoded, in bytes: the specification asks for 24 to 64.
const SECRET_BYTES: std::ops::RangeInclusive<usize> = 24..=64;
/// What a secret starts with in the specification's form.
const SECRET_PREFIX: &str = "whsec_";

/// One receiver of the log's events.
#[derive(Clone)]
pub struct Endpoint {
    /// A name of 1 to 64 `[A-Za-z0-9_-]`: the endpoint's cursor and its label in `/metrics`.
    pub id: String,
    /// Where deliveries are posted: an `http` or `https` URL.
    pub url: String,
    signer: Signer,
    /// The event types sent; empty: every type.
    pub types: BTreeSet<&'static str>,
    /// The rooms whose events are sent; `None`: every room.
    pub rooms: Option<BTreeSet<RoomId>>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("id", &self.id)
            .field("url", &self.url)
            .field("types", &self.types)
            .field("rooms", &self.rooms)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// Whether an event of `type_name` in `room` goes to this endpoint.
    pub fn wants(&self, type_name: &str, room: &RoomId) -> bool {
        (self.types.is_empty() || self.types.contains(type_name))
            && self.rooms.as_ref().is_none_or(|rooms| rooms.contains(room))
    }

    /// Signs deliveries with the endpoint's `whsec_` secret.
    pub fn signer(&self) -> &Signer {
        &self.signer
    }
}

/// The endpoints file (`COHOST_WEBHOOKS_FILE`), JSON.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    endpoints: Vec<EndpointEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EndpointEntry {
    id: String,
    url: String,
    secret: String,
    #[serde(default)]
    types: Vec<String>,
    #[serde(default)]
    rooms: Option<Vec<RoomId>>,
}

/// Reads the endpoints file's text; every problem is refused with a message naming the endpoint and the field.
pub fn parse_endpoints(text: &str) -> Result<Vec<Endpoint>, String> {
    let file: File = serde_json::from_str(text).map_err(|e| format!("the webhooks file: {e}"))?;
    if file.endpoints.len() > ENDPOINTS_MAX {
        return Err(format!(
            "the webhooks file lists {} endpoints; at most {ENDPOINTS_MAX}",
            file.endpoints.len()
        ));
    }
    let mut ids = BTreeSet::new();
    let mut endpoints = Vec::with_capacity(file.endpoints.len());
    for entry in file.endpoints {
        let at = format!("webhook endpoint {:?}", entry.id);
        let id_ok = (1..=64).contains(&entry.id.len())
            && (entry.id.bytes()).all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !id_ok {
            return Err(format!(
                "{at}: id must be 1 to 64 characters of [A-Za-z0-9_-]"
            ));
        }
        if !ids.insert(entry.id.clone()) {
            return Err(format!("{at}: listed twice"));
        }
        let url_ok = entry.url.starts_with("https://") || entry.url.starts_with("http://");
        if !url_ok || entry.url.len() > 2_048 || entry.url.contains(char::is_whitespace) {
            return Err(format!("{at}: url must be an http:// or https:// URL"));
        }
        let signer = Signer::new(&entry.secret).map_err(|why| format!("{at}: secret {why}"))?;
        let types = (entry.types.iter())
            .map(|name| {
                (Event::TYPES.iter().copied())
                    .find(|known| known == name)
                    .ok_or_else(|| format!("{at}: {name:?} is not an event type"))
            })
            .collect::<Result<BTreeSet<_>, _>>()?;
        let rooms = entry.rooms.map(|rooms| rooms.into_iter().collect());
        endpoints.push(Endpoint {
            id: entry.id,
            url: entry.url,
            signer,
            types,
            rooms,
        });
    }
    Ok(endpoints)
}

/// Signs deliveries with one endpoint's secret.
#[derive(Clone)]
pub struct Signer {
    key: Vec<u8>,
}

/// Keeps the key out of logs that print an endpoint.
impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("Signer(<redacted>)")
    }
}

/// The three headers of a signed delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// `webhook-id`: the event's id, the same on every attempt, so receivers drop duplicates by it.
    pub id: String,
    /// `webhook-timestamp`: seconds since the epoch of this attempt.
    pub timestamp: String,
    /// `webhook-signature`: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`.
    pub signature: String,
}

impl Signer {
    /// The secret in the specification's form: `whsec_` and the base64 of 24 to 64 random bytes.
    pub fn new(secret: &str) -> Result<Self, &'static str> {
        let encoded = secret
            .strip_prefix(SECRET_PREFIX)
            .ok_or("must start with whsec_")?;
        let key = STANDARD
            .decode(encoded)
            .map_err(|_| "must be whsec_ and base64")?;
        if !SECRET_BYTES.contains(&key.len()) {
            return Err("must hold 24 to 64 bytes");
        }
        Ok(Self { key })
    }

    /// The headers for sending `body` as message `id` at `timestamp_s`. Each attempt signs afresh, with its
    /// own timestamp, so a receiver's replay window applies to the attempt, not to the event.
    pub fn sign(&self, id: &str, timestamp_s: u64, body: &[u8]) -> Signed {
        let timestamp = timestamp_s.to_string();
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        let signature = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
        Signed {
            id: id.to_owned(),
            timestamp,
            signature,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The specification's own example, and one of ours; both signatures were computed with the official Python
    /// library (`standardwebhooks` 1.3.0, `Webhook(secret).sign(id, timestamp, body)`).
    #[test]
    fn signatures_match_the_official_library() {
        let signer = Signer::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let signed = signer.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(
            signed.signature,
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert_eq!(signed.timestamp, "1614265330");
        let ours = signer.sign(
            "stage-1:3",
            1_800_000_000,
            br#"{"seq":7,"type":"invitation_created"}"#,
        );
        assert_eq!(
            ours.signature,
            "v1,TXzZY4PnP7sFTpXxi88T3Mdva/Q4RGsw3Ty8+Zs2bQk="
        );
        assert_eq!(ours.id, "stage-1:3");
    }

    #[test]
    fn secrets_are_the_specification_s_form() {
        assert!(
            Signer::new("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err(),
            "no prefix"
        );
        assert!(Signer::new("whsec_not base64!").is_err());
        assert!(Signer::new("whsec_c2hvcnQ=").is_err(), "5 bytes");
        assert!(Signer::new(&format!("whsec_{}", STANDARD.encode([7u8; 65]))).is_err());
    }

    #[test]
    fn the_endpoints_file_is_checked_whole() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let file = format!(
            r#"{{"endpoints": [
                {{"id": "billing", "url": "https://billing.example.com/hooks", "secret": "{secret}",
                  "types": ["invitation_approved", "cohost_removed"]}},
                {{"id": "audit", "url": "http://10.0.0.5:8080/in", "secret": "{secret}", "rooms": ["stage-1"]}}
            ]}}"#
        );
        let endpoints = parse_endpoints(&file).unwrap();
        assert_eq!(endpoints.len(), 2);
        let stage = RoomId::new("stage-1").unwrap();
        let other = RoomId::new("stage-2").unwrap();
        assert!(endpoints[0].wants("invitation_approved", &other));
        assert!(!endpoints[0].wants("invitation_created", &other));
        assert!(endpoints[1].wants("room_created", &stage));
        assert!(!endpoints[1].wants("room_created", &other));

        let entry = |fields: &str| format!(r#"{{"endpoints": [{{{fields}}}]}}"#);
        for (bad, says) in [
            (
                entry(&format!(
                    r#""id": "a b", "url": "https://x", "secret": "{secret}""#
                )),
                "id must be",
            ),
            (
                entry(&format!(
                    r#""id": "a", "url": "ftp://x", "secret": "{secret}""#
                )),
                "url must be",
            ),
            (
                entry(r#""id": "a", "url": "https://x", "secret": "whsec_c2hvcnQ=""#),
                "secret must hold",
            ),
            (
                entry(&format!(
                    r#""id": "a", "url": "https://x", "secret": "{secret}", "types": ["nope"]"#
                )),
                "not an event type",
            ),
            (
                entry(&format!(
                    r#""id": "a", "url": "https://x", "secret": "{secret}", "rooms": ["a.b"]"#
                )),
                "webhooks file",
            ),
            (
                entry(&format!(
                    r#""id": "a", "url": "https://x", "secret": "{secret}", "extra": 1"#
                )),
                "unknown field",
            ),
        ] {
            let error = parse_endpoints(&bad).unwrap_err();
            assert!(error.contains(says), "{error}");
        }
        let twice = format!(
            r#"{{"endpoints": [{{"id": "a", "url": "https://x", "secret": "{secret}"}}, {{"id": "a", "url": "https://y", "secret": "{secret}"}}]}}"#
        );
        assert!(
            parse_endpoints(&twice)
                .unwrap_err()
                .contains("listed twice")
        );
    }
}
