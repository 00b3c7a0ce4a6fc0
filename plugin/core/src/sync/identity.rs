//! The edge's identity and report: what the leader tells the control plane of its proxy on
//! each key-set call (`keygate_protocol::edge`'s headers), so that the control plane can list
//! the fleet and say which revision each proxy enforces.
//!
//! * **Id.** One per proxy process and sync source, shared by all its workers: the first
//!   leader draws 128 random bits and stores them under `<ns>/edge_id` in shared data; every
//!   later leader (the lease may move) reads it there. Shared data lives as long as the
//!   process, so a restarted proxy is a new edge (same node id, new edge id), and the old
//!   one goes `gone` in the registry.
//! * **Node.** Envoy's node id and cluster (properties `xds.node.*` in Envoy 1.40, `node.*`
//!   before), read once per VM when it is configured.
//! * **Workers.** A shared counter (`<ns>/workers`) each VM that keeps a set increments once.
//! * **State.** Applied revision, keys, staleness of the set, the filter's version.
//!
//! Only the leader's key-set calls carry it; requests never touch any of it.

use keygate_protocol::edge;

use super::Syncer;
use crate::host::Host;

/// The filter's version as edges report it.
pub const VERSION: &str = concat!("keygate-filter/", env!("CARGO_PKG_VERSION"));

/// What this VM knows of its node, read once.
#[derive(Debug, Clone, Default)]
pub(super) struct Node {
    id: Option<String>,
    cluster: Option<String>,
}

fn parse_id(v: Vec<u8>) -> Option<String> {
    String::from_utf8(v).ok().filter(|v| edge::is_edge_id(v))
}

fn property_text(host: &mut impl Host, path: &[&str]) -> Option<String> {
    let bytes = host.property(path)?;
    let text = edge::clean(&String::from_utf8_lossy(&bytes));
    (!text.is_empty()).then_some(text)
}

impl Syncer {
    /// The process's edge id: read from shared data, or drawn and stored by this (leading) VM.
    /// `None` only while shared data refuses.
    pub fn edge_id(&mut self, host: &mut impl Host) -> Option<String> {
        if let Some(id) = &self.edge_id {
            return Some(id.clone());
        }
        let key = self.key("edge_id");
        let (value, cas) = host.shared_get(&key);
        let mut found = value.and_then(parse_id);
        if found.is_none() {
            let id = format!("{:016x}{:016x}", host.random_u64(), host.random_u64());
            // The first write of a key cannot be compare-and-swapped: whoever wrote last
            // wins, and every writer reads back the id that stayed.
            let _ = host.shared_set(&key, id.as_bytes(), cas);
            found = host.shared_get(&key).0.and_then(parse_id);
        }
        self.edge_id.clone_from(&found);
        found
    }

    /// Reads Envoy's node id and cluster once, when the VM is configured: the properties
    /// `xds.node.id`/`xds.node.cluster` (Envoy 1.40, where `node.*` is not found), or
    /// `node.id`/`node.cluster` (older hosts).
    pub fn read_node(&mut self, host: &mut impl Host) {
        if self.node.is_none() {
            let mut read = |field: &str| {
                property_text(host, &["xds", "node", field])
                    .or_else(|| property_text(host, &["node", field]))
            };
            self.node = Some(Node {
                id: read("id"),
                cluster: read("cluster"),
            });
        }
    }

    /// Counts this VM among the process's workers, once (a VM that keeps a set).
    pub(super) fn count_worker(&mut self, host: &mut impl Host) {
        if !self.counted_worker {
            self.counted_worker = self.claim_counter(host, "workers").is_some();
        }
    }

    /// The edge report's headers for the next key-set call at `now`.
    pub(super) fn edge_headers(
        &mut self,
        host: &mut impl Host,
        now: u64,
    ) -> Vec<(&'static str, String)> {
        let mut out = Vec::with_capacity(8);
        if let Some(id) = self.edge_id(host) {
            out.push((edge::ID_HEADER, id));
        }
        self.read_node(host);
        let node = self.node.get_or_insert_with(Node::default);
        if let Some(id) = &node.id {
            out.push((edge::NODE_HEADER, id.clone()));
        }
        if let Some(cluster) = &node.cluster {
            out.push((edge::CLUSTER_HEADER, cluster.clone()));
        }
        if let Some(set) = &self.set {
            out.push((
                edge::REVISION_HEADER,
                set.revision().unwrap_or(0).to_string(),
            ));
            out.push((edge::KEYS_HEADER, set.len().to_string()));
        }
        if let Some(at) = self.fresh_at_ms {
            out.push((edge::STALENESS_HEADER, now.saturating_sub(at).to_string()));
        }
        let (workers, _) = host.shared_get(&self.key("workers"));
        if let Some(w) = workers.and_then(|w| String::from_utf8(w).ok()) {
            out.push((edge::WORKERS_HEADER, w));
        }
        out.push((edge::VERSION_HEADER, VERSION.to_owned()));
        out
    }
}
