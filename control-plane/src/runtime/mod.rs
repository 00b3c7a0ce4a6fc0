//! Runtime: the process's shared state and what runs beside the handlers: configuration,
//! the edge registry, the verification cache, the usage buffer, the failed-authentication limiter, metrics, the
//! drain signal and the background tasks. Below HTTP; above storage and domain.

pub mod canary;
pub mod clock;
pub mod config;
pub mod drain;
pub mod edge_gone;
pub mod edges;
pub mod expiry;
pub mod limiter;
pub mod metrics;
pub mod refill;
pub mod secret_scanning;
pub mod state;
pub mod usage;
pub mod verify_cache;
pub mod webhooks;
