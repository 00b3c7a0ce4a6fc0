//! [`LdsEnvoy`]: Envoy serving its listeners from a file it watches (LDS over the filesystem,
//! as a configuration-management tool changes a running Envoy), so that a test can change a
//! listener's filters while Envoy runs and see the change applied.
//!
//! These are test helpers: on failure they panic with a message that says what went wrong.

use std::path::PathBuf;
use std::time::Duration;

use keygate_testkit::envoy::{Envoy, EnvoyOptions};
use keygate_testkit::poll::wait_for;
use serde_json::{Value, json};

const LISTENER_TYPE: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";

/// Envoy whose listeners come from `<dir>/listeners.json` (LDS, `path_config_source` with a
/// watched directory); each listener keeps the port it was first given.
pub struct LdsEnvoy {
    /// The running Envoy.
    pub envoy: Envoy,
    file: PathBuf,
    listeners: Vec<Value>,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for LdsEnvoy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LdsEnvoy")
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

impl LdsEnvoy {
    /// Starts Envoy on `bootstrap` with its static listeners moved into the watched file (a
    /// listener on port 0 gets a free port of its own first), and waits until they all listen.
    pub fn start(mut bootstrap: Value, options: &EnvoyOptions) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("keygate-lds-")
            .tempdir()
            .unwrap_or_else(|e| panic!("tempdir: {e}"));
        let mut listeners = bootstrap["static_resources"]["listeners"]
            .as_array_mut()
            .map(std::mem::take)
            .unwrap_or_else(|| panic!("the bootstrap has no static listeners"));
        for l in &mut listeners {
            let port = &mut l["address"]["socket_address"]["port_value"];
            if port.as_u64() == Some(0) {
                *port = json!(keygate_testkit::free_port().unwrap_or_else(|e| panic!("{e}")));
            }
        }
        bootstrap["static_resources"]
            .as_object_mut()
            .unwrap_or_else(|| panic!("no static_resources"))
            .remove("listeners");
        // Envoy takes dynamic resources only with a node identity.
        if bootstrap["node"].is_null() {
            bootstrap["node"] = json!({"id": "keygate-test", "cluster": "keygate-test"});
        }
        let file = dir.path().join("listeners.json");
        bootstrap["dynamic_resources"] = json!({"lds_config": {
            "resource_api_version": "V3",
            "path_config_source": {
                "path": file,
                "watched_directory": {"path": dir.path()}
            }
        }});
        write_atomically(&file, &listeners);
        let envoy = Envoy::start(&bootstrap.to_string(), options)
            .unwrap_or_else(|e| panic!("starting Envoy with listeners from a file: {e}"));
        let lds = Self {
            envoy,
            file,
            listeners,
            _dir: dir,
        };
        for l in &lds.listeners {
            let name = l["name"].as_str().unwrap_or_default();
            wait_for(
                "the listener from the file",
                Duration::from_secs(10),
                || lds.envoy.listener_addr(name).map_err(|e| e.to_string()),
            );
        }
        lds
    }

    /// `http://127.0.0.1:<port>` of the listener named `name`.
    pub fn url(&self, name: &str) -> String {
        let addr = self
            .envoy
            .listener_addr(name)
            .unwrap_or_else(|e| panic!("Envoy's listener {name}: {e}"));
        format!("http://{addr}")
    }

    /// The listeners as last written.
    pub fn listeners(&self) -> &[Value] {
        &self.listeners
    }

    /// Replaces the listener named like `listener` (keeping its port) in the file, and waits
    /// until Envoy has taken the update and no listener is warming.
    pub fn update_listener(&mut self, mut listener: Value) {
        let name = listener["name"].clone();
        let slot = self
            .listeners
            .iter_mut()
            .find(|l| l["name"] == name)
            .unwrap_or_else(|| panic!("no listener {name}"));
        listener["address"] = slot["address"].clone();
        *slot = listener;
        let before = self.stat("listener_manager.lds.update_success");
        write_atomically(&self.file, &self.listeners);
        wait_for(
            "Envoy took the listener update",
            Duration::from_secs(10),
            || {
                let taken = self.stat("listener_manager.lds.update_success") > before;
                let warming = self.stat("listener_manager.total_listeners_warming");
                let rejected = self.stat("listener_manager.lds.update_rejected");
                if rejected > 0 {
                    panic!("Envoy rejected the listeners: {}", self.envoy.logs());
                }
                if taken && warming == 0 {
                    Ok(())
                } else {
                    Err(format!("taken {taken}, warming {warming}"))
                }
            },
        );
    }

    /// A counter or gauge of Envoy's (`0` when absent).
    pub fn stat(&self, name: &str) -> u64 {
        self.envoy
            .stat(name)
            .unwrap_or_else(|e| panic!("Envoy stats: {e}"))
            .unwrap_or(0)
    }
}

impl Drop for LdsEnvoy {
    fn drop(&mut self) {
        self.envoy.stop();
    }
}

/// Writes the LDS file as Envoy expects a watched file to change: a new file moved into place.
fn write_atomically(file: &std::path::Path, listeners: &[Value]) {
    let resources: Vec<Value> = listeners
        .iter()
        .map(|l| {
            let mut r = l.clone();
            r["@type"] = json!(LISTENER_TYPE);
            r
        })
        .collect();
    let text = json!({"resources": resources}).to_string();
    let tmp = file.with_extension("json.tmp");
    std::fs::write(&tmp, text).unwrap_or_else(|e| panic!("writing {}: {e}", tmp.display()));
    std::fs::rename(&tmp, file).unwrap_or_else(|e| panic!("moving {}: {e}", tmp.display()));
}
