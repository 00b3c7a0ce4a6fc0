//! Shared harness for the integration tests: the control plane of `test_support` (in this
//! process, or the `keygate` binary of this build as a child), an error-shape assertion, and a
//! macro that runs a test on both engines.
#![allow(dead_code, unused_imports)]

use std::path::Path;
use std::process::Command;

pub use keygate_control_plane::test_support::{
    ADMIN_TOKEN as ADMIN, Engine, InProcessServer, ServeProcess, fresh_database,
};
use reqwest::StatusCode;
use serde_json::Value;

/// `keygate serve` (this build's binary) as a child: see [`ServeProcess::start`].
pub fn serve(dir: &Path, name: &str, configure: impl FnOnce(&mut Command)) -> ServeProcess {
    ServeProcess::start(env!("CARGO_BIN_EXE_keygate"), dir, name, configure)
}

/// Asserts the error shape and code.
pub fn assert_error(status: StatusCode, body: &Value, want_status: StatusCode, want_code: &str) {
    assert_eq!(status, want_status, "body: {body}");
    assert_eq!(body["error"]["code"], want_code, "body: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "body: {body}"
    );
}

/// Generates one `#[tokio::test]` per engine for each listed async fn taking an [`Engine`].
#[macro_export]
macro_rules! on_both_engines {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Engine::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Engine::Postgres).await
                }
            )*
        }
    };
}
