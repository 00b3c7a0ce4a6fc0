//! The one HTTP error type: every failure leaves as `{"error":{"code":"…","message":"…"}}`.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An API failure with its HTTP status, a stable machine-readable code and a human message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// HTTP status of the response.
    pub status: StatusCode,
    /// Stable upper-snake-case code, e.g. `NOT_FOUND`.
    pub code: &'static str,
    /// Human-readable explanation; never contains a secret.
    pub message: String,
    /// Seconds for a `Retry-After` header (rate limiting).
    pub retry_after: Option<u64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorBody {
    pub(crate) error: ErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorDetail {
    pub(crate) code: String,
    pub(crate) message: String,
}

impl ApiError {
    /// Builds an error from its parts.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }
    /// 400 `INVALID_REQUEST`: input that fails validation.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "INVALID_REQUEST", message)
    }
    /// 401 `UNAUTHENTICATED`.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", message)
    }
    /// 403 `FORBIDDEN`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "FORBIDDEN", message)
    }
    /// 404 `NOT_FOUND`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", message)
    }
    /// 409 `CONFLICT`: the request is valid but the resource's state forbids it.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "CONFLICT", message)
    }
    /// 500 `INTERNAL`: logs the cause, answers a generic message.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            "internal error",
        )
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if database_unavailable(&e) {
            tracing::warn!(error = %e, "database unavailable");
            let mut err = Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "DATABASE_UNAVAILABLE",
                "the database is unreachable; retry later",
            );
            err.retry_after = Some(1);
            return err;
        }
        Self::internal(format_args!("database: {e}"))
    }
}

/// Whether `e` says the database cannot be reached right now (down, restarting, shutting
/// down, connections exhausted) rather than that the query is wrong: the caller may retry.
fn database_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_) => true,
        // PostgreSQL: class 08 connection exception, 57P01-57P03 shutdown / cannot connect
        // now, 53300 too many connections.
        sqlx::Error::Database(d) => d
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("57P") || c == "53300"),
        _ => false,
    }
}

impl From<crate::storage::StoreError> for ApiError {
    fn from(e: crate::storage::StoreError) -> Self {
        use crate::storage::StoreError as S;
        match e {
            S::Database(e) => e.into(),
            S::KeyNotFound => Self::not_found("no such key"),
            S::ParentNotActive => Self::conflict(e.to_string()),
            S::Rule(r) => r.into(),
        }
    }
}

impl From<crate::domain::RuleError> for ApiError {
    fn from(e: crate::domain::RuleError) -> Self {
        use crate::domain::RuleError as R;
        match e {
            R::Escalation(_) => Self::forbidden(e.to_string()),
            R::Limits(ref l) => Self::new(
                match l {
                    crate::domain::limits::LimitsError::ExceedsParent(_) => StatusCode::FORBIDDEN,
                    _ => StatusCode::BAD_REQUEST,
                },
                l.code(),
                e.to_string(),
            ),
            R::InvalidTransition { .. } | R::TooManyChildren => Self::conflict(e.to_string()),
            _ => Self::invalid(e.to_string()),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let status = r.status();
        let code = match r {
            JsonRejection::MissingJsonContentType(_) => "UNSUPPORTED_MEDIA_TYPE",
            JsonRejection::JsonSyntaxError(_) => "MALFORMED_JSON",
            JsonRejection::JsonDataError(_) => "INVALID_REQUEST",
            _ if status == StatusCode::PAYLOAD_TOO_LARGE => "PAYLOAD_TOO_LARGE",
            _ => "INVALID_REQUEST",
        };
        Self::new(status, code, r.body_text())
    }
}

/// Every route answers an oversize body with the JSON error shape: an extractor that reads the
/// body without the API's JSON extractor (raw `Bytes`, for instance) answers its
/// limit with axum's `413 text/plain`; this turns that answer into the API's own.
pub async fn json_payload_too_large(resp: Response) -> Response {
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if resp.status() != StatusCode::PAYLOAD_TOO_LARGE || is_json {
        return resp;
    }
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "PAYLOAD_TOO_LARGE",
        "the request body is larger than this route accepts",
    )
    .into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
            },
        };
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}

/// A JSON body extractor whose rejections come out in the API's error shape.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> axum::extract::FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        let Json(v) = Json::<T>::from_request(req, state).await?;
        Ok(Self(v))
    }
}

/// A query-string extractor whose rejections come out in the API's error shape.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for ApiQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        let axum::extract::Query(v) = axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map_err(|r| ApiError::invalid(r.body_text()))?;
        Ok(Self(v))
    }
}

/// Fallback for unknown routes, in the API's error shape.
pub async fn route_not_found() -> ApiError {
    ApiError::not_found("no such route")
}
