//! A proxy-wasm HTTP filter built with the official Rust SDK (proxy-wasm 0.2). Its plugin
//! configuration is a mode name that selects which host function group it exercises; the
//! harness tests drive each mode and check the behaviour Envoy documents for the SDK.
//!
//! Modes: `continue`, `headers`, `deny`, `callout`, `response-callout`, `body`, `reset`,
//! `shared`, `ticks`, `queue`, `metrics`, `properties`, `trap`, `wasi`.

use std::cell::Cell;
use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MetricType, Status};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

thread_local! {
    /// The cas seen by the last `read` in `shared` mode (per instance, like a worker's cache).
    static LAST_CAS: Cell<u32> = const { Cell::new(0) };
}

#[derive(Default)]
struct Root {
    mode: String,
    queue: u32,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_vm_start(&mut self, _size: usize) -> bool {
        // A VM configuration of "refuse" makes the VM fail to start.
        self.get_vm_configuration().as_deref() != Some(b"refuse".as_slice())
    }

    fn on_configure(&mut self, _size: usize) -> bool {
        let config = self.get_plugin_configuration().unwrap_or_default();
        self.mode = String::from_utf8_lossy(&config).trim().to_owned();
        log::info!("configured mode {}", self.mode);
        match self.mode.as_str() {
            "refuse" => return false,
            "ticks" => self.set_tick_period(Duration::from_millis(100)),
            "queue" => self.queue = self.register_shared_queue("events"),
            "trap-configure" => panic!("configure exploded"),
            _ => {}
        }
        true
    }

