use cohost_proto::invitation::{
    INVITATION_TTL_MS_DEFAULT, INVITATION_TTL_MS_MAX, INVITATION_TTL_MS_MIN,
};
use cohost_proto::limits::{
    MAX_COHOSTS_DEFAULT, MAX_COHOSTS_LIMIT, OPEN_ROOMS_PER_HOST_DEFAULT,
    PENDING_PER_CANDIDATE_DEFAULT,
};

/// The longest disconnect grace a deployment may set: a day.
pub const DISCONNECT_GRACE_MS_MAX: u64 = 86_400_000;

/// The deployment's settings that rules depend on. Built only through [`Policy::new`] (or
/// [`Policy::default`], the contract's defaults), and each setter checks its range, so it is always in
/// range and a rule never has to check it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    invitation_ttl_ms: u64,
    max_cohosts_default: u8,
    open_rooms_per_host_max: u32,
    pending_per_candidate_max: u32,
    disconnect_grace_ms: u64,
}

/// A setting out of the contract's range. The text says which setting and its range, for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError(
    /// Which setting is out of range, and the range: a short lowercase sentence.
    pub &'static str,
);

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for PolicyError {}

impl Policy {
    /// The contract's defaults with this invitation TTL and default seat count.
    ///
    /// # Errors
    ///
    /// [`PolicyError`] when the TTL is not from 10 s to 24 h, or the seat count not from 1 to 16.
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
            ..Self::default()
        })
    }

    /// The quotas across rooms: open rooms per host and pending offers per candidate, each at least 1.
    ///
    /// # Errors
    ///
    /// [`PolicyError`] when either is 0.
    pub fn with_quotas(
        self,
        open_rooms_per_host_max: u32,
        pending_per_candidate_max: u32,
    ) -> Result<Self, PolicyError> {
        if open_rooms_per_host_max == 0 || pending_per_candidate_max == 0 {
            return Err(PolicyError("quotas must be at least 1"));
        }
        Ok(Self {
            open_rooms_per_host_max,
            pending_per_candidate_max,
            ..self
        })
    }

    /// How long a seated co-host may stay away from LiveKit (left, or not joined since accepting) before the
    /// system removes them: 0 (the default) never, else at most a day. Only a deployment that receives
    /// LiveKit's webhooks knows who is away, so only one sets it.
    ///
    /// # Errors
    ///
    /// [`PolicyError`] when it is over a day.
    pub fn with_disconnect_grace_ms(self, disconnect_grace_ms: u64) -> Result<Self, PolicyError> {
        if disconnect_grace_ms > DISCONNECT_GRACE_MS_MAX {
            return Err(PolicyError("the disconnect grace must be at most a day"));
        }
        Ok(Self {
            disconnect_grace_ms,
            ..self
        })
    }

    /// The disconnect grace; 0 means never.
    pub fn disconnect_grace_ms(&self) -> u64 {
        self.disconnect_grace_ms
    }

    /// Rooms not yet ended that one host may hold.
    pub fn open_rooms_per_host_max(&self) -> u32 {
        self.open_rooms_per_host_max
    }

    /// Pending invitations and requests one candidate may hold across rooms.
    pub fn pending_per_candidate_max(&self) -> u32 {
        self.pending_per_candidate_max
    }

    /// How long an offer stays pending before it may expire, in ms: 10 s to 24 h, 300 s by default.
    pub fn invitation_ttl_ms(&self) -> u64 {
        self.invitation_ttl_ms
    }

    /// The seats a room gets when `create_room` names none: 1 to 16, 4 by default.
    pub fn max_cohosts_default(&self) -> u8 {
        self.max_cohosts_default
    }
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            invitation_ttl_ms: INVITATION_TTL_MS_DEFAULT,
            max_cohosts_default: MAX_COHOSTS_DEFAULT,
            open_rooms_per_host_max: OPEN_ROOMS_PER_HOST_DEFAULT,
            pending_per_candidate_max: PENDING_PER_CANDIDATE_DEFAULT,
            disconnect_grace_ms: 0,
        }
    }
}
