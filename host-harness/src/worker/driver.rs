//! Driving one request/response stream through the filter, as Envoy's filter chain does:
//! its headers, body chunks and trailers each way, pauses and resumes, local replies, and the
//! end callbacks and outcome (or the failure policy after a trap).

use super::exports::StreamCallback;
use super::{Trapped, Worker};
use crate::abi::HeaderMap;
use crate::state::{FailurePolicy, LocalResponse, StreamData};
use crate::stream::{
    Disposition, FinalResponse, ForwardedRequest, Request, StreamId, StreamOutcome,
};

/// Headers a filter can add to a stream's header map before it reallocates.
const HEADER_ROOM: usize = 8;

/// A stream's direction: the request on its way upstream, then the response on its way back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Request,
    Response,
}

/// A live stream: its input, how far it got, and what has gone through so far.
pub(super) struct StreamDriver {
    spec: Request,
    phase: Phase,
    /// Next input event: 0 = headers, 1..=n body chunks, n+1 trailers, beyond = all delivered.
    next_event: usize,
    stopped: bool,
    pub(super) headers_forwarded: bool,
    pub(super) request: ForwardedRequest,
    response: FinalResponse,
    pub(super) local_response: Option<LocalResponse>,
}

/// One input event of a stream's current direction, as the filter is given it.
enum Event {
    Headers(HeaderMap, bool),
    Body(Vec<u8>, bool),
    Trailers(HeaderMap),
}

/// One direction's header map, buffered body and trailers in a stream's data: what the
/// filter's host calls read and edit.
struct Seen<'a> {
    headers: &'a mut Option<HeaderMap>,
    body: &'a mut Option<Vec<u8>>,
    trailers: &'a mut Option<HeaderMap>,
}

impl<'a> Seen<'a> {
    fn of(data: &'a mut StreamData, phase: Phase) -> Self {
        match phase {
            Phase::Request => Self {
                headers: &mut data.request_headers,
                body: &mut data.request_body,
                trailers: &mut data.request_trailers,
            },
            Phase::Response => Self {
                headers: &mut data.response_headers,
                body: &mut data.response_body,
                trailers: &mut data.response_trailers,
            },
        }
    }

    /// Puts `event` where the filter reads it; returns the callback to call and its size
    /// argument (the header or trailer count, or the bytes of body buffered so far).
    fn receive(self, event: Event) -> (StreamCallback, usize) {
        match event {
            Event::Headers(map, end_of_stream) => {
                let count = map.len();
                *self.headers = Some(map);
                (StreamCallback::Headers { end_of_stream }, count)
            }
            Event::Body(chunk, end_of_stream) => {
                let buffer = self.body.get_or_insert_with(Vec::new);
                buffer.extend(chunk);
                (StreamCallback::Body { end_of_stream }, buffer.len())
            }
            Event::Trailers(map) => {
                let count = map.len();
                *self.trailers = Some(map);
                (StreamCallback::Trailers, count)
            }
        }
    }
}

impl StreamDriver {
    pub(super) fn new(spec: Request) -> Self {
        Self {
            spec,
            phase: Phase::Request,
            next_event: 0,
            stopped: false,
            headers_forwarded: false,
            request: ForwardedRequest::default(),
            response: FinalResponse::default(),
            local_response: None,
        }
    }

    /// The current direction's input: headers, body chunks, trailers.
    fn input(&self) -> (&HeaderMap, &[Vec<u8>], &HeaderMap) {
        match self.phase {
            Phase::Request => (&self.spec.headers, &self.spec.body, &self.spec.trailers),
            Phase::Response => (
                &self.spec.upstream.headers,
                &self.spec.upstream.body,
                &self.spec.upstream.trailers,
            ),
        }
    }

    /// How many input events the current direction has.
    fn events(&self) -> usize {
        let (_, body, trailers) = self.input();
        1 + body.len() + usize::from(!trailers.is_empty())
    }

