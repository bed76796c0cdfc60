//! User JWTs, and service credentials. A user JWT is HS256 with the deployment's secret, `sub` = user id and
//! `exp` required, and no `role`. A service credential is HS256 with the service secret, `role: "service"`,
//! `sub` = the service; the same rules apply to both. Anything else is
//! `unauthenticated`, including `alg: none` and other algorithms, a token before its `nbf`, an `iat` in the
//! future, a lifetime over the configured maximum (so a leaked token cannot be valid for years), and, when configured, another
//! issuer or audience.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cohost_proto::{ServiceId, UserId};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::ticket::Tickets;

/// How far ahead of this clock a token's `iat` may be (the issuer's clock may run ahead of ours).
const IAT_SKEW_MAX_S: u64 = 60;

/// The longest lifetime a user token may have unless configured otherwise.
pub const TOKEN_LIFETIME_MAX_DEFAULT: Duration = Duration::from_secs(24 * 3_600);

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    aud: Option<String>,
    /// `service` on a service credential; a user token has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    role: Option<String>,
}

/// The `role` claim of a service credential.
pub const SERVICE_ROLE: &str = "service";

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's `sub`: the user every command of the request acts as.
    pub user: UserId,
    /// The token's `exp`, in seconds since the epoch: a live collection ends there.
    pub expires_s: u64,
}

/// A backend service authenticated by a service credential: a JWT signed with the service secret
/// (`COHOST_SERVICE_SECRET`, never the users'), with `role: "service"` and `sub` naming the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceCaller {
    /// The token's `sub`: the service every command of the request acts as.
    pub service: ServiceId,
    /// The token's `exp`, in seconds since the epoch.
    pub expires_s: u64,
}

/// The keys of service credentials, apart from the users'.
#[derive(Clone)]
struct ServiceKeys {
    decoding: DecodingKey,
    encoding: EncodingKey,
}

/// What tokens must satisfy beyond the signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRules {
    /// The longest `exp` − `iat` (or − now, without `iat`) a token may have (`COHOST_TOKEN_LIFETIME_MAX_S`).
    pub lifetime_max: Duration,
    /// When set, `iss` must equal it.
    pub issuer: Option<String>,
    /// When set, `aud` must name it.
    pub audience: Option<String>,
    /// How long a stream ticket opens its live collection (never past the JWT it was made with).
    pub stream_ticket_ttl: Duration,
}

impl Default for TokenRules {
    fn default() -> Self {
        Self {
            lifetime_max: TOKEN_LIFETIME_MAX_DEFAULT,
            issuer: None,
            audience: None,
            stream_ticket_ttl: crate::ticket::TICKET_TTL_DEFAULT,
        }
    }
}

/// Verifies and signs user tokens.
#[derive(Clone)]
pub struct Auth {
    decoding: DecodingKey,
    encoding: EncodingKey,
    validation: Validation,
    rules: TokenRules,
    tickets: Tickets,
    /// The key erasure's pseudonyms are derived under, itself derived from the secret under a label of its own.
    erasure: [u8; 32],
    /// Service credentials' keys, when the deployment takes them.
    service: Option<ServiceKeys>,
    /// Tokens whose signature and rules were checked, so a client's next request with the same token skips
    /// the check (only its expiry is looked at again). Bounded: emptied when full.
    verified: Arc<Mutex<HashMap<Box<str>, Caller>>>,
}

/// Verified tokens remembered at most.
const VERIFIED_MAX: usize = 16_384;

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

/// The prefix of every pseudonym, which no token's subject may have.
pub const ERASED_PREFIX: &str = "erased-";

