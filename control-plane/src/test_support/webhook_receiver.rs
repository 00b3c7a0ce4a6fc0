//! [`WebhookReceiver`]: a real HTTP receiver of Keygate's webhooks on 127.0.0.1 that checks
//! every delivery's Standard Webhooks signature itself (HMAC-SHA256 with the `whsec_` secret's
//! bytes over `id.timestamp.body`, a timestamp within five minutes) and records what came; it
//! can answer an error status, or hold requests unanswered (a delivery in flight).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{KeyInit, Mac};
use serde_json::Value;

/// How the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// 204.
    Accept,
    /// This status.
    Status(u16),
    /// Never: the request is held until the receiver changes its answer or stops.
    Hold,
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    /// `webhook-id`.
    pub id: String,
    /// `webhook-timestamp`.
    pub timestamp: i64,
    /// The body, parsed.
    pub body: Value,
    /// The raw body.
    pub raw: String,
    /// Whether the signature and the timestamp checked out.
    pub verified: bool,
    /// What the receiver answered (`None`: held).
    pub answered: Option<u16>,
}

#[derive(Debug)]
struct Shared {
    secret: Mutex<Option<String>>,
    answer: tokio::sync::watch::Sender<Answer>,
    received: Mutex<Vec<Received>>,
}

/// The receiver; stops on drop.
#[derive(Debug)]
pub struct WebhookReceiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

/// Whether `signature` (the header, possibly several space-separated `v1,…` values) signs
/// `id.timestamp.body` with `secret`.
pub fn verify_signature(
    secret: &str,
    id: &str,
    timestamp: i64,
    body: &[u8],
    signature: &str,
) -> bool {
    let Some(key) = secret
        .strip_prefix("whsec_")
        .and_then(|s| STANDARD.decode(s).ok())
    else {
        return false;
    };
    signature.split(' ').any(|sig| {
        let Some(b64) = sig.strip_prefix("v1,") else {
            return false;
        };
        let Ok(want) = STANDARD.decode(b64) else {
            return false;
        };
        let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key) else {
            return false;
        };
        mac.update(format!("{id}.{timestamp}.").as_bytes());
        mac.update(body);
        mac.verify_slice(&want).is_ok()
    })
}

async fn receive(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let id = h("webhook-id");
    let timestamp: i64 = h("webhook-timestamp").parse().unwrap_or(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let secret = s.secret.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let verified = (now - timestamp).abs() <= 300
        && secret.is_some_and(|secret| {
            verify_signature(&secret, &id, timestamp, &body, &h("webhook-signature"))
        });
    let mut answer = s.answer.subscribe();
    let first = *answer.borrow_and_update();
    let index = {
        let mut r = s.received.lock().unwrap_or_else(|e| e.into_inner());
        r.push(Received {
            id,
            timestamp,
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
            raw: String::from_utf8_lossy(&body).into_owned(),
            verified,
            answered: None,
        });
        r.len() - 1
    };
    let mut now_answer = first;
    while now_answer == Answer::Hold {
        if answer.changed().await.is_err() {
            return StatusCode::SERVICE_UNAVAILABLE;
        }
        now_answer = *answer.borrow_and_update();
    }
    let status = match now_answer {
        Answer::Status(c) => StatusCode::from_u16(c).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        _ => StatusCode::NO_CONTENT,
    };
    if let Some(r) = s
        .received
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_mut(index)
    {
        r.answered = Some(status.as_u16());
    }
    status
}

impl WebhookReceiver {
    /// Starts on a free port of 127.0.0.1.
    pub async fn start() -> Self {
        Self::start_on(0).await
    }

    /// Starts on `port` of 127.0.0.1 (0: a free one).
    pub async fn start_on(port: u16) -> Self {
        let shared = Arc::new(Shared {
            secret: Mutex::new(None),
            answer: tokio::sync::watch::Sender::new(Answer::Accept),
            received: Mutex::new(Vec::new()),
        });
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap_or_else(|e| panic!("webhook receiver: bind 127.0.0.1:{port}: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("webhook receiver: local_addr: {e}"));
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(Arc::clone(&shared));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, shared, task }
    }

    /// The URL deliveries go to.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Sets the endpoint's secret that signatures are checked with.
    pub fn set_secret(&self, secret: &str) {
        *self.shared.secret.lock().unwrap_or_else(|e| e.into_inner()) = Some(secret.to_owned());
    }

    /// Sets how the receiver answers from now on (held requests are answered this way).
    pub fn answer(&self, a: Answer) {
        self.shared.answer.send_replace(a);
    }

    /// Everything received so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.shared
            .received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits until `done` holds of what was received; panics with it after `timeout`.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        what: &str,
        done: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.received();
            if done(&r) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "webhook receiver: {what} not within {timeout:?}; received: {:#?}",
                r.iter()
                    .map(|x| (&x.id, &x.body["type"], x.answered))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops listening (the port then refuses connections; held requests are dropped).
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}
