//! The worker's scheduler: what is due when (the tick timer and HTTP callouts), from the
//! guest's `proxy_http_call` to the delivery of `proxy_on_http_call_response`.

use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::Duration;

use super::{ROOT_CONTEXT_ID, Worker};
use crate::abi::Status;
use crate::cluster::{
    CalloutReply, CalloutResponse, CalloutResult, Cluster, ReplyOutcome, TimeoutDelivery,
    spawn_http_call,
};
use crate::shared::CalloutRecord;
use crate::state::CallDelivery;

/// Where a callout's result stands.
pub(super) enum CallState {
    /// Known, to deliver at the call's `due` time.
    Ready(CalloutResult),
    /// A real HTTP exchange still running on its own thread.
    InFlight(Receiver<CalloutResult>),
    /// A silent handler without a timeout: never answered.
    Never,
}

/// A callout made by the guest and not yet delivered.
pub(super) struct PendingCall {
    token: u32,
    /// The context that made the call (its stream's, or the root's).
    pub(super) context: u32,
    /// When a `Ready` result is delivered (clock nanoseconds).
    due: Option<u64>,
    /// Orders events due at the same time.
    sequence: u64,
    /// When the call times out, if it has a timeout.
    timeout_due: Option<u64>,
    state: CallState,
}

/// The next thing a worker has to do at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Due {
    pub(crate) at: u64,
    pub(crate) sequence: u64,
}

impl Worker {
    /// Tick period changes and new callouts made during the last callback.
    pub(super) fn collect_side_effects(&mut self) {
        let now = self.env.clock.now_nanos();
        if let Some(ms) = self.store.data_mut().tick_period_ms.take() {
            if ms == 0 {
                self.tick_period = None;
                self.next_tick = None;
            } else {
                let period = Duration::from_millis(u64::from(ms));
                self.tick_period = Some(period);
                self.next_tick = Some(Due {
                    at: now.saturating_add(period.as_nanos() as u64),
                    sequence: self.env.next_sequence(),
                });
            }
        }
        let calls = std::mem::take(&mut self.store.data_mut().new_calls);
        for (token, context, request) in calls {
            self.env.recorder.callout(CalloutRecord {
                worker: self.index,
                context_id: context,
                token,
                request: request.clone(),
                result: None,
            });
            let timeout_due = request
                .timeout
                .map(|t| now.saturating_add(t.as_nanos() as u64));
            let (due, state) = match self.env.clusters.get(&request.cluster) {
                Some(Cluster::Handler(handler)) => {
                    let CalloutReply { outcome, latency } = handler(&request);
                    let ready_at = now.saturating_add(latency.as_nanos() as u64);
                    let result = match outcome {
                        ReplyOutcome::Response(response) => Some(CalloutResult::Response(response)),
                        ReplyOutcome::Reset => Some(CalloutResult::Reset),
                        ReplyOutcome::Silent => None,
                    };
                    match (result, timeout_due) {
                        (Some(_), Some(t)) if t <= ready_at => {
                            (Some(t), CallState::Ready(CalloutResult::Timeout))
                        }
                        (Some(result), _) => (Some(ready_at), CallState::Ready(result)),
                        (None, Some(t)) => (Some(t), CallState::Ready(CalloutResult::Timeout)),
                        (None, None) => (None, CallState::Never),
                    }
                }
                Some(Cluster::Http { base_url }) => (
                    None,
                    CallState::InFlight(spawn_http_call(base_url, &request)),
                ),
                // The host call already refused unknown clusters.
                None => (Some(now), CallState::Ready(CalloutResult::Reset)),
            };
            self.calls.push(PendingCall {
                token,
                context,
                due,
                sequence: self.env.next_sequence(),
                timeout_due,
                state,
            });
        }
    }

