//! Checks the fake against GitHub's own REST API description (the OpenAPI excerpt in
//! `fake-github/spec/github-app-operations.json`): every operation's answers, success and error,
//! validate against the documented response schema for their status, and the request body the
//! broker sends validates against the documented request schema. Also checks the JWT rules and
//! required headers.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use keygate_fake_github::{FakeGithub, Operation, Options, RateLimit, fixture};
use reqwest::Method;
use serde_json::{Value, json};

const APP_ID: u64 = 77;
const SPEC: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/spec/github-app-operations.json"
);

fn spec() -> Value {
    let text = std::fs::read_to_string(SPEC).unwrap_or_else(|e| panic!("{SPEC}: {e}"));
    serde_json::from_str(&text).expect("spec is JSON")
}

/// OpenAPI 3.0 `nullable` → JSON Schema `null` alternatives.
fn to_json_schema(v: &Value) -> Value {
    match v {
        Value::Object(map) => {
            let mut out: serde_json::Map<String, Value> = map
                .iter()
                .filter(|(k, _)| k.as_str() != "nullable")
                .map(|(k, v)| (k.clone(), to_json_schema(v)))
                .collect();
            if map.get("nullable") == Some(&Value::Bool(true)) {
                if let Some(Value::Array(e)) = out.get_mut("enum") {
                    e.push(Value::Null);
                }
                match out.get("type").cloned() {
                    Some(Value::String(t)) => {
                        out.insert("type".into(), json!([t, "null"]));
                    }
                    _ => {
                        return json!({ "anyOf": [Value::Object(out), {"type": "null"}] });
                    }
                }
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(to_json_schema).collect()),
        other => other.clone(),
    }
}

fn response_schema(spec: &Value, path: &str, method: &str, status: u16) -> Option<Value> {
    let op = &spec["paths"][path][method];
    assert!(op.is_object(), "{method} {path} is in the spec");
    let r = op["responses"].get(status.to_string())?;
    Some(to_json_schema(
        r.pointer("/content/application~1json/schema")
            .unwrap_or(&Value::Null),
    ))
}

fn check(spec: &Value, path: &str, method: &str, status: u16, body: &Value) {
    let schema = response_schema(spec, path, method, status)
        .unwrap_or_else(|| panic!("{method} {path}: status {status} is not documented"));
    if schema.is_null() {
        return;
    }
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(body)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .take(5)
        .collect();
    assert!(errors.is_empty(), "{method} {path} {status}: {errors:#?}");
}

fn jwt(key_file: &str, iat_offset: i64, exp_offset: i64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let key = EncodingKey::from_rsa_pem(fixture(key_file).as_bytes()).expect("key");
    jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &json!({"iat": now + iat_offset, "exp": now + exp_offset, "iss": APP_ID.to_string()}),
        &key,
    )
    .expect("sign")
}

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    async fn call(
        &self,
        method: Method,
        path: &str,
        auth: Option<&str>,
        body: Option<Value>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28")
            .header("user-agent", "keygate-fake-test");
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).expect("JSON body")
        };
        (status, headers, value)
    }
}

async fn setup(options: Options) -> (FakeGithub, Client, u64) {
    let fake = FakeGithub::start_with(options).await.expect("fake");
    fake.add_app(APP_ID, "Iv23liFake", &[&fixture("app-key-1.pub.pem")])
        .expect("app");
    let inst = fake
        .install(
            APP_ID,
            "acme",
            &["widgets"],
            &[("contents", "write"), ("metadata", "read")],
        )
        .expect("install");
    let client = Client {
        http: reqwest::Client::new(),
        base: fake.base_url(),
    };
    (fake, client, inst)
}

