//! The blocking HTTP client of the sync thread (`ureq`, plain HTTP/1.1): runs a [`Call`]
//! against the control plane's base URL and answers as the core expects, `status: None` when
//! no HTTP answer came (refused, reset, timed out, shut down).
//!
//! [`Client::shutdown`] interrupts every call in flight (a long poll parks for up to
//! `long_poll_wait_s`): a configuration that goes stops its sync at once, not a wait later.

use std::time::Duration;

use keygate_filter_core::host::HttpResponse;
use ureq::Agent;
use ureq::http;

use crate::host::Call;

/// Largest answer read (a snapshot of a few million keys).
pub const MAX_BODY_BYTES: u64 = 1 << 30;

/// A client of one control plane.
#[derive(Debug, Clone)]
pub struct Client {
    agent: Agent,
    base: String,
}

impl Client {
    /// A client of the control plane at `base` (`http://host:port`, optionally with a path
    /// prefix; no trailing slash needed). Connects directly: no proxy from the environment.
    pub fn new(base: &str) -> Self {
        let agent: Agent = Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .max_redirects(0)
            .user_agent("keygate-native-filter")
            .build()
            .into();
        Self {
            agent,
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    /// Runs `call`; never fails: an error is an answer without a status.
    pub fn call(&self, call: &Call) -> HttpResponse {
        self.try_call(call).unwrap_or_default()
    }

    fn try_call(&self, call: &Call) -> Result<HttpResponse, ureq::Error> {
        let mut request = http::Request::builder()
            .method(call.method.as_str())
            .uri(format!("{}{}", self.base, call.path));
        for (name, value) in &call.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let request = request
            .body(call.body.clone().unwrap_or_default())
            .map_err(ureq::Error::from)?;
        let request = self
            .agent
            .configure_request(request)
            .timeout_global(Some(Duration::from_millis(call.timeout_ms)))
            .build();
        let mut response = self.agent.run(request)?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect();
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_BODY_BYTES)
            .read_to_vec()?;
        Ok(HttpResponse {
            status: Some(status),
            headers,
            body,
        })
    }

    /// Interrupts every call in flight and refuses new ones.
    pub fn shutdown(&self) {
        self.agent.clone().shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    fn get(path: &str) -> Call {
        Call {
            method: "GET".into(),
            path: path.into(),
            headers: vec![("authorization".into(), "Bearer k".into())],
            body: None,
            timeout_ms: 5_000,
        }
    }

    #[test]
    fn an_answer_and_no_answer() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0; 4096];
            let n = s.read(&mut buf).unwrap();
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            s.write_all(b"HTTP/1.1 304 Not Modified\r\nx-a: b\r\ncontent-length: 0\r\n\r\n")
                .unwrap();
            req
        });
        let client = Client::new(&format!("http://{addr}/"));
        let r = client.call(&get("/v1/keyset?since=1&wait=2"));
        assert_eq!(r.status, Some(304));
        assert_eq!(r.header("x-a"), Some("b"));
        let req = server.join().unwrap();
        assert!(
            req.starts_with("GET /v1/keyset?since=1&wait=2 HTTP/1.1"),
            "{req}"
        );
        assert!(
            req.to_ascii_lowercase().contains("authorization: bearer k"),
            "{req}"
        );
        let closed = Client::new(&format!("http://{addr}"));
        assert_eq!(closed.call(&get("/")).status, None);
    }

    #[test]
    fn shutdown_interrupts_a_parked_call() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let _server = std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            std::thread::sleep(Duration::from_secs(30));
            drop(s);
        });
        let client = Client::new(&format!("http://{addr}"));
        let c = client.clone();
        let started = std::time::Instant::now();
        let call = std::thread::spawn(move || c.call(&get("/v1/keyset?wait=30")));
        std::thread::sleep(Duration::from_millis(200));
        client.shutdown();
        assert_eq!(call.join().unwrap().status, None);
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