    /// Input event `index` of the current direction.
    fn event(&self, index: usize) -> Event {
        let (headers, chunks, trailers) = self.input();
        let has_trailers = !trailers.is_empty();
        if index == 0 {
            // Room for a filter's added headers: Envoy's header map is a list, where an add
            // never moves the others; a `Vec` filled to its length would reallocate at once.
            let mut map = HeaderMap::with_capacity(headers.len() + HEADER_ROOM);
            map.extend(headers.iter().cloned());
            Event::Headers(map, chunks.is_empty() && !has_trailers)
        } else if index <= chunks.len() {
            Event::Body(
                chunks[index - 1].clone(),
                index == chunks.len() && !has_trailers,
            )
        } else {
            Event::Trailers(trailers.clone())
        }
    }
}

impl Worker {
    /// Advances every live stream (a callback may have resumed or answered any of them).
    pub(super) fn pump_all(&mut self) {
        let ids: Vec<u32> = self.drivers.keys().copied().collect();
        for id in ids {
            if self.pump(id).is_err() {
                self.fail_all();
                return;
            }
        }
    }

    /// Advances one stream as far as possible.
    pub(super) fn pump(&mut self, id: u32) -> Result<(), Trapped> {
        loop {
            let Some(driver) = self.drivers.get(&id) else {
                return Ok(());
            };
            let phase = driver.phase;
            let Some(data) = self.store.data_mut().streams.get_mut(&id) else {
                return Ok(());
            };
            if let Some(local) = data.local_response.take() {
                return self.local_reply(id, local);
            }
            if data.closed {
                return self.finish(id, Disposition::Reset);
            }
            let resumed = match phase {
                Phase::Request => std::mem::take(&mut data.resume_request),
                Phase::Response => std::mem::take(&mut data.resume_response),
            };
            if resumed {
                self.forward(id);
            }
            let driver = self.drivers.get(&id).ok_or(Trapped)?;
            if driver.next_event < driver.events() {
                self.deliver_event(id)?;
                continue;
            }
            if driver.stopped {
                return Ok(());
            }
            self.forward(id);
            match phase {
                Phase::Request => {
                    let driver = self.drivers.get_mut(&id).ok_or(Trapped)?;
                    driver.phase = Phase::Response;
                    driver.next_event = 0;
                    let status = driver
                        .spec
                        .upstream
                        .headers
                        .iter()
                        .find(|(k, _)| k == ":status")
                        .and_then(|(_, v)| v.as_text().parse::<i64>().ok());
                    if let (Some(code), Some(data)) =
                        (status, self.store.data_mut().streams.get_mut(&id))
                    {
                        data.properties
                            .insert("response\0code".to_owned(), code.to_le_bytes().to_vec());
                    }
                }
                Phase::Response => return self.finish(id, Disposition::Completed),
            }
        }
    }

    /// Lets everything the filter has seen through (headers, buffered body, trailers).
    fn forward(&mut self, id: u32) {
        let Some(driver) = self.drivers.get_mut(&id) else {
            return;
        };
        driver.stopped = false;
        let Some(data) = self.store.data_mut().streams.get_mut(&id) else {
            return;
        };
        match driver.phase {
            Phase::Request => {
                // Sent without a copy: the map is copied only if the filter changes it later.
                if !driver.headers_forwarded && data.request_headers.is_some() {
                    data.sent_request.mark();
                    driver.headers_forwarded = true;
                }
                if let Some(body) = data.request_body.take() {
                    driver.request.body.extend(body);
                }
                if let Some(trailers) = &data.request_trailers {
                    driver.request.trailers = trailers.clone();
                }
            }
            Phase::Response => {
                if data.response_headers.is_some() {
                    data.sent_response.mark();
                }
                if let Some(body) = data.response_body.take() {
                    driver.response.body.extend(body);
                }
                if let Some(trailers) = &data.response_trailers {
                    driver.response.trailers = trailers.clone();
                }
            }
        }
    }

    /// Delivers the stream's next input event to the filter's callback for it; continues the
    /// stream unless the filter stops iteration.
    fn deliver_event(&mut self, id: u32) -> Result<(), Trapped> {
        let driver = self.drivers.get_mut(&id).ok_or(Trapped)?;
        let index = driver.next_event;
        driver.next_event += 1;
        let phase = driver.phase;
        let event = driver.event(index);
        let data = self.store.data_mut().streams.get_mut(&id).ok_or(Trapped)?;
        let (callback, size) = Seen::of(data, phase).receive(event);
        let action = self.invoke_stream(phase, callback, id, size)?;
        // Action: 0 Continue; anything else stops iteration (Envoy's StopIteration / buffer).
        if action.unwrap_or(0) == 0 {
            self.forward(id);
        } else if let Some(driver) = self.drivers.get_mut(&id) {
            driver.stopped = true;
        }
        Ok(())
    }

