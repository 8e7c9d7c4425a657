//! What a Pod says about its slot: the pure mapping from a Pod (and the Service's endpoints) to
//! the planner's [`SlotState`].

use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerStateTerminated, ContainerStatus, Pod};

use super::build::{
    ANNOTATION_DRAIN_SINCE, KRESD_CONTAINER, LABEL_REVISION, LABEL_SERVING, LABEL_SLOT,
};
use crate::reconcile::{Revision, Slot, SlotState};

/// Container waiting reasons that are not the revision's fault (the image or the node).
const PENDING_REASONS: &[&str] = &[
    "ContainerCreating",
    "PodInitializing",
    "ErrImagePull",
    "ImagePullBackOff",
    "ImageInspectError",
    "ErrImageNeverPull",
    "RegistryUnavailable",
    "InvalidImageName",
];

/// One pod as the planner sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodView {
    /// Its slot (from the slot label).
    pub slot: Slot,
    /// The revision it runs (from the revision label).
    pub revision: Revision,
    /// Its state, before the operator's own DNS probe (a `Ready` pod is probed by the backend).
    pub state: SlotState,
    /// Why it is not running or not ready (waiting reason, kresd's termination message).
    pub detail: Option<String>,
}

/// The kresd container's status.
fn kresd_status(pod: &Pod) -> Option<&ContainerStatus> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == KRESD_CONTAINER)
}

/// kresd's last termination (the current state's, else the last state's).
fn last_termination(pod: &Pod) -> Option<&ContainerStateTerminated> {
    let c = kresd_status(pod)?;
    c.state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .or_else(|| c.last_state.as_ref().and_then(|s| s.terminated.as_ref()))
}

/// How kresd last terminated: `exited with code N (reason)` (its log lines are the
/// [`termination_message`], which the gate adds filtered to kresd's error lines).
fn exit_summary(pod: &Pod) -> Option<String> {
    last_termination(pod).map(summary)
}

/// `exited with code N (reason)`.
fn summary(t: &ContainerStateTerminated) -> String {
    format!(
        "exited with code {}{}",
        t.exit_code,
        t.reason
            .as_ref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default()
    )
}

/// A container beside kresd (cache-gc) that does not run through the revision's fault (not
/// the image or the node): `<name>: <how it ended or why it waits>: <its last log line>`.
/// kresd runs, but the pod never gets Ready.
fn sidecar_failure(pod: &Pod) -> Option<String> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    statuses
        .iter()
        .filter(|c| c.name != KRESD_CONTAINER)
        .find_map(|c| {
            let state = c.state.as_ref();
            let terminated = state
                .and_then(|s| s.terminated.as_ref())
                .or_else(|| c.last_state.as_ref().and_then(|s| s.terminated.as_ref()));
            let how = match state.and_then(|s| s.waiting.as_ref()) {
                Some(w) => {
                    let reason = w.reason.clone().unwrap_or_default();
                    if PENDING_REASONS.contains(&reason.as_str()) {
                        return None;
                    }
                    match terminated {
                        Some(t) => summary(t),
                        None => format!("{reason}: {}", w.message.clone().unwrap_or_default()),
                    }
                }
                // Terminated now, or restarted and not ready again (between back-offs).
                None if !c.ready
                    && (state.is_some_and(|s| s.terminated.is_some()) || c.restart_count > 0) =>
                {
                    summary(terminated?)
                }
                None => return None,
            };
            let last_line = terminated
                .and_then(|t| t.message.as_deref())
                .and_then(|m| m.lines().rev().map(str::trim).find(|l| !l.is_empty()))
                .map(|l| format!(": {}", l.chars().take(200).collect::<String>()))
                .unwrap_or_default();
            Some(format!("{}: {how}{last_line}", c.name))
        })
}

/// The message kresd left when it last terminated (FallbackToLogsOnError: its last log lines),
/// else how it terminated.
pub fn termination_message(pod: &Pod) -> Option<String> {
    last_termination(pod)?
        .message
        .clone()
        .filter(|m| !m.trim().is_empty())
        .or_else(|| exit_summary(pod))
}

fn condition(pod: &Pod, type_: &str) -> Option<(String, Option<String>, Option<String>)> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// The pod's IP, when it has one.
pub fn pod_ip(pod: &Pod) -> Option<String> {
    pod.status
        .as_ref()?
        .pod_ip
        .clone()
        .filter(|ip| !ip.is_empty())
}

/// Whether the pod is labelled as serving (not drained).
pub fn is_serving(pod: &Pod) -> bool {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL_SERVING))
        .is_none_or(|v| v == "true")
}