    /// Moves finished real HTTP exchanges to "due now". With `block`, waits for all of them
    /// (used with the virtual clock: a real exchange takes zero virtual time).
    pub(crate) fn collect_in_flight(&mut self, block: bool) {
        let now = self.env.clock.now_nanos();
        for call in &mut self.calls {
            let CallState::InFlight(rx) = &call.state else {
                continue;
            };
            let result = if block {
                rx.recv().unwrap_or(CalloutResult::Reset)
            } else {
                match rx.try_recv() {
                    Ok(result) => result,
                    Err(TryRecvError::Empty) => match call.timeout_due {
                        Some(t) if t <= now => CalloutResult::Timeout,
                        _ => continue,
                    },
                    Err(TryRecvError::Disconnected) => CalloutResult::Reset,
                }
            };
            call.state = CallState::Ready(result);
            call.due = Some(now);
        }
    }

    /// Whether any callout is pending for a context.
    pub(crate) fn has_calls_for(&self, context: u32) -> bool {
        self.calls.iter().any(|c| c.context == context)
    }

    /// The earliest scheduled event (tick or callout delivery).
    pub(crate) fn next_due(&self) -> Option<Due> {
        let calls = self.calls.iter().filter_map(|c| {
            c.due
                .filter(|_| matches!(c.state, CallState::Ready(_)))
                .map(|at| Due {
                    at,
                    sequence: c.sequence,
                })
        });
        calls.chain(self.next_tick).min()
    }

    /// Fires the earliest event if it is due at or before `now`.
    pub(crate) fn fire_next(&mut self, now: u64) {
        let Some(due) = self.next_due().filter(|d| d.at <= now) else {
            return;
        };
        if self.next_tick == Some(due) {
            self.next_tick = self.tick_period.map(|p| Due {
                at: due.at.saturating_add(p.as_nanos() as u64),
                sequence: self.env.next_sequence(),
            });
            let result = self.invoke(
                "proxy_on_tick",
                |e| e.on_tick.as_ref(),
                ROOT_CONTEXT_ID,
                ROOT_CONTEXT_ID as i32,
            );
            self.after_event(result.map(|_| ()));
            return;
        }
        let Some(position) = self.calls.iter().position(|c| c.sequence == due.sequence) else {
            return;
        };
        let call = self.calls.remove(position);
        let CallState::Ready(result) = call.state else {
            return;
        };
        self.deliver_call(call.token, call.context, result);
    }

    /// Delivers a callout's result to the context that made it (`proxy_on_http_call_response`).
    fn deliver_call(&mut self, token: u32, context: u32, result: CalloutResult) {
        self.env.recorder.callout_result(self.index, token, &result);
        if !self.store.data().context_exists(context) {
            return; // Envoy cancels a stream's calls when the stream goes away.
        }
        let timeout_as_reset = self.env.timeout_delivery == TimeoutDelivery::Reset;
        let (delivery, status) = match result {
            CalloutResult::Response(CalloutResponse {
                headers,
                body,
                trailers,
            }) => (
                CallDelivery {
                    headers,
                    body,
                    trailers,
                },
                (Status::Ok as u32, String::new()),
            ),
            CalloutResult::Timeout if !timeout_as_reset => {
                let body = b"upstream request timeout".to_vec();
                (
                    CallDelivery {
                        headers: vec![
                            (":status".to_owned(), "504".into()),
                            ("content-length".to_owned(), body.len().to_string().into()),
                            ("content-type".to_owned(), "text/plain".into()),
                        ],
                        body,
                        trailers: Vec::new(),
                    },
                    (Status::Ok as u32, String::new()),
                )
            }
            CalloutResult::Reset | CalloutResult::Timeout => (
                CallDelivery::default(),
                (Status::BrokenConnection as u32, "reset".to_owned()),
            ),
        };
        let args = (
            context as i32,
            token as i32,
            delivery.headers.len() as i32,
            delivery.body.len() as i32,
            delivery.trailers.len() as i32,
        );
        {
            let state = self.store.data_mut();
            state.call_delivery = Some(delivery);
            state.status = status;
        }
        let result = self.invoke(
            "proxy_on_http_call_response",
            |e| e.on_http_call_response.as_ref(),
            context,
            args,
        );
        self.store.data_mut().call_delivery = None;
        self.after_event(result.map(|_| ()));
    }
}
