//! The test-only App keys in this crate's `fixtures/` folder (see its README: these keys
//! protect nothing).

/// Path of a test-only key in this crate's `fixtures/` folder (see its README: these keys
/// protect nothing).
pub fn fixture_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// Contents of a fixture file.
///
/// # Panics
/// If the file is missing (a broken checkout).
pub fn fixture(name: &str) -> String {
    let path = fixture_path(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}
