//! What every proxy stack of these tests shares: the echo upstream behind the proxy, and a
//! request sent through the proxy's listener, read as a [`Reply`].

use reqwest::Method;
use tokio::sync::oneshot;

use crate::Reply;

/// `keygate-echo` on a free loopback port of a tokio runtime, stopped on drop.
#[derive(Debug)]
pub struct EchoUpstream {
    addr: String,
    stop: Option<oneshot::Sender<()>>,
}

impl EchoUpstream {
    /// Starts it on `rt`.
    pub fn start(rt: &tokio::runtime::Runtime) -> Self {
        rt.block_on(async {
            let echo = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .unwrap_or_else(|e| panic!("binding the echo upstream: {e}"));
            let addr = echo
                .local_addr()
                .unwrap_or_else(|e| panic!("echo local_addr: {e}"));
            let (stop, stopped) = oneshot::channel::<()>();
            tokio::spawn(keygate_gateway::serve_echo(echo, async move {
                let _ = stopped.await;
            }));
            Self {
                addr: addr.to_string(),
                stop: Some(stop),
            }
        })
    }

    /// Its `host:port`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Stops it (also done on drop).
    pub fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

impl Drop for EchoUpstream {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `method url` with `headers`, through a proxy; panics if no answer comes.
pub async fn send(
    http: &reqwest::Client,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let method =
        Method::from_bytes(method.as_bytes()).unwrap_or_else(|e| panic!("method {method}: {e}"));
    let mut req = http.request(method, url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url} through the proxy: {e}"));
    Reply::read(resp).await
}
