//! GitHub REST calls for the broker, with GitHub's required headers, the App-JWT clock-skew
//! retry, metrics, and GitHub's failures mapped to [`GithubError`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{ACCEPT, AUTHORIZATION, DATE, HeaderMap, RETRY_AFTER, USER_AGENT};
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};

use super::jwt::{AppJwt, is_clock_skew_message, unix_now};
use super::metrics::GithubMetrics;
use super::{GithubError, Permissions, Secret};

/// The REST API version the broker speaks.
pub const API_VERSION: &str = "2022-11-28";
/// Media type GitHub documents for its REST API.
pub const MEDIA_TYPE: &str = "application/vnd.github+json";
const USER_AGENT_VALUE: &str = concat!("keygate-control-plane/", env!("CARGO_PKG_VERSION"));

/// An installation token as GitHub returned it.
#[derive(Debug, Clone)]
pub struct InstallationToken {
    /// The token; no assumption about its length or alphabet.
    pub token: Secret,
    /// Expiry, unix seconds on GitHub's clock.
    pub expires_at: i64,
    /// Expiry as GitHub wrote it (ISO 8601).
    pub expires_at_text: String,
    /// The permissions GitHub granted.
    pub permissions: Permissions,
    /// Repository names the token is scoped to.
    pub repositories: Vec<String>,
}

/// What revocation found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeOutcome {
    /// GitHub revoked the token (204).
    Revoked,
    /// GitHub did not accept the token (401): already revoked or expired.
    AlreadyInvalid,
}

#[derive(Deserialize)]
struct ErrorBody {
    message: Option<String>,
}

#[derive(Deserialize)]
struct InstallationBody {
    id: u64,
}

#[derive(Serialize)]
struct TokenRequestBody<'a> {
    repositories: &'a [String],
    permissions: &'a Permissions,
}

#[derive(Deserialize)]
struct TokenBody {
    token: String,
    expires_at: String,
    #[serde(default)]
    permissions: Permissions,
    #[serde(default)]
    repositories: Vec<RepoBody>,
}

#[derive(Deserialize)]
struct RepoBody {
    name: String,
}

/// A received answer, body read.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: bytes::Bytes,
}

impl Answer {
    fn message(&self) -> String {
        serde_json::from_slice::<ErrorBody>(&self.body)
            .ok()
            .and_then(|b| b.message)
            .unwrap_or_else(|| format!("{} bytes of non-JSON body", self.body.len()))
    }
}

/// One App-authenticated request.
struct Call<'a> {
    operation: &'static str,
    method: Method,
    url: &'a str,
    extra: &'a [(&'static str, &'a str)],
    body: Option<Vec<u8>>,
}

/// The HTTP client for GitHub.
#[derive(Debug, Clone)]
pub struct GithubClient {
    http: reqwest::Client,
    metrics: Arc<GithubMetrics>,
}

