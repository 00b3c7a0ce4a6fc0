//! The key as the domain knows it: its stored record (never the secret), who acted on it, its
//! id's text form, and its public view (what the API answers and the audit log records).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::credits::{Credits, CreditsView};
use super::limits::{LimitView, Limits};
use super::{KeyKind, KeyStatus};

/// Who made a change: recorded on keys (`created_by`) and in the audit log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Actor {
    /// `admin` or a key id.
    pub id: String,
    /// The admin or the key's name.
    pub name: String,
    /// The display prefix of the credential used.
    pub display_prefix: String,
}

/// A stored key (never the secret).
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRecord {
    /// UUIDv7.
    pub id: Uuid,
    /// Owning workspace.
    pub workspace_id: String,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Kind.
    pub kind: KeyKind,
    /// Display prefix (prefix plus 8 body characters).
    pub display_prefix: String,
    /// SHA-256 digest of the current secret.
    pub digest: [u8; 32],
    /// Version of the hash algorithm (1 = SHA-256 of the whole key).
    pub hash_version: i64,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Resource allow-list (empty = any).
    pub resources: Vec<String>,
    /// Status.
    pub status: KeyStatus,
    /// Suspended because its parent was (reactivated with it).
    pub suspended_by_parent: bool,
    /// Expiry, unix seconds.
    pub expires_at: Option<i64>,
    /// Creation time.
    pub created_at: i64,
    /// Last change time.
    pub updated_at: i64,
    /// Last use reported by verification or the edge.
    pub last_used_at: Option<i64>,
    /// Uses reported.
    pub usage_count: i64,
    /// Revocation time.
    pub revoked_at: Option<i64>,
    /// Creator.
    pub created_by: Actor,
    /// The caller's user or service id.
    pub owner_id: String,
    /// Small JSON object.
    pub metadata: serde_json::Value,
    /// Parent key (exchanged children).
    pub parent_id: Option<Uuid>,
    /// Subject recorded at exchange.
    pub subject: Option<String>,
    /// Its own rate limits; `None`: its workspace's defaults.
    pub limits: Option<Limits>,
    /// Its credit balance and refill; `None`: no credits (unlimited).
    pub credits: Option<Credits>,
}

/// A key as the API shows it: never the secret, never the digest.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KeyView {
    /// `key_<32 hex>`.
    pub id: String,
    /// Workspace.
    pub workspace_id: String,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Kind.
    pub kind: KeyKind,
    /// Prefix plus the first 8 body characters.
    pub display_prefix: String,
    /// Hash algorithm version.
    pub hash_version: i64,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Resource allow-list (empty = any).
    pub resources: Vec<String>,
    /// Status.
    pub status: KeyStatus,
    /// Expiry, unix seconds.
    pub expires_at: Option<i64>,
    /// Creation, unix seconds.
    pub created_at: i64,
    /// Last change, unix seconds.
    pub updated_at: i64,
    /// Last use, unix seconds.
    pub last_used_at: Option<i64>,
    /// Uses reported.
    pub usage_count: i64,
    /// Revocation, unix seconds.
    pub revoked_at: Option<i64>,
    /// Who created it.
    pub created_by: ActorView,
    /// Owner (the caller's user or service).
    pub owner_id: String,
    /// Small JSON object.
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    /// Parent key of an exchanged child.
    pub parent_id: Option<String>,
    /// Subject recorded at exchange.
    pub subject: Option<String>,
    /// Its own rate limits; `null`: it inherits its workspace's defaults.
    #[serde(default)]
    pub limits: Option<Vec<LimitView>>,
    /// Its credits (balance, refill, next refill); `null`: unlimited.
    #[serde(default)]
    pub credits: Option<CreditsView>,
}

/// Who did something.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ActorView {
    /// `admin` or a key id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Display prefix of the credential used.
    pub display_prefix: String,
}

impl From<&KeyRecord> for KeyView {
    fn from(k: &KeyRecord) -> Self {
        Self {
            id: format_key_id(k.id),
            workspace_id: k.workspace_id.clone(),
            name: k.name.clone(),
            description: k.description.clone(),
            kind: k.kind,
            display_prefix: k.display_prefix.clone(),
            hash_version: k.hash_version,
            scopes: k.scopes.clone(),
            resources: k.resources.clone(),
            status: k.status,
            expires_at: k.expires_at,
            created_at: k.created_at,
            updated_at: k.updated_at,
            last_used_at: k.last_used_at,
            usage_count: k.usage_count,
            revoked_at: k.revoked_at,
            created_by: ActorView {
                id: k.created_by.id.clone(),
                name: k.created_by.name.clone(),
                display_prefix: k.created_by.display_prefix.clone(),
            },
            owner_id: k.owner_id.clone(),
            metadata: k.metadata.clone(),
            parent_id: k.parent_id.map(format_key_id),
            subject: k.subject.clone(),
            limits: k.limits.as_ref().map(Limits::views),
            credits: k.credits.as_ref().map(Credits::view),
        }
    }
}

/// The audit-log form of a key (the API view: no secret, no digest; usage counters left out).
pub fn audit_view(k: &KeyRecord) -> serde_json::Value {
    let mut v = serde_json::to_value(KeyView::from(k)).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.remove("usage_count");
        o.remove("last_used_at");
    }
    v
}

/// Formats a key id as `key_<32 lowercase hex>`.
pub fn format_key_id(id: Uuid) -> String {
    keygate_protocol::KeyId::from_bytes(*id.as_bytes()).to_string()
}

/// Parses `key_<32 lowercase hex>`.
pub fn parse_key_id(s: &str) -> Option<Uuid> {
    let hex = s.strip_prefix("key_")?;
    if hex.len() != 32
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    Uuid::try_parse(hex).ok()
}
