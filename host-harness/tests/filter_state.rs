//! What a filter sets with `proxy_set_property` on a stream is that stream's filter state in its
//! outcome (Envoy keeps it as `wasm.<path>`): each path once, in the order first set, with its
//! last value; never another stream's.

use keygate_host_harness::{Disposition, Harness, Plugin, Request};

/// Sets `a` to `1`, `b` to `2`, then `a` to `3` on each request while its `:path` is `/set`;
/// sets nothing on other paths (the path's second byte, `s`, decides).
const SETTER: &str = r#"
(module
  (import "env" "proxy_set_property" (func $set (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value"
    (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) ":path")
  (data (i32.const 120) "ab123")
  (global $heap (mut i32) (i32.const 4096))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param $n i32) (result i32)
    (local $at i32)
    (local.set $at (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $n)))
    (local.get $at))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $get (i32.const 0) (i32.const 100) (i32.const 5) (i32.const 300) (i32.const 304)))
    (if (i32.eq (i32.load8_u (i32.add (i32.load (i32.const 300)) (i32.const 1))) (i32.const 115))
      (then
        (drop (call $set (i32.const 120) (i32.const 1) (i32.const 122) (i32.const 1)))
        (drop (call $set (i32.const 121) (i32.const 1) (i32.const 123) (i32.const 1)))
        (drop (call $set (i32.const 120) (i32.const 1) (i32.const 124) (i32.const 1)))))
    (i32.const 0))
  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_log") (param i32))
  (func (export "proxy_on_delete") (param i32)))
"#;

#[test]
fn properties_a_filter_sets_are_its_streams_filter_state_with_their_last_values() {
    let mut harness = Harness::builder(Plugin::load(SETTER.as_bytes()).unwrap())
        .build()
        .unwrap();
    let set = harness.run_request(Request::get("/set")).unwrap();
    assert_eq!(set.disposition, Disposition::Completed, "{set:?}");
    assert_eq!(
        set.filter_state,
        vec![
            ("a".to_owned(), b"3".to_vec()),
            ("b".to_owned(), b"2".to_vec())
        ]
    );
    // The next stream starts with none: filter state belongs to one stream.
    let other = harness.run_request(Request::get("/other")).unwrap();
    assert_eq!(other.disposition, Disposition::Completed, "{other:?}");
    assert!(other.filter_state.is_empty(), "{other:?}");
}
