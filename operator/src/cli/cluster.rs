//! `kresctl kube ...`: a KnotResolver in a cluster, through the Kubernetes API (kubeconfig):
//! its status, its revision history (the immutable per-revision ConfigMaps and `.status`) and a
//! rollback to a previous revision's `spec.config`.
//!
//! The views are pure functions of the objects read ([`status_view`], [`history`],
//! [`rollback_target`]); the I/O around them is a few reads and, for a rollback, one JSON patch.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kres_crd::k8s::{KnotResolver, KnotResolverStatus};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, ResourceExt};
use serde_json::{Value, json};

use super::online::{EXIT_API, block_on, print_history_json, print_status_json};
use crate::backend::pods::build::{KEY_CONFIG, LABEL_REVISION, selector_string};
use crate::backend::pods::observe;
use crate::host::plane::changed_keys;
use crate::http::plane::HistoryEntry;

/// The field manager of kresctl's writes (`metadata.managedFields`).
pub const FIELD_MANAGER: &str = "kresctl";

/// How to reach the cluster.
#[derive(Debug, Args)]
pub struct KubeArgs {
    /// Kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or the in-cluster account).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context (default: its current context).
    #[arg(long)]
    pub context: Option<String>,
    /// Namespace of the KnotResolver (default: the context's namespace).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: KubeCmd,
}

/// `kresctl kube` subcommands.
#[derive(Debug, Subcommand)]
pub enum KubeCmd {
    /// Show a KnotResolver's status: phase, conditions, revisions, pods, last failure.
    Status {
        /// The KnotResolver.
        name: String,
    },
    /// List the revisions still kept (their ConfigMaps): when, what became of each, what changed.
    History {
        /// The KnotResolver.
        name: String,
    },
    /// Make a previous revision's config the desired `spec.config` again (default: the last
    /// good one while another is being rolled out or failed, else the newest earlier one);
    /// waits until the resolver converged on it or rejected it.
    Rollback {
        /// The KnotResolver.
        name: String,
        /// The revision (from `kresctl kube history`).
        revision: Option<String>,
        /// Return once the change is made, without waiting for the rollout.
        #[arg(long)]
        no_wait: bool,
    },
}

/// What became of a revision, as far as `.status` and the kept ConfigMaps tell.
fn revision_state(status: &KnotResolverStatus, revision: &str) -> &'static str {
    if status
        .failed_revisions
        .iter()
        .any(|f| f.revision == revision)
    {
        "failed"
    } else if status.current_revision.as_deref() == Some(revision) {
        "good"
    } else if status.update_revision.as_deref() == Some(revision) {
        "pending"
    } else {
        // Kept by the operator, neither the last good one nor failed: an earlier revision.
        "previous"
    }
}

fn revision_of(cm: &ConfigMap) -> Option<&str> {
    cm.metadata
        .labels
        .as_ref()?
        .get(LABEL_REVISION)
        .map(String::as_str)
}

fn created_at(cm: &ConfigMap) -> String {
    cm.metadata
        .creation_timestamp
        .as_ref()
        .map(|t| crate::time::rfc3339_secs(u64::try_from(t.0.as_millisecond()).unwrap_or(0)))
        .unwrap_or_default()
}

fn config_text(cm: &ConfigMap) -> Option<&str> {
    cm.data.as_ref()?.get(KEY_CONFIG).map(String::as_str)
}

/// `spec.config` as the revision's ConfigMap keeps it (`Null` if missing or not JSON).
fn config_of(cm: &ConfigMap) -> Value {
    config_text(cm)
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or(Value::Null)
}

/// Creation order: the creation time (whole seconds), then the resourceVersion the
/// ConfigMap was created with (immutable ConfigMaps are never updated; the apiserver's
/// resourceVersions grow, though clients are told to treat them as opaque).
fn creation_order(cm: &ConfigMap) -> (Option<k8s_openapi::jiff::Timestamp>, u64, String) {
    (
        cm.metadata.creation_timestamp.as_ref().map(|t| t.0),
        cm.metadata
            .resource_version
            .as_deref()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        cm.name_any(),
    )
}

