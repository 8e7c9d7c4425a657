//! What the planner reads: the desired state and what the backend observed.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use serde::Serialize;

/// A revision id: the hash of a rendered worker config and the backend's worker template (see
/// [`revision_of`]).
pub type Revision = String;

/// The revision of a rendered worker config run with a backend worker template: with a `Null`
/// template (host mode) the hash of the config alone (`kres_crd::lua::revision`), otherwise the
/// hash of the config followed by the template's JSON.
pub fn revision_of(config: &str, template: &serde_json::Value) -> Revision {
    if template.is_null() {
        return kres_crd::lua::revision(config.as_bytes());
    }
    let mut bytes = config.as_bytes().to_vec();
    bytes.extend_from_slice(b"\n-- worker template: ");
    bytes.extend_from_slice(template.to_string().as_bytes());
    kres_crd::lua::revision(&bytes)
}

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
    /// How long a started worker may take to become ready (READY=1 and a DNS probe answered),
    /// counted from when it left [`SlotState::Pending`].
    pub start_timeout: Duration,
    /// How long a worker being retired may finish what it holds after it stopped taking new
    /// work (zero: no drain bound; the backend reports it drained at once).
    pub drain: Duration,
    /// How long a ready worker must stay ready before it counts as serving (Kubernetes'
    /// `minReadySeconds`; zero in host mode).
    pub soak: Duration,
    /// The backend's worker template, opaque to the planner (host: `Null`; pods: the rendered
    /// pod template). Part of the revision (see [`revision_of`]).
    pub template: serde_json::Value,
    /// Service endpoints in the backend's notation (host mode: the socket holder's bind
    /// specs). Opaque to the planner: a change of endpoints is also a change of `config` (and so
    /// of the revision), which is what makes workers pick them up.
    pub listen: Vec<String>,
    /// Rollouts are held (Kubernetes' `spec.rollout.paused`; always false in host mode): no
    /// canary, replacement or staging; the fleet is only kept whole (see [`crate::reconcile::plan`]).
    pub paused: bool,
}

/// State of one worker as the backend sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SlotState {
    /// Accepted by the backend, not running through no fault of the config (unschedulable,
    /// pulling an image). Waited for, never a gate failure; no start timeout runs.
    Pending,
    /// Process running, not (yet) ready: no READY=1 or no probe answered.
    Starting,
    /// READY=1 received and the slot's private endpoint answered a DNS probe.
    Ready,
    /// Drain requested: takes no new work, still finishing what it holds.
    Draining,
    /// Takes no new work and is idle (or the drain bound passed): safe to stop.
    Drained,
    /// Stop requested, not gone yet.
    Stopping,
    /// The slot exists but no process runs (never started, or stopped).
    Stopped,
    /// The process exited on its own and is not being restarted.
    Exited,
    /// The backend gave up on it (e.g. supervisord FATAL).
    Failed,
}

impl SlotState {
    /// Whether the worker is on its way up (waited for, never stopped early: kresd loses an
    /// early SIGTERM).
    pub fn is_starting(self) -> bool {
        matches!(self, SlotState::Pending | SlotState::Starting)
    }

    /// Whether no worker runs in the slot (never started, stopped, exited or given up on): the
    /// slot can be started again.
    pub fn is_down(self) -> bool {
        matches!(
            self,
            SlotState::Stopped | SlotState::Exited | SlotState::Failed
        )
    }

    /// Whether a retirement (drain or stop) is under way.
    pub fn is_retiring(self) -> bool {
        matches!(
            self,
            SlotState::Draining | SlotState::Drained | SlotState::Stopping
        )
    }
}

/// How to reach one worker (host: a supervisord program; pods: a Pod).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct WorkerRef {
    /// The worker's name in the backend (host: the program, `kresd3`; pods: the pod name).
    pub name: String,
    /// Where it is probed (host: its private probe address; pods: the pod IP).
    pub address: Option<IpAddr>,
    /// Its control endpoint (host: kresd's control socket path; pods: none).
    pub control: Option<String>,
    /// Its process id (host only).
    pub pid: Option<u32>,
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
    /// The running worker, if any (its fields appear flattened in the slot's JSON).
    #[serde(flatten)]
    pub worker: Option<WorkerRef>,
    /// When the current state began (monotonic, same clock as [`Observed::now`]).
    #[serde(skip)]
    pub since: Duration,
    /// Unix time (ms) since when the worker is ready, for status output.
    pub ready_since_unix_ms: Option<u64>,
    /// Last problem seen (exit status, probe error, ...), for failure reports.
    pub detail: Option<String>,
}

impl ObservedSlot {
    /// A slot in `state` on `revision` since `since`, with no worker, readiness or detail yet.
    pub fn new(slot: Slot, revision: Revision, state: SlotState, since: Duration) -> Self {
        ObservedSlot {
            slot,
            revision,
            state,
            worker: None,
            since,
            ready_since_unix_ms: None,
            detail: None,
        }
    }
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
    /// The service endpoints the backend serves (last set with `set_endpoints`), when known.
    pub endpoints: Option<Vec<String>>,
    /// The revisions staged in the backend.
    pub staged: BTreeSet<Revision>,
}

impl Observed {
    /// The observed worker in `slot`, if any.
    pub fn slot(&self, slot: Slot) -> Option<&ObservedSlot> {
        self.slots.iter().find(|s| s.slot == slot)
    }

    /// The process id of the worker in `slot`, if known.
    pub fn pid(&self, slot: Slot) -> Option<u32> {
        self.slot(slot)
            .and_then(|s| s.worker.as_ref())
            .and_then(|w| w.pid)
    }
}