impl GithubClient {
    /// A client with the given per-request timeout.
    ///
    /// # Errors
    /// If the TLS backend cannot be initialised.
    pub fn new(timeout: Duration, metrics: Arc<GithubMetrics>) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()?;
        Ok(Self { http, metrics })
    }

    async fn send(
        &self,
        operation: &'static str,
        method: Method,
        url: &str,
        auth: &str,
        extra: &[(&'static str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<Answer, GithubError> {
        let mut req = self
            .http
            .request(method, url)
            .header(ACCEPT, MEDIA_TYPE)
            .header("X-GitHub-Api-Version", API_VERSION)
            .header(USER_AGENT, USER_AGENT_VALUE)
            .header(AUTHORIZATION, auth);
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b);
        }
        let started = Instant::now();
        let result = async {
            let resp = req.send().await?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let body = resp.bytes().await?;
            Ok::<_, reqwest::Error>(Answer {
                status,
                headers,
                body,
            })
        }
        .await;
        match result {
            Ok(a) => {
                self.metrics.github_call(
                    operation,
                    a.status.as_u16().to_string(),
                    started.elapsed(),
                );
                Ok(a)
            }
            Err(e) => {
                let kind = if e.is_timeout() { "timeout" } else { "network" };
                self.metrics
                    .github_call(operation, kind.to_owned(), started.elapsed());
                // reqwest's message names the URL (no secrets in it), never headers.
                Err(GithubError::Network(if e.is_timeout() {
                    format!("timeout: {e}")
                } else {
                    e.to_string()
                }))
            }
        }
    }

    /// An App-JWT-authenticated call; on a clock-skew 401 corrects the JWT clock from GitHub's
    /// `Date` header and retries once. A remaining 401 is [`GithubError::AppAuth`].
    async fn app_call(
        &self,
        app: &str,
        jwt: &AppJwt,
        call: Call<'_>,
    ) -> Result<Answer, GithubError> {
        let Call {
            operation,
            method,
            url,
            extra,
            body,
        } = call;
        let mut retried = false;
        loop {
            let token = jwt.token()?;
            let auth = format!("Bearer {}", token.expose());
            let answer = self
                .send(operation, method.clone(), url, &auth, extra, body.clone())
                .await?;
            if answer.status != StatusCode::UNAUTHORIZED {
                return Ok(answer);
            }
            let message = answer.message();
            if !retried
                && is_clock_skew_message(&message)
                && let Some(server_now) = server_date(&answer.headers)
            {
                jwt.correct_clock(server_now);
                retried = true;
                continue;
            }
            return Err(GithubError::AppAuth {
                app: app.to_owned(),
                message,
            });
        }
    }

    /// `GET /repos/{owner}/{repo}/installation`: the installation id, or `None` on 404.
    ///
    /// # Errors
    /// GitHub's failures other than 404.
    pub async fn repo_installation(
        &self,
        app: &str,
        jwt: &AppJwt,
        base: &str,
        owner: &str,
        repo: &str,
    ) -> Result<Option<u64>, GithubError> {
        let url = format!(
            "{base}/repos/{}/{}/installation",
            path_segment(owner),
            path_segment(repo)
        );
        let a = self
            .app_call(
                app,
                jwt,
                Call {
                    operation: "get_repo_installation",
                    method: Method::GET,
                    url: &url,
                    extra: &[],
                    body: None,
                },
            )
            .await?;
        match a.status {
            StatusCode::OK => serde_json::from_slice::<InstallationBody>(&a.body)
                .map(|b| Some(b.id))
                .map_err(|e| GithubError::Upstream {
                    status: 200,
                    message: format!("unexpected installation body: {e}"),
                }),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(failure(&a, jwt.now())),
        }
    }

    /// `POST /app/installations/{id}/access_tokens` scoped to `repositories` and `permissions`.
    /// `Ok(None)` when GitHub answers 404 (installation gone).
    ///
    /// # Errors
    /// GitHub's failures mapped to [`GithubError`].
    #[allow(clippy::too_many_arguments)]
    pub async fn create_token(
        &self,
        app: &str,
        jwt: &AppJwt,
        base: &str,
        installation_id: u64,
        repositories: &[String],
        permissions: &Permissions,
        stateless: Option<bool>,
    ) -> Result<Option<InstallationToken>, GithubError> {
        let url = format!("{base}/app/installations/{installation_id}/access_tokens");
        let body = serde_json::to_vec(&TokenRequestBody {
            repositories,
            permissions,
        })
        .map_err(|e| GithubError::Upstream {
            status: 0,
            message: e.to_string(),
        })?;
        let extra: &[(&'static str, &str)] = match stateless {
            Some(true) => &[("X-GitHub-Stateless-S2S-Token", "enabled")],
            Some(false) => &[("X-GitHub-Stateless-S2S-Token", "disabled")],
            None => &[],
        };
        let a = self
            .app_call(
                app,
                jwt,
                Call {
                    operation: "create_installation_token",
                    method: Method::POST,
                    url: &url,
                    extra,
                    body: Some(body),
                },
            )
            .await?;
        match a.status {
            StatusCode::CREATED | StatusCode::OK => {
                let b: TokenBody =
                    serde_json::from_slice(&a.body).map_err(|e| GithubError::Upstream {
                        status: a.status.as_u16(),
                        message: format!("unexpected token body: {e}"),
                    })?;
                let expires_at =
                    parse_rfc3339(&b.expires_at).ok_or_else(|| GithubError::Upstream {
                        status: a.status.as_u16(),
                        message: format!("unparseable expires_at `{}`", b.expires_at),
                    })?;
                if b.token.is_empty() {
                    return Err(GithubError::Upstream {
                        status: a.status.as_u16(),
                        message: "empty token".into(),
                    });
                }
                Ok(Some(InstallationToken {
                    token: Secret::new(b.token),
                    expires_at,
                    expires_at_text: b.expires_at,
                    permissions: b.permissions,
                    repositories: b.repositories.into_iter().map(|r| r.name).collect(),
                }))
            }
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(failure(&a, jwt.now())),
        }
    }

    /// `DELETE /installation/token`, authenticated by the token itself.
    ///
    /// # Errors
    /// GitHub's failures other than 204 and 401.
    pub async fn revoke(&self, base: &str, token: &Secret) -> Result<RevokeOutcome, GithubError> {
        let url = format!("{base}/installation/token");
        let auth = format!("Bearer {}", token.expose());
        let a = self
            .send(
                "revoke_installation_token",
                Method::DELETE,
                &url,
                &auth,
                &[],
                None,
            )
            .await?;
        match a.status {
            StatusCode::NO_CONTENT | StatusCode::OK => Ok(RevokeOutcome::Revoked),
            StatusCode::UNAUTHORIZED => Ok(RevokeOutcome::AlreadyInvalid),
            _ => Err(failure(&a, unix_now())),
        }
    }
}

/// Maps a non-success answer other than 401/404 to an error.
fn failure(a: &Answer, fallback_now: i64) -> GithubError {
    let message = a.message();
    let status = a.status.as_u16();
    let header = |name: &str| {
        a.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let retry_after = header(RETRY_AFTER.as_str()).and_then(|v| v.trim().parse::<u64>().ok());
    let remaining_zero = header("x-ratelimit-remaining").is_some_and(|v| v.trim() == "0");
    if status == 429 || (status == 403 && (retry_after.is_some() || remaining_zero)) {
        let now = server_date(&a.headers).unwrap_or(fallback_now);
        let retry_after = retry_after
            .or_else(|| {
                header("x-ratelimit-reset")
                    .and_then(|r| r.trim().parse::<i64>().ok())
                    .map(|r| (r - now).max(1) as u64)
            })
            .unwrap_or(60);
        return GithubError::RateLimited {
            retry_after,
            message,
        };
    }
    match status {
        403 => GithubError::Forbidden { message },
        422 => GithubError::Unprocessable { message },
        _ => GithubError::Upstream { status, message },
    }
}

/// GitHub's `Date` header as unix seconds.
fn server_date(headers: &HeaderMap) -> Option<i64> {
    let v = headers.get(DATE)?.to_str().ok()?;
    let t = httpdate::parse_http_date(v).ok()?;
    t.duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs() as i64)
}

fn parse_rfc3339(s: &str) -> Option<i64> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

/// Percent-encodes a path segment (owner and repository names are `[A-Za-z0-9._-]` on GitHub,
/// but the broker does not trust that).
fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
