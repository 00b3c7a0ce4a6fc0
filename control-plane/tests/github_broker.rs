//! The GitHub token broker against the local fake GitHub: configuration, JWT, installation
//! lookup, scoped-down tokens, caching, single flight, expiry refresh, clock-skew retry, error
//! mapping, GHES base URL, stateless tokens and revocation.

use std::sync::Arc;
use std::time::Duration;

use keygate_control_plane::github::client::RevokeOutcome;
use keygate_control_plane::github::{
    Broker, ConfigError, GithubArgs, GithubConfig, GithubError, Secret, TokenRequest,
};
use keygate_fake_github::{FakeGithub, Operation, Options, RateLimit, fixture, fixture_path};

const APP_ID: u64 = 4242;
const CLIENT_ID: &str = "Iv23liKeygateTest";

fn key(name: &str) -> String {
    fixture_path(name).display().to_string()
}

fn args(spec: String) -> GithubArgs {
    GithubArgs {
        github_apps: vec![spec],
        internal_api_key: None,
        read_permissions: "contents=read".into(),
        write_permissions: "contents=write".into(),
        internal_permissions: "contents=write".into(),
        expose_app_jwt: false,
        not_installed_ttl_secs: 30,
        timeout_secs: 2,
    }
}

/// A fake with the App (knowing both of its public keys) installed on `acme` with two repos.
async fn fake_with(options: Options) -> FakeGithub {
    let fake = FakeGithub::start_with(options).await.expect("fake starts");
    fake.add_app(
        APP_ID,
        CLIENT_ID,
        &[&fixture("app-key-1.pub.pem"), &fixture("app-key-2.pub.pem")],
    )
    .expect("app");
    fake.install(
        APP_ID,
        "acme",
        &["widgets", "gadgets"],
        &[
            ("contents", "write"),
            ("metadata", "read"),
            ("issues", "read"),
        ],
    )
    .expect("install");
    fake
}

async fn fake() -> FakeGithub {
    fake_with(Options::default()).await
}

fn broker(fake: &FakeGithub, extra: &str) -> Broker {
    let spec = format!(
        "name=main,app-id={APP_ID},private-key={},private-key={},api-url={}{extra}",
        key("app-key-1.pkcs1.pem"),
        key("app-key-2.pkcs8.pem"),
        fake.base_url()
    );
    Broker::new(GithubConfig::from_args(&args(spec)).expect("config")).expect("broker")
}