#[tokio::test]
async fn every_operation_answers_in_githubs_documented_shapes() {
    let spec = spec();
    let (fake, c, inst) = setup(Options::default()).await;
    let bearer = format!("Bearer {}", jwt("app-key-1.pkcs1.pem", -60, 540));
    let auth = Some(bearer.as_str());

    let (s, _, b) = c.call(Method::GET, "/app", auth, None).await;
    assert_eq!(s, 200);
    check(&spec, "/app", "get", s, &b);

    let (s, _, b) = c.call(Method::GET, "/app/installations", auth, None).await;
    assert_eq!(s, 200);
    assert_eq!(b.as_array().map(Vec::len), Some(1));
    check(&spec, "/app/installations", "get", s, &b);

    let (s, _, b) = c
        .call(
            Method::GET,
            &format!("/app/installations/{inst}"),
            auth,
            None,
        )
        .await;
    assert_eq!(s, 200);
    check(&spec, "/app/installations/{installation_id}", "get", s, &b);
    let (s, _, b) = c
        .call(Method::GET, "/app/installations/1", auth, None)
        .await;
    assert_eq!(s, 404);
    check(&spec, "/app/installations/{installation_id}", "get", s, &b);

    let (s, _, b) = c
        .call(Method::GET, "/repos/acme/widgets/installation", auth, None)
        .await;
    assert_eq!((s, b["id"].as_u64()), (200, Some(inst)));
    check(&spec, "/repos/{owner}/{repo}/installation", "get", s, &b);
    let (s, _, b) = c
        .call(Method::GET, "/repos/acme/nope/installation", auth, None)
        .await;
    assert_eq!(s, 404);
    assert!(b["documentation_url"].is_string() && b["message"] == "Not Found");
    check(&spec, "/repos/{owner}/{repo}/installation", "get", s, &b);

    let (s, _, b) = c
        .call(Method::GET, "/orgs/acme/installation", auth, None)
        .await;
    assert_eq!(s, 200);
    check(&spec, "/orgs/{org}/installation", "get", s, &b);
    let (s, _, b) = c
        .call(Method::GET, "/users/acme/installation", auth, None)
        .await;
    assert_eq!(s, 200);
    check(&spec, "/users/{username}/installation", "get", s, &b);

    // The body the broker sends validates against the documented request schema.
    let request_body = json!({"repositories": ["widgets"], "permissions": {"contents": "read"}});
    let op_path = "/app/installations/{installation_id}/access_tokens";
    let req_schema = to_json_schema(
        &spec["paths"][op_path]["post"]["requestBody"]["content"]["application/json"]["schema"],
    );
    assert!(jsonschema::is_valid(&req_schema, &request_body));
    assert!(
        !jsonschema::is_valid(
            &req_schema,
            &json!({"permissions": {"contents": "sometimes"}})
        ),
        "the schema bites"
    );

    let path = format!("/app/installations/{inst}/access_tokens");
    let (s, _, b) = c.call(Method::POST, &path, auth, Some(request_body)).await;
    assert_eq!(s, 201);
    check(&spec, op_path, "post", s, &b);
    assert_eq!(b["repositories"][0]["name"], "widgets");
    let token = b["token"].as_str().expect("token").to_owned();

    let (s, _, b) = c
        .call(
            Method::POST,
            &path,
            auth,
            Some(json!({"permissions": {"administration": "write"}})),
        )
        .await;
    assert_eq!(s, 422);
    check(&spec, op_path, "post", s, &b);
    let (s, _, b) = c
        .call(
            Method::POST,
            &path,
            auth,
            Some(json!({"repositories": ["elsewhere"]})),
        )
        .await;
    assert_eq!(s, 422);
    check(&spec, op_path, "post", s, &b);
    let (s, _, b) = c
        .call(
            Method::POST,
            "/app/installations/5/access_tokens",
            auth,
            None,
        )
        .await;
    assert_eq!(s, 404);
    check(&spec, op_path, "post", s, &b);
    let (s, _, b) = c
        .call(Method::POST, &path, Some("Bearer not.a.jwt"), None)
        .await;
    assert_eq!(s, 401);
    check(&spec, op_path, "post", s, &b);
    fake.set_rate_limit(Some(RateLimit::Primary { reset_in: 60 }));
    let (s, h, b) = c.call(Method::POST, &path, auth, None).await;
    assert_eq!(s, 403);
    assert_eq!(
        h.get("x-ratelimit-remaining").and_then(|v| v.to_str().ok()),
        Some("0")
    );
    assert!(h.get("x-ratelimit-reset").is_some());
    check(&spec, op_path, "post", s, &b);
    fake.set_rate_limit(None);

    let tok = format!("token {token}");
    let (s, _, b) = c
        .call(Method::DELETE, "/installation/token", Some(&tok), None)
        .await;
    assert_eq!((s, b), (204, Value::Null));
    let (s, _, _) = c
        .call(Method::DELETE, "/installation/token", Some(&tok), None)
        .await;
    assert_eq!(s, 401, "a revoked token is bad credentials");

    assert_eq!(fake.calls(Operation::CreateInstallationAccessToken), 6);
    assert_eq!(fake.calls(Operation::RevokeInstallationAccessToken), 2);
    assert_eq!(fake.calls(Operation::GetRepoInstallation), 2);
    assert_eq!(fake.calls(Operation::GetAuthenticated), 1);
}

