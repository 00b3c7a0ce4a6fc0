//! App authentication as GitHub does it: the `Authorization: Bearer <JWT>` of App endpoints,
//! RS256 signed by one of the App's keys, checked for `iss`, `iat` and `exp` with GitHub's 401
//! messages (clients match on them for clock-skew retries).

use axum::http::{HeaderMap, StatusCode, header};
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;
use serde_json::Value;

use crate::limits::rate_limited;
use crate::responses::{Fail, error};
use crate::state::{Shared, unix_now};

/// How far in the future a JWT's `iat` may be, in seconds.
pub const IAT_TOLERANCE_SECS: i64 = 5;

#[derive(Deserialize)]
struct Claims {
    iat: Option<Value>,
    exp: Option<Value>,
    iss: Option<Value>,
}

/// Authenticates an App JWT as GitHub does; returns the App id.
pub(crate) fn authenticate_app(shared: &Shared, headers: &HeaderMap) -> Result<u64, Fail> {
    let g = shared.lock();
    if let Some(limit) = g.rate_limit {
        return Err(rate_limited(limit, g.clock_offset));
    }
    let Some(auth) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Err(error(StatusCode::UNAUTHORIZED, "Requires authentication"));
    };
    let jwt = auth
        .strip_prefix("Bearer ")
        .or_else(|| auth.strip_prefix("bearer "))
        .unwrap_or("");
    let undecodable = || {
        error(
            StatusCode::UNAUTHORIZED,
            "A JSON web token could not be decoded",
        )
    };
    let head = jsonwebtoken::decode_header(jwt).map_err(|_| undecodable())?;
    if head.alg != Algorithm::RS256 {
        return Err(undecodable());
    }
    let claims: Claims = jsonwebtoken::dangerous::insecure_decode(jwt)
        .map_err(|_| undecodable())?
        .claims;
    let app = match &claims.iss {
        Some(Value::Number(n)) => n.as_u64().and_then(|id| g.apps.get(&id)),
        Some(Value::String(s)) => match s.parse::<u64>() {
            Ok(id) => g.apps.get(&id),
            Err(_) => g.apps.values().find(|a| a.client_id == *s),
        },
        _ => {
            return Err(error(
                StatusCode::UNAUTHORIZED,
                "'Issuer' claim ('iss') must be an Integer",
            ));
        }
    };
    let Some(app) = app else {
        return Err(error(StatusCode::NOT_FOUND, "Integration not found"));
    };
    let mut validation = Validation::new(Algorithm::RS256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    if !app
        .keys
        .iter()
        .any(|k| jsonwebtoken::decode::<Value>(jwt, k, &validation).is_ok())
    {
        return Err(undecodable());
    }
    let now = unix_now() + g.clock_offset;
    let Some(iat) = claims.iat.as_ref().and_then(Value::as_i64) else {
        return Err(iat_error());
    };
    let Some(exp) = claims.exp.as_ref().and_then(Value::as_i64) else {
        return Err(exp_error());
    };
    if iat > now + IAT_TOLERANCE_SECS {
        return Err(iat_error());
    }
    if exp <= now {
        return Err(exp_error());
    }
    if exp - iat > 600 || exp > now + 600 {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "'Expiration time' claim ('exp') is too far in the future",
        ));
    }
    Ok(app.id)
}

fn iat_error() -> Fail {
    error(
        StatusCode::UNAUTHORIZED,
        "'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued",
    )
}

fn exp_error() -> Fail {
    error(
        StatusCode::UNAUTHORIZED,
        "'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires",
    )
}