/// Map a pod to its slot state. `in_endpoints`: whether the Service's EndpointSlices still list
/// the pod's IP; `drain`: how long a drained pod waits after leaving them; `now_unix_ms`: now.
/// `None` for pods without valid slot and revision labels.
pub fn view(pod: &Pod, in_endpoints: bool, drain: Duration, now_unix_ms: u64) -> Option<PodView> {
    let labels = pod.metadata.labels.as_ref()?;
    let slot = Slot::from_worker_id(labels.get(LABEL_SLOT)?)?;
    let revision = labels.get(LABEL_REVISION)?.clone();
    let (state, detail) = state(pod, in_endpoints, drain, now_unix_ms);
    Some(PodView {
        slot,
        revision,
        state,
        detail,
    })
}

fn state(
    pod: &Pod,
    in_endpoints: bool,
    drain: Duration,
    now_unix_ms: u64,
) -> (SlotState, Option<String>) {
    if pod.metadata.deletion_timestamp.is_some() {
        return (SlotState::Stopping, None);
    }
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Failed") | Some("Succeeded")) {
        return (SlotState::Exited, exit_summary(pod));
    }
    let Some(c) = kresd_status(pod) else {
        // Not started by a kubelet yet: unscheduled, or being set up.
        let detail = match condition(pod, "PodScheduled") {
            Some((s, reason, message)) if s == "False" => Some(format!(
                "{}: {}",
                reason.unwrap_or_else(|| "Unschedulable".into()),
                message.unwrap_or_default()
            )),
            _ => None,
        };
        return (SlotState::Pending, detail);
    };
    if let Some(w) = c.state.as_ref().and_then(|s| s.waiting.as_ref()) {
        let reason = w.reason.clone().unwrap_or_default();
        if PENDING_REASONS.contains(&reason.as_str()) {
            return (
                SlotState::Pending,
                Some(format!(
                    "{reason}: {}",
                    w.message.clone().unwrap_or_default()
                )),
            );
        }
        // CrashLoopBackOff, RunContainerError, CreateContainerConfigError...: the worker
        // does not run through the revision's fault.
        return (
            SlotState::Exited,
            exit_summary(pod).or_else(|| {
                Some(format!(
                    "{reason}: {}",
                    w.message.clone().unwrap_or_default()
                ))
            }),
        );
    }
    if c.state.as_ref().is_some_and(|s| s.terminated.is_some()) {
        return (SlotState::Exited, exit_summary(pod));
    }
    if !is_serving(pod) {
        let since = pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_DRAIN_SINCE))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        let waited = Duration::from_millis(now_unix_ms.saturating_sub(since));
        return if !in_endpoints && waited >= drain {
            (SlotState::Drained, None)
        } else {
            (SlotState::Draining, None)
        };
    }
    let ready = condition(pod, "Ready").is_some_and(|(s, _, _)| s == "True");
    if ready {
        return (SlotState::Ready, None);
    }
    if let Some(detail) = sidecar_failure(pod) {
        return (SlotState::Exited, Some(detail));
    }
    if c.restart_count > 0 {
        // Restarted and not ready again: a crash loop between back-offs.
        return (SlotState::Exited, exit_summary(pod));
    }
    (SlotState::Starting, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: serde_json::Value) -> Pod {
        let mut base = serde_json::json!({
            "metadata": {
                "name": "r-1",
                "labels": { LABEL_SLOT: "1", LABEL_REVISION: "rev1", LABEL_SERVING: "true" },
            },
        });
        json_merge(&mut base, v);
        serde_json::from_value(base).expect("pod")
    }

    fn json_merge(a: &mut serde_json::Value, b: serde_json::Value) {
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    json_merge(a.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    fn st(p: &Pod) -> SlotState {
        view(p, true, Duration::from_secs(5), 10_000)
            .expect("view")
            .state
    }

    fn running(ready: bool, restarts: i32) -> serde_json::Value {
        serde_json::json!({ "status": {
            "phase": "Running",
            "conditions": [{ "type": "Ready", "status": if ready { "True" } else { "False" } }],
            "containerStatuses": [{ "name": "kresd", "image": "i", "imageID": "", "ready": ready,
                "restartCount": restarts, "state": { "running": {} },
                "lastState": { "terminated": { "exitCode": 1, "message": "error: [string \"x\"]:1: x" } } }],
        }})
    }

    #[test]
    fn unscheduled_and_image_pulls_are_pending_not_failures() {
        let p = pod(
            serde_json::json!({ "status": { "phase": "Pending", "conditions": [
                { "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/1 nodes" }
            ]}}),
        );
        let v = view(&p, false, Duration::ZERO, 0).expect("view");
        assert_eq!(v.state, SlotState::Pending);
        assert_eq!(v.detail.as_deref(), Some("Unschedulable: 0/1 nodes"));
        let p = pod(
            serde_json::json!({ "status": { "phase": "Pending", "containerStatuses": [
                { "name": "kresd", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                  "state": { "waiting": { "reason": "ImagePullBackOff" } } }
            ]}}),
        );
        assert_eq!(st(&p), SlotState::Pending);
    }

    #[test]
    fn crash_loop_is_exited_with_kresds_message() {
        let p = pod(
            serde_json::json!({ "status": { "phase": "Running", "containerStatuses": [
                { "name": "kresd", "image": "i", "imageID": "", "ready": false, "restartCount": 3,
                  "state": { "waiting": { "reason": "CrashLoopBackOff" } },
                  "lastState": { "terminated": { "exitCode": 1, "message": "[system] error x" } } }
            ]}}),
        );
        let v = view(&p, false, Duration::ZERO, 0).expect("view");
        assert_eq!(v.state, SlotState::Exited);
        // The detail says how it ended; kresd's lines are the log tail the gate adds.
        assert_eq!(v.detail.as_deref(), Some("exited with code 1"));
        assert_eq!(termination_message(&p).as_deref(), Some("[system] error x"));
        // Running again after a crash but not ready: still a crash loop.
        assert_eq!(st(&pod(running(false, 1))), SlotState::Exited);
        assert_eq!(st(&pod(running(false, 0))), SlotState::Starting);
        assert_eq!(st(&pod(running(true, 0))), SlotState::Ready);
    }

    #[test]
    fn a_failing_cache_gc_beside_a_running_kresd_is_exited_with_its_last_line() {
        let gc = |status: serde_json::Value| {
            let mut v = running(false, 0);
            let statuses = v["status"]["containerStatuses"]
                .as_array_mut()
                .expect("statuses");
            statuses.push(status);
            view(&pod(v), true, Duration::ZERO, 0).expect("view")
        };
        let v = gc(
            serde_json::json!({ "name": "cache-gc", "image": "i", "imageID": "",
            "ready": false, "restartCount": 2, "state": { "waiting": { "reason": "CrashLoopBackOff" } },
            "lastState": { "terminated": { "exitCode": 1,
                "message": "Knot Resolver Cache Garbage Collector\nError: bad argument\n\n" } } }),
        );
        assert_eq!(v.state, SlotState::Exited);
        assert_eq!(
            v.detail.as_deref(),
            Some("cache-gc: exited with code 1: Error: bad argument")
        );
        // A missing executable (a spec.image without kres-cache-gc).
        let v = gc(
            serde_json::json!({ "name": "cache-gc", "image": "i", "imageID": "",
            "ready": false, "restartCount": 0, "state": { "waiting": { "reason": "RunContainerError",
                "message": "exec: \"kres-cache-gc\": executable file not found in $PATH" } } }),
        );
        assert_eq!(v.state, SlotState::Exited);
        assert_eq!(
            v.detail.as_deref(),
            Some(
                "cache-gc: RunContainerError: exec: \"kres-cache-gc\": executable file not found in $PATH"
            )
        );
        // Starting, its image still being pulled, or running again after a restart: not a
        // failure (kresd is still starting).
        for (ready, restarts, state) in [
            (false, 0, serde_json::json!({ "running": {} })),
            (
                false,
                0,
                serde_json::json!({ "waiting": { "reason": "ContainerCreating" } }),
            ),
            (true, 1, serde_json::json!({ "running": {} })),
        ] {
            let v = gc(
                serde_json::json!({ "name": "cache-gc", "image": "i", "imageID": "",
                "ready": ready, "restartCount": restarts, "state": state,
                "lastState": { "terminated": { "exitCode": 1 } } }),
            );
            assert_eq!((v.state, v.detail), (SlotState::Starting, None));
        }
    }

    #[test]
    fn drained_once_out_of_the_endpoints_and_the_drain_time_passed() {
        let mut v = running(true, 0);
        v["metadata"] = serde_json::json!({
            "labels": { LABEL_SERVING: "false" },
            "annotations": { ANNOTATION_DRAIN_SINCE: "8000" },
        });
        let p = pod(v);
        let drain = Duration::from_secs(5);
        assert_eq!(
            view(&p, true, drain, 20_000).map(|v| v.state),
            Some(SlotState::Draining)
        );
        assert_eq!(
            view(&p, false, drain, 10_000).map(|v| v.state),
            Some(SlotState::Draining)
        );
        assert_eq!(
            view(&p, false, drain, 13_000).map(|v| v.state),
            Some(SlotState::Drained)
        );
    }

    #[test]
    fn deleting_is_stopping_and_foreign_pods_are_ignored() {
        let mut v = running(true, 0);
        v["metadata"] = serde_json::json!({ "deletionTimestamp": "2026-01-01T00:00:00Z" });
        assert_eq!(st(&pod(v)), SlotState::Stopping);
        let foreign: Pod =
            serde_json::from_value(serde_json::json!({ "metadata": { "name": "x" } }))
                .expect("pod");
        assert_eq!(view(&foreign, false, Duration::ZERO, 0), None);
    }
}
