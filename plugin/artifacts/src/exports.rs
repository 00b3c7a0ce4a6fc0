//! Drops the callbacks a filter does not implement from its module's exports (the build script
//! runs this on the built filter; the tests check the result).

use wasm_encoder::{ExportKind, ExportSection, Module, RawSection};
use wasmparser::{ExternalKind, Parser, Payload};

/// Why a module could not be rewritten.
#[derive(Debug, thiserror::Error)]
pub enum TrimError {
    /// The input is not a valid module.
    #[error("not a wasm module: {0}")]
    Parse(#[from] wasmparser::BinaryReaderError),
    /// A section's range outside the module (the parser would have said so first).
    #[error("a section lies outside the module")]
    Range,
    /// An export of a kind this rewrite does not know.
    #[error("export {0:?} is of a kind the rewrite does not handle")]
    UnknownKind(String),
}

/// The names `module` exports, in order.
///
/// # Errors
/// [`TrimError::Parse`] when `module` does not parse.
pub fn names(module: &[u8]) -> Result<Vec<String>, TrimError> {
    let mut names = Vec::new();
    for payload in Parser::new(0).parse_all(module) {
        if let Payload::ExportSection(reader) = payload? {
            for export in reader {
                names.push(export?.name.to_owned());
            }
        }
    }
    Ok(names)
}

/// `module` with every `proxy_on_*` export that is not in `keep` removed; every other export
/// (the memory, `_initialize`, the ABI version marker) and every other section unchanged, byte
/// for byte.
///
/// # Errors
/// [`TrimError`] when `module` does not parse.
pub fn keep_callbacks(module: &[u8], keep: &[&str]) -> Result<Vec<u8>, TrimError> {
    let mut out = Module::new();
    for payload in Parser::new(0).parse_all(module) {
        match payload? {
            Payload::ExportSection(reader) => {
                let mut exports = ExportSection::new();
                for export in reader {
                    let export = export?;
                    if export.name.starts_with("proxy_on_") && !keep.contains(&export.name) {
                        continue;
                    }
                    let kind = match export.kind {
                        ExternalKind::Func => ExportKind::Func,
                        ExternalKind::Table => ExportKind::Table,
                        ExternalKind::Memory => ExportKind::Memory,
                        ExternalKind::Global => ExportKind::Global,
                        ExternalKind::Tag => ExportKind::Tag,
                        _ => return Err(TrimError::UnknownKind(export.name.to_owned())),
                    };
                    exports.export(export.name, kind, export.index);
                }
                out.section(&exports);
            }
            other => {
                if let Some((id, range)) = other.as_section() {
                    let data = usize::try_from(range.start)
                        .ok()
                        .zip(usize::try_from(range.end).ok())
                        .and_then(|(start, end)| module.get(start..end))
                        .ok_or(TrimError::Range)?;
                    out.section(&RawSection { id, data });
                }
            }
        }
    }
    Ok(out.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unlisted_callbacks_go_and_the_rest_is_unchanged() {
        let module = wat::parse_str(
            r#"(module
                 (memory (export "memory") 1)
                 (global (export "g") i32 (i32.const 7))
                 (func $a (export "proxy_on_a") (result i32) (i32.const 1))
                 (func (export "proxy_on_b") (call $a) (drop))
                 (func (export "_initialize"))
                 (@custom "name-like" "kept"))"#,
        )
        .unwrap();
        assert_eq!(
            names(&module).unwrap(),
            ["memory", "g", "proxy_on_a", "proxy_on_b", "_initialize"]
        );
        let trimmed = keep_callbacks(&module, &["proxy_on_a"]).unwrap();
        assert_eq!(
            names(&trimmed).unwrap(),
            ["memory", "g", "proxy_on_a", "_initialize"]
        );
        wasmparser::Validator::new().validate_all(&trimmed).unwrap();
        // Every other section, the code and the custom section included, is copied as it was.
        let sections = |m: &[u8]| -> Vec<(u8, Vec<u8>)> {
            Parser::new(0)
                .parse_all(m)
                .filter_map(|p| p.unwrap().as_section())
                .filter(|(id, _)| *id != 7)
                .map(|(id, r)| (id, m[r.start as usize..r.end as usize].to_vec()))
                .collect()
        };
        assert_eq!(sections(&trimmed), sections(&module));
        assert!(
            sections(&module).iter().any(|(id, _)| *id == 0),
            "a custom section"
        );
        // Keeping everything gives the module back byte for byte.
        let same = keep_callbacks(&module, &["proxy_on_a", "proxy_on_b"]).unwrap();
        assert_eq!(same, module);
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(matches!(
            keep_callbacks(b"\0asm\x01\0\0\0\x07\xff", &[]),
            Err(TrimError::Parse(_))
        ));
    }
}
