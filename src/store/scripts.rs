//! The Lua scripts, embedded at build time and loaded at start-up.

use redis::Script;

/// Every script quotad runs. `redis::Script` calls EVALSHA and reloads on NOSCRIPT,
/// so a Redis restart or SCRIPT FLUSH is repaired by the next call.
#[derive(Debug)]
pub struct Scripts {
    /// Decide, record and count a batch of requests (a single one is a batch of one).
    pub consume_batch: Script,
    /// Get-or-create a key record.
    pub create_key: Script,
    /// Change an existing key record.
    pub update_key: Script,
}

impl Default for Scripts {
    fn default() -> Self {
        Scripts {
            consume_batch: Script::new(include_str!("../../lua/consume_batch.lua")),
            create_key: Script::new(include_str!("../../lua/create_key.lua")),
            update_key: Script::new(include_str!("../../lua/update_key.lua")),
        }
    }
}

impl Scripts {
    /// All scripts, for loading.
    pub fn all(&self) -> [&Script; 3] {
        [&self.consume_batch, &self.create_key, &self.update_key]
    }
}
