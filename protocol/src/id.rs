//! Key identifiers: UUIDv7 bytes, written `key_<32 lowercase hex>`.

use std::fmt;
use std::str::FromStr;

use crate::hex;

/// The public identifier of a key: the 16 bytes of a UUIDv7, written `key_<32 lowercase hex>`.
///
/// The control plane creates them (UUIDv7 is time-ordered, so ids sort in creation order); this
/// crate only formats and parses them. In the wire format they are the 16 raw bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId([u8; 16]);

/// The prefix of the text form of a [`KeyId`].
const ID_PREFIX: &str = "key_";

impl KeyId {
    /// Wraps 16 raw UUID bytes.
    #[must_use]
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// The 16 raw UUID bytes.
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// The text form, `key_<32 lowercase hex>`, on the stack: the filter sends it upstream on
    /// every allowed request, without allocating.
    #[must_use]
    pub fn text(&self) -> KeyIdText {
        let mut text = [0u8; KEY_ID_TEXT_LEN];
        text[..ID_PREFIX.len()].copy_from_slice(ID_PREFIX.as_bytes());
        hex::encode_to_slice(&self.0, &mut text[ID_PREFIX.len()..]);
        KeyIdText(text)
    }

    /// Parses `key_<32 lowercase hex>`.
    ///
    /// # Errors
    /// [`IdError::Prefix`] without the `key_` prefix, [`IdError::Length`] if the hex part is not
    /// 32 characters, [`IdError::Char`] if it holds anything but `0-9a-f`.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let hex_part = s.strip_prefix(ID_PREFIX).ok_or(IdError::Prefix)?;
        if hex_part.len() != 32 {
            return Err(IdError::Length);
        }
        if !hex_part
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(IdError::Char);
        }
        hex::decode::<16>(hex_part)
            .map(Self)
            .map_err(|_| IdError::Char)
    }
}

/// Why a key id could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The text does not start with `key_`.
    #[error("a key id starts with `key_`")]
    Prefix,
    /// The part after `key_` is not 32 characters.
    #[error("a key id has 32 hex characters after `key_`")]
    Length,
    /// The part after `key_` holds a character other than `0-9a-f`.
    #[error("a key id holds only lower-case hex digits after `key_`")]
    Char,
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text().as_str())
    }
}

/// Length of a key id's text form.
const KEY_ID_TEXT_LEN: usize = ID_PREFIX.len() + 32;

/// A [`KeyId`]'s text form held by value ([`KeyId::text`]).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KeyIdText([u8; KEY_ID_TEXT_LEN]);

impl KeyIdText {
    /// The text, `key_<32 lowercase hex>`.
    #[must_use]
    pub fn as_str(&self) -> &str {
        // ASCII by construction (the prefix and hex digits).
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Debug for KeyIdText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl FromStr for KeyId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_parse() {
        let id = KeyId::from_bytes([
            0x01, 0x93, 0x4f, 0x2a, 0x7b, 0x00, 0x70, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0xff,
        ]);
        let text = id.to_string();
        assert_eq!(text, "key_01934f2a7b00700080000000000000ff");
        assert_eq!(text.parse::<KeyId>(), Ok(id));
        assert_eq!(id.text().as_str(), text);
        assert_eq!(
            format!("{:?}", id.text()),
            "\"key_01934f2a7b00700080000000000000ff\""
        );
        assert_eq!(
            format!("{id:?}"),
            "KeyId(key_01934f2a7b00700080000000000000ff)"
        );
    }

    #[test]
    fn parse_errors() {
        assert_eq!(
            KeyId::parse("01934f2a7b00700080000000000000ff"),
            Err(IdError::Prefix)
        );
        assert_eq!(KeyId::parse("key_0193"), Err(IdError::Length));
        assert_eq!(
            KeyId::parse("key_01934F2A7B00700080000000000000FF"),
            Err(IdError::Char)
        );
        assert_eq!(
            KeyId::parse("key_01934f2a7b0070008000000000000zff"),
            Err(IdError::Char)
        );
    }
}
