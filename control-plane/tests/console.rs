//! The operator console in a real browser: Debian's headless chromium (WebDriver, through
//! `browser/`) against the real `keygate serve` binary. Each scenario starts its own control
//! plane and browser and stops them; the pages' screenshots land in `target/console-screenshots/`
//! (`KEYGATE_UPDATE_SCREENSHOTS=1` refreshes the committed ones in `docs/screenshots/`).

mod browser;

use browser::{ADMIN_TOKEN, Browser, Console, KEY_PREFIX, ONE_AT_A_TIME, SignIn};
use serde_json::json;

/// Creates a key through the form and returns its id (the key page is then open, secret shown).
async fn create_through_the_form(b: &Browser, c: &Console, name: &str) -> String {
    b.goto(&c.url("/keys/new")).await;
    b.fill("#name", name).await;
    b.fill("#description", "made by the browser test").await;
    b.find("#expiry")
        .await
        .select_by_value("30")
        .await
        .expect("expiry preset");
    b.fill("#scopes", "orders:read").await;
    b.fill("#owner", "team-orders").await;
    b.click("#create").await;
    b.find("#key-id").await.text().await.expect("key id")
}

#[tokio::test]
async fn sign_in_create_a_key_read_the_secret_once_then_revoke_it() {
    let _one = ONE_AT_A_TIME.lock().await;
    let c = Console::start();
    let b = Browser::start().await;

    b.goto(&c.url("/")).await;
    b.find("#credential").await;
    assert_eq!(b.path().await, "/sign-in", "signed out, / leads to sign-in");
    b.screenshot("sign-in").await;
    b.sign_in(&c, ADMIN_TOKEN).await;
    b.screenshot("keys-empty").await;

    b.goto(&c.url("/keys/new")).await;
    b.find("#name").await;
    b.screenshot("key-new").await;
    let id = create_through_the_form(&b, &c, "orders service").await;

    // The secret, once, on the key's page: not in its URL.
    let secret = b.text("#secret").await;
    assert!(secret.starts_with(&format!("{KEY_PREFIX}_")), "{secret}");
    assert!(
        b.text("#secret-box")
            .await
            .contains("you will not see it again")
    );
    assert!(b.has("#copy").await, "a copy button");
    assert_eq!(b.path().await, format!("/keys/{id}"));
    let url = b.client.current_url().await.expect("url").to_string();
    assert!(!url.contains(&secret), "the secret is not in the URL");
    assert_eq!(b.text("#status").await, "active");
    b.screenshot("key-created-secret").await;

    // It is a real key: the API accepts it.
    let verify: serde_json::Value = reqwest::Client::new()
        .post(c.url("/v1/keys/verify"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "key": secret }))
        .send()
        .await
        .expect("verify")
        .json()
        .await
        .expect("JSON");
    assert_eq!(verify["valid"], true, "{verify}");

    // Reload: gone, and not in the page's source either.
    b.client.refresh().await.expect("reload");
    b.find("#key-id").await;
    assert!(!b.has("#secret").await, "the secret is shown only once");
    assert!(!b.source().await.contains(&secret));
    b.screenshot("key").await;

    // Back in history to the key page: still no secret.
    b.goto(&c.url("/keys")).await;
    b.find("#keys").await;
    b.client.back().await.expect("back");
    b.find("#key-id").await;
    assert!(
        !b.source().await.contains(&secret),
        "not from the history either"
    );

    // Rotate with an hour's grace: a new secret, once; the old one still works meanwhile.
    b.find("#grace")
        .await
        .select_by_value("3600")
        .await
        .expect("grace");
    b.click("#rotate").await;
    let rotated = b.text("#secret").await;
    assert_ne!(rotated, secret);
    assert_eq!(b.path().await, format!("/keys/{id}"));
    for s in [&secret, &rotated] {
        let v: serde_json::Value = reqwest::Client::new()
            .post(c.url("/v1/keys/verify"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({ "key": s }))
            .send()
            .await
            .expect("verify")
            .json()
            .await
            .expect("JSON");
        assert_eq!(v["valid"], true, "{v}");
    }
    b.client.refresh().await.expect("reload");
    b.find("#key-id").await;
    assert!(
        !b.source().await.contains(&rotated),
        "the rotated secret is shown once"
    );

    // Suspend, reactivate, then revoke with a reason behind the confirmation step.
    b.click("#suspend").await;
    b.find("#reactivate").await;
    assert_eq!(b.text("#status").await, "suspended");
    b.click("#reactivate").await;
    b.find("#suspend").await;
    assert_eq!(b.text("#status").await, "active");
    b.click("#revoke").await;
    b.find("#confirm-revoke").await;
    assert_eq!(b.path().await, format!("/keys/{id}/revoke"));
    b.fill("#reason", "leaked in a log").await;
    b.screenshot("key-revoke-confirm").await;
    b.click("#confirm-revoke").await;
    b.find("#key-id").await;
    assert_eq!(b.text("#status").await, "revoked");
    assert_eq!(c.api_status(&id).await, "revoked");
    assert!(!b.has("#revoke").await, "no second revoke");
    // Its history, from the audit log: every change, the reason kept.
    let history = b.text("#history").await;
    for action in [
        "key.create",
        "key.suspend",
        "key.reactivate",
        "key.revoke",
        "leaked in a log",
    ] {
        assert!(history.contains(action), "{action} in {history}");
    }

    // The list shows the badge; the filter finds it.
    b.goto(&c.url("/keys?status=revoked")).await;
    let row = b.text(&format!("tr[data-key-id='{id}'] .badge")).await;
    assert_eq!(row, "revoked");
    // A fuller list for its screenshot: keys of other owners and kinds, one suspended.
    for (name, owner, kind) in [
        ("billing worker", "team-billing", "workspace"),
        ("ci deploy", "ci", "repo"),
        ("search indexer", "team-search", "workspace"),
    ] {
        let k = c
            .api_create(
                ADMIN_TOKEN,
                json!({"name": name, "owner_id": owner, "kind": kind, "expires_in": 7 * 86_400}),
            )
            .await;
        if name == "ci deploy" {
            let kid = k["key"]["id"].as_str().expect("id");
            c.api_post(&format!("/v1/keys/{kid}/suspend")).await;
        }
    }
    b.goto(&c.url("/keys")).await;
    b.find("#keys").await;
    assert_eq!(
        b.client
            .find_all(fantoccini::Locator::Css("#keys tbody tr"))
            .await
            .expect("rows")
            .len(),
        4
    );
    b.screenshot("keys").await;
    b.close().await;
}

