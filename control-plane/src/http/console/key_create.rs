//! The create-key form: name, description, expiry presets (never, 7, 30, 90 days, a date),
//! scopes, resources, owner and kind, issued through the API's own `keys::issue::issue_key`.
//! After a create the browser is redirected (POST-redirect-GET) to the key's page, which shows
//! the secret once from the session's flash: never in a URL, the history or a cache.

use askama::Template;
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::page::{Nav, PageError, day_start, render, render_with};
use super::session::Session;
use crate::domain::credits::{CreditsSpec, parse_refill_arg};
use crate::domain::key::parse_key_id;
use crate::domain::limits::{LimitSpec, parse_limit_arg};
use crate::domain::{KeyKind, RuleError};
use crate::http::error::ApiError;
use crate::http::keys::issue::{CreateKey, issue_key};
use crate::runtime::state::AppState;

/// What the form posts (text fields; lists are separated by commas, spaces or new lines).
#[derive(Debug, Default, Deserialize)]
pub struct CreateForm {
    /// The session's CSRF token.
    #[serde(default)]
    pub csrf: String,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Description.
    #[serde(default)]
    pub description: String,
    /// `never`, `7`, `30`, `90` (days) or `custom`.
    #[serde(default)]
    pub expiry: String,
    /// With `custom`: `YYYY-MM-DD`, the key expires at the start of that day (UTC).
    #[serde(default)]
    pub expiry_date: String,
    /// Scopes.
    #[serde(default)]
    pub scopes: String,
    /// Resource allow-list.
    #[serde(default)]
    pub resources: String,
    /// Owner id (default: the signed-in credential's owner).
    #[serde(default)]
    pub owner: String,
    /// `workspace` (default), `repo` or `edge`.
    #[serde(default)]
    pub kind: String,
    /// Rate limits `name=limit/window[@owner]`, separated by commas or spaces (empty: the
    /// workspace's defaults).
    #[serde(default)]
    pub limits: String,
    /// Credits (empty: unlimited).
    #[serde(default)]
    pub credits: String,
    /// Refill `AMOUNT/INTERVAL` (with credits).
    #[serde(default)]
    pub refill: String,
}

#[derive(Template)]
#[template(path = "console/key_new.html")]
struct NewKeyPage<'a> {
    nav: Option<Nav>,
    csrf: &'a str,
    error: Option<&'a str>,
    form: &'a CreateForm,
    admin: bool,
}

/// `GET /keys/new`.
pub async fn form(session: Session) -> Response {
    let form = CreateForm {
        expiry: "90".into(),
        ..CreateForm::default()
    };
    render(&NewKeyPage {
        nav: Some(session.nav()),
        csrf: &session.csrf,
        error: None,
        form: &form,
        admin: session.caller.is_admin(),
    })
}

fn list(text: &str) -> Vec<String> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The form's limits and credits as the API's input (the API checks them).
fn limits_and_credits(
    form: &CreateForm,
) -> Result<(Option<Vec<LimitSpec>>, Option<CreditsSpec>), ApiError> {
    let rule = |e| ApiError::from(RuleError::from(e));
    let limits = list(&form.limits)
        .iter()
        .map(|l| parse_limit_arg(l).map_err(rule))
        .collect::<Result<Vec<_>, _>>()?;
    let credits = match form.credits.trim() {
        "" => None,
        c => Some(CreditsSpec {
            remaining: c
                .parse()
                .map_err(|_| ApiError::invalid("credits: a whole number"))?,
            refill: match form.refill.trim() {
                "" => None,
                r => Some(parse_refill_arg(r).map_err(rule)?),
            },
        }),
    };
    Ok(((!limits.is_empty()).then_some(limits), credits))
}

/// The form's expiry as the API's `expires_in` / `expires_at`.
fn expiry(form: &CreateForm) -> Result<(Option<i64>, Option<i64>), ApiError> {
    const DAY: i64 = 86_400;
    match form.expiry.as_str() {
        "" | "never" => Ok((None, None)),
        "7" => Ok((Some(7 * DAY), None)),
        "30" => Ok((Some(30 * DAY), None)),
        "90" => Ok((Some(90 * DAY), None)),
        "custom" => {
            let at = day_start(form.expiry_date.trim())
                .map_err(|_| ApiError::invalid("pick an expiry date (YYYY-MM-DD)"))?;
            Ok((None, Some(at)))
        }
        _ => Err(ApiError::invalid("unknown expiry choice")),
    }
}

