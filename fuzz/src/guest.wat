;; A tiny proxy-wasm filter for the `harness_header_map` fuzz target. It reads the fuzz input
;; from shared data "in" and hands it straight to the host call the first byte selects, so the
;; harness decodes guest-supplied bytes exactly as it would from any filter. The status of the
;; call goes to shared data "st"; after a header-map write the map read back goes to "out".
(module
  (import "env" "proxy_get_shared_data" (func $get_shared (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_shared_data" (func $set_shared (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_header_map_pairs" (func $set_map (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_pairs" (func $get_map (param i32 i32 i32) (result i32)))
  (import "env" "proxy_send_local_response" (func $local (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_http_call" (func $call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_buffer_bytes" (func $set_buf (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_bytes" (func $get_buf (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 64) "in")
  (data (i32.const 80) "out")
  (data (i32.const 96) "st")
  (data (i32.const 112) "cp")
  (global $heap (mut i32) (i32.const 65536))
  (func (export "proxy_abi_version_0_2_1"))
  ;; Bump allocator over fresh pages; reset per request.
  (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
    (local $ptr i32) (local $end i32) (local $need i32)
    (local.set $ptr (global.get $heap))
    (local.set $end (i32.add (local.get $ptr) (local.get $size)))
    (if (i32.lt_u (local.get $end) (local.get $ptr)) (then (return (i32.const 0))))
    (local.set $need
      (i32.sub (i32.shr_u (i32.add (local.get $end) (i32.const 65535)) (i32.const 16)) (memory.size)))
    (if (i32.gt_s (local.get $need) (i32.const 0))
      (then (if (i32.eq (memory.grow (local.get $need)) (i32.const -1)) (then (return (i32.const 0))))))
    (global.set $heap (i32.and (i32.add (local.get $end) (i32.const 7)) (i32.const -8)))
    (local.get $ptr))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func $status (param $st i32)
    (i32.store8 (i32.const 24) (local.get $st))
    (drop (call $set_shared (i32.const 96) (i32.const 2) (i32.const 24) (i32.const 1) (i32.const 0))))
  ;; Reads "in": leaves its pointer at 0 and size at 4; returns the size.
  (func $input (result i32)
    (global.set $heap (i32.const 65536))
    ;; Op 4 lets the host write at any guest address, so the key names above may have been
    ;; overwritten by an earlier input: restore them ("in", "out", "st", "cp").
    (i32.store16 (i32.const 64) (i32.const 0x6e69))
    (i32.store16 (i32.const 80) (i32.const 0x756f))
    (i32.store8 (i32.const 82) (i32.const 0x74))
    (i32.store16 (i32.const 96) (i32.const 0x7473))
    (i32.store16 (i32.const 112) (i32.const 0x7063))
    (i32.store (i32.const 0) (i32.const 0))
    (i32.store (i32.const 4) (i32.const 0))
    (drop (call $get_shared (i32.const 64) (i32.const 2) (i32.const 0) (i32.const 4) (i32.const 8)))
    (i32.load (i32.const 4)))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (local $p i32) (local $s i32) (local $op i32)
    (if (i32.eqz (call $input)) (then (return (i32.const 0))))
    (local.set $op (i32.rem_u (i32.load8_u (i32.load (i32.const 0))) (i32.const 5)))
    (local.set $p (i32.add (i32.load (i32.const 0)) (i32.const 1)))
    (local.set $s (i32.sub (i32.load (i32.const 4)) (i32.const 1)))
    ;; 0: replace the request headers with the bytes, read them back into "out".
    (if (i32.eq (local.get $op) (i32.const 0)) (then
      (call $status (call $set_map (i32.const 0) (local.get $p) (local.get $s)))
      (i32.store (i32.const 16) (i32.const 0))
      (i32.store (i32.const 20) (i32.const 0))
      (drop (call $get_map (i32.const 0) (i32.const 16) (i32.const 20)))
      (drop (call $set_shared (i32.const 80) (i32.const 3) (i32.load (i32.const 16)) (i32.load (i32.const 20)) (i32.const 0)))))
    ;; 1: a local reply whose extra headers are the bytes.
    (if (i32.eq (local.get $op) (i32.const 1)) (then
      (call $status (call $local (i32.const 403) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)
                                 (local.get $p) (local.get $s) (i32.const -1)))))
    ;; 2: an HTTP call to cluster "cp" with the bytes as headers and trailers.
    (if (i32.eq (local.get $op) (i32.const 2)) (then
      (call $status (call $call (i32.const 112) (i32.const 2) (local.get $p) (local.get $s) (i32.const 0) (i32.const 0)
                                (local.get $p) (local.get $s) (i32.const 1000) (i32.const 12)))))
    ;; 4: raw pointers and sizes from the bytes (bounds checks of guest memory).
    (if (i32.and (i32.eq (local.get $op) (i32.const 4)) (i32.ge_u (local.get $s) (i32.const 24))) (then
      (call $status (call $set_map (i32.load (local.get $p)) (i32.load offset=4 (local.get $p)) (i32.load offset=8 (local.get $p))))
      (drop (call $get_map (i32.load (local.get $p)) (i32.load offset=12 (local.get $p)) (i32.load offset=16 (local.get $p))))
      (drop (call $get_buf (i32.load8_u offset=20 (local.get $p)) (i32.load offset=4 (local.get $p))
                           (i32.load offset=8 (local.get $p)) (i32.load offset=12 (local.get $p)) (i32.load offset=16 (local.get $p))))
      (drop (call $set_shared (i32.load offset=12 (local.get $p)) (i32.load offset=16 (local.get $p))
                              (i32.load offset=4 (local.get $p)) (i32.load offset=8 (local.get $p)) (i32.const 0)))))
    (i32.const 0))
  ;; 3: splice the request body: buffer type, start, length from the bytes, then the data.
  (func (export "proxy_on_request_body") (param i32 i32 i32) (result i32)
    (local $p i32) (local $s i32)
    (if (i32.eqz (call $input)) (then (return (i32.const 0))))
    (if (i32.ne (i32.rem_u (i32.load8_u (i32.load (i32.const 0))) (i32.const 5)) (i32.const 3))
      (then (return (i32.const 0))))
    (local.set $p (i32.add (i32.load (i32.const 0)) (i32.const 1)))
    (local.set $s (i32.sub (i32.load (i32.const 4)) (i32.const 1)))
    (if (i32.lt_u (local.get $s) (i32.const 9)) (then (return (i32.const 0))))
    (call $status (call $set_buf (i32.load8_u (local.get $p)) (i32.load offset=1 (local.get $p)) (i32.load offset=5 (local.get $p))
                                 (i32.add (local.get $p) (i32.const 9)) (i32.sub (local.get $s) (i32.const 9))))
    (i32.const 0))
)
