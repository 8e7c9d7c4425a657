//! sd_notify listener: the `$NOTIFY_SOCKET` datagram socket kresd reports `READY=1` to.
//!
//! The socket has `SO_PASSCRED`, so the kernel attaches the sender's credentials to every
//! message and the PID in a [`Notification`] cannot be forged. Only senders a [`SenderFilter`]
//! accepts (the processes the operator started) count; others are logged, counted and dropped.
//! The socket file is not world-writable (0600, or 0660 with the workers' group). A background
//! task receives messages, remembers the last state of every PID (so a `READY=1` that arrives
//! before anyone waits for it is not lost) and broadcasts each message to subscribers.

use std::collections::HashMap;
use std::io::IoSliceMut;
use std::mem::MaybeUninit;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
use tokio::io::Interest;
use tokio::net::UnixDatagram;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Errors of the notify listener.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The socket could not be created at `path`.
    #[error("notify socket {path}: {source}")]
    Bind {
        /// Socket path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The process did not send `READY=1` before the deadline.
    #[error("kresd pid {pid} sent no READY=1 within {waited:?}{}", status_suffix(.status))]
    Timeout {
        /// Process id waited for.
        pid: u32,
        /// How long it was waited for.
        waited: Duration,
        /// Last `STATUS=` the process sent, if any.
        status: Option<String>,
    },
    /// The process exited before it sent `READY=1`.
    #[error("kresd pid {pid} exited before READY=1{}", status_suffix(.status))]
    Exited {
        /// Process id waited for.
        pid: u32,
        /// Last `STATUS=` the process sent, if any.
        status: Option<String>,
    },
    /// The process sent `STOPPING=1` before `READY=1`.
    #[error("kresd pid {pid} sent STOPPING=1 before READY=1")]
    Stopping {
        /// Process id waited for.
        pid: u32,
    },
    /// The listener task stopped (socket error).
    #[error("notify listener stopped")]
    Closed,
}

fn status_suffix(status: &Option<String>) -> String {
    status
        .as_ref()
        .map(|s| format!(" (last STATUS: {s})"))
        .unwrap_or_default()
}

/// One sd_notify message with the kernel-verified sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// Sender PID (from `SCM_CREDENTIALS`).
    pub pid: u32,
    /// Sender UID (from `SCM_CREDENTIALS`).
    pub uid: u32,
    /// `KEY=VALUE` assignments in message order (`READY`="1", `STATUS`=..., `STOPPING`="1").
    pub fields: Vec<(String, String)>,
}

impl Notification {
    /// Parse the text of a message (newline-separated `KEY=VALUE`; lines without `=` are ignored).
    pub fn parse(pid: u32, uid: u32, text: &str) -> Self {
        let fields = text
            .split('\n')
            .filter_map(|line| line.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self { pid, uid, fields }
    }

    /// Value of the last `key=` in the message.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `READY=1` is present.
    pub fn is_ready(&self) -> bool {
        self.get("READY") == Some("1")
    }

    /// `STOPPING=1` is present.
    pub fn is_stopping(&self) -> bool {
        self.get("STOPPING") == Some("1")
    }
}

/// What the listener remembers about one PID.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PidState {
    /// `READY=1` was received.
    pub ready: bool,
    /// `STOPPING=1` was received.
    pub stopping: bool,
    /// Last `STATUS=` text.
    pub status: Option<String>,
}

/// Bound on remembered PIDs: when reached, entries other than ready-and-not-stopping ones are
/// dropped (only a runaway crash loop gets there; call [`NotifyListener::forget`] normally).
const MAX_PIDS: usize = 4096;

/// Decides from the kernel-verified sender PID whether a message counts.
pub type SenderFilter = Box<dyn Fn(u32) -> bool + Send + Sync>;

/// Who may send: the socket's group (mode 0660 with a group, else 0600) and which PIDs count.
pub struct NotifyAccess {
    /// Group allowed to send (the workers' group when they run as another user).
    pub group: Option<u32>,
    /// Accepts a sender PID.
    pub accept: SenderFilter,
}

impl NotifyAccess {
    /// Owner only, every sender PID accepted (tests, single-user setups).
    pub fn owner_only() -> Self {
        Self {
            group: None,
            accept: Box::new(|_| true),
        }
    }
}

struct Shared {
    accept: SenderFilter,
    ignored: AtomicU64,
    pids: Mutex<HashMap<u32, PidState>>,
    changed: watch::Sender<u64>,
    events: broadcast::Sender<Notification>,
}

