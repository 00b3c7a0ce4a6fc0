//! Bad modules and hostile guests: clear errors and ABI statuses, never a host panic.

use keygate_host_harness::{Disposition, Harness, HarnessError, Plugin, Request};

#[test]
fn garbage_bytes_are_an_invalid_module() {
    let err = Plugin::load(b"\0asm\x01\0\0\0garbage").unwrap_err();
    assert!(matches!(err, HarnessError::InvalidModule(_)), "{err}");
    let err = Plugin::load(b"not wasm at all").unwrap_err();
    assert!(matches!(err, HarnessError::InvalidModule(_)), "{err}");
}

#[test]
fn a_module_without_abi_version_export_is_refused() {
    let err = Plugin::load(br#"(module (memory (export "memory") 1))"#).unwrap_err();
    assert!(matches!(err, HarnessError::MissingAbiVersion), "{err}");
    assert!(err.to_string().contains("proxy_abi_version_0_2_1"));
}

#[test]
fn abi_0_2_0_is_accepted() {
    let plugin = Plugin::load(
        br#"(module (memory (export "memory") 1)
             (func (export "proxy_abi_version_0_2_0"))
             (func (export "malloc") (param i32) (result i32) (i32.const 1024)))"#,
    )
    .unwrap();
    assert_eq!(
        plugin.abi_version(),
        keygate_host_harness::AbiVersion::V0_2_0
    );
}

#[test]
fn unsatisfiable_imports_are_all_listed() {
    let err = Plugin::load(
        br#"(module
             (import "env" "proxy_does_not_exist" (func (param i32)))
             (import "env" "proxy_log" (func (param i32) (result i32)))
             (import "other" "thing" (func))
             (memory (export "memory") 1)
             (func (export "proxy_abi_version_0_2_1")))"#,
    )
    .unwrap_err();
    match err {
        HarnessError::UnsatisfiedImports(names) => assert_eq!(
            names,
            vec![
                "env.proxy_does_not_exist".to_owned(),
                "env.proxy_log (signature differs)".to_owned(),
                "other.thing".to_owned()
            ]
        ),
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn missing_memory_or_allocator_exports_are_named() {
    let err = Plugin::load(br#"(module (func (export "proxy_abi_version_0_2_1")))"#).unwrap_err();
    assert!(
        matches!(&err, HarnessError::MissingExport(name) if name == "memory"),
        "{err}"
    );
    let err = Plugin::load(
        br#"(module (memory (export "memory") 1) (func (export "proxy_abi_version_0_2_1")))"#,
    )
    .unwrap_err();
    assert!(
        matches!(&err, HarnessError::MissingExport(name) if name == "proxy_on_memory_allocate"),
        "{err}"
    );
}

#[test]
fn a_trap_in_initialize_is_a_trap_error() {
    let plugin = Plugin::load(
        br#"(module (memory (export "memory") 1)
             (func (export "proxy_abi_version_0_2_1"))
             (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024))
             (func (export "_initialize") unreachable))"#,
    )
    .unwrap();
    match Harness::builder(plugin).build() {
        Err(HarnessError::Trap { during, message }) => {
            assert_eq!(during, "_initialize");
            assert!(message.contains("unreachable"), "{message}");
        }
        other => panic!("expected a trap, got {other:?}"),
    }
}