#[tokio::test]
async fn sign_out_ends_the_session_and_pages_lead_to_sign_in() {
    let _one = ONE_AT_A_TIME.lock().await;
    let c = Console::start();
    let b = Browser::start().await;
    b.sign_in(&c, ADMIN_TOKEN).await;
    let cookie = b
        .client
        .get_named_cookie("keygate_session")
        .await
        .expect("session cookie");
    assert_eq!(cookie.http_only(), Some(true));
    assert!(cookie.same_site().is_some_and(|s| s.is_strict()));

    b.click("#sign-out").await;
    b.find("#credential").await;
    assert_eq!(b.path().await, "/sign-in");
    for page in ["/keys", "/keys/new", "/"] {
        b.goto(&c.url(page)).await;
        b.find("#credential").await;
        assert_eq!(b.path().await, "/sign-in", "{page} after sign-out");
    }

    // The old cookie, put back, is no longer a session: revoked on the server.
    b.client.add_cookie(cookie).await.expect("add cookie");
    b.goto(&c.url("/keys")).await;
    b.find("#credential").await;
    assert_eq!(b.path().await, "/sign-in", "a replayed session cookie");

    // A wrong credential says so and stays on the page.
    b.fill("#credential", "kg_live_not-a-key").await;
    b.click("#sign-in").await;
    assert!(b.text("#sign-in-error").await.contains("not valid"));
    b.screenshot("sign-in-failed").await;
    b.close().await;
}

#[tokio::test]
async fn a_workspace_key_sees_and_changes_only_its_own_workspace() {
    let _one = ONE_AT_A_TIME.lock().await;
    let c = Console::start();
    let team_a = c.workspace_key("team-a").await;
    let alpha = c
        .api_create(
            ADMIN_TOKEN,
            json!({"name": "alpha", "workspace_id": "team-a"}),
        )
        .await;
    let beta = c
        .api_create(
            ADMIN_TOKEN,
            json!({"name": "beta", "workspace_id": "team-b"}),
        )
        .await;
    let alpha_id = alpha["key"]["id"].as_str().expect("id").to_owned();
    let beta_id = beta["key"]["id"].as_str().expect("id").to_owned();

    let b = Browser::start().await;
    b.sign_in(&c, &team_a).await;
    assert!(b.text("#who").await.contains("team-a"));
    let list = b.text("#keys").await;
    assert!(list.contains("alpha"), "{list}");
    assert!(!list.contains("beta"), "{list}");
    // Asking for the other workspace's keys by filter changes nothing either.
    b.goto(&c.url("/keys?owner=&kind=&status=")).await;
    assert!(!b.text("#keys").await.contains("beta"));

    // Editing URLs: the other workspace's key is not found, as a missing one.
    for page in [
        format!("/keys/{beta_id}"),
        format!("/keys/{beta_id}/revoke"),
    ] {
        b.goto(&c.url(&page)).await;
        assert!(b.text("#error-title").await.starts_with("404"), "{page}");
    }
    b.screenshot("not-found").await;

    // Replaying a form of its own key at the other workspace's key: refused, nothing changes.
    for action in ["suspend", "revoke"] {
        b.goto(&c.url(&format!("/keys/{alpha_id}"))).await;
        b.find("#key-id").await;
        b.script(&format!(
            "var f = document.getElementById('suspend').form; \
             f.action = '/keys/{beta_id}/{action}'; f.submit();"
        ))
        .await;
        assert!(
            b.text("#error-title").await.starts_with("404"),
            "{action} replayed at another workspace's key"
        );
    }
    assert_eq!(c.api_status(&beta_id).await, "active");
    assert_eq!(c.api_status(&alpha_id).await, "active");
    b.close().await;
}