    fn on_tick(&mut self) {
        // Counts ticks in shared data with a compare-and-swap loop, and in a counter.
        loop {
            let (value, cas) = self.get_shared_data("ticks");
            let count: u64 = value
                .and_then(|v| String::from_utf8(v).ok())
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            match self.set_shared_data("ticks", Some((count + 1).to_string().as_bytes()), cas) {
                Ok(()) => break,
                Err(Status::CasMismatch) => continue,
                Err(status) => panic!("set_shared_data: {status:?}"),
            }
        }
        let id = hostcalls::define_metric(MetricType::Counter, "ticks_total").unwrap();
        hostcalls::increment_metric(id, 1).unwrap();
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        while let Ok(Some(item)) = self.dequeue_shared_queue(queue_id) {
            log::info!("dequeued {}", String::from_utf8_lossy(&item));
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Filter {
            mode: self.mode.clone(),
            context_id,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Filter {
    mode: String,
    context_id: u32,
}

impl Filter {
    fn headers(&mut self) -> Action {
        let path = self.get_http_request_header(":path").unwrap_or_default();
        self.add_http_request_header("x-added", "yes");
        self.set_http_request_header("x-replace", Some("new"));
        self.set_http_request_header("x-remove", None);
        self.set_http_request_header("x-path-seen", Some(&path));
        let count = self.get_http_request_headers().len();
        self.set_http_request_header("x-header-count", Some(&count.to_string()));
        Action::Continue
    }

    fn deny(&mut self) -> Action {
        if self.get_http_request_header("x-allow").as_deref() == Some("yes") {
            return Action::Continue;
        }
        self.send_http_response(403, vec![("x-denied", "by-filter")], Some(b"denied\n"));
        Action::Pause
    }

    fn callout(&mut self) -> Action {
        let cluster = self
            .get_http_request_header("x-cluster")
            .unwrap_or_else(|| "auth".to_owned());
        let timeout = self
            .get_http_request_header("x-timeout-ms")
            .and_then(|t| t.parse().ok())
            .unwrap_or(1000);
        let key = self.get_http_request_header("x-key").unwrap_or_default();
        let mut headers = vec![
            (":path", "/check"),
            (":authority", "auth.local"),
            ("x-key", key.as_str()),
        ];
        if self.get_http_request_header("x-no-method").is_none() {
            headers.push((":method", "POST"));
        }
        match self.dispatch_http_call(
            &cluster,
            headers,
            Some(b"check"),
            vec![],
            Duration::from_millis(timeout),
        ) {
            Ok(_token) => Action::Pause,
            Err(status) => {
                let body = format!("dispatch failed: {status:?}");
                self.send_http_response(500, vec![], Some(body.as_bytes()));
                Action::Pause
            }
        }
    }

    fn shared(&mut self) -> Action {
        let op = self.get_http_request_header("x-op").unwrap_or_default();
        match op.as_str() {
            "read" => {
                let (value, cas) = self.get_shared_data("k");
                LAST_CAS.with(|c| c.set(cas.unwrap_or(0)));
                let body = value.unwrap_or_default();
                let cas = cas.unwrap_or(0).to_string();
                self.send_http_response(200, vec![("x-cas", &cas)], Some(&body));
            }
            "write" => {
                let value = self.get_http_request_header("x-value").unwrap_or_default();
                let cas = match self.get_http_request_header("x-cas") {
                    Some(c) => c.parse().ok(),
                    None => Some(LAST_CAS.with(Cell::get)),
                };
                match self.set_shared_data("k", Some(value.as_bytes()), cas) {
                    Ok(()) => self.send_http_response(200, vec![], Some(b"stored")),
                    Err(Status::CasMismatch) => {
                        self.send_http_response(409, vec![], Some(b"cas mismatch"))
                    }
                    Err(status) => panic!("set_shared_data: {status:?}"),
                }
            }
            _ => self.send_http_response(400, vec![], Some(b"x-op?")),
        }
        Action::Pause
    }

    fn queue(&mut self) -> Action {
        let Some(queue) = self.resolve_shared_queue("", "events") else {
            self.send_http_response(500, vec![], Some(b"no queue"));
            return Action::Pause;
        };
        let path = self.get_http_request_header(":path").unwrap_or_default();
        self.enqueue_shared_queue(queue, Some(path.as_bytes()))
            .unwrap();
        match self.resolve_shared_queue("", "absent") {
            None => Action::Continue,
            Some(_) => panic!("absent queue resolved"),
        }
    }

    fn metrics(&mut self) -> Action {
        let requests = hostcalls::define_metric(MetricType::Counter, "requests_total").unwrap();
        let inflight = hostcalls::define_metric(MetricType::Gauge, "inflight").unwrap();
        let sizes = hostcalls::define_metric(MetricType::Histogram, "path_length").unwrap();
        hostcalls::increment_metric(requests, 1).unwrap();
        hostcalls::increment_metric(inflight, 5).unwrap();
        hostcalls::increment_metric(inflight, -2).unwrap();
        let path = self.get_http_request_header(":path").unwrap_or_default();
        hostcalls::record_metric(sizes, path.len() as u64).unwrap();
        let negative = hostcalls::increment_metric(requests, -1);
        let count = hostcalls::get_metric(requests).unwrap();
        let histogram = hostcalls::get_metric(sizes);
        self.set_http_request_header("x-requests", Some(&count.to_string()));
        self.set_http_request_header("x-negative", Some(&format!("{negative:?}")));
        self.set_http_request_header("x-histogram-get", Some(&format!("{histogram:?}")));
        Action::Continue
    }

    fn properties(&mut self) -> Action {
        let text = |v: Option<Vec<u8>>| {
            v.map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_else(|| "<none>".to_owned())
        };
        let path = text(self.get_property(vec!["request", "path"]));
        let plugin = text(self.get_property(vec!["plugin_name"]));
        let custom = text(self.get_property(vec!["source", "address"]));
        let missing = text(self.get_property(vec!["no", "such", "property"]));
        self.set_property(vec!["filter", "note"], Some(b"written"));
        let written = text(self.get_property(vec!["filter", "note"]));
        self.set_http_request_header("x-prop-path", Some(&path));
        self.set_http_request_header("x-prop-plugin", Some(&plugin));
        self.set_http_request_header("x-prop-source", Some(&custom));
        self.set_http_request_header("x-prop-missing", Some(&missing));
        self.set_http_request_header("x-prop-written", Some(&written));
        Action::Continue
    }

    fn wasi(&mut self) -> Action {
        let path = self.get_http_request_header(":path").unwrap_or_default();
        println!("stdout line for {path}");
        eprintln!("stderr line");
        let env = std::env::var("HARNESS_TEST_VAR").unwrap_or_else(|_| "<unset>".to_owned());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        // HashMap's RandomState draws from WASI random_get.
        let mut map = std::collections::HashMap::new();
        map.insert(1, 2);
        let host_now = self
            .get_current_time()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.set_http_request_header("x-env", Some(&env));
        self.set_http_request_header("x-wasi-now", Some(&now.to_string()));
        self.set_http_request_header("x-host-now", Some(&host_now.to_string()));
        Action::Continue
    }
}

impl Context for Filter {
    fn on_http_call_response(
        &mut self,
        _token: u32,
        num_headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        if self.mode == "response-callout" {
            let body = self
                .get_http_call_response_body(0, body_size)
                .unwrap_or_default();
            self.set_http_response_header("x-decoration", Some(&String::from_utf8_lossy(&body)));
            self.resume_http_response();
            return;
        }
        if num_headers == 0 {
            let (code, message) = self.get_grpc_status();
            let code = code.to_string();
            let message = message.unwrap_or_default();
            self.send_http_response(
                502,
                vec![("x-call-status", &code), ("x-call-message", &message)],
                Some(b"callout failed"),
            );
            return;
        }
        let status = self
            .get_http_call_response_header(":status")
            .unwrap_or_default();
        let body = self
            .get_http_call_response_body(0, body_size)
            .unwrap_or_default();
        if status == "200" {
            self.set_http_request_header("x-auth", Some(&String::from_utf8_lossy(&body)));
            self.resume_http_request();
        } else {
            self.send_http_response(403, vec![("x-upstream-status", &status)], Some(&body));
        }
    }
}

impl HttpContext for Filter {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        match self.mode.as_str() {
            "headers" => self.headers(),
            "deny" => self.deny(),
            "callout" => self.callout(),
            "shared" => self.shared(),
            "queue" => self.queue(),
            "metrics" => self.metrics(),
            "properties" => self.properties(),
            "wasi" => self.wasi(),
            "reset" => {
                self.reset_http_request();
                Action::Pause
            }
            "trap" => {
                if self.get_http_request_header("x-panic").is_some() {
                    panic!("boom requested by context {}", self.context_id);
                }
                Action::Continue
            }
            _ => Action::Continue,
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.mode != "body" {
            return Action::Continue;
        }
        if !end_of_stream {
            return Action::Pause;
        }
        let body = self.get_http_request_body(0, body_size).unwrap_or_default();
        let upper = String::from_utf8_lossy(&body).to_uppercase();
        self.set_http_request_body(0, body_size, upper.as_bytes());
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if self.mode == "response-callout" {
            let headers = vec![
                (":method", "GET"),
                (":path", "/decorate"),
                (":authority", "deco"),
            ];
            self.dispatch_http_call("deco", headers, None, vec![], Duration::from_secs(1))
                .unwrap();
            return Action::Pause;
        }
        if matches!(self.mode.as_str(), "headers" | "deny") {
            self.set_http_response_header("x-response-seen", Some("yes"));
        }
        if self.mode == "headers" {
            // Too late for the upstream, which has the request already.
            self.set_http_request_header("x-late", Some("after-upstream"));
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.mode == "body" && end_of_stream {
            let body = self
                .get_http_response_body(0, body_size)
                .unwrap_or_default();
            self.set_http_response_body(0, body_size, &[body.as_slice(), b" [filtered]"].concat());
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        if self.mode == "headers" {
            let late = self.get_http_request_header("x-late").unwrap_or_default();
            // Too late for the client, which has the response already.
            self.set_http_response_header("x-late", Some("after-downstream"));
            let status = self.get_http_response_header(":status").unwrap_or_default();
            log::debug!(
                "access log: context {} late {late} status {status}",
                self.context_id
            );
        }
    }
}