/// The kept revisions of a resolver, newest first: its revision ConfigMaps ordered by creation
/// (equal times: by name), with the state `.status` gives each.
pub fn history(status: &KnotResolverStatus, config_maps: &[ConfigMap]) -> Vec<HistoryEntry> {
    let mut cms: Vec<&ConfigMap> = config_maps
        .iter()
        .filter(|c| revision_of(c).is_some())
        .collect();
    cms.sort_by_key(|c| creation_order(c));
    let mut out = Vec::with_capacity(cms.len());
    let mut previous: Option<Value> = None;
    for cm in cms {
        let revision = revision_of(cm).unwrap_or_default();
        let failure = status
            .failed_revisions
            .iter()
            .find(|f| f.revision == revision);
        let config = config_of(cm);
        out.push(HistoryEntry {
            revision: revision.into(),
            state: revision_state(status, revision).into(),
            desired: status.update_revision.as_deref() == Some(revision),
            last_good: status.current_revision.as_deref() == Some(revision),
            desired_at: created_at(cm),
            changed_at: failure
                .and_then(|f| f.time.clone())
                .unwrap_or_else(|| created_at(cm)),
            // spec.config as given (the Kubernetes profile), compared key by key.
            changed: previous
                .as_ref()
                .map(|p| changed_keys(p, &config))
                .unwrap_or_default(),
            reason: failure.map(|f| f.message.clone()),
        });
        previous = Some(config);
    }
    out.reverse();
    out
}

/// Why a rollback cannot be done.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RollbackError {
    /// The revision is not kept (no ConfigMap).
    #[error(
        "{name} has no revision {revision} (`kresctl kube history {name}` lists the kept ones)"
    )]
    Unknown {
        /// The resolver.
        name: String,
        /// The revision asked for.
        revision: String,
    },
    /// The revision failed.
    #[error("revision {revision} failed and is not rolled back to: {reason}")]
    Failed {
        /// The revision asked for.
        revision: String,
        /// Why it failed.
        reason: String,
    },
    /// Nothing to roll back to.
    #[error("{0} has no earlier revision to roll back to")]
    Nothing(String),
    /// The revision's ConfigMap has no config.
    #[error("the ConfigMap of revision {0} holds no {KEY_CONFIG}")]
    NoConfig(String),
}

/// The revision a rollback of `name` makes desired, and its `spec.config`: `asked`, else the
/// last good one when the desired one differs (failed or still rolling out), else the newest
/// earlier kept one. Failed and unknown revisions are refused.
pub fn rollback_target(
    name: &str,
    status: &KnotResolverStatus,
    config_maps: &[ConfigMap],
    asked: Option<&str>,
) -> Result<(String, Value), RollbackError> {
    let entries = history(status, config_maps);
    let revision = match asked {
        Some(r) => r.to_string(),
        None => match (&status.current_revision, &status.update_revision) {
            (Some(cur), upd) if upd.as_ref() != Some(cur) => cur.clone(),
            _ => entries
                .iter()
                .find(|e| e.state == "previous")
                .map(|e| e.revision.clone())
                .ok_or_else(|| RollbackError::Nothing(name.into()))?,
        },
    };
    let Some(entry) = entries.iter().find(|e| e.revision == revision) else {
        return Err(RollbackError::Unknown {
            name: name.into(),
            revision,
        });
    };
    if entry.state == "failed" {
        return Err(RollbackError::Failed {
            revision,
            reason: entry.reason.clone().unwrap_or_default(),
        });
    }
    let config = config_maps
        .iter()
        .find(|c| revision_of(c) == Some(revision.as_str()))
        .map(config_of)
        .filter(Value::is_object)
        .ok_or_else(|| RollbackError::NoConfig(revision.clone()))?;
    Ok((revision, config))
}

