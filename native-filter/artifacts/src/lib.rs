//! The Keygate dynamic module (`keygate-native-filter`), built by this crate's build script
//! with the `release` profile whatever the profile of the build that asks for it (a benchmark
//! must measure optimized code), and where Envoy finds it.
//!
//! Envoy 1.40 loads a dynamic module by name: `dynamic_module_config: {name: <MODULE>}` makes it
//! `dlopen` `$ENVOY_DYNAMIC_MODULES_SEARCH_PATH/lib<MODULE>.so`, so Envoy's environment needs
//! [`SEARCH_PATH_ENV`] set to [`KEYGATE_NATIVE_FILTER_DIR`].

include!(concat!(env!("OUT_DIR"), "/artifacts.rs"));

/// The module's name in `dynamic_module_config.name`.
pub const MODULE: &str = "keygate_native_filter";

/// The environment variable Envoy reads the module directory from.
pub const SEARCH_PATH_ENV: &str = "ENVOY_DYNAMIC_MODULES_SEARCH_PATH";

/// The environment Envoy needs to find the module: `(SEARCH_PATH_ENV, KEYGATE_NATIVE_FILTER_DIR)`.
pub fn envoy_env() -> (String, String) {
    (
        SEARCH_PATH_ENV.to_owned(),
        KEYGATE_NATIVE_FILTER_DIR.to_owned(),
    )
}
