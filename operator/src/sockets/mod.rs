//! Shared listening sockets for kresd workers (host mode).
//!
//! Listening sockets are bound once, by a long-lived **socket holder** process
//! (`kres-operator socket-holder`, supervisord program `sockets`), and handed over a unix
//! `SOCK_SEQPACKET` socket with `SCM_RIGHTS` to a **launcher** (`kres-operator launch`) that
//! places them in a kresd command line as `-S FD[:kind]` and `exec`s kresd (same PID). Every
//! worker, canary included, then serves the very same kernel sockets: a worker restart loses
//! nothing queued, and workers need no privilege for port 53. See docs/architecture.md.
//!
//! Holder protocol (one request and one reply per connection, each a single datagram of
//! JSON): request `{"op":"get"}` or `{"op":"bind","binds":["udp:127.0.0.1@53", ...]}`; reply
//! `{"ok":true,"sockets":["udp:127.0.0.1@53", ...]}` with one descriptor per entry attached in
//! that order, or `{"ok":false,"error":"..."}`.

pub mod fdpass;
pub mod holder;
pub mod launch;
pub mod spec;

pub use holder::{HeldSocket, HolderArgs, fetch, fetch_wait, rebind, run_socket_holder};
pub use launch::{LaunchArgs, run_launch};
pub use spec::{BindSpec, Kind, Proto, SpecError, specs_for_listen};

use std::path::PathBuf;

/// Errors of the holder, its client and the launcher.
#[derive(Debug, thiserror::Error)]
pub enum SocketsError {
    /// One or more sockets could not be bound (one line each).
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Bind(Vec<SpecError>),
    /// Nothing accepts connections at the holder socket (not started yet, or gone).
    #[error("socket holder {path}: connect: {message} (is the socket holder running?)")]
    HolderUnavailable {
        /// Holder socket path.
        path: PathBuf,
        /// OS error text.
        message: String,
    },
    /// Talking to the holder failed.
    #[error("socket holder {path}: {message}")]
    Holder {
        /// Holder socket path.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// Preparing or executing the worker failed.
    #[error("launch: {0}")]
    Launch(String),
}
