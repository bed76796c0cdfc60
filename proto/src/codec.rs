//! The two encodings: JSON (the default on the wire) and postcard (the log, and a wire option).

use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::event::{Envelope, StoredEvent, StoredEventRef};

/// How an event is encoded on the wire; announced by `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Encoding {
    #[default]
    Json,
    Postcard,
}

impl Encoding {
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            // The layout of the `StoredEvent` the body holds (its first byte says so too), so a consumer
            // learns of a new one before it decodes the body.
            Self::Postcard => "application/postcard; version=2",
        }
    }

    /// Reads a `Content-Type` value; media types are case-insensitive and may carry parameters.
    pub fn from_content_type(value: &str) -> Option<Self> {
        let media_type = value.split(';').next().unwrap_or("").trim();
        if media_type.eq_ignore_ascii_case("application/json") {
            Some(Self::Json)
        } else if media_type.eq_ignore_ascii_case("application/postcard") {
            Some(Self::Postcard)
        } else {
            None
        }
    }
}

impl FromStr for Encoding {
    type Err = DecodeError;
    fn from_str(s: &str) -> Result<Self, DecodeError> {
        match s {
            "json" => Ok(Self::Json),
            "postcard" => Ok(Self::Postcard),
            _ => Err(DecodeError::UnknownEncoding(s.chars().take(32).collect())),
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Self::Json => "json",
            Self::Postcard => "postcard",
        })
    }
}

/// Why bytes did not decode. Decoding never panics, whatever the input.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("bad json: {0}")]
    Json(#[from] serde_json::Error),
    #[error("bad postcard: {0}")]
    Postcard(#[from] postcard::Error),
    #[error("{0} bytes left over after the value")]
    TrailingBytes(usize),
    #[error("unknown encoding {0:?}; expected json or postcard")]
    UnknownEncoding(String),
}

/// Encodes an envelope for the wire. Infallible: every field of our types is representable in both formats.
pub fn encode_envelope(encoding: Encoding, envelope: &Envelope) -> Vec<u8> {
    match encoding {
        Encoding::Json => to_json(envelope),
        Encoding::Postcard => to_postcard(&StoredEventRef::new(envelope)),
    }
}

pub fn decode_envelope(encoding: Encoding, bytes: &[u8]) -> Result<Envelope, DecodeError> {
    match encoding {
        Encoding::Json => Ok(serde_json::from_slice(bytes)?),
        Encoding::Postcard => decode_stored(bytes).map(StoredEvent::into_envelope),
    }
}

/// The log's bytes for one event: postcard of [`StoredEvent`].
pub fn encode_stored(envelope: &Envelope) -> Vec<u8> {
    to_postcard(&StoredEventRef::new(envelope))
}

/// Decodes one log record, refusing trailing bytes so a torn or padded record cannot pass as valid.
pub fn decode_stored(bytes: &[u8]) -> Result<StoredEvent, DecodeError> {
    from_postcard(bytes)
}

/// Decodes one whole postcard value; any byte left over is an error.
pub fn from_postcard<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let (value, rest) = postcard::take_from_bytes(bytes)?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes(rest.len()));
    }
    Ok(value)
}

pub fn to_postcard<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    // Cannot fail: postcard's std serializer only errors on types our model never contains (unsized
    // sequences of unknown length, or `collect_str` without alloc).
    postcard::to_stdvec(value).expect("postcard encodes every contract type")
}

pub fn to_json<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    // Cannot fail: all map keys in the contract types are strings, and no Serialize impl here errors.
    serde_json::to_vec(value).expect("json encodes every contract type")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_are_read_case_insensitively() {
        assert_eq!(
            Encoding::from_content_type("application/json"),
            Some(Encoding::Json)
        );
        assert_eq!(
            Encoding::from_content_type("Application/JSON; charset=utf-8"),
            Some(Encoding::Json)
        );
        assert_eq!(
            Encoding::from_content_type("application/postcard"),
            Some(Encoding::Postcard)
        );
        assert_eq!(Encoding::from_content_type("text/plain"), None);
        assert_eq!(Encoding::from_content_type(""), None);
        for encoding in [Encoding::Json, Encoding::Postcard] {
            assert_eq!(
                Encoding::from_content_type(encoding.content_type()),
                Some(encoding)
            );
            assert_eq!(encoding.to_string().parse::<Encoding>().unwrap(), encoding);
        }
    }
}
