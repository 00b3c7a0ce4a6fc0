//! Sign-in and sign-out pages: the admin token or a workspace key for a session cookie. Failed
//! sign-ins count against the same per-address limit as failed API authentications.

use askama::Template;
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use keygate_protocol::Digest;
use serde::Deserialize;

use super::page::{Nav, PageError, render, render_with};
use super::session::{self, Peer, Session};
use crate::http::auth::{authenticate, check_limit, note_failure};
use crate::runtime::state::AppState;

#[derive(Template)]
#[template(path = "console/sign_in.html")]
struct SignInPage<'a> {
    nav: Option<Nav>,
    error: Option<&'a str>,
}

/// `GET /sign-in`.
pub async fn form() -> Response {
    render(&SignInPage {
        nav: None,
        error: None,
    })
}

/// The sign-in form.
#[derive(Debug, Deserialize)]
pub struct SignInForm {
    /// The admin token or a workspace key.
    #[serde(default)]
    pub credential: String,
}

/// `POST /sign-in`: a session for a valid admin token or workspace key (with any scope: the
/// pages then ask for the scopes the API would); `repo` and `edge` keys cannot sign in.
pub async fn submit(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    form: Result<Form<SignInForm>, FormRejection>,
) -> Result<Response, PageError> {
    session::check_same_origin(&headers)?;
    check_limit(&state, peer.ip)?;
    let credential = form.map(|Form(f)| f.credential).unwrap_or_default();
    let credential = credential.trim();
    let seen = crate::runtime::canary::Seen::new(
        "/sign-in",
        &peer.ip.to_string(),
        headers
            .get(axum::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok()),
    );
    let r = match authenticate(&state, Some(credential), Some(&seen)).await {
        Ok(c) => c.require_management().map(|()| c),
        Err(e) => Err(e),
    };
    let failed = |status: StatusCode, message: &str| {
        render_with(
            status,
            &SignInPage {
                nav: None,
                error: Some(message),
            },
        )
    };
    match note_failure(&state, peer.ip, r) {
        Ok(_) => {}
        Err(e) if e.status == StatusCode::UNAUTHORIZED => {
            return Ok(failed(
                StatusCode::UNAUTHORIZED,
                "That credential is not valid, or no longer active.",
            ));
        }
        Err(e) if e.status == StatusCode::FORBIDDEN => {
            return Ok(failed(
                StatusCode::FORBIDDEN,
                "Only the admin token or a workspace key can sign in to the console.",
            ));
        }
        Err(e) => return Err(PageError(e)),
    }
    let cookie = session::start(&state, &Digest::of(credential), peer.secure).await?;
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to("/keys")).into_response())
}

/// A form that carries only the CSRF token.
#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    /// The session's CSRF token.
    #[serde(default)]
    pub csrf: String,
}

/// `POST /sign-out`: ends the session server-side and clears the cookie.
pub async fn sign_out(
    State(state): State<AppState>,
    session: Session,
    peer: Peer,
    headers: HeaderMap,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Result<Response, PageError> {
    let csrf = form.map(|Form(f)| f.csrf).unwrap_or_default();
    session.check_post(&headers, &csrf)?;
    session.end(&state).await?;
    let cookie = session::cleared(peer.secure)?;
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to("/sign-in")).into_response())
}
