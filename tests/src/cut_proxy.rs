//! A TCP proxy in front of a server that a test can cut: forwarding, or holding (every
//! connection it carries is cut at once, and new ones are accepted and never answered), as a
//! network partition between a proxy and its control plane looks. On its own tokio runtime;
//! stopped on drop.
//!
//! A test helper: on failure it panics with a message that says what went wrong.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// The proxy: `addr` forwards to the target until [`CutProxy::hold`].
pub struct CutProxy {
    rt: tokio::runtime::Runtime,
    addr: SocketAddr,
    holding: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<AbortHandle>>>,
    accept: Option<AbortHandle>,
}

impl std::fmt::Debug for CutProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CutProxy")
            .field("addr", &self.addr)
            .field("holding", &self.holding.load(Ordering::SeqCst))
            .finish_non_exhaustive()
    }
}

impl CutProxy {
    /// Listens on a free loopback port and forwards every connection to `target`.
    pub fn start(target: SocketAddr) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("tokio runtime: {e}"));
        let listener = rt
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .unwrap_or_else(|e| panic!("binding the cut proxy: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("cut proxy local_addr: {e}"));
        let holding = Arc::new(AtomicBool::new(false));
        let connections: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (h, c) = (Arc::clone(&holding), Arc::clone(&connections));
        let accept = rt.spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let hold = h.load(Ordering::SeqCst);
                let task = tokio::spawn(async move {
                    if hold {
                        // Accepted, never answered: the caller's timeout decides.
                        std::future::pending::<()>().await;
                    }
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                c.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(task.abort_handle());
            }
        });
        Self {
            rt,
            addr,
            holding,
            connections,
            accept: Some(accept.abort_handle()),
        }
    }

    /// The address to point a client at (`127.0.0.1:<port>`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Cuts every connection it carries and holds every new one unanswered.
    pub fn hold(&self) {
        self.holding.store(true, Ordering::SeqCst);
        self.cut_all();
    }

    /// Forwards new connections again (held ones stay held until cut).
    pub fn resume(&self) {
        self.holding.store(false, Ordering::SeqCst);
        self.cut_all();
    }

    fn cut_all(&self) {
        let _guard = self.rt.enter();
        for c in self
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            c.abort();
        }
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        if let Some(a) = self.accept.take() {
            a.abort();
        }
        self.cut_all();
    }
}