/// A KnotResolver's status and pods in the shape `kresctl status` prints (`GET /status`).
pub fn status_view(kres: &KnotResolver, pods: &[Pod], now_unix_ms: u64) -> Value {
    let st = kres.status.clone().unwrap_or_default();
    let conditions: Vec<Value> = st
        .conditions
        .iter()
        .map(|c| json!({ "type": c.type_, "status": c.status, "reason": c.reason, "message": c.message }))
        .collect();
    let mut workers: Vec<(String, Value)> = pods
        .iter()
        .filter_map(|p| {
            let v = observe::view(p, observe::is_serving(p), Duration::ZERO, now_unix_ms)?;
            let ready_since = p
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready" && c.status == "True"))
                .and_then(|c| c.last_transition_time.as_ref())
                .map(|t| {
                    crate::time::rfc3339_secs(u64::try_from(t.0.as_millisecond()).unwrap_or(0))
                });
            let slot = v.slot.worker_id();
            Some((
                slot.clone(),
                json!({
                    "slot": slot,
                    "pod": p.name_any(),
                    "state": v.state,
                    "revision": v.revision,
                    "ready-since": ready_since,
                    "detail": v.detail,
                }),
            ))
        })
        .collect();
    workers.sort_by(|a, b| a.0.cmp(&b.0));
    json!({
        "phase": st.phase.as_ref().map(|p| format!("{p:?}")),
        "conditions": conditions,
        "current-revision": st.current_revision,
        "target-revision": st.update_revision,
        "replicas": { "desired": kres.spec.replicas, "ready": st.ready_replicas, "updated": st.updated_replicas },
        "workers": workers.into_iter().map(|(_, w)| w).collect::<Vec<_>>(),
        "last-failure": st.last_failure.as_ref().map(|f| json!({
            "revision": f.revision, "time": f.time, "reason": f.message,
        })),
    })
}

/// The JSON merge patch (RFC 7386) that turns `old` into `new`: keys `new` lacks are removed
/// (`null`), objects are patched key by key, everything else is replaced.
pub fn merge_patch(old: &Value, new: &Value) -> Value {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut out = serde_json::Map::new();
            for k in o.keys().filter(|k| !n.contains_key(*k)) {
                out.insert(k.clone(), Value::Null);
            }
            for (k, v) in n {
                match o.get(k) {
                    Some(old_v) if old_v == v => {}
                    Some(old_v) => {
                        out.insert(k.clone(), merge_patch(old_v, v));
                    }
                    None => {
                        out.insert(k.clone(), v.clone());
                    }
                }
            }
            Value::Object(out)
        }
        _ => new.clone(),
    }
}

async fn client(args: &KubeArgs) -> Result<(Client, String), String> {
    let options = KubeConfigOptions {
        context: args.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = match &args.kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?;
            Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?
        }
        None if args.context.is_some() => Config::from_kubeconfig(&options)
            .await
            .map_err(|e| format!("kubeconfig: {e}"))?,
        None => Config::infer()
            .await
            .map_err(|e| format!("kubeconfig: {e}"))?,
    };
    let ns = args
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config).map_err(|e| format!("kubernetes client: {e}"))?;
    Ok((client, ns))
}

fn api_err(what: &str) -> impl Fn(kube::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

async fn revision_config_maps(
    client: &Client,
    ns: &str,
    name: &str,
) -> Result<Vec<ConfigMap>, String> {
    Ok(Api::<ConfigMap>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&selector_string(name)))
        .await
        .map_err(api_err("list configmaps"))?
        .items)
}

/// Wait until `name` observed `generation` and converged on its desired revision (Ok) or
/// rejected it (Err, with kresd's reason).
async fn wait_rollout(
    api: &Api<KnotResolver>,
    name: &str,
    generation: i64,
    timeout: Duration,
) -> Result<String, String> {
    use kube::runtime::wait::await_condition;
    let outcome = |k: Option<&KnotResolver>| -> Option<Result<String, String>> {
        let s = k?.status.as_ref()?;
        if s.observed_generation? < generation {
            return None;
        }
        let upd = s.update_revision.clone()?;
        if let Some(f) = s.failed_revisions.iter().find(|f| f.revision == upd) {
            return Some(Err(format!("revision {upd} failed: {}", f.message)));
        }
        let available = s
            .conditions
            .iter()
            .any(|c| c.type_ == "Available" && c.status == "True");
        (s.current_revision.as_ref() == Some(&upd) && available).then_some(Ok(upd))
    };
    let cond = move |k: Option<&KnotResolver>| outcome(k).is_some();
    let found = tokio::time::timeout(timeout, await_condition(api.clone(), name, cond))
        .await
        .map_err(|_| format!("{name} did not converge within {timeout:?}"))?
        .map_err(|e| format!("watch {name}: {e}"))?;
    outcome(found.as_ref()).unwrap_or_else(|| Err(format!("{name} was deleted")))
}

