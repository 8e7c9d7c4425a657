//! Talking to one worker's kresd control socket, as the HTTP layer needs it (metrics, cache
//! clearing). The real implementation uses `kresd::control::ControlClient`.

use std::path::Path;

use async_trait::async_trait;
use serde_json::Value;

/// Reads a worker's counters and runs JSON-returning Lua expressions on it.
#[async_trait]
pub trait WorkerControl: Send + Sync + 'static {
    /// `stats.list()` as a flat JSON object.
    async fn stats(&self, socket: &Path) -> Result<Value, String>;
    /// Evaluate `expr` (a Lua expression whose value is a JSON string, e.g. `tojson(x)`).
    async fn eval_json(&self, socket: &Path, expr: &str) -> Result<Value, String>;
}
