//! [`ForwardAuthProxy`]: nginx (`auth_request`) or Caddy (`forward_auth`) in front of an
//! upstream, asking a control plane's forward-auth endpoint about every request, each run from
//! the configuration file the operators' docs give (`envoy/forward-auth/`) with only addresses
//! and the edge key substituted. The binaries come from Debian (`nginx-light`, `caddy`); a
//! missing one fails with the command that installs it.
//!
//! These are test helpers: on failure they panic with a message that says what went wrong.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use keygate_testkit::poll::wait_for;
use keygate_testkit::process::Supervised;

/// `envoy/forward-auth/nginx.conf` (a `server` block).
pub const NGINX_CONF: &str = include_str!("../../envoy/forward-auth/nginx.conf");

/// `envoy/forward-auth/Caddyfile`.
pub const CADDYFILE: &str = include_str!("../../envoy/forward-auth/Caddyfile");

/// The proxies these helpers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proxy {
    /// nginx with `auth_request`.
    Nginx,
    /// Caddy with `forward_auth`.
    Caddy,
}

/// A running proxy, killed on drop.
pub struct ForwardAuthProxy {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    process: Supervised,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for ForwardAuthProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwardAuthProxy")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// The docs' configuration with `${NAME}` placeholders replaced.
fn substitute(template: &str, values: &[(&str, &str)]) -> String {
    let mut text = template.to_owned();
    for (name, value) in values {
        text = text.replace(&format!("${{{name}}}"), value);
    }
    assert!(!text.contains("${"), "a placeholder left in:\n{text}");
    text
}

/// The program's path, or a panic with the command that installs it.
fn program(name: &str, package: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"] {
        let path = Path::new(dir).join(name);
        if path.is_file() {
            return path;
        }
    }
    panic!("{name} is not installed: `sudo apt-get install -y {package}` (.ci/run installs it)");
}

impl ForwardAuthProxy {
    /// Starts `proxy` on a free port, in front of `upstream`, asking `control_plane` (both
    /// `host:port`) with `edge_key`, and waits until it accepts connections.
    pub fn start(proxy: Proxy, control_plane: &str, upstream: &str, edge_key: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("keygate-proxy-")
            .tempdir()
            .unwrap_or_else(|e| panic!("tempdir: {e}"));
        let port = keygate_testkit::free_port().unwrap_or_else(|e| panic!("{e}"));
        let listen = format!("127.0.0.1:{port}");
        let values = [
            ("LISTEN", listen.as_str()),
            ("CONTROL_PLANE", control_plane),
            ("UPSTREAM", upstream),
            ("EDGE_KEY", edge_key),
        ];
        let d = dir.path();
        let (name, command) = match proxy {
            Proxy::Nginx => {
                // The docs' `server` block inside a main configuration of the test's own: one
                // process in the foreground, every file in the temporary directory.
                let conf = d.join("nginx.conf");
                let main = format!(
                    "daemon off;\nmaster_process off;\npid {pid};\nerror_log {err} info;\n\
                     events {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  \
                     proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  \
                     uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n{server}\n}}\n",
                    pid = d.join("nginx.pid").display(),
                    err = d.join("error.log").display(),
                    d = d.display(),
                    server = substitute(NGINX_CONF, &values),
                );
                write(&conf, &main);
                let mut c = Command::new(program("nginx", "nginx-light"));
                c.arg("-p")
                    .arg(d)
                    .arg("-e")
                    .arg(d.join("error.log"))
                    .arg("-c")
                    .arg(&conf);
                ("nginx", c)
            }
            Proxy::Caddy => {
                let conf = d.join("Caddyfile");
                let text = format!(
                    "{{\n    admin off\n    auto_https off\n}}\n\n{}",
                    substitute(CADDYFILE, &values)
                );
                write(&conf, &text);
                let mut c = Command::new(program("caddy", "caddy"));
                c.args(["run", "--adapter", "caddyfile", "--config"])
                    .arg(&conf)
                    .env("KEYGATE_EDGE_KEY", edge_key)
                    .env("HOME", d)
                    .env("XDG_DATA_HOME", d.join("data"))
                    .env("XDG_CONFIG_HOME", d.join("config"));
                ("caddy", c)
            }
        };
        let mut process =
            Supervised::spawn(name, command, d).unwrap_or_else(|e| panic!("starting {name}: {e}"));
        wait_for(
            &format!("{name} listening"),
            Duration::from_secs(15),
            || {
                if !process.is_running() {
                    panic!("{name} exited:\n{}", process.logs());
                }
                std::net::TcpStream::connect(&listen).map_err(|e| e.to_string())
            },
        );
        Self {
            url: format!("http://{listen}"),
            process,
            dir,
        }
    }

    /// What it printed, and nginx's error log.
    pub fn logs(&self) -> String {
        let error_log =
            std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default();
        self.process.logs() + &error_log
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}