async fn run_async(args: KubeArgs, json_out: bool, timeout: Duration) -> Result<(), String> {
    let (client, ns) = client(&args).await?;
    let api: Api<KnotResolver> = Api::namespaced(client.clone(), &ns);
    match args.command {
        KubeCmd::Status { name } => {
            let kres = api.get(&name).await.map_err(api_err(&name))?;
            let pods = Api::<Pod>::namespaced(client.clone(), &ns)
                .list(&ListParams::default().labels(&selector_string(&name)))
                .await
                .map_err(api_err("list pods"))?
                .items;
            let view = status_view(&kres, &pods, crate::time::unix_ms());
            if json_out {
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&view).unwrap_or_default()
                );
            } else {
                outln!(
                    "replicas:         {} desired, {} ready, {} up to date",
                    kres.spec.replicas,
                    view.pointer("/replicas/ready").unwrap_or(&Value::Null),
                    view.pointer("/replicas/updated").unwrap_or(&Value::Null)
                );
                print_status_json(&view);
            }
        }
        KubeCmd::History { name } => {
            let kres = api.get(&name).await.map_err(api_err(&name))?;
            let cms = revision_config_maps(&client, &ns, &name).await?;
            let v = json!({ "revisions": history(&kres.status.unwrap_or_default(), &cms) });
            if json_out {
                outln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                print_history_json(&v);
            }
        }
        KubeCmd::Rollback {
            name,
            revision,
            no_wait,
        } => {
            let kres = api.get(&name).await.map_err(api_err(&name))?;
            let cms = revision_config_maps(&client, &ns, &name).await?;
            let status = kres.status.clone().unwrap_or_default();
            let (target, config) = rollback_target(&name, &status, &cms, revision.as_deref())
                .map_err(|e| e.to_string())?;
            // spec.config becomes the revision's as a whole, only if the object is still the
            // one read (resourceVersion: else 409 Conflict).
            let patch = json!({
                "metadata": { "resourceVersion": kres.resource_version() },
                "spec": { "config": merge_patch(&kres.spec.config, &config) },
            });
            let params = PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..PatchParams::default()
            };
            let patched = api
                .patch(&name, &params, &Patch::Merge(patch))
                .await
                .map_err(api_err(&format!("patch {name}")))?;
            let generation = patched.metadata.generation.unwrap_or(0);
            if no_wait {
                outln!(
                    "{name}: spec.config of revision {target} is desired (generation {generation})"
                );
                return Ok(());
            }
            let now = wait_rollout(&api, &name, generation, timeout).await?;
            if now == target {
                outln!("rolled back: {name} runs revision {now}");
            } else {
                // The pod template (image, podTemplate) changed since: same config, new revision.
                outln!(
                    "rolled back: {name} runs revision {now} (the config of {target} with today's pod template)"
                );
            }
        }
    }
    Ok(())
}