async fn issue(
    state: &AppState,
    session: &Session,
    f: &CreateForm,
) -> Result<(String, uuid::Uuid), ApiError> {
    let (expires_in, expires_at) = expiry(f)?;
    let kind = match f.kind.as_str() {
        "" => None,
        k => Some(KeyKind::parse(k).ok_or_else(|| ApiError::invalid("unknown kind"))?),
    };
    let owner = f.owner.trim();
    let (limits, credits) = limits_and_credits(f)?;
    let issued = issue_key(
        state,
        &session.caller,
        CreateKey {
            name: f.name.trim().to_owned(),
            description: f.description.trim().to_owned(),
            kind,
            scopes: list(&f.scopes),
            resources: list(&f.resources),
            expires_in,
            expires_at,
            owner_id: (!owner.is_empty()).then(|| owner.to_owned()),
            metadata: None,
            workspace_id: None,
            prefix: None,
            limits,
            credits,
        },
    )
    .await?;
    let id =
        parse_key_id(&issued.key.id).ok_or_else(|| ApiError::internal("issued a malformed id"))?;
    Ok((issued.secret, id))
}

/// `POST /keys`: issues the key, leaves its secret in the session's flash and redirects to its
/// page; invalid input shows the form again with the error and the values kept.
pub async fn create(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    form: Result<Form<CreateForm>, FormRejection>,
) -> Result<Response, PageError> {
    let f = form.map(|Form(f)| f).unwrap_or_default();
    session.check_post(&headers, &f.csrf)?;
    match issue(&state, &session, &f).await {
        Ok((secret, id)) => {
            session.set_flash(&state, id, &secret).await?;
            Ok(
                Redirect::to(&format!("/keys/{}", crate::domain::key::format_key_id(id)))
                    .into_response(),
            )
        }
        Err(e) if e.status.is_client_error() => Ok(render_with(
            if e.status == StatusCode::FORBIDDEN {
                StatusCode::FORBIDDEN
            } else {
                StatusCode::BAD_REQUEST
            },
            &NewKeyPage {
                nav: Some(session.nav()),
                csrf: &session.csrf,
                error: Some(&e.message),
                form: &f,
                admin: session.caller.is_admin(),
            },
        )),
        Err(e) => Err(PageError(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_credits_come_from_their_fields() {
        let f = CreateForm {
            limits: "burst=100/10s, day=5000/1d@owner".into(),
            credits: " 500 ".into(),
            refill: "500/daily".into(),
            ..CreateForm::default()
        };
        let (limits, credits) = limits_and_credits(&f).unwrap();
        assert_eq!(limits.unwrap().len(), 2);
        let c = credits.unwrap();
        assert_eq!((c.remaining, c.refill.map(|r| r.amount)), (500, Some(500)));
        assert_eq!(
            limits_and_credits(&CreateForm::default()).unwrap(),
            (None, None)
        );
        for bad in [
            CreateForm {
                limits: "burst".into(),
                ..CreateForm::default()
            },
            CreateForm {
                credits: "many".into(),
                ..CreateForm::default()
            },
            CreateForm {
                credits: "5".into(),
                refill: "daily".into(),
                ..CreateForm::default()
            },
        ] {
            assert!(limits_and_credits(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn lists_and_expiry_presets() {
        assert_eq!(
            list("keys:read, keys:write\nrepo:x"),
            ["keys:read", "keys:write", "repo:x"]
        );
        let mut f = CreateForm {
            expiry: "30".into(),
            ..CreateForm::default()
        };
        assert_eq!(expiry(&f).unwrap(), (Some(30 * 86_400), None));
        f.expiry = "never".into();
        assert_eq!(expiry(&f).unwrap(), (None, None));
        f.expiry = "custom".into();
        f.expiry_date = "2030-01-02".into();
        assert_eq!(expiry(&f).unwrap(), (None, Some(1_893_542_400)));
        f.expiry_date = "soon".into();
        assert!(expiry(&f).is_err());
    }
}