/// HMAC-SHA256 of `label` under `secret`: a key for one purpose alone.
fn derive(secret: &str, label: &[u8]) -> [u8; 32] {
    use hmac::Mac as _;
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(label);
    mac.finalize().into_bytes().into()
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Auth {
    /// Tokens signed with `secret`, under the default rules.
    pub fn new(secret: &str) -> Self {
        Self::with_rules(secret, TokenRules::default())
    }

    /// Tokens signed with `secret` (HS256), checked against `rules`; stream tickets get a key derived from it.
    pub fn with_rules(secret: &str, rules: TokenRules) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        let mut required = vec!["exp", "sub"];
        required.extend(rules.issuer.as_ref().map(|_| "iss"));
        required.extend(rules.audience.as_ref().map(|_| "aud"));
        validation.set_required_spec_claims(&required);
        validation.leeway = 0;
        validation.validate_nbf = true;
        match &rules.issuer {
            Some(issuer) => validation.set_issuer(&[issuer]),
            None => validation.iss = None,
        }
        match &rules.audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        Self {
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            validation,
            tickets: Tickets::new(secret, rules.stream_ticket_ttl),
            erasure: derive(secret, b"cohost erasure pseudonyms v1"),
            rules,
            service: None,
            verified: Arc::default(),
        }
    }

    /// Also takes service credentials signed with `secret` (HS256), under the same rules (lifetime, issuer,
    /// audience) as user tokens.
    pub fn with_service_secret(mut self, secret: &str) -> Self {
        self.service = Some(ServiceKeys {
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            encoding: EncodingKey::from_secret(secret.as_bytes()),
        });
        self
    }

    /// The service of an `Authorization: Bearer <jwt>` header value, when it holds a service credential:
    /// `Ok(None)` when it holds none (no header, another scheme, a token not signed with the service secret, or
    /// a deployment without one), so the caller may try it as a user's; an error for a token signed with the
    /// service secret that breaks a rule.
    pub fn service(
        &self,
        authorization: Option<&str>,
    ) -> Result<Option<ServiceCaller>, &'static str> {
        let (Some(keys), Some(token)) = (&self.service, authorization.and_then(bearer)) else {
            return Ok(None);
        };
        let Ok(data) = jsonwebtoken::decode::<Claims>(token, &keys.decoding, &self.validation)
        else {
            return Ok(None);
        };
        let claims = data.claims;
        if claims.role.as_deref() != Some(SERVICE_ROLE) {
            return Err("a service credential must carry role: service");
        }
        self.check_lifetime(&claims, now_s())?;
        let service =
            ServiceId::new(&claims.sub).map_err(|_| "token subject is not a valid service id")?;
        Ok(Some(ServiceCaller {
            service,
            expires_s: claims.exp,
        }))
    }

    /// A service credential for `service`, valid for `ttl_s` seconds; `None` without a service secret.
    pub fn mint_service(&self, service: &ServiceId, ttl_s: u64) -> Option<String> {
        let keys = self.service.as_ref()?;
        let claims = Claims {
            role: Some(SERVICE_ROLE.into()),
            ..self.claims(service.as_str(), ttl_s)
        };
        let header = Header::new(Algorithm::HS256);
        Some(jsonwebtoken::encode(&header, &claims, &keys.encoding).expect("HS256 signs"))
    }

    fn claims(&self, sub: &str, ttl_s: u64) -> Claims {
        let now = now_s();
        Claims {
            sub: sub.to_owned(),
            exp: now + ttl_s,
            iat: Some(now),
            iss: self.rules.issuer.clone(),
            aud: self.rules.audience.clone(),
            role: None,
        }
    }

    /// The pseudonym an erased `user` is served as: `erased-` and 24 hex digits of an HMAC of the id, under a
    /// key derived from the secret, so it cannot be found from a guessed id.
    pub fn pseudonym(&self, user: &UserId) -> UserId {
        use hmac::Mac as _;
        let mut mac =
            hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.erasure).expect("HMAC takes any key");
        mac.update(user.as_str().as_bytes());
        let digest = mac.finalize().into_bytes();
        let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
        UserId::new(&format!("{ERASED_PREFIX}{hex}"))
            .expect("erased- and hex digits make a valid id")
    }

    /// Stream tickets, keyed from the same secret.
    pub fn tickets(&self) -> &Tickets {
        &self.tickets
    }

    /// The longest lifetime a token may have.
    pub fn lifetime_max(&self) -> Duration {
        self.rules.lifetime_max
    }

    /// The caller of an `Authorization: Bearer <jwt>` header value (the scheme name in any case, RFC 7235).
    pub fn caller(&self, authorization: Option<&str>) -> Result<Caller, &'static str> {
        let header = authorization.ok_or("missing Authorization header")?;
        let token = bearer(header).ok_or("Authorization must be `Bearer <token>`")?;
        let now = now_s();
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(caller) = verified.get(token).filter(|c| c.expires_s > now) {
            return Ok(caller.clone());
        }
        drop(verified);
        let caller = self.verify(token, now)?;
        verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if verified.len() >= VERIFIED_MAX {
            verified.clear();
        }
        verified.insert(token.into(), caller.clone());
        Ok(caller)
    }

    /// Checks a token's signature and every rule. Whatever passes at `now` passes later too, up to `exp`:
    /// `nbf` and a future `iat` only recede, and a lifetime without `iat` only shortens.
    fn verify(&self, token: &str, now: u64) -> Result<Caller, &'static str> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|_| "invalid or expired token")?;
        let claims = data.claims;
        if claims.role.is_some() {
            return Err("a token with a role is not a user token");
        }
        self.check_lifetime(&claims, now)?;
        let user = UserId::new(&claims.sub).map_err(|_| "token subject is not a valid user id")?;
        // Erased users are served under these names: no caller may take one.
        if claims.sub.starts_with(ERASED_PREFIX) {
            return Err("user ids starting with erased- are reserved for erased users' pseudonyms");
        }
        Ok(Caller {
            user,
            expires_s: claims.exp,
        })
    }

    fn check_lifetime(&self, claims: &Claims, now: u64) -> Result<(), &'static str> {
        // A future `iat` would shrink the lifetime the check below sees while `exp` lies years ahead.
        if claims
            .iat
            .is_some_and(|iat| iat > now.saturating_add(IAT_SKEW_MAX_S))
        {
            return Err("token is issued in the future");
        }
        let lifetime_s = claims.exp.saturating_sub(claims.iat.unwrap_or(now));
        if lifetime_s > self.rules.lifetime_max.as_secs() {
            return Err("token lifetime is longer than this deployment allows");
        }
        Ok(())
    }

    /// The user of an `Authorization` header value; see [`Auth::caller`].
    pub fn user(&self, authorization: Option<&str>) -> Result<UserId, &'static str> {
        self.caller(authorization).map(|caller| caller.user)
    }

    /// A token for `user`, valid for `ttl_s` seconds from now, with the configured issuer and audience.
    pub fn mint(&self, user: &UserId, ttl_s: u64) -> String {
        let claims = self.claims(user.as_str(), ttl_s);
        // HS256 signing of a struct of strings and numbers cannot fail.
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signs")
    }
}

