//! [`TlsFront`]: a TLS-terminating Envoy in front of a plain-HTTP service (as an operator puts a
//! load balancer in front of the control plane), with its own test certificate authority, so
//! that a client can be tested against `https://` with a CA it trusts or one it does not.
//!
//! These are test helpers: on failure they panic with a message that says what went wrong.

use std::path::PathBuf;

use keygate_testkit::envoy::{Envoy, EnvoyOptions};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use serde_json::json;

/// The name of the front's listener.
const LISTENER: &str = "tls";

/// Envoy terminating TLS on 127.0.0.1 and passing the bytes (`tcp_proxy`) to a backend; its
/// certificate (for `127.0.0.1` and `localhost`) is signed by a CA made for this front alone.
pub struct TlsFront {
    /// `https://127.0.0.1:<port>`.
    pub url: String,
    /// The PEM file of the front's CA certificate: what a client must trust.
    pub ca_file: PathBuf,
    envoy: Envoy,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for TlsFront {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsFront")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl TlsFront {
    /// Makes a CA and a server certificate, and starts Envoy with a TLS listener that proxies
    /// to `backend` (`host:port`).
    pub fn start(backend: std::net::SocketAddr) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("keygate-tls-front-")
            .tempdir()
            .unwrap_or_else(|e| panic!("tempdir: {e}"));
        let (ca_pem, cert_pem, key_pem) =
            certificates().unwrap_or_else(|e| panic!("test certificates: {e}"));
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text)
                .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
            path
        };
        let ca_file = write("ca.pem", &ca_pem);
        let cert_file = write("server.pem", &cert_pem);
        let key_file = write("server.key", &key_pem);
        let bootstrap = json!({
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
            "static_resources": {
                "listeners": [{
                    "name": LISTENER,
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                    "filter_chains": [{
                        "transport_socket": {
                            "name": "envoy.transport_sockets.tls",
                            "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                                "common_tls_context": {"tls_certificates": [{
                                    "certificate_chain": {"filename": cert_file},
                                    "private_key": {"filename": key_file}
                                }]}
                            }
                        },
                        "filters": [{
                            "name": "envoy.filters.network.tcp_proxy",
                            "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                                "stat_prefix": "backend",
                                "cluster": "backend"
                            }
                        }]
                    }]
                }],
                "clusters": [{
                    "name": "backend",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "load_assignment": {"cluster_name": "backend", "endpoints": [{"lb_endpoints": [{
                        "endpoint": {"address": {"socket_address": {
                            "address": backend.ip().to_string(),
                            "port_value": backend.port()
                        }}}
                    }]}]}
                }]
            }
        });
        let envoy = Envoy::start(&bootstrap.to_string(), &EnvoyOptions::default())
            .unwrap_or_else(|e| panic!("starting the TLS front: {e}"));
        let addr = envoy
            .listener_addr(LISTENER)
            .unwrap_or_else(|e| panic!("the TLS front's listener: {e}"));
        Self {
            url: format!("https://{addr}"),
            ca_file,
            envoy,
            _dir: dir,
        }
    }

    /// Connections the front has taken (`listener.<addr>.downstream_cx_total` summed).
    pub fn connections(&self) -> u64 {
        self.envoy
            .stats()
            .unwrap_or_else(|e| panic!("the TLS front's stats: {e}"))
            .iter()
            .filter(|(name, _)| {
                name.starts_with("listener.") && name.ends_with(".downstream_cx_total")
            })
            .map(|(_, v)| v)
            .sum()
    }
}

/// A fresh CA, and a server certificate and key it signed: `(ca, cert, key)` in PEM.
fn certificates() -> Result<(String, String, String), rcgen::Error> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Keygate test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
    let server_key = KeyPair::generate()?;
    let server = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?
        .signed_by(&server_key, &ca)?;
    Ok((ca.pem(), server.pem(), server_key.serialize_pem()))
}
