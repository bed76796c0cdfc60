//! Stream tickets: how a browser's `EventSource`, which cannot send an `Authorization` header, opens a live
//! collection without a JWT in its URL.
//!
//! A ticket names one user and one collection (the path of one SSE route), is accepted only as `?ticket=` on that
//! route with `Accept: text/event-stream`, and only until it expires (a few minutes, long enough for
//! `EventSource`'s own reconnects). It never outlives the JWT it was made with, and it carries that JWT's expiry,
//! so a stream opened with it still ends when the JWT would have. It is no JWT: its MAC is keyed by a key derived
//! from the deployment's secret for tickets alone, over a text no JWT signs, so a ticket is refused wherever a JWT
//! is asked for and the reverse. Nothing is stored: any node with the same secret accepts it (cluster mode).

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cohost_proto::{RoomId, UserId};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The ticket format's prefix, part of what the MAC covers.
const PREFIX: &str = "ct1.";
/// The label the ticket key is derived under, so it is never the key JWTs are signed with.
const KEY_LABEL: &[u8] = b"cohost stream tickets v1";
/// The longest ticket read; a real one is about 200 bytes.
const TICKET_BYTES_MAX: usize = 1_024;

/// How long a ticket lasts unless configured otherwise.
pub const TICKET_TTL_DEFAULT: Duration = Duration::from_secs(300);

type HmacSha256 = Hmac<Sha256>;

/// The live collections a ticket may open, by the path of their SSE route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TicketCollection {
    /// `/v1/me/invitations`
    MyInvitations,
    /// `/v1/rooms/{room_id}/invitations`
    RoomInvitations(RoomId),
    /// `/v1/rooms/{room_id}`
    Room(RoomId),
}

impl TicketCollection {
    /// The collection at `path`, exactly as a request names it (no query, no trailing slash).
    pub fn parse(path: &str) -> Result<Self, &'static str> {
        const EXPECTED: &str = "collection must be the path of a live collection: /v1/me/invitations, \
                                /v1/rooms/{room_id}/invitations or /v1/rooms/{room_id}";
        if path == "/v1/me/invitations" {
            return Ok(Self::MyInvitations);
        }
        let rest = path.strip_prefix("/v1/rooms/").ok_or(EXPECTED)?;
        let (room, tail) = rest.split_once('/').unwrap_or((rest, ""));
        let room = RoomId::new(room).map_err(|_| EXPECTED)?;
        match tail {
            "" if !rest.ends_with('/') => Ok(Self::Room(room)),
            "invitations" => Ok(Self::RoomInvitations(room)),
            _ => Err(EXPECTED),
        }
    }

    /// The route's path, as a request names it.
    pub fn path(&self) -> String {
        match self {
            Self::MyInvitations => "/v1/me/invitations".to_owned(),
            Self::RoomInvitations(room) => format!("/v1/rooms/{room}/invitations"),
            Self::Room(room) => format!("/v1/rooms/{room}"),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    /// The collection's path.
    col: String,
    /// When the ticket stops opening the collection, in ms since the epoch.
    exp_ms: u64,
    /// The JWT's `exp`, in seconds: where a stream opened with the ticket ends.
    jwt_exp: u64,
}

/// A ticket that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    /// The user the ticket was made for: the collection opens as them.
    pub user: UserId,
    /// The path of the one collection it opens.
    pub collection: String,
    /// When the ticket stops opening anything, in ms since the epoch.
    pub expires_ms: u64,
    /// The expiry of the JWT it was made with, in seconds since the epoch.
    pub jwt_expires_s: u64,
}

/// Makes and checks tickets with a key derived from the deployment's secret.
#[derive(Clone)]
pub struct Tickets {
    key: [u8; 32],
    ttl: Duration,
}

impl std::fmt::Debug for Tickets {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.debug_struct("Tickets")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Tickets {
    /// Tickets lasting `ttl`, keyed from `secret`.
    pub fn new(secret: &str, ttl: Duration) -> Self {
        let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
        mac.update(KEY_LABEL);
        Self {
            key: mac.finalize().into_bytes().into(),
            ttl,
        }
    }

    /// How long a new ticket lasts (never past its JWT's `exp`).
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key")
    }