/// The token of a `Bearer <token>` header value (the scheme name in any case, RFC 7235).
fn bearer(header: &str) -> Option<&str> {
    header
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
}

/// Where dev mode keeps its generated secret.
pub fn dev_secret_path(data_dir: &Path) -> PathBuf {
    data_dir.join("dev-auth-secret")
}

/// The dev-mode secret: generated once into the data dir, readable by its owner only (mode 0600), so
/// `cohostd token` signs with the same one. Returns it, and whether it was generated now.
pub fn dev_secret(data_dir: &Path) -> std::io::Result<(String, bool)> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let path = dev_secret_path(data_dir);
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let existing = existing.trim().to_owned();
        if !existing.is_empty() {
            // A file an earlier version wrote world-readable is narrowed.
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
            return Ok((existing, false));
        }
    }
    std::fs::create_dir_all(data_dir)?;
    let mut bytes = [0u8; 32];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes)?;
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let _ = std::fs::remove_file(&path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    file.write_all(secret.as_bytes())?;
    file.sync_all()?;
    Ok((secret, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(token: &str) -> String {
        format!("Bearer {token}")
    }

    #[test]
    fn a_remembered_token_still_expires_and_a_changed_one_is_checked_again() {
        let auth = Auth::new("a test secret of enough length");
        let alice = UserId::new("alice").unwrap();
        let token = auth.mint(&alice, 1);
        assert_eq!(auth.user(Some(&bearer(&token))), Ok(alice.clone()));
        assert_eq!(auth.user(Some(&bearer(&token))), Ok(alice), "remembered");
        let mut tampered = token.clone();
        tampered.pop();
        assert!(auth.user(Some(&bearer(&tampered))).is_err());
        std::thread::sleep(Duration::from_millis(2_100));
        assert!(
            auth.user(Some(&bearer(&token))).is_err(),
            "expired though remembered"
        );
    }
}
