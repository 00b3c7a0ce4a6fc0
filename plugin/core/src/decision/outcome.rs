//! The verdict on one request: a [`Decision`], either an [`Allow`] (header changes, the key's
//! [`Identity`]) or a [`Deny`] (status, challenge, JSON body; [`DenyBodies`] keeps them made).

use std::borrow::Cow;

use keygate_protocol::policy::RateLimit;
use keygate_protocol::{KeyId, KeyIdText};
use smallvec::SmallVec;

use super::Reason;
use crate::config::IdentityHeaders;

/// The filter's verdict on one request.
// Returned by value once per request: boxing the allow would cost an allocation on the path
// that passes (about 256 bytes with smallvec's `union` layout, as the control plane builds it).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision<'a> {
    /// Forward upstream.
    Allow(Allow<'a>),
    /// Reply locally.
    Deny(Deny),
}

impl Decision<'_> {
    /// The reason, whichever way it went.
    pub fn reason(&self) -> Reason {
        match self {
            Decision::Allow(a) => a.reason,
            Decision::Deny(d) => d.reason,
        }
    }
}

/// Let the request through, after these header changes (removals first, then sets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allow<'a> {
    /// Why it passes.
    pub reason: Reason,
    /// Header names to remove (spoofed identity headers, the credential header); held inline
    /// up to four, the usual one or two without an allocation.
    pub remove: Removals<'a>,
    /// Headers to set, replacing what is there (`:path` rewritten without the credential).
    pub set: Vec<(&'a str, String)>,
    /// The names of the key cookies to hide: every `cookie` header becomes
    /// [`cookies_without`](super::cookies_without) them, computed by the host shell from the
    /// bytes the client sent (the decision reads a string view; other cookies may hold bytes that
    /// are not UTF-8), and the header goes when no cookie is left.
    pub strip_cookies: CookieNames<'a>,
    /// Identity headers to add after the removals (key id, owner, scopes), for an allowed key.
    /// None of them is present by then: every one the client sent is in `remove`, so the host
    /// is asked to add, the cheaper call, not to replace.
    pub identity: Option<Identity<'a>>,
}

impl Allow<'_> {
    /// The key that was used (for usage counting): `None` on a pass without a key (anonymous
    /// route, fail-open).
    pub fn key_id(&self) -> Option<KeyId> {
        self.identity.as_ref().map(|i| i.key_id)
    }
}

/// Names of request headers to remove.
pub type Removals<'a> = SmallVec<[&'a str; 4]>;

/// Names of cookies to remove.
pub type CookieNames<'a> = SmallVec<[&'a str; 1]>;

/// The identity headers of an allowed key, without an allocation: the names from the
/// configuration, the key id's text on the stack, the owner and the scope list borrowed from the
/// key set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity<'a> {
    pub(super) names: &'a IdentityHeaders,
    pub(super) key_id: KeyId,
    pub(super) key_id_text: KeyIdText,
    pub(super) owner: &'a str,
    pub(super) scopes: &'a str,
    pub(super) limits: &'a [RateLimit],
}

impl<'a> Identity<'a> {
    /// The key's id.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The key's owner.
    pub fn owner(&self) -> &'a str {
        self.owner
    }

    /// The key's rate limits (empty for most keys), counted by the shell once allowed.
    pub fn limits(&self) -> &'a [RateLimit] {
        self.limits
    }

    /// The headers, name and value: key id, owner, scopes.
    pub fn headers(&self) -> [(&str, &str); 3] {
        [
            (&self.names.key_id, self.key_id_text.as_str()),
            (&self.names.owner, self.owner),
            (&self.names.scopes, self.scopes),
        ]
    }
}

/// The message of an unknown key's deny (and of a canary's).
pub const UNKNOWN_KEY_MESSAGE: &str = "the API key is not valid (unknown, revoked or suspended)";

/// Answer locally with an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deny {
    /// Why.
    pub reason: Reason,
    /// Human-readable message (never contains the key).
    pub message: Cow<'static, str>,
    /// `WWW-Authenticate` value for 401/403.
    pub www_authenticate: Option<&'static str>,
    /// The canary presented, for a [`Reason::CanaryKey`] deny (its hit report); never in the
    /// answer.
    pub canary: Option<KeyId>,
    /// The key out of credits, for a [`Reason::CreditsExhausted`] deny (its usage report counts
    /// the refusal); never in the answer.
    pub exhausted: Option<KeyId>,
}

