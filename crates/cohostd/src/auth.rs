//! User JWTs: HS256 with the deployment's secret, `sub` = user id and `exp` required. Anything else is
//! `unauthenticated`, including `alg: none` and other algorithms.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use cohost_proto::UserId;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
}

/// Verifies and signs user tokens.
#[derive(Clone)]
pub struct Auth {
    decoding: DecodingKey,
    encoding: EncodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.debug_struct("Auth").finish_non_exhaustive()
    }
}

impl Auth {
    pub fn new(secret: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = 0;
        Self {
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            validation,
        }
    }

    /// The user of an `Authorization: Bearer <jwt>` header value.
    pub fn user(&self, authorization: Option<&str>) -> Result<UserId, &'static str> {
        let header = authorization.ok_or("missing Authorization header")?;
        let token = header
            .strip_prefix("Bearer ")
            .ok_or("Authorization must be `Bearer <token>`")?;
        let data = jsonwebtoken::decode::<Claims>(token.trim(), &self.decoding, &self.validation)
            .map_err(|_| "invalid or expired token")?;
        UserId::new(&data.claims.sub).map_err(|_| "token subject is not a valid user id")
    }

    /// A token for `user`, valid for `ttl_s` seconds.
    pub fn mint(&self, user: &UserId, ttl_s: u64) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let claims = Claims {
            sub: user.to_string(),
            exp: now + ttl_s,
        };
        // HS256 signing of a two-field struct cannot fail.
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signs")
    }
}

/// The dev-mode secret: generated once and kept in the data dir, so `cohostd token` signs with the same one.
pub fn dev_secret(data_dir: &Path) -> std::io::Result<(String, bool)> {
    let path = data_dir.join("dev-auth-secret");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let existing = existing.trim().to_owned();
        if !existing.is_empty() {
            return Ok((existing, false));
        }
    }
    std::fs::create_dir_all(data_dir)?;
    let mut bytes = [0u8; 32];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes)?;
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(&path, &secret)?;
    Ok((secret, true))
}
