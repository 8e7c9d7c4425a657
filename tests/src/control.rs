//! Client for kresd's control socket (`RUNDIR/control/<pid>`), binary mode.
//!
//! Protocol (kresd 5.6): on connect kresd sends the prompt `> `; after `__binary\n` every command
//! line gets a reply framed as a u32 big-endian length plus payload. Values come back printed
//! Lua-style; errors come back as plain text, so [`Control::eval_json`] wraps the expression in
//! `pcall` + `tojson` to tell them apart.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// A connected control-socket session.
pub struct Control {
    stream: UnixStream,
}

impl Control {
    /// Connect to a control socket and switch it to binary mode.
    pub fn connect(path: &Path) -> Result<Control> {
        let mut stream =
            UnixStream::connect(path).with_context(|| format!("connect {}", path.display()))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut prompt = [0u8; 2];
        stream
            .read_exact(&mut prompt)
            .context("read control prompt")?;
        if &prompt != b"> " {
            bail!("unexpected control prompt {prompt:?}");
        }
        stream.write_all(b"__binary\n")?;
        Ok(Control { stream })
    }

    /// Evaluate one line of Lua and return kresd's printed reply (errors included, as text).
    pub fn eval(&mut self, lua: &str) -> Result<String> {
        if lua.contains('\n') {
            bail!("control commands are one line");
        }
        self.stream.write_all(lua.as_bytes())?;
        self.stream.write_all(b"\n")?;
        let mut len = [0u8; 4];
        self.stream
            .read_exact(&mut len)
            .context("read reply length")?;
        let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut buf).context("read reply")?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    /// Evaluate a Lua expression and return its value as JSON; a Lua error becomes `Err`.
    pub fn eval_json(&mut self, expr: &str) -> Result<serde_json::Value> {
        let wrapped = format!(
            "(function() local ok, v = pcall(function() return {expr} end) \
             if ok then return 'ok:' .. tojson(v) else return 'err:' .. tostring(v) end end)()"
        );
        let reply = self.eval(&wrapped)?;
        // The reply is a printed Lua string: '...'
        let text = reply.trim();
        let inner = text
            .strip_prefix('\'')
            .and_then(|t| t.strip_suffix('\''))
            .with_context(|| format!("unexpected control reply {text}"))?;
        let inner = unescape_printed(inner);
        if let Some(json) = inner.strip_prefix("ok:") {
            serde_json::from_str(json).with_context(|| format!("reply is not JSON: {json}"))
        } else if let Some(err) = inner.strip_prefix("err:") {
            bail!("lua error: {err}")
        } else {
            bail!("unexpected control reply {text}")
        }
    }
}

/// Undo the escaping of kresd's printer (krprint): every byte outside printable ASCII, `'` and
/// `\` are written as `\ddd`.
fn unescape_printed(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let v = u32::from(b[i + 1] - b'0') * 100
                + u32::from(b[i + 2] - b'0') * 10
                + u32::from(b[i + 3] - b'0');
            out.push(u8::try_from(v).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