impl Deny {
    /// A deny with `reason` and `message` (its challenge follows from the reason).
    pub fn new(reason: Reason, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            reason,
            message: message.into(),
            www_authenticate: reason.www_authenticate(),
            canary: None,
            exhausted: None,
        }
    }

    /// The deny of `key`, out of credits: [`Reason::CreditsExhausted`].
    pub fn credits_exhausted(key: KeyId) -> Self {
        Self {
            exhausted: Some(key),
            ..Self::new(
                Reason::CreditsExhausted,
                "the API key has used up its credits",
            )
        }
    }

    /// The deny of the canary `key`: [`Reason::CanaryKey`] with an unknown key's message, so its
    /// answer is an unknown key's, byte for byte.
    pub fn canary(key: KeyId) -> Self {
        Self {
            canary: Some(key),
            ..Self::new(Reason::CanaryKey, UNKNOWN_KEY_MESSAGE)
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        self.reason.status()
    }

    /// The JSON body: `{"error":{"code":"…","message":"…"}}`, with the code of
    /// [`Reason::answered_as`].
    pub fn body(&self) -> String {
        #[derive(serde::Serialize)]
        struct Body<'a> {
            error: Error<'a>,
        }
        #[derive(serde::Serialize)]
        struct Error<'a> {
            code: &'a str,
            message: &'a str,
        }
        let body = Body {
            error: Error {
                code: self.reason.answered_as().code(),
                message: &self.message,
            },
        };
        // Serializing two string fields cannot fail; the fallback keeps the code readable.
        serde_json::to_string(&body).unwrap_or_else(|_| {
            format!(
                r#"{{"error":{{"code":"{}"}}}}"#,
                self.reason.answered_as().code()
            )
        })
    }
}

/// Deny bodies already serialized: a deny whose message is a static string gets the body made
/// the last time its reason had that message (the request path then formats nothing); any
/// other message is serialized afresh.
#[derive(Debug, Default)]
pub struct DenyBodies {
    cached: [Option<(&'static str, String)>; Reason::ALL.len()],
}

impl DenyBodies {
    /// The body of `deny`, the same bytes as [`Deny::body`].
    pub fn body(&mut self, deny: &Deny) -> Cow<'_, str> {
        let Cow::Borrowed(message) = deny.message else {
            return Cow::Owned(deny.body());
        };
        let slot = &mut self.cached[deny.reason.index()];
        match slot {
            Some((m, _)) if *m == message => {}
            _ => *slot = Some((message, deny.body())),
        }
        Cow::Borrowed(slot.as_ref().map_or("", |(_, body)| body.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_deny_bodies_are_the_same_bytes_as_fresh_ones() {
        let mut bodies = DenyBodies::default();
        let unknown = Deny::new(Reason::UnknownKey, "not valid");
        let expired = Deny::new(Reason::ExpiredKey, "expired");
        let other = Deny::new(Reason::UnknownKey, "another static message");
        let scoped = Deny::new(Reason::InsufficientScope, format!("lacks {:?}", "a\"b"));
        // The same static text at another address, and other text of the same length.
        let same_text = Deny::new(Reason::UnknownKey, &*String::from("not valid").leak());
        let same_len = Deny::new(Reason::UnknownKey, &*String::from("not VALID").leak());
        for _ in 0..2 {
            for d in [
                &unknown, &expired, &other, &unknown, &scoped, &same_text, &unknown, &same_len,
                &unknown,
            ] {
                assert_eq!(bodies.body(d), d.body(), "{d:?}");
            }
        }
    }

    #[test]
    fn a_canary_deny_is_an_unknown_key_deny_byte_for_byte() {
        let canary = Deny::canary(KeyId::from_bytes([7; 16]));
        let unknown = Deny::new(Reason::UnknownKey, UNKNOWN_KEY_MESSAGE);
        assert_eq!(canary.status(), unknown.status());
        assert_eq!(canary.www_authenticate, unknown.www_authenticate);
        assert_eq!(canary.body(), unknown.body());
        let mut bodies = DenyBodies::default();
        let cached = bodies.body(&canary).into_owned();
        assert_eq!(cached, bodies.body(&unknown));
        assert!(!canary.body().contains("canary"));
    }

    #[test]
    fn deny_bodies_are_json_with_code_and_escaped_message() {
        let d = Deny::new(Reason::InsufficientScope, "needs \"repo:write\"\n");
        let v: serde_json::Value = serde_json::from_str(&d.body()).unwrap();
        assert_eq!(v["error"]["code"], "insufficient_scope");
        assert_eq!(v["error"]["message"], "needs \"repo:write\"\n");
    }
}
