//! A key set in Envoy's shared data, measured before it is built (issue 23): a proxy-wasm
//! filter in WebAssembly text whose leader VM writes [`BUCKETS`] buckets (`kg/b/<4 hex>`) of
//! realistic size into shared data, and whose request path makes Keygate's host calls plus one
//! `proxy_get_shared_data` of a random bucket. `benches/envoy.rs` times the request path
//! (`host-calls-shared-wasm`); `benches/envoy_shared_data.rs` reads Envoy's RSS with the buckets
//! written, from the VM's own memory or from a snapshot fetched over HTTP, read whole or one
//! bucket at a time.
//!
//! The leader is the VM configured third in the process (a `kg/configured` counter claimed with
//! compare-and-swap): Envoy configures a throw-away canary copy, then the main thread's VM, then
//! the workers' (`plugin/core/src/sync/vm.rs`). It writes on its first tick, then sets the
//! gauges [`BUCKETS_GAUGE`], [`BYTES_GAUGE`], [`LEADER_MEMORY_GAUGE`] and [`WRITE_US_GAUGE`].

/// Buckets written: the first 16 bits of a key's digest.
pub const BUCKETS: u32 = 1 << 16;
/// Bytes of one compact record in a bucket (the snapshot's entry without its framing).
pub const RECORD_BYTES: u64 = 60;
/// Buckets the leader wrote (Envoy's stat name), set once it is done (0 for
/// [`BucketSource::Nothing`]).
pub const BUCKETS_GAUGE: &str = "wasmcustom.kg_shared.buckets";
/// Value bytes the leader wrote into shared data.
pub const BYTES_GAUGE: &str = "wasmcustom.kg_shared.bytes";
/// The leader VM's linear memory once it wrote them (wasm memory never shrinks).
pub const LEADER_MEMORY_GAUGE: &str = "wasmcustom.kg_shared.leader_memory_bytes";
/// How long the leader took to write the buckets, in µs: from its tick (generated) or from
/// the snapshot's arrival (body) to the last `proxy_set_shared_data`.
pub const WRITE_US_GAUGE: &str = "wasmcustom.kg_shared.write_us";
/// The cluster the leader fetches the snapshot from, in the body sources.
pub const FEED_CLUSTER: &str = "keygate_control_plane";

/// Where the leader's bucket bytes come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BucketSource {
    /// No bucket: the baseline.
    Nothing,
    /// `keys` records of `record_bytes` each ([`RECORD_BYTES`]: the wire's entry) spread evenly
    /// over the buckets, copied from a zeroed region of the VM's memory: the bytes shared data
    /// holds for that many keys, with nothing else in the VM.
    Generated { keys: u64, record_bytes: u64 },
    /// `GET /v1/keyset` of [`FEED_CLUSTER`], its body cut into [`BUCKETS`] consecutive slices;
    /// `whole`: the body copied into the VM at once (`proxy_get_buffer_bytes(0, size)`), else
    /// one slice at a time (`start`/`size` of the slice, into a scratch area reused).
    Body { whole: bool },
}

/// Largest bucket [`BucketSource::Generated`] can write (its zeroed region, 4096..65536).
const MAX_GENERATED_BUCKET: u64 = 65_536 - 4_096;

