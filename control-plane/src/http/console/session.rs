//! Console sessions: the cookie, the [`Session`] extractor, CSRF and cross-site checks, and the
//! one-time flash that carries a new key's secret from the create form to the key page.
//!
//! - **Cookie** `keygate_session`: a random token (190 bits, from the key generator's CSPRNG),
//!   `HttpOnly; SameSite=Strict; Path=/`, `Max-Age` of [`SESSION_TTL_SECS`], and `Secure` when
//!   the request came over HTTPS: `keygate serve` speaks plain HTTP, so that is when a proxy
//!   on the same host (a loopback peer, the only one trusted) says `X-Forwarded-Proto: https`.
//! - **Server side**: the `console_sessions` table keeps only SHA-256 of the token, the digest
//!   of the credential signed in with (re-authenticated on every request, so revoking or
//!   suspending that key ends its sessions) and the expiry; sessions survive restarts and work
//!   on every replica. Sign-out deletes the row.
//! - **CSRF**: every form carries `csrf`, SHA-256 of a fixed label and the session token (so
//!   nothing more is stored, and it is worthless without the cookie), checked on every POST;
//!   and every POST, sign-in included, is refused when `Sec-Fetch-Site` is present and not
//!   `same-origin`, or `Origin` is present and not this host.
//! - **Flash**: the new secret is stored on the session sealed with a keystream derived from
//!   the session token and the key id (the database alone cannot open it), and taken (read and
//!   cleared in one transaction) by the first view of that key's page.

use std::net::IpAddr;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use keygate_protocol::{Digest, key};
use uuid::Uuid;

use super::page::{Nav, PageError};
use crate::http::auth::{Caller, authenticate_digest, client_ip};
use crate::http::error::ApiError;
use crate::runtime::clock::unix_now;
use crate::runtime::state::AppState;

/// The session cookie's name.
pub const COOKIE: &str = "keygate_session";
/// How long a session lasts, seconds (8 hours).
pub const SESSION_TTL_SECS: i64 = 8 * 3600;
/// The prefix of session tokens (made by the key generator; never a valid key prefix in use).
const TOKEN_PREFIX: &str = "kgconsole";

/// A signed-in console user: the caller as the API would see them, and the session.
#[derive(Debug, Clone)]
pub struct Session {
    /// The credential's rights, re-checked on this request.
    pub caller: Caller,
    /// The token forms must carry.
    pub csrf: String,
    token: String,
    token_hash: [u8; 32],
}

impl Session {
    /// The navigation bar for this session.
    pub fn nav(&self) -> Nav {
        let who = match &self.caller.workspace_id {
            None => format!("admin ({})", self.caller.actor.display_prefix),
            Some(w) => format!("{} · workspace {w}", self.caller.actor.name),
        };
        Nav {
            who,
            csrf: self.csrf.clone(),
        }
    }

    /// Checks a POST of this session: its CSRF token and where it comes from.
    pub fn check_post(&self, headers: &HeaderMap, csrf: &str) -> Result<(), PageError> {
        check_same_origin(headers)?;
        let presented = Digest::of(csrf);
        if csrf.is_empty() || presented != Digest::of(&self.csrf) {
            return Err(PageError(csrf_error(
                "the form's CSRF token is missing or wrong",
            )));
        }
        Ok(())
    }

    /// Leaves `secret` (of the key `key_id`) for the next view of that key's page.
    pub async fn set_flash(
        &self,
        state: &AppState,
        key_id: Uuid,
        secret: &str,
    ) -> Result<(), PageError> {
        let sealed = seal(&self.token, key_id, secret.as_bytes());
        state
            .db
            .set_console_flash(&self.token_hash, key_id.as_bytes(), &sealed)
            .await?;
        Ok(())
    }

    /// Takes the flash left for `key_id`, if any: it is gone after this.
    pub async fn take_flash(
        &self,
        state: &AppState,
        key_id: Uuid,
    ) -> Result<Option<String>, PageError> {
        let sealed = state
            .db
            .take_console_flash(&self.token_hash, key_id.as_bytes())
            .await?;
        Ok(sealed.and_then(|s| String::from_utf8(seal(&self.token, key_id, &s)).ok()))
    }

    /// Ends the session (sign-out).
    pub async fn end(&self, state: &AppState) -> Result<(), PageError> {
        state.db.delete_console_session(&self.token_hash).await?;
        Ok(())
    }
}

fn csrf_error(message: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "CSRF", message)
}

fn csrf_of(token: &str) -> String {
    Digest::of(&format!("keygate-console-csrf:{token}")).to_hex()
}

