//! The names of everything the cluster keeps in Redis, in one place.
//!
//! Per key: `<p>k:<key>` (hash: `v` version, `i` initialized, `x`
//! deadline, and the image: `val` MessagePack value at version `iv`, then
//! `oc` changes of `ob` bytes of ops since), `<p>h:<key>` (history list of
//! entries), `<p>o:<key>` (presence path → owning session), channel
//! `<p>c:<key>`. Shared: `<p>version` (the counter), `<p>keys` (keys with
//! a value, for `state.keys`), `<p>ttl` (deadlines), `<p>nodes`,
//! `<p>lease:<node>`, `<p>np:<node>` (a node's presence paths),
//! `<p>reap:<node>` (who is removing a dead node's paths),
//! `<p>idem:<len>:<identity>:<key>` (an idempotent call's outcome).
//!
//! With Redis Cluster every per-key name would carry the key as a hash tag
//! (`{<key>}`), and the shared names would move per shard; see
//! docs/ARCHITECTURE.md "Cluster".

/// Names under one prefix.
#[derive(Debug, Clone)]
pub struct Names {
    prefix: String,
}

impl Names {
    pub fn new(prefix: &str) -> Names {
        Names {
            prefix: prefix.to_owned(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn hash(&self, key: &str) -> String {
        format!("{}k:{key}", self.prefix)
    }

    pub fn history(&self, key: &str) -> String {
        format!("{}h:{key}", self.prefix)
    }

    pub fn owners(&self, key: &str) -> String {
        format!("{}o:{key}", self.prefix)
    }

    /// The prefix of every key's channel.
    pub fn channel_prefix(&self) -> String {
        format!("{}c:", self.prefix)
    }

    pub fn channel(&self, key: &str) -> String {
        format!("{}c:{key}", self.prefix)
    }

    /// The channels of every key below `prefix` (`""`: every key), as a
    /// PSUBSCRIBE pattern (key characters are never glob characters).
    pub fn channel_pattern(&self, prefix: &str) -> String {
        match prefix {
            "" => format!("{}c:*", self.prefix),
            p => format!("{}c:{p}.*", self.prefix),
        }
    }

    /// The prefix a PSUBSCRIBE pattern of [`Names::channel_pattern`] stands for.
    pub fn prefix_of_pattern<'a>(&self, pattern: &'a str) -> Option<&'a str> {
        match pattern.strip_prefix(&self.prefix)?.strip_prefix("c:")? {
            "*" => Some(""),
            p => p.strip_suffix(".*"),
        }
    }

    /// The key a channel name belongs to.
    pub fn key_of_channel<'a>(&self, channel: &'a str) -> Option<&'a str> {
        channel.strip_prefix(&self.prefix)?.strip_prefix("c:")
    }

    pub fn version(&self) -> String {
        format!("{}version", self.prefix)
    }

    pub fn keys(&self) -> String {
        format!("{}keys", self.prefix)
    }

    pub fn deadlines(&self) -> String {
        format!("{}ttl", self.prefix)
    }

    pub fn node_ids(&self) -> String {
        format!("{}node-ids", self.prefix)
    }

    pub fn nodes(&self) -> String {
        format!("{}nodes", self.prefix)
    }

    pub fn lease(&self, node: &str) -> String {
        format!("{}lease:{node}", self.prefix)
    }

    pub fn registry(&self, node: &str) -> String {
        format!("{}np:{node}", self.prefix)
    }

    /// The outcome of the idempotent call `key` of `identity` (`None`:
    /// anonymous). The identity is length-prefixed so that no (identity,
    /// key) pair can spell another's name.
    pub fn idempotency(&self, identity: Option<&str>, key: &str) -> String {
        let identity = identity.unwrap_or("");
        format!("{}idem:{}:{identity}:{key}", self.prefix, identity.len())
    }

    pub fn reaper(&self, node: &str) -> String {
        format!("{}reap:{node}", self.prefix)
    }
}
