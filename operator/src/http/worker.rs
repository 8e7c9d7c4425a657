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

/// [`WorkerControl`] over kresd control sockets (`kresd::control::ControlClient`), one connection
/// per call, each call (connect included) bounded by `timeout`.
#[derive(Debug, Clone)]
pub struct KresdControl {
    /// Bound of one connect + call.
    pub timeout: std::time::Duration,
}

#[async_trait]
impl WorkerControl for KresdControl {
    async fn stats(&self, socket: &Path) -> Result<Value, String> {
        let mut client = crate::kresd::control::ControlClient::connect(socket, self.timeout)
            .await
            .map_err(|e| e.to_string())?;
        // The rendered config defines kres_operator_statistics() (loads `stats` when lazy).
        client
            .eval_json(
                "tojson(kres_operator_statistics and kres_operator_statistics() or stats.list())",
            )
            .await
            .map_err(|e| e.to_string())
    }

    async fn eval_json(&self, socket: &Path, expr: &str) -> Result<Value, String> {
        let mut client = crate::kresd::control::ControlClient::connect(socket, self.timeout)
            .await
            .map_err(|e| e.to_string())?;
        client.eval_json(expr).await.map_err(|e| e.to_string())
    }
}
