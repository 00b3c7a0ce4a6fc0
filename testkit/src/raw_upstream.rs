//! A raw HTTP/1.1 upstream for tests that send bytes a proxy must not pass or must pass
//! unchanged: it records every request exactly as it arrived.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde_json::json;

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The request target (path and query).
    pub path: String,
    /// Lower-case name → raw value bytes, in arrival order.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Seen {
    /// Every value of the header `name` (lower case), as text.
    pub fn values(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }
}

/// An HTTP/1.1 upstream on 127.0.0.1 that reads requests byte by byte (any header value,
/// chunked or sized bodies), records each one, counts body bytes as they arrive (so a test can
/// see a body stream through before the client has sent all of it) and answers every request
/// `200` with a JSON echo: `path`, `headers` (name → values), `body_length`, `body_sum`. One
/// request per connection (`connection: close`), a thread per connection.
#[derive(Debug, Clone, Default)]
pub struct RawUpstream {
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Body bytes received so far, over all requests.
    body_bytes: Arc<AtomicU64>,
}

impl RawUpstream {
    /// Starts it on a free port; returns it with its address.
    pub fn start() -> std::io::Result<(Self, SocketAddr)> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let up = Self::default();
        let u = up.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let u = u.clone();
                std::thread::spawn(move || {
                    let _ = u.serve(stream);
                });
            }
        });
        Ok((up, addr))
    }

    /// Requests received so far.
    pub fn count(&self) -> usize {
        lock(&self.seen).len()
    }

    /// The requests received after the first `n`.
    pub fn since(&self, n: usize) -> Vec<Seen> {
        lock(&self.seen)[n..].to_vec()
    }

    /// Body bytes received so far, over all requests.
    pub fn body_bytes(&self) -> u64 {
        self.body_bytes.load(Ordering::SeqCst)
    }

    /// One request per connection (answered with `connection: close`).
    fn serve(&self, stream: TcpStream) -> std::io::Result<()> {
        let mut r = BufReader::with_capacity(256 * 1024, stream.try_clone()?);
        let mut line = Vec::new();
        r.read_until(b'\n', &mut line)?;
        let text = String::from_utf8_lossy(&line).into_owned();
        let path = text.split(' ').nth(1).unwrap_or_default().to_owned();
        let mut headers = Vec::new();
        loop {
            line.clear();
            r.read_until(b'\n', &mut line)?;
            let l = line
                .strip_suffix(b"\r\n")
                .or(line.strip_suffix(b"\n"))
                .unwrap_or(&line);
            if l.is_empty() {
                break;
            }
            if let Some(colon) = l.iter().position(|&b| b == b':') {
                let name = String::from_utf8_lossy(&l[..colon]).to_ascii_lowercase();
                let value = l[colon + 1..].trim_ascii().to_vec();
                headers.push((name, value));
            }
        }
        let header = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        };
        let mut body_len = 0u64;
        let mut sum = 0u64;
        let mut buf = vec![0u8; 256 * 1024];
        let mut take = |r: &mut BufReader<TcpStream>, mut n: u64| -> std::io::Result<()> {
            while n > 0 {
                let want = buf.len().min(n as usize);
                let got = r.read(&mut buf[..want])?;
                if got == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                for &b in &buf[..got] {
                    sum = sum.wrapping_add(u64::from(b));
                }
                n -= got as u64;
                body_len += got as u64;
                self.body_bytes.fetch_add(got as u64, Ordering::SeqCst);
            }
            Ok(())
        };
        if header("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
            loop {
                line.clear();
                r.read_until(b'\n', &mut line)?;
                let size = String::from_utf8_lossy(&line);
                let size = size.trim().split(';').next().unwrap_or("0");
                let n = u64::from_str_radix(size, 16).unwrap_or(0);
                if n == 0 {
                    // Trailers until the empty line.
                    loop {
                        line.clear();
                        r.read_until(b'\n', &mut line)?;
                        if line == b"\r\n" || line.is_empty() {
                            break;
                        }
                    }
                    break;
                }
                take(&mut r, n)?;
                line.clear();
                r.read_until(b'\n', &mut line)?;
            }
        } else if let Some(n) = header("content-length").and_then(|v| v.parse::<u64>().ok()) {
            take(&mut r, n)?;
        }
        let mut json_headers = BTreeMap::new();
        for (n, v) in &headers {
            json_headers
                .entry(n.clone())
                .or_insert_with(Vec::new)
                .push(String::from_utf8_lossy(v).into_owned());
        }
        let body = json!({"path": path, "headers": json_headers, "body_length": body_len, "body_sum": sum})
            .to_string();
        lock(&self.seen).push(Seen { path, headers });
        let mut w = stream;
        write!(
            w,
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )?;
        w.flush()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_the_request_and_counts_its_body() {
        let (up, addr) = RawUpstream::start().unwrap();
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(
            b"POST /x?y=1 HTTP/1.1\r\nhost: a\r\nX-Key: one\r\nx-key: two\r\n\
              transfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        )
        .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        assert!(answer.contains(r#""body_length":3"#), "{answer}");
        assert_eq!((up.count(), up.body_bytes()), (1, 3));
        let seen = up.since(0).pop().unwrap();
        assert_eq!(seen.path, "/x?y=1");
        assert_eq!(seen.values("x-key"), ["one", "two"]);
    }
}