#[tokio::test]
async fn posts_without_the_csrf_token_or_from_another_site_are_refused() {
    let _one = ONE_AT_A_TIME.lock().await;
    let c = Console::start();
    let b = Browser::start().await;
    b.sign_in(&c, ADMIN_TOKEN).await;
    let id = create_through_the_form(&b, &c, "target").await;

    // The suspend form without its token.
    b.client.refresh().await.expect("reload");
    b.find("#suspend").await;
    b.script("document.getElementById('suspend').form.querySelector('[name=csrf]').remove();")
        .await;
    b.click("#suspend").await;
    assert!(b.text("#error-title").await.starts_with("403"));
    assert!(b.text("#error-message").await.contains("CSRF"));
    // With a wrong token.
    b.goto(&c.url(&format!("/keys/{id}"))).await;
    b.find("#suspend").await;
    b.script("document.getElementById('suspend').form.querySelector('[name=csrf]').value = 'x';")
        .await;
    b.click("#suspend").await;
    assert!(b.text("#error-title").await.starts_with("403"));
    assert_eq!(c.api_status(&id).await, "active");

    // A page on another site posting the real form, token included: refused (the strict
    // cookie does not go along, and the browser says cross-site).
    b.goto(&c.url(&format!("/keys/{id}"))).await;
    let csrf = b
        .find("#suspend")
        .await
        .client()
        .execute(
            "return document.getElementById('suspend').form.querySelector('[name=csrf]').value;",
            Vec::new(),
        )
        .await
        .expect("csrf");
    let csrf = csrf.as_str().expect("string").to_owned();
    let attack = format!(
        "<form id=f method=post action='{}'><input name=csrf value='{csrf}'></form>\
         <script>document.getElementById('f').submit()</script>",
        c.url(&format!("/keys/{id}/suspend"))
    );
    b.goto(&format!("data:text/html,{}", attack.replace('#', "%23")))
        .await;
    b.find("#credential, #error-title").await;
    assert!(!b.has("#key-id").await, "the cross-site post did not act");
    assert_eq!(c.api_status(&id).await, "active");
    b.close().await;
}

#[tokio::test]
async fn a_key_named_like_a_script_is_shown_as_text() {
    let _one = ONE_AT_A_TIME.lock().await;
    let c = Console::start();
    let b = Browser::start().await;
    b.sign_in(&c, ADMIN_TOKEN).await;
    let name = "<script>alert(1)</script>";
    create_through_the_form(&b, &c, name).await;
    assert_eq!(b.text("#key-name").await, name);
    assert!(b.client.get_alert_text().await.is_err(), "no alert ran");
    b.goto(&c.url("/keys")).await;
    assert_eq!(b.text(".key-name").await, name);
    assert!(b.client.get_alert_text().await.is_err(), "no alert ran");
    assert!(!b.source().await.contains(name), "escaped in the HTML");
    b.close().await;
}

/// Not a browser scenario: what the pages answer at the HTTP level.
#[tokio::test]
async fn sign_in_shares_the_failed_auth_limit_and_pages_carry_security_headers() {
    let c = Console::start_with(&["--auth-failures-per-minute", "3"]);
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let sign_in = |credential: &'static str, proto: Option<&'static str>| {
        // Both credentials are URL-safe as they are.
        let mut r = http
            .post(c.url("/sign-in"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("credential={credential}"));
        if let Some(p) = proto {
            r = r.header("x-forwarded-proto", p);
        }
        r.send()
    };

    // Signed in over a proxy that says HTTPS (from loopback): the cookie is Secure.
    let ok = sign_in(ADMIN_TOKEN, Some("https")).await.expect("sign in");
    assert_eq!(ok.status(), 303);
    let cookie = ok.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .to_owned();
    for attr in ["HttpOnly", "SameSite=Strict", "Max-Age=28800", "Secure"] {
        assert!(cookie.contains(attr), "{cookie} lacks {attr}");
    }
    let session = cookie.split(';').next().expect("pair").to_owned();
    let page = http
        .get(c.url("/keys"))
        .header("cookie", &session)
        .send()
        .await
        .expect("keys");
    assert_eq!(page.status(), 200);
    let h = page.headers();
    let csp = h["content-security-policy"].to_str().expect("csp");
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["cache-control"], "no-store");
    let plain = sign_in(ADMIN_TOKEN, None).await.expect("sign in");
    assert!(
        !plain.headers()["set-cookie"]
            .to_str()
            .expect("cookie")
            .contains("Secure")
    );

    // Three failed sign-ins, then the address is limited: for sign-in and for the API alike.
    for _ in 0..3 {
        assert_eq!(
            sign_in("kg_demo_wrong", None).await.expect("post").status(),
            401
        );
    }
    assert_eq!(
        sign_in(ADMIN_TOKEN, None).await.expect("post").status(),
        429
    );
    let api = http
        .get(c.url("/v1/keys"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("api");
    assert_eq!(api.status(), 429, "the API shares the limit");
}
