//! What the planner reads: the desired state and what the backend observed.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

/// A revision id: the hash of a rendered worker config (see `kres_crd::lua::revision`).
pub type Revision = String;

/// A change sequence number: assigned to each desired config when it is submitted, increasing
/// (host mode: per operator process; Kubernetes: the resource's `metadata.generation`). The
/// reconciler reports the outcome of the change it works on by this number.
pub type ChangeSeq = u64;

/// A worker position: regular slots `0..N-1` plus one surge (canary) slot.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Slot {
    /// Regular worker slot `i` (`0..workers-1`; higher ones are left over from a scale-down).
    Worker(u16),
    /// The surge slot: the canary of a rollout and the spare capacity while slots are replaced.
    Surge,
}

impl Slot {
    /// The worker id given to kresd (`SYSTEMD_INSTANCE`, visible in Lua as `worker.id`).
    pub fn worker_id(&self) -> String {
        match self {
            Slot::Worker(i) => i.to_string(),
            Slot::Surge => "canary".to_string(),
        }
    }

    /// Parse a worker id back (`"3"`, `"canary"`).
    pub fn from_worker_id(id: &str) -> Option<Slot> {
        if id == "canary" {
            return Some(Slot::Surge);
        }
        id.parse().ok().map(Slot::Worker)
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Slot::Worker(i) => write!(f, "slot {i}"),
            Slot::Surge => f.write_str("canary slot"),
        }
    }
}

/// Settings of the cache garbage collector program (`kres-cache-gc` arguments).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GcSpec {
    /// Full argument list after the program name (e.g. `-c DIR -d 1000 -u 80 -f 10`).
    pub args: Vec<String>,
}

/// What the fleet should run.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    /// Revision of the rendered worker config.
    pub revision: Revision,
    /// The rendered kresd config (Lua) of `revision`.
    pub config: String,
    /// Number of regular worker slots.
    pub workers: u16,
    /// Cache garbage collector, if one should run.
    pub gc: Option<GcSpec>,
    /// How long a started worker may take to become ready (READY=1 and a DNS probe answered).
    pub start_timeout: Duration,
    /// Service endpoints in the backend's notation (host mode: the socket holder's bind
    /// specs). Opaque to the planner: a change of endpoints is also a change of `config` (and so
    /// of the revision), which is what makes workers pick them up.
    pub listen: Vec<String>,
}

/// State of one worker as the backend sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SlotState {
    /// Process running, not (yet) ready: no READY=1 or no probe answered.
    Starting,
    /// READY=1 received and the slot's private endpoint answered a DNS probe.
    Ready,
    /// The slot exists but no process runs (never started, or stopped).
    Stopped,
    /// The process exited on its own and is not being restarted.
    Exited,
    /// The backend gave up on it (e.g. supervisord FATAL).
    Failed,
}

/// One observed worker slot.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ObservedSlot {
    /// Which slot.
    pub slot: Slot,
    /// The revision the slot's worker runs (recovered from the backend).
    pub revision: Revision,
    /// Current state.
    pub state: SlotState,
    /// Process id, when running.
    pub pid: Option<u32>,
    /// When the current state began (monotonic, same clock as [`Observed::now`]).
    #[serde(skip)]
    pub since: Duration,
    /// Unix time (ms) since when the worker is ready, for status output.
    pub ready_since_unix_ms: Option<u64>,
    /// Last problem seen (exit status, probe error, ...), for failure reports.
    pub detail: Option<String>,
}

/// Everything the backend observed, at one instant.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    /// Monotonic now (the clock of every `since`).
    pub now: Duration,
    /// All worker slots present in the backend (any order).
    pub slots: Vec<ObservedSlot>,
    /// The cache-gc program's arguments when it runs.
    pub gc: Option<GcSpec>,
}

impl Observed {
    /// The observed worker in `slot`, if any.
    pub fn slot(&self, slot: Slot) -> Option<&ObservedSlot> {
        self.slots.iter().find(|s| s.slot == slot)
    }
}