/// A hand-written filter that calls host functions with hostile or unusual arguments and
/// reports each status as one digit in a request header.
const HOSTILE: &str = r#"
(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func $get_hv (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $add_hv (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_bytes" (func $get_buf (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_effective_context" (func $set_ctx (param i32) (result i32)))
  (import "env" "proxy_call_foreign_function" (func $foreign (param i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_http_call" (func $http (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_shared_data" (func $get_sd (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_dequeue_shared_queue" (func $deq (param i32 i32 i32) (result i32)))
  (import "env" "proxy_define_metric" (func $defm (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_pairs" (func $pairs (param i32 i32 i32) (result i32)))
  (import "env" "proxy_grpc_call" (func $grpc (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $bump (mut i32) (i32.const 4096))
  (global $bad_alloc (mut i32) (i32.const 0))
  (data (i32.const 200) "x-k")
  (data (i32.const 210) "x-statuses")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
    (local $p i32)
    (if (global.get $bad_alloc) (then (return (i32.const 0x7ffffff0))))
    (local.set $p (global.get $bump))
    (global.set $bump (i32.add (global.get $bump) (local.get $size)))
    (local.get $p))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_request_headers") (param $ctx i32) (param $n i32) (param $eos i32) (result i32)
    ;; oversize buffer, pointer past the end, out-pointers out of range
    (i32.store8 offset=100 (i32.const 0) (i32.add (i32.const 48) (call $log (i32.const 2) (i32.const 0) (i32.const 0x7fffffff))))
    (i32.store8 offset=101 (i32.const 0) (i32.add (i32.const 48) (call $log (i32.const 2) (i32.const 0xfffffff0) (i32.const 32))))
    (i32.store8 offset=102 (i32.const 0) (i32.add (i32.const 48) (call $get_hv (i32.const 0) (i32.const 200) (i32.const 3) (i32.const 0xfffffff0) (i32.const 0xfffffff4))))
    ;; plugin configuration outside proxy_on_configure: NotFound
    (i32.store8 offset=103 (i32.const 0) (i32.add (i32.const 48) (call $get_buf (i32.const 7) (i32.const 0) (i32.const 10) (i32.const 300) (i32.const 304))))
    ;; unknown context: BadArgument
    (i32.store8 offset=104 (i32.const 0) (i32.add (i32.const 48) (call $set_ctx (i32.const 999))))
    ;; unknown foreign function: NotFound
    (i32.store8 offset=105 (i32.const 0) (i32.add (i32.const 48) (call $foreign (i32.const 200) (i32.const 3) (i32.const 0) (i32.const 0) (i32.const 300) (i32.const 304))))
    ;; http call to an unknown cluster: BadArgument
    (i32.store8 offset=106 (i32.const 0) (i32.add (i32.const 48) (call $http (i32.const 200) (i32.const 3) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 1000) (i32.const 300))))
    ;; missing shared data key / unknown queue: NotFound
    (i32.store8 offset=107 (i32.const 0) (i32.add (i32.const 48) (call $get_sd (i32.const 200) (i32.const 3) (i32.const 300) (i32.const 304) (i32.const 308))))
    (i32.store8 offset=108 (i32.const 0) (i32.add (i32.const 48) (call $deq (i32.const 42) (i32.const 300) (i32.const 304))))
    ;; bad metric type: BadArgument
    (i32.store8 offset=109 (i32.const 0) (i32.add (i32.const 48) (call $defm (i32.const 7) (i32.const 200) (i32.const 3) (i32.const 300))))
    ;; the guest allocator returns memory that does not exist: InvalidMemoryAccess
    (global.set $bad_alloc (i32.const 1))
    (i32.store8 offset=110 (i32.const 0) (i32.add (i32.const 48) (call $pairs (i32.const 0) (i32.const 300) (i32.const 304))))
    (global.set $bad_alloc (i32.const 0))
    ;; gRPC to an unknown service: ParseFailure
    (i32.store8 offset=111 (i32.const 0) (i32.add (i32.const 48) (call $grpc (i32.const 200) (i32.const 3) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 1000) (i32.const 300))))
    (drop (call $add_hv (i32.const 0) (i32.const 210) (i32.const 10) (i32.const 100) (i32.const 12)))
    (i32.const 0))
)
"#;

#[test]
fn hostile_arguments_get_envoy_statuses_not_host_panics() {
    let mut harness = Harness::builder(Plugin::load(HOSTILE.as_bytes()).unwrap())
        .build()
        .unwrap();
    let outcome = harness
        .run_request(Request::get("/").header("x-k", "v"))
        .unwrap();
    assert_eq!(outcome.disposition, Disposition::Completed);
    assert_eq!(outcome.request_header("x-statuses"), Some("666121211264"));
    assert!(harness.traps().is_empty());
    assert!(
        harness.logs().is_empty(),
        "no log line was accepted from bad buffers"
    );
}

/// Grows its memory by 100 pages (6.4 MiB) on every request and traps if that fails.
const GROWER: &str = r#"
(module
  (memory (export "memory") 1)
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (if (i32.eq (memory.grow (i32.const 100)) (i32.const -1)) (then unreachable))
    (i32.const 0))
  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_log") (param i32))
  (func (export "proxy_on_delete") (param i32)))
"#;

#[test]
fn a_memory_cap_makes_growing_past_it_fail_in_the_guest() {
    // uncapped: two requests grow to 201 pages
    let mut free = Harness::builder(Plugin::load(GROWER.as_bytes()).unwrap())
        .build()
        .unwrap();
    for _ in 0..2 {
        let o = free.run_request(Request::get("/")).unwrap();
        assert_eq!(o.disposition, Disposition::Completed, "{o:?}");
    }
    // capped at 10 MiB: the first growth fits (6.5 MiB), the second does not and the guest traps
    let mut capped = Harness::builder(Plugin::load(GROWER.as_bytes()).unwrap())
        .max_memory(10 << 20)
        .build()
        .unwrap();
    let o = capped.run_request(Request::get("/")).unwrap();
    assert_eq!(o.disposition, Disposition::Completed, "{o:?}");
    let o = capped.run_request(Request::get("/")).unwrap();
    assert_eq!(o.disposition, Disposition::FailedClosed, "{o:?}");
    assert_eq!(capped.traps().len(), 1);
}

/// Defines a counter, then increments it, an id with another type's bits and an unknown id, and
/// answers twice with a local response (403 then 500); the statuses go out as a response header.
const METRICS_AND_TWO_REPLIES: &str = r#"
(module
  (import "env" "proxy_define_metric" (func $defm (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_increment_metric" (func $inc (param i32 i64) (result i32)))
  (import "env" "proxy_send_local_response"
    (func $local (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 200) "hits")
  (data (i32.const 220) "\01\00\00\00\0a\00\00\00\04\00\00\00x-statuses\000000\00")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 4096))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (local $id i32)
    (drop (call $defm (i32.const 0) (i32.const 200) (i32.const 4) (i32.const 300)))
    (local.set $id (i32.load (i32.const 300)))
    ;; the status digits go into the header value at 243..
    (i32.store8 (i32.const 243) (i32.add (i32.const 48) (call $inc (local.get $id) (i64.const 2))))
    (i32.store8 (i32.const 244) (i32.add (i32.const 48) (call $inc (local.get $id) (i64.const -1))))
    (i32.store8 (i32.const 245) (i32.add (i32.const 48) (call $inc (i32.xor (local.get $id) (i32.const 1)) (i64.const 1))))
    (i32.store8 (i32.const 246) (i32.add (i32.const 48) (call $inc (i32.const 4000) (i64.const 1))))
    (drop (call $local (i32.const 403) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)
                       (i32.const 220) (i32.const 28) (i32.const -1)))
    (drop (call $local (i32.const 500) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)
                       (i32.const 0) (i32.const 0) (i32.const -1)))
    (i32.const 1))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) (i32.const 0))
  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_log") (param i32))
  (func (export "proxy_on_delete") (param i32)))
"#;

#[test]
fn metric_ids_are_checked_and_a_second_local_response_is_ignored() {
    let mut harness = Harness::builder(Plugin::load(METRICS_AND_TWO_REPLIES.as_bytes()).unwrap())
        .build()
        .unwrap();
    let outcome = harness.run_request(Request::get("/")).unwrap();
    assert_eq!(outcome.disposition, Disposition::LocalResponse);
    let response = outcome.response.as_ref().unwrap();
    assert_eq!(response.status, 403, "the first local response wins");
    // Ok, BadArgument (a counter only goes up), NotFound (gauge bits), NotFound (unknown id)
    assert_eq!(response.header("x-statuses"), Some("0211"));
    assert_eq!(harness.metrics()["hits"].value, 2);
    assert_eq!(harness.local_responses().len(), 1);
}
