//! Blocking access to kresd's control socket for tests.
//!
//! A thin wrapper over the operator's own client ([`kres_operator::kresd::control::ControlClient`]),
//! so the protocol (prompt, `__binary` framing, `pcall` + `tojson` wrapping) exists once.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use kres_operator::kresd::control::ControlClient;

/// A connected control-socket session with its own single-threaded runtime.
pub struct Control {
    runtime: tokio::runtime::Runtime,
    client: ControlClient,
}

impl Control {
    /// Connect to a control socket and switch it to binary mode.
    pub fn connect(path: &Path) -> Result<Control> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("tokio runtime for the control client")?;
        let client = runtime
            .block_on(ControlClient::connect(path, Duration::from_secs(5)))
            .with_context(|| format!("connect {}", path.display()))?;
        Ok(Control { runtime, client })
    }

    /// Evaluate a Lua chunk and return its printed result; a Lua error becomes `Err`.
    pub fn eval(&mut self, lua: &str) -> Result<String> {
        Ok(self.runtime.block_on(self.client.eval(lua))?)
    }

    /// Evaluate a Lua expression and return its value as JSON; a Lua error becomes `Err`.
    pub fn eval_json(&mut self, expr: &str) -> Result<serde_json::Value> {
        let expr = format!("tojson(({expr}))"); // (..): only the first value, as `local v = ...`
        Ok(self.runtime.block_on(self.client.eval_json(&expr))?)
    }
}