    /// Calls one of the six stream callbacks: `callback` of direction `phase`, for stream `id`,
    /// with `size` (header or trailer count, or body bytes). Returns the filter's action.
    fn invoke_stream(
        &mut self,
        phase: Phase,
        callback: StreamCallback,
        id: u32,
        size: usize,
    ) -> Result<Option<i32>, Trapped> {
        let export = callback.export(phase);
        let (context, size) = (id as i32, size as i32);
        match callback {
            StreamCallback::Headers { end_of_stream } => self.invoke(
                export,
                move |e| e.stream(phase).headers.as_ref(),
                id,
                (context, size, i32::from(end_of_stream)),
            ),
            StreamCallback::Body { end_of_stream } => self.invoke(
                export,
                move |e| e.stream(phase).body.as_ref(),
                id,
                (context, size, i32::from(end_of_stream)),
            ),
            StreamCallback::Trailers => self.invoke(
                export,
                move |e| e.stream(phase).trailers.as_ref(),
                id,
                (context, size),
            ),
        }
    }

    /// Sends the filter's local response. Before the response started, it passes through the
    /// filter's own response callbacks, as Envoy's local replies go through the encoder chain.
    fn local_reply(&mut self, id: u32, local: LocalResponse) -> Result<(), Trapped> {
        let driver = self.drivers.get_mut(&id).ok_or(Trapped)?;
        let mut headers = Vec::with_capacity(local.headers.len() + 3);
        headers.push((":status".to_owned(), local.status.to_string().into()));
        headers.extend(local.headers.iter().cloned());
        if !local.body.is_empty() {
            if !headers.iter().any(|(k, _)| k == "content-length") {
                headers.push((
                    "content-length".to_owned(),
                    local.body.len().to_string().into(),
                ));
            }
            if !headers.iter().any(|(k, _)| k == "content-type") {
                headers.push(("content-type".to_owned(), "text/plain".into()));
            }
        }
        let body = local.body.clone();
        driver.local_response = Some(local);
        if driver.phase == Phase::Response {
            driver.response = FinalResponse::from_headers(headers, body, Vec::new());
            return self.finish(id, Disposition::LocalResponse);
        }
        driver.phase = Phase::Response;
        let data = self.store.data_mut().streams.get_mut(&id).ok_or(Trapped)?;
        let count = headers.len();
        data.response_headers = Some(headers);
        data.response_body = None;
        let end_of_stream = body.is_empty();
        self.invoke_stream(
            Phase::Response,
            StreamCallback::Headers { end_of_stream },
            id,
            count,
        )?;
        if !end_of_stream {
            let len = body.len();
            if let Some(data) = self.store.data_mut().streams.get_mut(&id) {
                data.response_body = Some(body);
            }
            self.invoke_stream(
                Phase::Response,
                StreamCallback::Body {
                    end_of_stream: true,
                },
                id,
                len,
            )?;
        }
        let data = self.store.data_mut().streams.get_mut(&id).ok_or(Trapped)?;
        // The filter may still read the response headers in `proxy_on_log`: they are taken
        // when the stream ends.
        data.sent_response.mark();
        let body = data.response_body.take().unwrap_or_default();
        if let Some(driver) = self.drivers.get_mut(&id) {
            driver.response = FinalResponse::from_headers(Vec::new(), body, Vec::new());
        }
        self.finish(id, Disposition::LocalResponse)
    }

    /// Ends a stream: `proxy_on_done`, `proxy_on_log`, `proxy_on_delete`, then records the outcome.
    fn finish(&mut self, id: u32, disposition: Disposition) -> Result<(), Trapped> {
        let Some(driver) = self.drivers.remove(&id) else {
            return Ok(());
        };
        let ended = self.end_callbacks(id);
        // The maps stay readable through `proxy_on_log`; the outcome takes them afterwards.
        let data = self.store.data_mut().streams.remove(&id);
        self.calls.retain(|c| c.context != id);
        self.record(id, driver, disposition, data);
        ended
    }