fn perms(p: &[(&str, &str)]) -> keygate_control_plane::github::Permissions {
    p.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn req<'a>(repo: &'a str, p: &'a keygate_control_plane::github::Permissions) -> TokenRequest<'a> {
    TokenRequest {
        app: None,
        owner: "acme",
        repo,
        permissions: p,
        installation_hint: None,
    }
}

#[tokio::test]
async fn mints_a_scoped_down_token_and_reuses_it() {
    let fake = fake().await;
    let b = broker(&fake, "");
    let p = perms(&[("contents", "read")]);
    let first = b.token(req("widgets", &p)).await.expect("token");
    assert!(!first.cache_hit);
    let record = fake
        .token(first.token.token.expose())
        .expect("the fake minted it");
    assert_eq!(record.repositories, vec!["widgets".to_owned()]);
    assert_eq!(record.permissions, p);
    assert_eq!(
        first.token.permissions, p,
        "GitHub's granted permissions are returned"
    );
    assert!(first.token.expires_at > keygate_control_plane::github::jwt::unix_now() + 3000);

    let bodies = fake.token_requests();
    assert_eq!(bodies.len(), 1);
    assert_eq!(
        bodies[0].body,
        serde_json::json!({"repositories": ["widgets"], "permissions": {"contents": "read"}})
    );
    assert_eq!(bodies[0].stateless_header, None);

    let second = b.token(req("widgets", &p)).await.expect("token");
    assert!(second.cache_hit);
    assert_eq!(second.token.token, first.token.token);
    assert_eq!(
        fake.calls(Operation::CreateInstallationAccessToken),
        1,
        "the second request made no GitHub call"
    );
    assert_eq!(fake.calls(Operation::GetRepoInstallation), 1);

    // Different permissions or repository: a different token.
    let other = b
        .token(req("widgets", &perms(&[("contents", "write")])))
        .await
        .expect("token");
    assert_ne!(other.token.token, first.token.token);
    let gadgets = b.token(req("gadgets", &p)).await.expect("token");
    assert_ne!(gadgets.token.token, first.token.token);
    assert_eq!(fake.calls(Operation::CreateInstallationAccessToken), 3);
    assert_eq!(b.metrics().tokens_minted(), 3);
    assert_eq!(b.metrics().cache_hits(), 1);
    let mut text = String::new();
    b.metrics().render(&mut text);
    assert!(
        text.contains("keygate_github_tokens_minted_total 3"),
        "{text}"
    );
    assert!(text.contains(
        "keygate_github_responses_total{operation=\"create_installation_token\",status=\"201\"} 3"
    ));
    assert!(!text.contains(first.token.token.expose()));
}

#[tokio::test]
async fn fifty_concurrent_requests_make_one_github_call() {
    let fake = fake().await;
    fake.set_delay(Duration::from_millis(100));
    let b = Arc::new(broker(&fake, ""));
    let p = Arc::new(perms(&[("contents", "write")]));
    let handles: Vec<_> = (0..50)
        .map(|_| {
            let b = b.clone();
            let p = p.clone();
            tokio::spawn(async move {
                b.token(req("widgets", &p))
                    .await
                    .map(|t| t.token.token.clone())
            })
        })
        .collect();
    let mut tokens = Vec::new();
    for h in handles {
        tokens.push(h.await.expect("join").expect("token"));
    }
    assert!(
        tokens.iter().all(|t| *t == tokens[0]),
        "all got the same token"
    );
    assert_eq!(fake.calls(Operation::CreateInstallationAccessToken), 1);
    assert_eq!(fake.calls(Operation::GetRepoInstallation), 1);
}

#[tokio::test]
async fn a_token_within_five_minutes_of_expiry_is_replaced() {
    let fake = fake().await;
    let b = broker(&fake, "");
    let p = perms(&[("contents", "read")]);
    fake.set_token_ttl(299);
    let a = b.token(req("widgets", &p)).await.expect("token");
    let c = b.token(req("widgets", &p)).await.expect("token");
    assert!(!c.cache_hit);
    assert_ne!(a.token.token, c.token.token);
    assert_eq!(fake.calls(Operation::CreateInstallationAccessToken), 2);
    // A longer-lived one is reused again.
    fake.set_token_ttl(900);
    let d = b.token(req("widgets", &p)).await.expect("token");
    let e = b.token(req("widgets", &p)).await.expect("token");
    assert!(!d.cache_hit && e.cache_hit);
    assert_eq!(fake.calls(Operation::CreateInstallationAccessToken), 3);
    // The installation lookup itself stayed cached throughout.
    assert_eq!(fake.calls(Operation::GetRepoInstallation), 1);
}

#[tokio::test]
async fn clock_skew_is_corrected_from_githubs_date_and_retried_once() {
    for offset in [-400_i64, 700] {
        let fake = fake().await;
        // GitHub's clock behind ours: our `iat` lies in its future. Ahead: our `exp` is too far
        // or already past.
        fake.set_clock_offset(offset);
        let b = broker(&fake, "");
        let p = perms(&[("contents", "read")]);
        let t = b
            .token(req("widgets", &p))
            .await
            .unwrap_or_else(|e| panic!("offset {offset}: {e}"));
        assert!(fake.token(t.token.token.expose()).is_some());
        // One failed lookup, then the corrected one; the token call needed no retry.
        assert_eq!(
            fake.calls(Operation::GetRepoInstallation),
            2,
            "offset {offset}"
        );
        assert_eq!(
            fake.calls(Operation::CreateInstallationAccessToken),
            1,
            "offset {offset}"
        );
        let skew = b.app(None).expect("app").jwt.skew();
        assert!(
            (skew - offset).abs() <= 2,
            "skew {skew} for offset {offset}"
        );
    }
}

#[tokio::test]
async fn a_key_github_does_not_know_fails_without_retry() {
    let fake = fake().await;
    let spec = format!(
        "name=main,client-id={CLIENT_ID},private-key={},api-url={}",
        key("other-app.pkcs8.pem"),
        fake.base_url()
    );
    let b = Broker::new(GithubConfig::from_args(&args(spec)).expect("config")).expect("broker");
    let p = perms(&[("contents", "read")]);
    let err = b
        .token(req("widgets", &p))
        .await
        .expect_err("bad signature");
    match &err {
        GithubError::AppAuth { app, message } => {
            assert_eq!(app, "main");
            assert!(message.contains("could not be decoded"), "{message}");
        }
        other => panic!("expected AppAuth, got {other:?}"),
    }
    assert_eq!(
        fake.calls(Operation::GetRepoInstallation),
        1,
        "no skew retry for a bad signature"
    );
}

#[tokio::test]
async fn signs_with_the_newest_key() {
    let fake = FakeGithub::start().await.expect("fake");
    // GitHub knows only key 2 (key 1 was deleted there).
    fake.add_app(APP_ID, CLIENT_ID, &[&fixture("app-key-2.pub.pem")])
        .expect("app");
    fake.install(APP_ID, "acme", &["widgets"], &[("contents", "write")])
        .expect("install");
    let p = perms(&[("contents", "read")]);
    let newest_last = broker(&fake, "");
    newest_last
        .token(req("widgets", &p))
        .await
        .expect("signed with key 2, listed last");
    let spec = format!(
        "app-id={APP_ID},private-key={},private-key={},api-url={}",
        key("app-key-2.pkcs8.pem"),
        key("app-key-1.pkcs1.pem"),
        fake.base_url()
    );
    let newest_first =
        Broker::new(GithubConfig::from_args(&args(spec)).expect("config")).expect("broker");
    assert!(matches!(
        newest_first.token(req("widgets", &p)).await,
        Err(GithubError::AppAuth { .. })
    ));
}

#[tokio::test]
async fn not_installed_is_reported_and_cached_briefly() {
    let fake = fake().await;
    let b = broker(&fake, "");
    let p = perms(&[("contents", "read")]);
    let r = TokenRequest {
        app: None,
        owner: "acme",
        repo: "secret-plans",
        permissions: &p,
        installation_hint: None,
    };
    let err = b.token(r).await.expect_err("not installed");
    assert!(
        matches!(&err, GithubError::NotInstalled { repo, .. } if repo == "secret-plans"),
        "{err:?}"
    );
    assert!(b.token(r).await.is_err());
    assert_eq!(
        fake.calls(Operation::GetRepoInstallation),
        1,
        "the 404 was cached"
    );
    assert_eq!(fake.calls(Operation::CreateInstallationAccessToken), 0);
}

#[tokio::test]
async fn a_stale_installation_hint_is_looked_up_again() {
    let fake = fake().await;
    let b = broker(&fake, "");
    let p = perms(&[("contents", "read")]);
    let r = TokenRequest {
        app: None,
        owner: "acme",
        repo: "widgets",
        permissions: &p,
        installation_hint: Some(999_999),
    };
    let t = b.token(r).await.expect("token after a fresh lookup");
    assert_ne!(t.installation_id, 999_999);
    assert_eq!(fake.calls(Operation::CreateInstallationAccessToken), 2);
    assert_eq!(fake.calls(Operation::GetRepoInstallation), 1);
}

#[tokio::test]
async fn permissions_the_installation_lacks_are_githubs_422() {
    let fake = fake().await;
    let b = broker(&fake, "");
    let p = perms(&[("administration", "write")]);
    match b.token(req("widgets", &p)).await {
        Err(GithubError::Unprocessable { message }) => {
            assert_eq!(
                message,
                "The permissions requested are not granted to this installation."
            );
        }
        other => panic!("expected Unprocessable, got {other:?}"),
    }
}

#[tokio::test]
async fn rate_limits_become_rate_limited_with_a_retry_delay() {
    let fake = fake().await;
    let b = broker(&fake, "");
    let p = perms(&[("contents", "read")]);
    fake.set_rate_limit(Some(RateLimit::Primary { reset_in: 120 }));
    match b.token(req("widgets", &p)).await {
        Err(GithubError::RateLimited {
            retry_after,
            message,
        }) => {
            assert!((115..=125).contains(&retry_after), "{retry_after}");
            assert!(message.contains("rate limit"), "{message}");
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
    for status in [403, 429] {
        fake.set_rate_limit(Some(RateLimit::Secondary {
            status,
            retry_after: 42,
        }));
        match b.token(req("widgets", &p)).await {
            Err(GithubError::RateLimited { retry_after, .. }) => assert_eq!(retry_after, 42),
            other => panic!("expected RateLimited for {status}, got {other:?}"),
        }
    }
    fake.set_rate_limit(None);
    b.token(req("widgets", &p))
        .await
        .expect("works again after the limit");
}

#[tokio::test]
async fn timeouts_and_unreachable_github_are_network_errors() {
    let fake = fake().await;
    fake.set_delay(Duration::from_secs(4));
    let b = broker(&fake, "");
    let p = perms(&[("contents", "read")]);
    assert!(
        matches!(b.token(req("widgets", &p)).await, Err(GithubError::Network(m)) if m.contains("timeout"))
    );

    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let spec = format!(
        "app-id={APP_ID},private-key={},api-url=http://127.0.0.1:{port}",
        key("app-key-2.pkcs8.pem")
    );
    let b = Broker::new(GithubConfig::from_args(&args(spec)).expect("config")).expect("broker");
    assert!(matches!(
        b.token(req("widgets", &p)).await,
        Err(GithubError::Network(_))
    ));
}

#[tokio::test]
async fn github_enterprise_server_base_url() {
    let fake = fake_with(Options {
        path_prefix: "/api/v3".into(),
    })
    .await;
    assert!(fake.base_url().ends_with("/api/v3"));
    let b = broker(&fake, "");
    let p = perms(&[("contents", "read")]);
    let t = b
        .token(req("widgets", &p))
        .await
        .expect("token via /api/v3");
    assert!(fake.token(t.token.token.expose()).is_some());
    assert_eq!(
        b.revoke(None, &t.token.token).await.expect("revoke"),
        RevokeOutcome::Revoked
    );
}

#[tokio::test]
async fn stateless_and_classic_tokens_both_work() {
    let fake = fake().await;
    let p = perms(&[("contents", "read")]);
    let stateless = broker(&fake, ",stateless-tokens=enabled")
        .token(req("widgets", &p))
        .await
        .expect("token");
    let s = stateless.token.token.expose();
    assert!(
        s.starts_with("ghs_") && s.len() > 500 && s.contains('.'),
        "{} chars",
        s.len()
    );
    let classic = broker(&fake, ",stateless-tokens=disabled")
        .token(req("widgets", &p))
        .await
        .expect("token");
    let c = classic.token.token.expose();
    assert!(c.starts_with("ghs_") && c.len() == 40 && !c.contains('.'));
    let headers: Vec<_> = fake
        .token_requests()
        .into_iter()
        .map(|r| r.stateless_header)
        .collect();
    assert_eq!(
        headers,
        vec![Some("enabled".to_owned()), Some("disabled".to_owned())]
    );
    // A long token revokes like a short one.
    let b = broker(&fake, "");
    assert_eq!(
        b.revoke(None, &stateless.token.token)
            .await
            .expect("revoke"),
        RevokeOutcome::Revoked
    );
    assert!(fake.token(s).expect("known").revoked);
}

#[tokio::test]
async fn revocation_revokes_at_github_and_drops_the_cached_token() {
    let fake = fake().await;
    let b = broker(&fake, "");
    let p = perms(&[("contents", "read")]);
    let t = b.token(req("widgets", &p)).await.expect("token");
    assert_eq!(
        b.revoke(None, &t.token.token).await.expect("revoke"),
        RevokeOutcome::Revoked
    );
    assert!(fake.token(t.token.token.expose()).expect("known").revoked);
    assert_eq!(
        b.revoke(None, &t.token.token).await.expect("second revoke"),
        RevokeOutcome::AlreadyInvalid
    );
    assert_eq!(
        b.revoke(None, &Secret::new("ghs_never-issued"))
            .await
            .expect("unknown"),
        RevokeOutcome::AlreadyInvalid
    );
    let fresh = b.token(req("widgets", &p)).await.expect("token");
    assert!(!fresh.cache_hit);
    assert_ne!(fresh.token.token, t.token.token);
}

#[tokio::test]
async fn secrets_are_redacted_in_debug_output() {
    let fake = fake().await;
    let b = broker(&fake, "");
    let p = perms(&[("contents", "read")]);
    let t = b.token(req("widgets", &p)).await.expect("token");
    let jwt = b.app_jwt(None).expect("jwt");
    let dump = format!("{t:?} {jwt:?} {jwt} {b:?}");
    assert!(!dump.contains(t.token.token.expose()));
    assert!(!dump.contains(jwt.expose()));
    assert!(dump.contains("redacted"));
}

#[tokio::test]
async fn the_app_jwt_is_reused_and_has_githubs_claims() {
    let fake = fake().await;
    let b = broker(&fake, "");
    let a = b.app_jwt(None).expect("jwt");
    assert_eq!(a, b.app_jwt(None).expect("jwt"), "reused");
    let claims: serde_json::Value =
        jsonwebtoken::dangerous::insecure_decode_claims(a.expose()).expect("decodable");
    let (iat, exp) = (
        claims["iat"].as_i64().expect("iat"),
        claims["exp"].as_i64().expect("exp"),
    );
    assert_eq!(exp - iat, 600, "iat 60 s back, exp 9 min ahead");
    assert_eq!(claims["iss"], serde_json::json!(APP_ID));
    let header = jsonwebtoken::decode_header(a.expose()).expect("header");
    assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256);

    let spec = format!(
        "client-id={CLIENT_ID},private-key={},api-url={}",
        key("app-key-1.pkcs1.pem"),
        fake.base_url()
    );
    let by_client =
        Broker::new(GithubConfig::from_args(&args(spec)).expect("config")).expect("broker");
    let claims: serde_json::Value = jsonwebtoken::dangerous::insecure_decode_claims(
        by_client.app_jwt(None).expect("jwt").expose(),
    )
    .expect("claims");
    assert_eq!(claims["iss"], serde_json::json!(CLIENT_ID));
    by_client
        .token(req("widgets", &perms(&[("contents", "read")])))
        .await
        .expect("client id as iss works");
}

#[test]
fn bad_configuration_fails_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN RSA PRIVATE KEY-----\nbm90IGEga2V5\n-----END RSA PRIVATE KEY-----\n",
    )
    .expect("write");
    let public = key("app-key-1.pub.pem");
    let good = key("app-key-1.pkcs1.pem");
    let cases: Vec<(String, &str)> = vec![
        (
            format!(
                "app-id=1,private-key={}",
                dir.path().join("missing.pem").display()
            ),
            "cannot read",
        ),
        (
            format!("app-id=1,private-key={}", garbage.display()),
            "private key",
        ),
        (
            format!("app-id=1,private-key={public}"),
            "not an RSA private key",
        ),
        (
            format!("app-id=1,private-key={good},api-url=http://github.example.com"),
            "must be https",
        ),
        (
            format!("app-id=1,private-key={good},api-url=not a url"),
            "not a URL",
        ),
        (
            format!("app-id=1,private-key={good},api-url=ftp://ghe.example.com/api/v3"),
            "must be https",
        ),
        (format!("private-key={good}"), "needs app-id or client-id"),
        ("app-id=1".to_owned(), "needs at least one private-key"),
        (format!("app-id=x,private-key={good}"), "not a number"),
        (
            format!("app-id=1,private-key={good},colour=blue"),
            "unknown setting",
        ),
    ];
    for (spec, expected) in cases {
        let err = GithubConfig::from_args(&args(spec.clone())).expect_err(&spec);
        let text = err.to_string();
        assert!(text.contains(expected), "{spec}: {text}");
    }
    let mut a = args(format!("app-id=1,private-key={good}"));
    a.read_permissions = "contents=maybe".into();
    assert!(matches!(
        GithubConfig::from_args(&a),
        Err(ConfigError::Permissions { .. })
    ));
    // Good: both key forms, GHES URL, trailing slash trimmed.
    let ok = GithubConfig::from_args(&args(format!(
        "name=ghes,app-id=1,private-key={good},private-key={},api-url=https://ghe.example.com/api/v3/",
        key("app-key-2.pkcs8.pem")
    )))
    .expect("valid");
    assert_eq!(ok.apps[0].api_url, "https://ghe.example.com/api/v3");
    assert_eq!(ok.apps[0].keys.len(), 2);
    let default =
        GithubConfig::from_args(&args(format!("app-id=1,private-key={good}"))).expect("valid");
    assert_eq!(default.apps[0].api_url, "https://api.github.com");
    assert_eq!(default.apps[0].name, "default");
}