/// Run `kresctl kube ...`; `json_out`: print JSON; `timeout`: how long a rollback waits.
pub fn run(args: KubeArgs, json_out: bool, timeout: Duration) -> ExitCode {
    block_on(async move {
        match run_async(args, json_out, timeout).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(msg) => {
                eprintln!("error: {msg}");
                ExitCode::from(EXIT_API)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kres_crd::k8s::RevisionFailure;

    fn cm(revision: &str, second: i64, config: &str) -> ConfigMap {
        serde_json::from_value(json!({
            "metadata": {
                "name": format!("r-{revision}"),
                "labels": { LABEL_REVISION: revision },
                "creationTimestamp": Time(k8s_openapi::jiff::Timestamp::from_second(1_700_000_000 + second).expect("ts")),
            },
            "data": { KEY_CONFIG: config },
        }))
        .expect("configmap")
    }

    fn status(cur: &str, upd: &str, failed: &[&str]) -> KnotResolverStatus {
        KnotResolverStatus {
            current_revision: Some(cur.into()),
            update_revision: Some(upd.into()),
            failed_revisions: failed
                .iter()
                .map(|r| RevisionFailure {
                    revision: (*r).into(),
                    reason: "RevisionFailed".into(),
                    message: "error: x".into(),
                    time: Some("2026-11-30T00:00:00Z".into()),
                })
                .collect(),
            ..KnotResolverStatus::default()
        }
    }

    fn cms() -> Vec<ConfigMap> {
        vec![
            cm("b", 2, r#"{"cache":{"size-max":"200M"}}"#),
            cm("a", 1, r#"{"cache":{"size-max":"100M"}}"#),
            cm(
                "c",
                3,
                r#"{"cache":{"size-max":"200M"},"lua":{"script":"error('x')"}}"#,
            ),
        ]
    }

    #[test]
    fn history_is_newest_first_with_states_and_changed_sections() {
        let h = history(&status("b", "c", &["c"]), &cms());
        let rows: Vec<(&str, &str, bool, bool)> = h
            .iter()
            .map(|e| {
                (
                    e.revision.as_str(),
                    e.state.as_str(),
                    e.desired,
                    e.last_good,
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                ("c", "failed", true, false),
                ("b", "good", false, true),
                ("a", "previous", false, false)
            ]
        );
        assert_eq!(h[0].changed, ["lua"]);
        assert_eq!(h[1].changed, ["cache"]);
        assert!(h[2].changed.is_empty());
        assert_eq!(h[0].reason.as_deref(), Some("error: x"));
    }

    #[test]
    fn status_view_has_the_host_shape_with_pods_as_workers() {
        let kres: KnotResolver = serde_json::from_value(json!({
            "apiVersion": "resolver.kres-operator.io/v1alpha1",
            "kind": "KnotResolver",
            "metadata": { "name": "r" },
            "spec": { "replicas": 2, "config": {} },
            "status": {
                "currentRevision": "a", "updateRevision": "b", "phase": "Canary",
                "readyReplicas": 2, "updatedReplicas": 0,
                "conditions": [{ "type": "Available", "status": "True", "reason": "AsExpected",
                    "message": "2 ready", "lastTransitionTime": "2026-11-30T00:00:00Z" }],
            },
        }))
        .expect("resolver");
        let pod = |name: &str, slot: &str| -> Pod {
            serde_json::from_value(json!({
                "metadata": { "name": name, "labels": {
                    crate::backend::pods::build::LABEL_SLOT: slot, LABEL_REVISION: "a" } },
                "status": { "phase": "Pending" },
            }))
            .expect("pod")
        };
        let v = status_view(
            &kres,
            &[pod("r-1", "1"), pod("r-canary", "canary"), pod("r-0", "0")],
            0,
        );
        assert_eq!(v["phase"], "Canary");
        assert_eq!(v["current-revision"], "a");
        assert_eq!(v["target-revision"], "b");
        assert_eq!(v["conditions"][0]["reason"], "AsExpected");
        let workers: Vec<(&str, &str)> = v["workers"]
            .as_array()
            .expect("workers")
            .iter()
            .map(|w| {
                (
                    w["slot"].as_str().unwrap_or(""),
                    w["pod"].as_str().unwrap_or(""),
                )
            })
            .collect();
        assert_eq!(
            workers,
            [("0", "r-0"), ("1", "r-1"), ("canary", "r-canary")]
        );
        assert_eq!(v["workers"][0]["state"], "pending");
    }

    #[test]
    fn merge_patch_turns_old_into_new() {
        let old = json!({"a": 1, "b": {"c": 1, "d": 2}, "e": [1], "f": "same"});
        let new = json!({"b": {"c": 1, "x": 3}, "e": [2], "f": "same", "g": {"h": 1}});
        let patch = merge_patch(&old, &new);
        assert_eq!(
            patch,
            json!({"a": null, "b": {"d": null, "x": 3}, "e": [2], "g": {"h": 1}})
        );
        let mut applied = old.clone();
        json_patch::merge(&mut applied, &patch);
        assert_eq!(applied, new);
    }

    #[test]
    fn rollback_defaults_and_refusals() {
        let cms = cms();
        // A failed target: back to the last good one.
        let (rev, config) =
            rollback_target("r", &status("b", "c", &["c"]), &cms, None).expect("ok");
        assert_eq!(rev, "b");
        assert_eq!(config, json!({"cache": {"size-max": "200M"}}));
        // Converged: back to the newest earlier one.
        let (rev, _) = rollback_target("r", &status("c", "c", &[]), &cms, None).expect("ok");
        assert_eq!(rev, "b");
        assert_eq!(
            rollback_target("r", &status("b", "c", &["c"]), &cms, Some("c")),
            Err(RollbackError::Failed {
                revision: "c".into(),
                reason: "error: x".into()
            })
        );
        assert!(matches!(
            rollback_target("r", &status("b", "b", &[]), &cms, Some("zzz")),
            Err(RollbackError::Unknown { .. })
        ));
        assert_eq!(
            rollback_target("r", &status("a", "a", &[]), &cms[1..2], None),
            Err(RollbackError::Nothing("r".into()))
        );
    }
}