    /// `proxy_on_done`, `proxy_on_log`, `proxy_on_delete` (the first trap ends them).
    fn end_callbacks(&mut self, id: u32) -> Result<(), Trapped> {
        self.invoke("proxy_on_done", |e| e.on_done.as_ref(), id, id as i32)?;
        self.store.data_mut().in_log = true;
        let logged = self.invoke("proxy_on_log", |e| e.on_log.as_ref(), id, id as i32);
        self.store.data_mut().in_log = false;
        logged?;
        self.invoke("proxy_on_delete", |e| e.on_delete.as_ref(), id, id as i32)?;
        Ok(())
    }

    /// Records how a stream ended; the header maps it sent are taken from its `data`.
    fn record(
        &mut self,
        id: u32,
        mut driver: StreamDriver,
        disposition: Disposition,
        data: Option<StreamData>,
    ) {
        let mut filter_state = Vec::new();
        if let Some(mut data) = data {
            filter_state = std::mem::take(&mut data.filter_state);
            if let Some(headers) = data.sent_request.take(&mut data.request_headers) {
                driver.request.headers = headers;
            }
            // A response already set here (a local reply after the response began, fail-closed)
            // is the one the client got.
            if driver.response.headers.is_empty()
                && let Some(headers) = data.sent_response.take(&mut data.response_headers)
            {
                let response = std::mem::take(&mut driver.response);
                driver.response =
                    FinalResponse::from_headers(headers, response.body, response.trailers);
            }
        }
        let reached_upstream =
            driver.headers_forwarded || matches!(disposition, Disposition::Completed);
        let response = match disposition {
            Disposition::Reset | Disposition::Pending => None,
            _ => Some(driver.response),
        };
        self.finished.insert(
            id,
            StreamOutcome {
                id: StreamId {
                    worker: self.index,
                    context_id: id,
                },
                disposition,
                request: reached_upstream.then_some(driver.request),
                response,
                local_response: driver.local_response,
                filter_state,
            },
        );
    }

    /// After a trap: every live stream gets the failure policy, then the instance is rebuilt.
    pub(super) fn fail_all(&mut self) {
        let drivers = std::mem::take(&mut self.drivers);
        for (id, mut driver) in drivers {
            match self.env.failure_policy {
                FailurePolicy::FailClosed => {
                    driver.response = FinalResponse::from_headers(
                        vec![(":status".to_owned(), "503".into())],
                        Vec::new(),
                        Vec::new(),
                    );
                    let data = self.store.data_mut().streams.remove(&id);
                    self.record(id, driver, Disposition::FailedClosed, data);
                }
                FailurePolicy::FailOpen => {
                    driver.request = ForwardedRequest {
                        headers: driver.spec.headers.clone(),
                        body: driver.spec.body.concat(),
                        trailers: driver.spec.trailers.clone(),
                    };
                    driver.headers_forwarded = true;
                    let upstream = &driver.spec.upstream;
                    driver.response = FinalResponse::from_headers(
                        upstream.headers.clone(),
                        upstream.body.concat(),
                        upstream.trailers.clone(),
                    );
                    self.record(id, driver, Disposition::FailedOpen, None);
                }
            }
        }
        self.rebuild();
    }
}

/// Envoy-style request properties derived from the headers, plus the request's own.
pub(super) fn derived_properties(spec: &Request) -> Vec<(String, Vec<u8>)> {
    let header = |name: &str| {
        spec.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_bytes().to_vec())
    };
    let mut out = Vec::new();
    let mut put = |path: &str, value: Option<Vec<u8>>| {
        if let Some(value) = value {
            out.push((path.replace('.', "\0"), value));
        }
    };
    put("request.path", header(":path"));
    put(
        "request.url_path",
        header(":path").map(|mut p| {
            p.truncate(p.iter().position(|&b| b == b'?').unwrap_or(p.len()));
            p
        }),
    );
    put("request.host", header(":authority"));
    put("request.method", header(":method"));
    put("request.scheme", header(":scheme"));
    put("request.id", header("x-request-id"));
    put("request.protocol", Some(b"HTTP/1.1".to_vec()));
    for (path, value) in &spec.properties {
        put(path, Some(value.as_bytes().to_vec()));
    }
    out
}