/// Refuses a POST that a browser says comes from another site or origin.
pub fn check_same_origin(headers: &HeaderMap) -> Result<(), PageError> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = get("sec-fetch-site")
        && site != "same-origin"
    {
        return Err(PageError(csrf_error("cross-site form posts are refused")));
    }
    if let Some(origin) = get("origin") {
        let host = get("host").unwrap_or("");
        let same = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .is_some_and(|o| !host.is_empty() && o.eq_ignore_ascii_case(host));
        if !same {
            return Err(PageError(csrf_error("cross-origin form posts are refused")));
        }
    }
    Ok(())
}

/// XORs `data` with a SHA-256 keystream of the session token and the key id (its own inverse).
fn seal(token: &str, key_id: Uuid, data: &[u8]) -> Vec<u8> {
    data.chunks(32)
        .enumerate()
        .flat_map(|(i, chunk)| {
            let block = Digest::of(&format!("keygate-console-flash:{token}:{key_id}:{i}"));
            chunk
                .iter()
                .zip(block.as_bytes().iter())
                .map(|(a, b)| a ^ b)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn cookie_value(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
        .filter(|v| !v.is_empty() && v.len() <= key::MAX_KEY_LEN)
}

impl FromRequestParts<AppState> for Session {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, PageError> {
        let signed_out = || PageError(ApiError::unauthenticated("sign in first"));
        let token = cookie_value(&parts.headers)
            .ok_or_else(signed_out)?
            .to_owned();
        let token_hash = *Digest::of(&token).as_bytes();
        let session = state
            .db
            .find_console_session(&token_hash, unix_now())
            .await?
            .ok_or_else(signed_out)?;
        let digest = Digest::from_bytes(session.credential_digest);
        let caller = authenticate_digest(state, &digest, true, None)
            .await
            .map_err(PageError)?;
        Ok(Self {
            caller,
            csrf: csrf_of(&token),
            token,
            token_hash,
        })
    }
}

/// Starts a session for `credential_digest`; returns the `Set-Cookie` value.
pub async fn start(
    state: &AppState,
    credential_digest: &Digest,
    secure: bool,
) -> Result<HeaderValue, PageError> {
    let token = key::generate(TOKEN_PREFIX)
        .map_err(ApiError::internal)?
        .expose_secret()
        .to_owned();
    let now = unix_now();
    state
        .db
        .insert_console_session(
            Digest::of(&token).as_bytes(),
            credential_digest.as_bytes(),
            now,
            now + SESSION_TTL_SECS,
        )
        .await?;
    cookie(&token, SESSION_TTL_SECS, secure)
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn cleared(secure: bool) -> Result<HeaderValue, PageError> {
    cookie("", 0, secure)
}

fn cookie(token: &str, max_age: i64, secure: bool) -> Result<HeaderValue, PageError> {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .map_err(|e| PageError(ApiError::internal(e)))
}

/// The peer's address and whether the request came over HTTPS, for sign-in's rate limit and
/// cookie.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// The connection's peer address.
    pub ip: IpAddr,
    /// HTTPS: `X-Forwarded-Proto: https` from a loopback peer (a proxy on this host).
    pub secure: bool,
}

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let ip = client_ip(parts);
        let https = parts
            .headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"));
        Ok(Self {
            ip,
            secure: https && ip.is_loopback(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flash_seal_opens_with_the_same_token_only() {
        let id = Uuid::now_v7();
        let secret = "kg_live_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcd";
        let sealed = seal("token-a", id, secret.as_bytes());
        assert_ne!(sealed, secret.as_bytes());
        assert_eq!(seal("token-a", id, &sealed), secret.as_bytes());
        assert_ne!(seal("token-b", id, &sealed), secret.as_bytes());
    }

    #[test]
    fn cross_site_posts_are_refused() {
        let mut h = HeaderMap::new();
        h.insert("host", "127.0.0.1:8080".parse().unwrap());
        assert!(check_same_origin(&h).is_ok());
        h.insert("origin", "http://127.0.0.1:8080".parse().unwrap());
        h.insert("sec-fetch-site", "same-origin".parse().unwrap());
        assert!(check_same_origin(&h).is_ok());
        h.insert("sec-fetch-site", "cross-site".parse().unwrap());
        assert!(check_same_origin(&h).is_err());
        h.remove("sec-fetch-site");
        h.insert("origin", "http://evil.example".parse().unwrap());
        assert!(check_same_origin(&h).is_err());
        h.insert("origin", "null".parse().unwrap());
        assert!(check_same_origin(&h).is_err());
    }

    #[test]
    fn the_cookie_is_http_only_and_strict() {
        let c = cookie("t", 60, false).unwrap();
        let c = c.to_str().unwrap();
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && !c.contains("Secure"));
        assert!(
            cookie("t", 60, true)
                .unwrap()
                .to_str()
                .unwrap()
                .ends_with("; Secure")
        );
    }
}