/// The `$NOTIFY_SOCKET` listener. Dropping it stops the receiving task and removes the socket file.
pub struct NotifyListener {
    path: PathBuf,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl NotifyListener {
    /// Bind a datagram socket at `path` (a stale file there is replaced) with `SO_PASSCRED`
    /// and start receiving. The socket is mode 0600, or 0660 owned by `access.group` so
    /// workers running as another user can send; messages from PIDs `access.accept` refuses are
    /// dropped. Must be called inside a tokio runtime.
    pub fn bind(path: impl AsRef<Path>, access: NotifyAccess) -> Result<Self, NotifyError> {
        let path = path.as_ref().to_path_buf();
        let err = |source| NotifyError::Bind {
            path: path.clone(),
            source,
        };
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(e)),
        }
        let sock = UnixDatagram::bind(&path).map_err(err)?;
        rustix::net::sockopt::set_socket_passcred(&sock, true).map_err(|e| err(e.into()))?;
        let mode = if access.group.is_some() { 0o660 } else { 0o600 };
        if access.group.is_some() {
            std::os::unix::fs::chown(&path, None, access.group).map_err(err)?;
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).map_err(err)?;
        let (changed, _) = watch::channel(0);
        let (events, _) = broadcast::channel(256);
        let shared = Arc::new(Shared {
            accept: access.accept,
            ignored: AtomicU64::new(0),
            pids: Mutex::new(HashMap::new()),
            changed,
            events,
        });
        let task = tokio::spawn(receive_loop(sock, shared.clone()));
        tracing::debug!(path = %path.display(), "notify socket bound");
        Ok(Self { path, shared, task })
    }

    /// The socket path (the value for `NOTIFY_SOCKET`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every notification from now on. A slow subscriber loses the oldest (see
    /// [`broadcast::Receiver::recv`]); use [`NotifyListener::state`] for what matters.
    pub fn subscribe(&self) -> broadcast::Receiver<Notification> {
        self.shared.events.subscribe()
    }

    /// How many messages came from senders the filter refused.
    pub fn ignored(&self) -> u64 {
        self.shared.ignored.load(Ordering::Relaxed)
    }

    /// What was received from `pid` so far.
    pub fn state(&self, pid: u32) -> Option<PidState> {
        self.lock().get(&pid).cloned()
    }

    /// Forget `pid` (call when its process is gone, so a reused PID starts clean).
    pub fn forget(&self, pid: u32) {
        self.lock().remove(&pid);
    }

    /// Wait until `pid` has sent `READY=1` (also when that happened before the call).
    /// Fails at `deadline`, when the process exits or sends `STOPPING=1` first. Exit is
    /// noticed by polling `/proc/<pid>` every 20 ms, so a crashing config fails fast.
    pub async fn wait_ready(&self, pid: u32, deadline: Instant) -> Result<(), NotifyError> {
        let started = Instant::now();
        let mut rx = self.shared.changed.subscribe();
        loop {
            rx.borrow_and_update();
            let state = self.state(pid).unwrap_or_default();
            if state.ready {
                return Ok(());
            }
            if state.stopping {
                return Err(NotifyError::Stopping { pid });
            }
            if !process_alive(pid) {
                // A last look: the message may have raced with the exit.
                tokio::task::yield_now().await;
                let state = self.state(pid).unwrap_or_default();
                if state.ready {
                    return Ok(());
                }
                return Err(NotifyError::Exited {
                    pid,
                    status: state.status,
                });
            }
            if self.task.is_finished() {
                return Err(NotifyError::Closed);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(NotifyError::Timeout {
                    pid,
                    waited: now - started,
                    status: state.status,
                });
            }
            let tick = (now + Duration::from_millis(20)).min(deadline);
            tokio::select! {
                r = rx.changed() => if r.is_err() { return Err(NotifyError::Closed) },
                _ = tokio::time::sleep_until(tick) => {}
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, PidState>> {
        self.shared
            .pids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for NotifyListener {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// `/proc/<pid>` exists and is not a zombie.
fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // Field 3 (after the parenthesised comm) is the state letter.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|s| s != "Z" && s != "X"),
        Err(_) => false,
    }
}

async fn receive_loop(sock: UnixDatagram, shared: Arc<Shared>) {
    let mut buf = vec![0u8; 4096];
    loop {
        let received = sock
            .async_io(Interest::READABLE, || {
                let mut space =
                    [MaybeUninit::uninit(); rustix::cmsg_space!(ScmCredentials(1), ScmRights(4))];
                let mut control = RecvAncillaryBuffer::new(&mut space);
                let mut iov = [IoSliceMut::new(&mut buf)];
                let msg =
                    rustix::net::recvmsg(&sock, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC)?;
                let mut cred = None;
                for m in control.drain() {
                    match m {
                        RecvAncillaryMessage::ScmCredentials(c) => cred = Some(c),
                        // Someone passed descriptors (FDSTORE): dropping them closes them.
                        RecvAncillaryMessage::ScmRights(fds) => fds.for_each(drop),
                        _ => {}
                    }
                }
                Ok((msg.bytes, cred))
            })
            .await;
        let (n, cred) = match received {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "notify socket receive failed; listener stops");
                return;
            }
        };
        let Some(cred) = cred else {
            tracing::warn!("notify message without credentials ignored");
            continue;
        };
        let text = String::from_utf8_lossy(&buf[..n.min(buf.len())]);
        let pid = cred.pid.as_raw_nonzero().get() as u32;
        if !(shared.accept)(pid) {
            shared.ignored.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                pid,
                uid = cred.uid.as_raw(),
                "notify message from a process the operator did not start ignored"
            );
            continue;
        }
        let note = Notification::parse(pid, cred.uid.as_raw(), &text);
        tracing::debug!(pid, message = %text.trim_end(), "sd_notify");
        {
            let mut pids = shared.pids.lock().unwrap_or_else(PoisonError::into_inner);
            if pids.len() >= MAX_PIDS && !pids.contains_key(&pid) {
                pids.retain(|_, s| s.ready && !s.stopping);
            }
            let state = pids.entry(pid).or_default();
            state.ready |= note.is_ready();
            state.stopping |= note.is_stopping();
            if let Some(s) = note.get("STATUS") {
                state.status = Some(s.to_string());
            }
        }
        shared.changed.send_modify(|g| *g = g.wrapping_add(1));
        let _ = shared.events.send(note);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_fields() {
        let n = Notification::parse(7, 0, "READY=1\nSTATUS=serving\nbogus\n");
        assert!(n.is_ready());
        assert!(!n.is_stopping());
        assert_eq!(n.get("STATUS"), Some("serving"));
        assert_eq!(n.fields.len(), 2);
    }

    #[tokio::test]
    async fn own_message_carries_own_pid_and_wakes_waiter() {
        let dir = tempfile::tempdir().unwrap();
        let l =
            NotifyListener::bind(dir.path().join("notify"), NotifyAccess::owner_only()).unwrap();
        let me = std::process::id();
        let mut events = l.subscribe();
        let deadline = Instant::now() + Duration::from_millis(300);
        // Nothing sent yet: times out, with no READY recorded.
        let err = l.wait_ready(me, deadline).await.unwrap_err();
        assert!(
            matches!(err, NotifyError::Timeout { pid, .. } if pid == me),
            "{err}"
        );
        let client = std::os::unix::net::UnixDatagram::unbound().unwrap();
        client.send_to(b"STATUS=starting", l.path()).unwrap();
        client.send_to(b"READY=1\nSTATUS=up", l.path()).unwrap();
        l.wait_ready(me, Instant::now() + Duration::from_secs(2))
            .await
            .unwrap();
        let first = events.recv().await.unwrap();
        assert_eq!(first.pid, me);
        assert_eq!(first.get("STATUS"), Some("starting"));
        assert_eq!(l.state(me).unwrap().status.as_deref(), Some("up"));
        l.forget(me);
        assert_eq!(l.state(me), None);
    }

    #[tokio::test]
    async fn refused_sender_is_counted_and_marks_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let me = std::process::id();
        let l = NotifyListener::bind(
            dir.path().join("notify"),
            NotifyAccess {
                group: None,
                accept: Box::new(move |pid| pid != me),
            },
        )
        .unwrap();
        let mode = std::fs::metadata(l.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let client = std::os::unix::net::UnixDatagram::unbound().unwrap();
        client.send_to(b"READY=1", l.path()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while l.ignored() == 0 {
            assert!(Instant::now() < deadline, "the message was never received");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Processed (counted as ignored) and nothing recorded for the sender.
        assert_eq!(l.ignored(), 1);
        assert_eq!(l.state(me), None);
    }

    #[tokio::test]
    async fn exited_process_fails_fast() {
        let dir = tempfile::tempdir().unwrap();
        let l =
            NotifyListener::bind(dir.path().join("notify"), NotifyAccess::owner_only()).unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        // The deadline is far away: `Exited` (not `Timeout`) proves the exit was noticed.
        let t = Instant::now();
        let err = l
            .wait_ready(pid, t + Duration::from_secs(60))
            .await
            .unwrap_err();
        assert!(matches!(err, NotifyError::Exited { .. }), "{err}");
        println!("exit noticed after {:?}", t.elapsed());
    }
}
