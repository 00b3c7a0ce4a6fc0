//! The blocking HTTP client of the sync thread (`ureq`, HTTP/1.1; `https://` by rustls,
//! verifying the server against Mozilla's roots or the configuration's own [`Trust`]): runs a
//! [`Call`] against the control plane's base URL and answers as the core expects,
//! `status: None` when no HTTP answer came (refused, reset, timed out, a certificate that does
//! not verify, shut down).
//!
//! [`Client::shutdown`] interrupts every call in flight (a long poll parks for up to
//! `long_poll_wait_s`): a configuration that goes stops its sync at once, not a wait later.

use std::time::Duration;

use std::sync::Arc;

use keygate_filter_core::host::HttpResponse;
use ureq::Agent;
use ureq::http;
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};

use crate::host::Call;

/// Largest answer read (a snapshot of a few million keys).
pub const MAX_BODY_BYTES: u64 = 1 << 30;

/// Which certificate authorities an `https://` control plane's certificate must chain to.
#[derive(Debug, Clone, Default)]
pub enum Trust {
    /// Mozilla's root certificates (`webpki-roots`, compiled in: the host's store is not read).
    #[default]
    WebPki,
    /// Only these, read from the configuration's `ca_file` (a private CA).
    Roots(Arc<Vec<Certificate<'static>>>),
}

impl Trust {
    /// The certificates of the PEM file at `path` (every `CERTIFICATE` block; other blocks are
    /// ignored).
    ///
    /// # Errors
    /// A message naming the file: unreadable, not PEM, or without a certificate.
    pub fn from_pem_file(path: &str) -> Result<Self, String> {
        let pem = std::fs::read(path).map_err(|e| format!("ca_file {path:?}: {e}"))?;
        let mut roots = Vec::new();
        for item in ureq::tls::parse_pem(&pem) {
            match item {
                Ok(PemItem::Certificate(cert)) => roots.push(cert),
                Ok(_) => {}
                Err(e) => return Err(format!("ca_file {path:?}: {e}")),
            }
        }
        if roots.is_empty() {
            return Err(format!("ca_file {path:?}: no PEM certificate in it"));
        }
        Ok(Trust::Roots(Arc::new(roots)))
    }

    fn root_certs(&self) -> RootCerts {
        match self {
            Trust::WebPki => RootCerts::WebPki,
            Trust::Roots(roots) => RootCerts::Specific(Arc::clone(roots)),
        }
    }
}

/// A client of one control plane.
#[derive(Debug, Clone)]
pub struct Client {
    agent: Agent,
    base: String,
}

impl Client {
    /// A client of the control plane at `base` (`http://host:port` or `https://host:port`,
    /// optionally with a path prefix; no trailing slash needed), an `https://` server verified
    /// against `trust`. Connects directly: no proxy from the environment.
    pub fn new(base: &str, trust: &Trust) -> Self {
        let agent: Agent = Agent::config_builder()
            .tls_config(TlsConfig::builder().root_certs(trust.root_certs()).build())
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
        let client = Client::new(&format!("http://{addr}/"), &Trust::WebPki);
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
        let closed = Client::new(&format!("http://{addr}"), &Trust::WebPki);
        assert_eq!(closed.call(&get("/")).status, None);
    }

    #[test]
    fn a_ca_file_needs_a_certificate_in_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = Trust::from_pem_file(missing.to_str().unwrap()).unwrap_err();
        assert!(e.contains("missing.pem"), "{e}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = Trust::from_pem_file(empty.to_str().unwrap()).unwrap_err();
        assert!(e.contains("no PEM certificate"), "{e}");
    }

    #[test]
    fn an_https_server_whose_certificate_does_not_verify_gives_no_answer() {
        // A TLS handshake against a server that answers in plain HTTP: no status, not a panic.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let _server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0; 1024];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
        });
        let client = Client::new(&format!("https://{addr}"), &Trust::WebPki);
        assert_eq!(client.call(&get("/v1/keyset")).status, None);
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
        let client = Client::new(&format!("http://{addr}"), &Trust::WebPki);
        let c = client.clone();
        let started = std::time::Instant::now();
        let call = std::thread::spawn(move || c.call(&get("/v1/keyset?wait=30")));
        std::thread::sleep(Duration::from_millis(200));
        client.shutdown();
        assert_eq!(call.join().unwrap().status, None);
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