#[tokio::test]
async fn jwt_rules_follow_github() {
    let (fake, c, _) = setup(Options::default()).await;
    let cases = [
        (jwt("app-key-1.pkcs1.pem", -60, 540), 200, None),
        (jwt("app-key-1.pkcs1.pem", 0, 600), 200, None),
        (
            jwt("app-key-2.pkcs8.pem", -60, 540),
            401,
            Some("could not be decoded"),
        ),
        (
            jwt("app-key-1.pkcs1.pem", -60, 601),
            401,
            Some("too far in the future"),
        ),
        (
            jwt("app-key-1.pkcs1.pem", -700, -1),
            401,
            Some("'Expiration time' claim ('exp') must be a numeric value"),
        ),
        (
            jwt("app-key-1.pkcs1.pem", 120, 500),
            401,
            Some("'Issued at' claim ('iat')"),
        ),
    ];
    for (token, status, message) in cases {
        let auth = format!("Bearer {token}");
        let (s, _, b) = c.call(Method::GET, "/app", Some(&auth), None).await;
        assert_eq!(s, status, "{b}");
        if let Some(m) = message {
            assert!(b["message"].as_str().is_some_and(|x| x.contains(m)), "{b}");
            assert!(b["documentation_url"].is_string());
        }
    }
    // A skewed GitHub clock: the same fresh JWT is now in GitHub's future.
    fake.set_clock_offset(-300);
    let auth = format!("Bearer {}", jwt("app-key-1.pkcs1.pem", -60, 540));
    let (s, h, b) = c.call(Method::GET, "/app", Some(&auth), None).await;
    assert_eq!(s, 401, "{b}");
    let date = httpdate::parse_http_date(h["date"].to_str().expect("date")).expect("http date");
    let behind = SystemTime::now()
        .duration_since(date)
        .expect("GitHub's Date is behind")
        .as_secs();
    assert!((295..=305).contains(&behind), "{behind}");
    let (s, _, _) = c.call(Method::GET, "/app", None, None).await;
    assert_eq!(s, 401);
}

#[tokio::test]
async fn required_headers_are_enforced() {
    let (_fake, c, _) = setup(Options::default()).await;
    let auth = format!("Bearer {}", jwt("app-key-1.pkcs1.pem", -60, 540));
    for (drop, status) in [
        ("user-agent", 403),
        ("accept", 415),
        ("x-github-api-version", 400),
    ] {
        let mut headers = vec![
            ("accept", "application/vnd.github+json"),
            ("x-github-api-version", "2022-11-28"),
            ("user-agent", "t"),
            ("authorization", auth.as_str()),
        ];
        headers.retain(|(k, _)| *k != drop);
        let mut req = reqwest::Client::builder()
            .user_agent("")
            .build()
            .expect("client")
            .get(format!("{}/app", c.base));
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let resp = req.send().await.expect("send");
        assert_eq!(resp.status().as_u16(), status, "without {drop}");
        let b: Value = resp.json().await.expect("json");
        assert!(b["message"].is_string() && b["documentation_url"].is_string());
    }
}

#[tokio::test]
async fn enterprise_server_layout_and_stateless_tokens() {
    let (fake, c, inst) = setup(Options {
        path_prefix: "/api/v3".into(),
    })
    .await;
    assert!(c.base.ends_with("/api/v3"));
    let auth = format!("Bearer {}", jwt("app-key-1.pkcs1.pem", -60, 540));
    let path = format!("/app/installations/{inst}/access_tokens");
    fake.set_stateless_default(true);
    let (s, _, b) = c.call(Method::POST, &path, Some(&auth), None).await;
    assert_eq!(s, 201);
    let t = b["token"].as_str().expect("token");
    assert!(t.starts_with("ghs_") && t.len() > 500 && t.contains('.'));
    assert_eq!(b["repository_selection"], "all");
    let (s, _, _) = Client {
        http: reqwest::Client::new(),
        base: fake.base_url().replace("/api/v3", ""),
    }
    .call(Method::POST, &path, Some(&auth), None)
    .await;
    assert_eq!(s, 404, "nothing outside /api/v3");
}