/// The module in WebAssembly text. Requests are answered as `host_calls_wat`'s (read the header
/// map, remove one header, add three) plus one `proxy_get_shared_data` of a pseudo-random
/// bucket; a failed read traps (Envoy answers 5xx, and the bench stops).
///
/// # Panics
/// A generated bucket would exceed the module's zeroed region (over about 67 million keys).
pub fn shared_set_wat(source: BucketSource) -> String {
    let write = match source {
        BucketSource::Nothing => "(call $done)".to_owned(),
        BucketSource::Generated { keys, record_bytes } => {
            assert!(
                keys.div_ceil(u64::from(BUCKETS)) * record_bytes <= MAX_GENERATED_BUCKET,
                "{keys} keys make buckets larger than the module's zeroed region"
            );
            format!(
                r#"(loop $l
      (local.set $len (i32.wrap_i64 (i64.mul (i64.const {record_bytes})
        (i64.sub (i64.shr_u (i64.mul (i64.const {keys}) (i64.extend_i32_u (i32.add (local.get $i) (i32.const 1)))) (i64.const 16))
                 (i64.shr_u (i64.mul (i64.const {keys}) (i64.extend_i32_u (local.get $i))) (i64.const 16))))))
      (call $put (local.get $i) (i32.const 4096) (local.get $len))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const {BUCKETS}))))
    (call $done)"#
            )
        }
        BucketSource::Body { .. } => {
            // The request: GET /v1/keyset of the feed (a snapshot), 60 s to answer.
            r"(drop (call $http_call (i32.const 1400) (i32.const 21) (i32.const 1440) (global.get $headers_len)
      (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 60000) (i32.const 1700)))"
                .to_owned()
        }
    };
    let on_body = match source {
        BucketSource::Body { whole: true } => {
            r"(global.set $heap (i32.const 65536))
    (if (call $buffer (i32.const 4) (i32.const 0) (local.get $size) (i32.const 1360) (i32.const 1364))
      (then unreachable))
    (local.set $base (i32.load (i32.const 1360)))
    (loop $l
      (local.set $off (call $slice (local.get $size) (local.get $i)))
      (local.set $len (i32.sub (call $slice (local.get $size) (i32.add (local.get $i) (i32.const 1))) (local.get $off)))
      (call $put (local.get $i) (i32.add (local.get $base) (local.get $off)) (local.get $len))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 65536))))
    (call $done)"
        }
        BucketSource::Body { whole: false } => {
            r"(loop $l
      (local.set $off (call $slice (local.get $size) (local.get $i)))
      (local.set $len (i32.sub (call $slice (local.get $size) (i32.add (local.get $i) (i32.const 1))) (local.get $off)))
      (global.set $heap (i32.const 65536))
      (if (call $buffer (i32.const 4) (local.get $off) (local.get $len) (i32.const 1360) (i32.const 1364))
        (then unreachable))
      (call $put (local.get $i) (i32.load (i32.const 1360)) (local.get $len))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 65536))))
    (call $done)"
        }
        _ => "",
    };
    let headers = serialized_pairs(&[
        (":method", "GET"),
        (":path", "/v1/keyset"),
        (":authority", "keygate"),
    ]);
    let headers_len = headers.len();
    let headers = escaped(&headers);
    format!(
        r#"(module
  (import "env" "proxy_get_header_map_pairs" (func $pairs (param i32 i32 i32) (result i32)))
  (import "env" "proxy_remove_header_map_value" (func $remove (param i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_shared_data" (func $get_shared (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_shared_data" (func $set_shared (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_define_metric" (func $define_metric (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_record_metric" (func $record_metric (param i32 i64) (result i32)))
  (import "env" "proxy_set_tick_period_milliseconds" (func $tick_period (param i32) (result i32)))
  (import "env" "proxy_http_call" (func $http_call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_bytes" (func $buffer (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_current_time_nanoseconds" (func $clock (param i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 1024) "x-api-key")
  (data (i32.const 1040) "x-keygate-key-id")
  (data (i32.const 1060) "key_0123456789abcdef0123456789abcdef")
  (data (i32.const 1100) "x-keygate-owner")
  (data (i32.const 1120) "owner-1")
  (data (i32.const 1130) "x-keygate-scopes")
  (data (i32.const 1150) "repo:read")
  (data (i32.const 1200) "kg/b/0000")
  (data (i32.const 1216) "0123456789abcdef")
  (data (i32.const 1232) "kg/configured")
  (data (i32.const 1248) "kg_shared.buckets")
  (data (i32.const 1280) "kg_shared.leader_memory_bytes")
  (data (i32.const 1312) "kg_shared.bytes")
  (data (i32.const 1400) "{FEED_CLUSTER}")
  (data (i32.const 1760) "kg_shared.write_us")
  (data (i32.const 1440) "{headers}")
  (global $headers_len i32 (i32.const {headers_len}))
  (global $heap (mut i32) (i32.const 65536))
  (global $seed (mut i32) (i32.const 12345))
  (global $leader (mut i32) (i32.const 0))
  (global $started (mut i32) (i32.const 0))
  (global $written (mut i64) (i64.const 0))
  (global $count (mut i64) (i64.const 0))
  (global $t0 (mut i64) (i64.const 0))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
    (local $p i32) (local $end i32) (local $have i32)
    (local.set $p (global.get $heap))
    (local.set $end (i32.add (local.get $p) (local.get $size)))
    (local.set $have (i32.mul (memory.size) (i32.const 65536)))
    (if (i32.gt_u (local.get $end) (local.get $have))
      (then (if (i32.lt_s (memory.grow (i32.shr_u (i32.add (i32.sub (local.get $end) (local.get $have)) (i32.const 65535)) (i32.const 16))) (i32.const 0))
        (then (return (i32.const 0))))))
    (global.set $heap (local.get $end))
    (local.get $p))
  ;; Writes bucket $i's name (kg/b/<4 hex>) at 1200.
  (func $key (param $i i32)
    (i32.store8 (i32.const 1205) (i32.load8_u (i32.add (i32.const 1216) (i32.and (i32.shr_u (local.get $i) (i32.const 12)) (i32.const 15)))))
    (i32.store8 (i32.const 1206) (i32.load8_u (i32.add (i32.const 1216) (i32.and (i32.shr_u (local.get $i) (i32.const 8)) (i32.const 15)))))
    (i32.store8 (i32.const 1207) (i32.load8_u (i32.add (i32.const 1216) (i32.and (i32.shr_u (local.get $i) (i32.const 4)) (i32.const 15)))))
    (i32.store8 (i32.const 1208) (i32.load8_u (i32.add (i32.const 1216) (i32.and (local.get $i) (i32.const 15))))))
  ;; Writes bucket $i: $len bytes at $ptr.
  (func $put (param $i i32) (param $ptr i32) (param $len i32)
    (call $key (local.get $i))
    (if (call $set_shared (i32.const 1200) (i32.const 9) (local.get $ptr) (local.get $len) (i32.const 0))
      (then unreachable))
    (global.set $count (i64.add (global.get $count) (i64.const 1)))
    (global.set $written (i64.add (global.get $written) (i64.extend_i32_u (local.get $len)))))
  ;; Where slice $i of a body of $size bytes starts.
  (func $slice (param $size i32) (param $i i32) (result i32)
    (i32.wrap_i64 (i64.shr_u (i64.mul (i64.extend_i32_u (local.get $size)) (i64.extend_i32_u (local.get $i))) (i64.const 16))))
  ;; One gauge: defines it (name at $name, $len bytes) and sets it to $v.
  (func $gauge (param $name i32) (param $len i32) (param $v i64)
    (drop (call $define_metric (i32.const 1) (local.get $name) (local.get $len) (i32.const 1344)))
    (drop (call $record_metric (i32.load (i32.const 1344)) (local.get $v))))
  ;; The host's clock, in nanoseconds.
  (func $now (result i64)
    (drop (call $clock (i32.const 1376)))
    (i64.load (i32.const 1376)))
  (func $done
    (call $gauge (i32.const 1760) (i32.const 18) (i64.div_u (i64.sub (call $now) (global.get $t0)) (i64.const 1000)))
    (call $gauge (i32.const 1312) (i32.const 15) (global.get $written))
    (call $gauge (i32.const 1280) (i32.const 29) (i64.mul (i64.extend_i32_u (memory.size)) (i64.const 65536)))
    (call $gauge (i32.const 1248) (i32.const 17) (global.get $count)))
  ;; Claims this VM's configuration index; the third (the first worker's) leads.
  (func $claim (result i32)
    (local $v i32) (local $cas i32) (local $st i32)
    (loop $retry
      (local.set $st (call $get_shared (i32.const 1232) (i32.const 13) (i32.const 1360) (i32.const 1364) (i32.const 1368)))
      (if (i32.eqz (local.get $st))
        (then
          (local.set $v (i32.load (i32.load (i32.const 1360))))
          (local.set $cas (i32.load (i32.const 1368))))
        (else
          (local.set $v (i32.const 0))
          ;; create-only: a cas no live entry has
          (local.set $cas (i32.const -1))))
      (i32.store (i32.const 1372) (i32.add (local.get $v) (i32.const 1)))
      (br_if $retry (call $set_shared (i32.const 1232) (i32.const 13) (i32.const 1372) (i32.const 4) (local.get $cas))))
    (local.get $v))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    (global.set $heap (i32.const 65536))
    (if (i32.eq (call $claim) (i32.const 2))
      (then
        (global.set $leader (i32.const 1))
        (drop (call $tick_period (i32.const 20)))))
    (i32.const 1))
  (func (export "proxy_on_tick") (param i32)
    (local $i i32) (local $len i32)
    (if (i32.or (i32.eqz (global.get $leader)) (global.get $started)) (then (return)))
    (global.set $started (i32.const 1))
    (global.set $t0 (call $now))
    {write})
  (func (export "proxy_on_http_call_response") (param i32 i32 i32) (param $size i32) (param i32)
    (local $i i32) (local $len i32) (local $off i32) (local $base i32)
    (if (i32.eqz (local.get $size)) (then unreachable))
    (global.set $t0 (call $now))
    {on_body})
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (global.set $heap (i32.const 65536))
    (drop (call $pairs (i32.const 0) (i32.const 2000) (i32.const 2004)))
    (global.set $seed (i32.add (i32.mul (global.get $seed) (i32.const 1103515245)) (i32.const 12345)))
    (call $key (i32.shr_u (global.get $seed) (i32.const 16)))
    (if (call $get_shared (i32.const 1200) (i32.const 9) (i32.const 1360) (i32.const 1364) (i32.const 1368))
      (then unreachable))
    (drop (call $remove (i32.const 0) (i32.const 1024) (i32.const 9)))
    (drop (call $add (i32.const 0) (i32.const 1040) (i32.const 16) (i32.const 1060) (i32.const 36)))
    (drop (call $add (i32.const 0) (i32.const 1100) (i32.const 15) (i32.const 1120) (i32.const 7)))
    (drop (call $add (i32.const 0) (i32.const 1130) (i32.const 16) (i32.const 1150) (i32.const 9)))
    (i32.const 0))
  (func (export "proxy_on_delete") (param i32)))"#
    )
}

