use cohost_proto::invitation::{
    INVITATION_TTL_MS_DEFAULT, INVITATION_TTL_MS_MAX, INVITATION_TTL_MS_MIN,
};
use cohost_proto::limits::{MAX_COHOSTS_DEFAULT, MAX_COHOSTS_LIMIT};

/// The deployment's settings that rules depend on. Built only through [`Policy::new`], so it is always in range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    invitation_ttl_ms: u64,
    max_cohosts_default: u8,
}

/// A setting out of the contract's range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError(pub &'static str);

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for PolicyError {}

impl Policy {
    pub fn new(invitation_ttl_ms: u64, max_cohosts_default: u8) -> Result<Self, PolicyError> {
        if !(INVITATION_TTL_MS_MIN..=INVITATION_TTL_MS_MAX).contains(&invitation_ttl_ms) {
            return Err(PolicyError("invitation TTL must be from 10 s to 24 h"));
        }
        if !(1..=MAX_COHOSTS_LIMIT).contains(&max_cohosts_default) {
            return Err(PolicyError("max co-hosts must be from 1 to 16"));
        }
        Ok(Self {
            invitation_ttl_ms,
            max_cohosts_default,
        })
    }

    pub fn invitation_ttl_ms(&self) -> u64 {
        self.invitation_ttl_ms
    }

    pub fn max_cohosts_default(&self) -> u8 {
        self.max_cohosts_default
    }
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            invitation_ttl_ms: INVITATION_TTL_MS_DEFAULT,
            max_cohosts_default: MAX_COHOSTS_DEFAULT,
        }
    }
}
