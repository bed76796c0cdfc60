//! The two encodings: JSON (the default on the wire) and postcard (the log, and a wire option).

use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::event::{Envelope, StoredEvent, StoredEventRef};

/// How an event is encoded on the wire; announced by `Content-Type`.
///
/// Parses from and displays as `json` or `postcard`, the values of `COHOST_WIRE_ENCODING`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Encoding {
    /// `application/json`: the envelope as one compact JSON object. The default, and always the encoding of
    /// HTTP bodies, service requests and replies.
    #[default]
    Json,
    /// `application/postcard; version=3`: a [`StoredEvent`], as the log holds each event. Smaller and not
    /// self-describing; a deployment opts in (`COHOST_WIRE_ENCODING=postcard`).
    Postcard,
}

impl Encoding {
    /// The `Content-Type` to publish with; postcard's names the `StoredEvent` layout it writes (`version=3`).
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            // The layout of the `StoredEvent` the body holds (its first byte says so too), so a consumer
            // learns of a new one before it decodes the body.
            Self::Postcard => "application/postcard; version=3",
        }
    }

    /// Reads a `Content-Type` value; media types are case-insensitive and may carry parameters, which are
    /// ignored. `None` for any other media type.
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
    /// Not the JSON the contract describes: malformed, a missing or mistyped field, an invalid id, or an
    /// `event_id` that is not `{room_id}:{version}`.
    #[error("bad json: {0}")]
    Json(#[from] serde_json::Error),
    /// Not a postcard value of the expected type: truncated, an unknown variant index, a bad `bool` byte, or an
    /// invalid id.
    #[error("bad postcard: {0}")]
    Postcard(#[from] postcard::Error),
    /// A whole postcard value, then this many more bytes: a padded or concatenated record, refused.
    #[error("{0} bytes left over after the value")]
    TrailingBytes(usize),
    /// An encoding name other than `json` or `postcard`; holds at most the input's first 32 characters.
    #[error("unknown encoding {0:?}; expected json or postcard")]
    UnknownEncoding(String),
}

/// Encodes an envelope for the wire, into a new `Vec`. Infallible: every field of our types is representable
/// in both formats. Postcard writes a [`StoredEvent`] of today's layout (`V3`).
pub fn encode_envelope(encoding: Encoding, envelope: &Envelope) -> Vec<u8> {
    match encoding {
        Encoding::Json => to_json(envelope),
        Encoding::Postcard => to_postcard(&StoredEventRef::new(envelope)),
    }
}

/// Decodes an envelope from the wire in `encoding`, as [`Encoding::from_content_type`] read it.
///
/// JSON ignores fields it does not know (envelopes may gain some) and reads a missing `actor` or `command_id` as
/// `None`. Postcard accepts every `StoredEvent` layout and converts it into today's [`Envelope`]. Either way an
/// invalid id or a mismatched `event_id` is an error, never a panic.
pub fn decode_envelope(encoding: Encoding, bytes: &[u8]) -> Result<Envelope, DecodeError> {
    match encoding {
        Encoding::Json => Ok(serde_json::from_slice(bytes)?),
        Encoding::Postcard => decode_stored(bytes).map(StoredEvent::into_envelope),
    }
}

/// One record's bytes: postcard of [`StoredEvent`], in the layout writers write today (`V3`). The same bytes as
/// `encode_envelope(Encoding::Postcard, envelope)`.
// Hidden: public only for the golden vectors' and property tests (here and in cohost-core), which pin one
// record's bytes. Callers use `encode_envelope` with `Encoding::Postcard`.
#[doc(hidden)]
pub fn encode_stored(envelope: &Envelope) -> Vec<u8> {
    to_postcard(&StoredEventRef::new(envelope))
}

/// Decodes one record, of any layout, refusing trailing bytes so a torn or padded record cannot pass as valid.
// Hidden: public only for the golden vectors' and property tests (here and in cohost-core), which check each
// record's layout. Callers use `decode_envelope` with `Encoding::Postcard`, or `from_postcard::<StoredEvent>`.
#[doc(hidden)]
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

/// postcard of any contract type (or a record built of them), into a new `Vec`. Infallible for these types.
pub fn to_postcard<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    // Cannot fail: postcard's std serializer only errors on types our model never contains (unsized
    // sequences of unknown length, or `collect_str` without alloc).
    postcard::to_stdvec(value).expect("postcard encodes every contract type")
}

/// Compact JSON of any contract type, into a new `Vec`: no whitespace, non-ASCII not escaped. Infallible for
/// these types.
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