/// The proxy-wasm ABI's serialized header map: the count, each name's and value's length
/// (little-endian `u32`s), then each name and value followed by a NUL.
fn serialized_pairs(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    let len = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
    out.extend(len(pairs.len()));
    for (k, v) in pairs {
        out.extend(len(k.len()));
        out.extend(len(v.len()));
    }
    for (k, v) in pairs {
        out.extend(k.as_bytes());
        out.push(0);
        out.extend(v.as_bytes());
        out.push(0);
    }
    out
}

/// `bytes` as a WebAssembly text string literal's content (every byte escaped).
fn escaped(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("\\{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_source_is_valid_webassembly() {
        for source in [
            BucketSource::Nothing,
            BucketSource::Generated {
                keys: 1_000_000,
                record_bytes: RECORD_BYTES,
            },
            BucketSource::Body { whole: true },
            BucketSource::Body { whole: false },
        ] {
            let text = shared_set_wat(source);
            assert!(
                wat::parse_str(&text).is_ok(),
                "{source:?}: {:?}",
                wat::parse_str(&text).err()
            );
        }
    }

    #[test]
    fn the_http_call_headers_are_the_abi_serialization() {
        let bytes = serialized_pairs(&[(":path", "/a")]);
        assert_eq!(&bytes[..12], &[1, 0, 0, 0, 5, 0, 0, 0, 2, 0, 0, 0]);
        assert_eq!(&bytes[12..], b":path\0/a\0");
    }
}