    /// A ticket for `user` to open `collection`, from `now_ms` until the ticket lifetime passes or the JWT
    /// (expiring at `jwt_expires_s`) does, whichever is first. Returns the ticket and its expiry in ms.
    pub fn mint(
        &self,
        user: &UserId,
        collection: &TicketCollection,
        jwt_expires_s: u64,
        now_ms: u64,
    ) -> (String, u64) {
        let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        let expires_ms = now_ms
            .saturating_add(ttl_ms)
            .min(jwt_expires_s.saturating_mul(1_000));
        let claims = Claims {
            sub: user.to_string(),
            col: collection.path(),
            exp_ms: expires_ms,
            jwt_exp: jwt_expires_s,
        };
        let payload = serde_json::to_vec(&claims).expect("strings and numbers encode");
        let signed = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(payload));
        let mut mac = self.mac();
        mac.update(signed.as_bytes());
        let tag = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        (format!("{signed}.{tag}"), expires_ms)
    }

    /// The ticket's claims if its MAC holds and it has not expired at `now_ms`. The caller checks that it
    /// names the collection asked for.
    pub fn verify(&self, ticket: &str, now_ms: u64) -> Result<Ticket, &'static str> {
        const INVALID: &str = "invalid stream ticket";
        if ticket.len() > TICKET_BYTES_MAX || !ticket.starts_with(PREFIX) {
            return Err(INVALID);
        }
        let (signed, tag) = ticket.rsplit_once('.').ok_or(INVALID)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| INVALID)?;
        let mut mac = self.mac();
        mac.update(signed.as_bytes());
        // Constant-time: a forger learns nothing from how long the comparison took.
        mac.verify_slice(&tag).map_err(|_| INVALID)?;
        let payload = URL_SAFE_NO_PAD
            .decode(&signed[PREFIX.len()..])
            .map_err(|_| INVALID)?;
        let claims: Claims = serde_json::from_slice(&payload).map_err(|_| INVALID)?;
        if now_ms >= claims.exp_ms {
            return Err("stream ticket has expired: ask for a new one");
        }
        Ok(Ticket {
            user: UserId::new(&claims.sub).map_err(|_| INVALID)?,
            collection: claims.col,
            expires_ms: claims.exp_ms,
            jwt_expires_s: claims.jwt_exp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW_MS: u64 = 1_800_000_000_000;

    fn tickets() -> Tickets {
        Tickets::new("a test secret of enough length", TICKET_TTL_DEFAULT)
    }

    #[test]
    fn collections_are_exactly_the_sse_routes() {
        let room = RoomId::new("stage-1").unwrap();
        for (path, expected) in [
            ("/v1/me/invitations", Ok(TicketCollection::MyInvitations)),
            (
                "/v1/rooms/stage-1",
                Ok(TicketCollection::Room(room.clone())),
            ),
            (
                "/v1/rooms/stage-1/invitations",
                Ok(TicketCollection::RoomInvitations(room)),
            ),
        ] {
            assert_eq!(TicketCollection::parse(path), expected, "{path}");
            assert_eq!(expected.unwrap().path(), path);
        }
        for refused in [
            "",
            "/v1/rooms",
            "/v1/rooms/",
            "/v1/rooms/stage-1/",
            "/v1/rooms/stage-1/events",
            "/v1/rooms/stage-1/invitations/",
            "/v1/rooms/stage 1",
            "/v1/me/invitations?status=pending",
            "v1/me/invitations",
            "/v1/rooms/stage-1/broadcaster-data",
        ] {
            assert!(TicketCollection::parse(refused).is_err(), "{refused:?}");
        }
    }

    #[test]
    fn a_ticket_opens_its_collection_until_it_or_the_jwt_expires() {
        let tickets = tickets();
        let alice = UserId::new("alice").unwrap();
        let jwt_exp_s = NOW_MS / 1_000 + 3_600;
        let collection = TicketCollection::MyInvitations;
        let (ticket, expires_ms) = tickets.mint(&alice, &collection, jwt_exp_s, NOW_MS);
        assert_eq!(expires_ms, NOW_MS + 300_000);
        let read = tickets.verify(&ticket, NOW_MS + 299_999).unwrap();
        assert_eq!(
            read,
            Ticket {
                user: alice.clone(),
                collection: "/v1/me/invitations".into(),
                expires_ms,
                jwt_expires_s: jwt_exp_s,
            }
        );
        assert!(tickets.verify(&ticket, expires_ms).is_err(), "expired");
        // A JWT with a minute left gives a ticket of a minute.
        let (short, short_expires) = tickets.mint(&alice, &collection, NOW_MS / 1_000 + 60, NOW_MS);
        assert_eq!(short_expires, NOW_MS + 60_000);
        assert!(tickets.verify(&short, NOW_MS + 60_000).is_err());
    }

    #[test]
    fn a_changed_or_foreign_ticket_is_refused() {
        let tickets = tickets();
        let alice = UserId::new("alice").unwrap();
        let (ticket, _) = tickets.mint(
            &alice,
            &TicketCollection::MyInvitations,
            NOW_MS / 1_000 + 3_600,
            NOW_MS,
        );
        let other = Tickets::new("another secret of enough length", TICKET_TTL_DEFAULT);
        assert!(
            other.verify(&ticket, NOW_MS).is_err(),
            "another deployment's"
        );
        // Swap the claims for mallory's, keeping alice's MAC.
        let (_, tag) = ticket.rsplit_once('.').unwrap();
        let forged = Claims {
            sub: "mallory".into(),
            col: "/v1/me/invitations".into(),
            exp_ms: NOW_MS + 1_000,
            jwt_exp: NOW_MS / 1_000 + 3_600,
        };
        let forged = format!(
            "{PREFIX}{}.{tag}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap())
        );
        assert!(tickets.verify(&forged, NOW_MS).is_err(), "claims swapped");
        for broken in [
            "",
            "ct1.",
            "ct1..",
            &ticket[..ticket.len() - 1],
            &ticket[PREFIX.len()..],
        ] {
            assert!(tickets.verify(broken, NOW_MS).is_err(), "{broken:?}");
        }
        assert!(tickets.verify(&"a".repeat(5_000), NOW_MS).is_err());
    }
}
