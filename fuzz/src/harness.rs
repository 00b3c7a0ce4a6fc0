//! `harness_header_map`: the host harness decoding guest-supplied header maps and buffers.
//!
//! A tiny WAT filter (`guest.wat`) takes the fuzz input from shared data and passes it to
//! `proxy_set_header_map_pairs`, `proxy_send_local_response`, `proxy_http_call` or
//! `proxy_set_buffer_bytes`, or uses it as raw pointers and sizes. The host must never panic or
//! trap the guest; a well-formed map (spec serialization) must come back exactly (names
//! lower-cased, invalid UTF-8 in a name replaced, values byte for byte) and a malformed one must read as empty, as in Envoy.

use std::cell::RefCell;

use keygate_host_harness::{CalloutReply, Cluster, Disposition, Harness, Plugin, Request, Status};

/// The guest module (WAT text; the harness compiles it once).
pub const GUEST_WAT: &str = include_str!("guest.wat");

/// An independent decoder of the proxy-wasm map serialization: pair count (u32 LE), then each
/// pair's name and value sizes (u32 LE), then each name and value followed by NUL.
#[must_use]
pub fn reference_decode(bytes: &[u8]) -> Option<Vec<(String, Vec<u8>)>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let u32_at = |at: usize| -> Option<usize> {
        let b = bytes.get(at..at.checked_add(4)?)?;
        Some(u32::from_le_bytes(b.try_into().ok()?) as usize)
    };
    let count = u32_at(0)?;
    let mut pos = count.checked_mul(8)?.checked_add(4)?;
    if pos > bytes.len() {
        return None;
    }
    let mut out = Vec::new();
    for i in 0..count {
        let mut pair = [Vec::new(), Vec::new()];
        for (j, slot) in pair.iter_mut().enumerate() {
            let len = u32_at(4 + 8 * i + 4 * j)?;
            let end = pos.checked_add(len)?;
            let field = bytes.get(pos..end)?;
            if bytes.get(end) != Some(&0) {
                return None;
            }
            *slot = field.to_vec();
            pos = end + 1;
        }
        let [k, v] = pair;
        out.push((String::from_utf8_lossy(&k).into_owned(), v));
    }
    Some(out)
}

/// What the host keeps of a map: names lower-cased (invalid UTF-8 in a name replaced), values
/// byte for byte.
fn lower(map: Vec<(String, Vec<u8>)>) -> Vec<(String, Vec<u8>)> {
    map.into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect()
}

struct State {
    harness: Harness,
    runs: u32,
}

fn build() -> Harness {
    let plugin = Plugin::load(GUEST_WAT.as_bytes()).expect("the guest module loads");
    Harness::builder(plugin)
        .cluster("cp", Cluster::handler(|_| CalloutReply::status(200)))
        .build()
        .expect("the harness starts the guest")
}

thread_local! {
    static STATE: RefCell<Option<State>> = const { RefCell::new(None) };
}

/// The fuzz target.
pub fn check(data: &[u8]) {
    STATE.with(|cell| {
        let mut slot = cell.borrow_mut();
        // Rebuild now and then: the harness keeps every finished stream for observation.
        if slot.as_ref().is_none_or(|s| s.runs >= 256) {
            *slot = Some(State {
                harness: build(),
                runs: 0,
            });
        }
        let state = slot.as_mut().expect("just built");
        state.runs += 1;
        run(&mut state.harness, data);
    });
}

const BODY: &[u8] = b"0123456789";

fn run(h: &mut Harness, data: &[u8]) {
    h.set_shared_data("in", data.to_vec(), 0)
        .expect("host writes shared data");
    h.set_shared_data("st", vec![0xff], 0)
        .expect("host writes shared data");
    h.set_shared_data("out", Vec::new(), 0)
        .expect("host writes shared data");
    let traps_before = h.traps().len();
    let outcome = h
        .run_request(
            Request::new("POST", "/fuzz")
                .header("x-a", "1")
                .body(BODY.to_vec()),
        )
        .expect("the stream runs");
    assert_eq!(
        h.traps().len(),
        traps_before,
        "the guest trapped: {:?}",
        h.traps().last()
    );
    assert!(
        !matches!(
            outcome.disposition,
            Disposition::FailedClosed | Disposition::FailedOpen
        ),
        "the stream failed: {:?}",
        outcome.disposition
    );
    let Some((&op, rest)) = data.split_first() else {
        return;
    };
    let status = h.shared_data("st").map(|(v, _)| v).unwrap_or_default();
    let status = status.first().copied().unwrap_or(0xff);
    let expected = reference_decode(rest).map(lower);
    match op % 5 {
        0 => {
            assert_eq!(status, Status::Ok as u8, "set_header_map_pairs failed");
            let out = h.shared_data("out").map(|(v, _)| v).unwrap_or_default();
            let back = reference_decode(&out).expect("the host serializes a well-formed map");
            assert_eq!(
                back,
                expected.unwrap_or_default(),
                "the map read back differs"
            );
        }
        1 => {
            assert_eq!(status, Status::Ok as u8, "send_local_response failed");
            let local = outcome.local_response.expect("a local response was sent");
            assert_eq!(local.status, 403);
            let got: Vec<(String, Vec<u8>)> = local
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.as_bytes().to_vec()))
                .collect();
            assert_eq!(
                got,
                expected.unwrap_or_default(),
                "local response headers differ"
            );
        }
        2 => {
            let map = expected.unwrap_or_default();
            let has = |n: &str| map.iter().any(|(k, v)| k == n && !v.is_empty());
            let want = if has(":method") && has(":path") && has(":authority") {
                Status::Ok
            } else {
                Status::BadArgument
            };
            assert_eq!(status, want as u8, "http_call status for headers {map:?}");
        }
        3 if rest.len() >= 9 => {
            let kind = rest[0];
            let start = u32::from_le_bytes(rest[1..5].try_into().expect("4 bytes")) as usize;
            let length = u32::from_le_bytes(rest[5..9].try_into().expect("4 bytes")) as usize;
            let payload = &rest[9..];
            let want_body = match kind {
                0 if start == 0 => {
                    let mut b = payload.to_vec();
                    b.extend_from_slice(&BODY[length.min(BODY.len())..]);
                    Some(b)
                }
                0 if start >= BODY.len() => Some([BODY, payload].concat()),
                _ => None,
            };
            if let Some(body) = want_body {
                assert_eq!(status, Status::Ok as u8, "set_buffer_bytes failed");
                let fwd = outcome.request.expect("the request was forwarded");
                assert_eq!(fwd.body, body, "the spliced body differs");
            } else {
                assert_ne!(status, Status::Ok as u8, "an impossible splice succeeded");
            }
        }
        _ => {}
    }
}
