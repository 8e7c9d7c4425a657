//! `kres-operator kube`: a kube-rs `Controller` on KnotResolver. Each resolver is validated
//! (`validate_spec` through the pods pipeline); a refused spec gets Degraded `InvalidConfig` and
//! a Warning event and nothing is touched; a valid one is stepped by the same `reconcile_once`
//! as host mode over a [`PodsBackend`], with its durable rollout state kept in `.status`.

pub mod metrics;
pub mod serve;
pub mod status;
mod tracked;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::Timestamp;
use kres_crd::k8s::{KnotResolver, KnotResolverStatus};
use kube::api::{Api, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use tokio::sync::Notify;
use tracing::Instrument;

use crate::backend::pods::backend::{Inputs, PodsBackend, Stores};
use crate::backend::pods::build::{self, LABEL_MANAGED_BY, MANAGER, Owner};
use crate::backend::pods::render::{PodSettings, desired_for_pods};
use crate::metrics::OperatorMetrics;
use crate::reconcile::executor::{Context, Next, Target, reconcile_once};
use crate::reconcile::status::{Status, StatusSink};
use crate::reconcile::{Durable, RevisionStore, Slot, SlotState, StoreError};

/// Settings of `kres-operator kube`.
#[derive(Clone, Debug)]
pub struct KubeOptions {
    /// Namespaces to watch (empty: every namespace).
    pub namespaces: Vec<String>,
    /// Take part in leader election; reconcile only while holding the Lease.
    pub leader_elect: bool,
    /// Name of the Lease.
    pub lease_name: String,
    /// Namespace of the Lease.
    pub lease_namespace: Option<String>,
    /// Address of /healthz, /readyz, /metrics, /status.
    pub listen: SocketAddr,
    /// Pod settings (default image, probe command).
    pub pods: PodSettings,
}

/// The status last published by a resolver's reconciler.
#[derive(Clone, Default)]
struct LastStatus(Arc<Mutex<Option<Status>>>);

impl StatusSink for LastStatus {
    fn publish(&self, status: &Status) {
        if let Ok(mut s) = self.0.lock() {
            *s = Some(status.clone());
        }
    }
}

/// The durable rollout state as read from `.status` when the resolver was first seen; saved
/// by writing `.status` (current and target revision, failed revisions).
struct StatusStore(Durable);

impl RevisionStore for StatusStore {
    fn load(&self) -> Result<Durable, StoreError> {
        Ok(self.0.clone())
    }

    fn save(&mut self, state: &Durable) -> Result<(), StoreError> {
        self.0 = state.clone();
        Ok(())
    }
}

/// One resolver's reconciler state, kept across reconciles.
struct Resolver {
    /// The uid of the KnotResolver this state is for (a new object of the same name starts
    /// afresh).
    uid: String,
    ctx: Context<PodsBackend>,
    status: LastStatus,
    /// The `.status` last written.
    written: Mutex<Option<KnotResolverStatus>>,
    /// How many of the reconciler's events were published as Kubernetes events (by time).
    events_until: Mutex<u64>,
    /// What the rollout last looked like and since when (Unix ms): the progress deadline.
    progress: Mutex<(String, u64)>,
    /// The target revision whose canary was last announced ready.
    canary_ready: Mutex<Option<String>>,
}

struct Shared {
    client: Client,
    settings: PodSettings,
    stores: Stores,
    recorder: Recorder,
    metrics: Arc<OperatorMetrics>,
    served: Arc<serve::Served>,
    resolvers: Mutex<HashMap<(String, String), Arc<Resolver>>>,
}

/// Errors of a reconcile (retried with back-off by the controller).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("{0}: {1}")]
    Api(String, #[source] kube::Error),
    /// The object is missing something the API always sets.
    #[error("{0}")]
    Object(String),
}

fn managed() -> watcher::Config {
    watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGER}"))
}

fn api<K>(client: &Client, ns: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// A reflector store for `K` with every event signalled on `changed`.
fn reflect<K>(api: Api<K>, cfg: watcher::Config, changed: Arc<Notify>) -> Store<K>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    reflect_deletes(api, cfg, changed, None)
}

/// [`reflect`], also sending on `deleted` each deletion the store has taken in (so a reconcile
/// it triggers sees the object gone).
fn reflect_deletes<K>(
    api: Api<K>,
    cfg: watcher::Config,
    changed: Arc<Notify>,
    deleted: Option<tokio::sync::mpsc::UnboundedSender<()>>,
) -> Store<K>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, cfg).default_backoff());
    tokio::spawn(stream.for_each(move |ev| {
        if let (Ok(watcher::Event::Delete(_)), Some(tx)) = (&ev, &deleted) {
            let _ = tx.send(());
        }
        changed.notify_waiters();
        std::future::ready(())
    }));
    reader
}

/// Run the controller until it fails (or, with leader election, the lease is lost).
pub async fn run(opts: KubeOptions) -> Result<(), String> {
    let client = Client::try_default()
        .await
        .map_err(|e| format!("kubernetes client: {e}"))?;
    let metrics = Arc::new(OperatorMetrics::default());
    let mut registry = prometheus_client::registry::Registry::default();
    metrics.register(&mut registry);
    let resolver_metrics = metrics::ResolverMetrics::default();
    resolver_metrics.register(&mut registry);
    let served = Arc::new(serve::Served {
        registry,
        statuses: Mutex::new(Default::default()),
        resolvers: resolver_metrics,
        unsynced: Mutex::new(Default::default()),
    });
    serve::serve(opts.listen, served.clone()).await?;
    let scopes: Vec<Option<String>> = if opts.namespaces.is_empty() {
        vec![None]
    } else {
        opts.namespaces.iter().cloned().map(Some).collect()
    };
    // Reflectors first: a standby is warm when it takes over.
    let mut controllers = Vec::new();
    for scope in scopes {
        let changed = Arc::new(Notify::new());
        let ns = scope.as_deref();
        // An owned ConfigMap, Service or PDB deleted by hand: every resolver of the scope is
        // reconciled again (the backend re-creates what its resolver lacks).
        let (deleted, deletions) = tokio::sync::mpsc::unbounded_channel();
        let stores = Stores {
            pods: reflect(api::<Pod>(&client, ns), managed(), changed.clone()),
            config_maps: reflect_deletes(
                api::<ConfigMap>(&client, ns),
                managed(),
                changed.clone(),
                Some(deleted.clone()),
            ),
            slices: reflect(
                api::<EndpointSlice>(&client, ns),
                managed(),
                changed.clone(),
            ),
            services: reflect_deletes(
                api::<Service>(&client, ns),
                managed(),
                changed.clone(),
                Some(deleted.clone()),
            ),
            pdbs: reflect_deletes(
                api::<PodDisruptionBudget>(&client, ns),
                managed(),
                changed.clone(),
                Some(deleted),
            ),
            changed,
        };
        let shared = Arc::new(Shared {
            client: client.clone(),
            settings: opts.pods.clone(),
            stores,
            recorder: Recorder::new(
                client.clone(),
                Reporter {
                    controller: MANAGER.into(),
                    instance: std::env::var("POD_NAME").ok(),
                },
            ),
            metrics: metrics.clone(),
            served: served.clone(),
            resolvers: Mutex::new(HashMap::new()),
        });
        tracked::forget_deleted(api::<KnotResolver>(&client, ns), shared.clone());
        controllers.push((
            api::<DeserializeGuard<KnotResolver>>(&client, ns),
            api::<Pod>(&client, ns),
            deletions,
            shared,
        ));
    }
    let scoped: Vec<(Option<&str>, &Stores)> = controllers
        .iter()
        .map(|(_, pods, _, shared)| (pods.namespace(), &shared.stores))
        .collect();
    wait_synced(&scoped, &served).await;
    if opts.leader_elect {
        wait_for_lease(&client, &opts).await?;
    }
    let runs = controllers
        .into_iter()
        .map(|(resolvers, pods, deletions, shared)| {
            let deletions = futures::stream::unfold(deletions, |mut rx| async move {
                rx.recv().await.map(|()| ((), rx))
            });
            // DeserializeGuard: an object that does not deserialize is reported, not a watch error
            // that would stop every other resolver's reconciles.
            Controller::new(resolvers, watcher::Config::default())
                .owns(pods, managed())
                .reconcile_all_on(deletions)
                .run(reconcile, error_policy, shared)
                .for_each(|r| {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "reconcile");
                    }
                    std::future::ready(())
                })
        });
    futures::future::join_all(runs).await;
    Ok(())
}

/// Wait until every watch cache of every scope has had its first list. A reconcile on a cold
/// cache would see no pods and act on that; until then `/readyz` names the caches still missing,
/// and every 30 s a warning does (a missing list or watch grant keeps a cache cold).
async fn wait_synced(scopes: &[(Option<&str>, &Stores)], served: &serve::Served) {
    let mut waits: Vec<(String, futures::future::BoxFuture<'_, ()>)> = Vec::new();
    for (ns, stores) in scopes {
        let name = |kind: &str| match ns {
            Some(ns) => format!("{ns}/{kind}"),
            None => kind.to_string(),
        };
        waits.push((name("pods"), Box::pin(ready(&stores.pods))));
        waits.push((name("configmaps"), Box::pin(ready(&stores.config_maps))));
        waits.push((name("endpointslices"), Box::pin(ready(&stores.slices))));
        waits.push((name("services"), Box::pin(ready(&stores.services))));
        waits.push((name("poddisruptionbudgets"), Box::pin(ready(&stores.pdbs))));
    }
    if let Ok(mut u) = served.unsynced.lock() {
        u.extend(waits.iter().map(|(name, _)| name.clone()));
    }
    let all = futures::future::join_all(waits.into_iter().map(|(name, wait)| async move {
        wait.await;
        if let Ok(mut u) = served.unsynced.lock() {
            u.remove(&name);
        }
    }));
    tokio::pin!(all);
    while tokio::time::timeout(Duration::from_secs(30), &mut all)
        .await
        .is_err()
    {
        tracing::warn!(
            caches = %served.unsynced_list(),
            "waiting for the watch caches (check the list and watch grants)"
        );
    }
    tracing::info!("watch caches synced");
}

/// Until `store` has had its first list (or its writer is gone).
async fn ready<K>(store: &Store<K>)
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    let _ = store.wait_until_ready().await;
}

/// Block until this process holds the Lease; exit the process when it is lost later.
async fn wait_for_lease(client: &Client, opts: &KubeOptions) -> Result<(), String> {
    use kube_lease_manager::{LeaseManagerBuilder, LeaseParams};
    let ns = opts
        .lease_namespace
        .clone()
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .ok_or("--lease-namespace (or $POD_NAMESPACE) is required with --leader-elect")?;
    let identity = std::env::var("POD_NAME")
        .unwrap_or_else(|_| format!("kres-operator-{}", std::process::id()));
    // Building reads (or creates) the Lease. An error here is retried, not fatal: a standby that
    // exits on a passing API error (a RoleBinding the apiserver's RBAC cache has not seen yet, a
    // restarting apiserver) would leave the resolvers with no warm standby.
    let mut pause = Duration::from_millis(250);
    let manager = loop {
        match LeaseManagerBuilder::new(client.clone(), &opts.lease_name)
            .with_namespace(ns.clone())
            .with_parameters(LeaseParams::new(identity.clone(), 15, 5).with_field_manager(MANAGER))
            .build()
            .await
        {
            Ok(manager) => break manager,
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?pause, "lease: cannot read the Lease");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(8));
            }
        }
    };
    let (mut rx, _task) = manager.watch().await;
    while !*rx.borrow_and_update() {
        rx.changed()
            .await
            .map_err(|_| "lease manager stopped".to_string())?;
    }
    tracing::info!(lease = %opts.lease_name, "leader");
    tokio::spawn(async move {
        loop {
            if rx.changed().await.is_err() || !*rx.borrow() {
                tracing::error!("leader lease lost: exiting");
                std::process::exit(1);
            }
        }
    });
    Ok(())
}

fn error_policy(_: Arc<DeserializeGuard<KnotResolver>>, e: &Error, _: Arc<Shared>) -> Action {
    tracing::warn!(error = %e, "reconcile failed");
    Action::requeue(Duration::from_secs(2))
}

async fn reconcile(
    obj: Arc<DeserializeGuard<KnotResolver>>,
    sh: Arc<Shared>,
) -> Result<Action, Error> {
    let (ns, name) = (obj.namespace().unwrap_or_default(), obj.name_any());
    let span = tracing::info_span!("resolver", ns, name);
    match &obj.0 {
        Ok(kres) => {
            let started = std::time::Instant::now();
            let deleting = kres.metadata.deletion_timestamp.is_some();
            let result = reconcile_resolver(Arc::new(kres.clone()), sh.clone())
                .instrument(span)
                .await;
            if !deleting {
                tracked::record_reconcile(&sh, &ns, &name, result.is_ok(), started.elapsed());
            }
            result
        }
        Err(invalid) => {
            // Not a KnotResolver this operator can read (e.g. a value outside the Rust type's
            // range that the schema let through): reported on the object, nothing touched.
            let message = format!("the object cannot be read: {}", invalid.error);
            let ev = Event {
                type_: EventType::Warning,
                reason: "InvalidObject".into(),
                note: Some(truncated(&message)),
                action: "Reconcile".into(),
                secondary: None,
            };
            async {
                tracing::warn!(%message, "invalid object");
                if let Err(e) = sh.recorder.publish(&ev, &obj.object_ref(&())).await {
                    tracing::warn!(error = %e, "event");
                }
            }
            .instrument(span)
            .await;
            Ok(Action::await_change())
        }
    }
}

async fn reconcile_resolver(kres: Arc<KnotResolver>, sh: Arc<Shared>) -> Result<Action, Error> {
    let name = kres.name_any();
    let ns = kres
        .namespace()
        .ok_or_else(|| Error::Object(format!("{name}: no namespace")))?;
    let key = (ns.clone(), name.clone());
    if kres.metadata.deletion_timestamp.is_some() {
        // Owner references garbage-collect pods, ConfigMaps, the Service and the PDB.
        tracked::forget(&sh, &ns, &name);
        return Ok(Action::await_change());
    }
    let generation = kres.metadata.generation.unwrap_or(0);
    let api: Api<KnotResolver> = Api::namespaced(sh.client.clone(), &ns);
    let pd = match desired_for_pods(&kres.spec, &sh.settings) {
        Ok(pd) => pd,
        Err(errors) => {
            let message = errors.to_string();
            tracing::warn!(%message, "invalid spec");
            let new = status::invalid(
                kres.status.as_ref(),
                &name,
                generation,
                &message,
                Timestamp::now(),
            );
            tracked::record_invalid(&sh, &ns, &name, &message);
            if kres.status.as_ref() != Some(&new) {
                write_status(&api, &name, &new).await?;
                event(&sh, &kres, EventType::Warning, "InvalidConfig", &message).await;
            }
            return Ok(Action::await_change());
        }
    };
    let owner = Owner {
        name: name.clone(),
        namespace: ns.clone(),
        reference: kres
            .controller_owner_ref(&())
            .ok_or_else(|| Error::Object(format!("{name}: no uid")))?,
    };
    let inputs = Inputs {
        config: kres.spec.config.clone(),
        service: build::service(&owner, &kres.spec, &pd.template.ports),
        pdb: build::pod_disruption_budget(&owner, &kres.spec),
        drain: pd.drain,
    };
    let resolver = {
        let mut all = sh
            .resolvers
            .lock()
            .map_err(|_| Error::Object("resolver table poisoned".into()))?;
        match all.get(&key) {
            Some(r) if Some(&r.uid) == kres.metadata.uid.as_ref() => r.clone(),
            _ => {
                let last = LastStatus::default();
                let backend =
                    PodsBackend::new(sh.client.clone(), owner, sh.stores.clone(), inputs.clone());
                let ctx = Context::new(
                    backend,
                    Box::new(StatusStore(status::durable_from(kres.status.as_ref()))),
                    Box::new(last.clone()),
                    sh.metrics.clone(),
                )
                .map_err(|e| Error::Object(e.to_string()))?;
                let r = Arc::new(Resolver {
                    uid: kres.metadata.uid.clone().unwrap_or_default(),
                    ctx,
                    status: last,
                    written: Mutex::new(kres.status.clone()),
                    events_until: Mutex::new(crate::time::unix_ms()),
                    progress: Mutex::new((String::new(), crate::time::unix_ms())),
                    canary_ready: Mutex::new(None),
                });
                all.insert(key, r.clone());
                r
            }
        }
    };
    resolver.ctx.backend.set_inputs(inputs);
    let target = Target {
        seq: u64::try_from(generation).unwrap_or(0),
        desired: pd.desired,
        text: kres.spec.config.to_string(),
        revert_on_reject: false,
    };
    let next = match reconcile_once(&target, &resolver.ctx).await {
        Ok(n) => n,
        Err(e) => e.retry(),
    };
    publish(
        &sh,
        &kres,
        &resolver,
        &api,
        generation,
        pd.progress_deadline,
    )
    .await?;
    Ok(match next {
        Next::Now => Action::requeue(Duration::from_millis(200)),
        Next::After(d) => Action::requeue(d.max(Duration::from_millis(200))),
        Next::Idle => Action::requeue(Duration::from_secs(300)),
    })
}

/// Write `.status` when it changed, and the reconciler's new events as Kubernetes events.
async fn publish(
    sh: &Shared,
    kres: &KnotResolver,
    r: &Resolver,
    api: &Api<KnotResolver>,
    generation: i64,
    deadline: Duration,
) -> Result<(), Error> {
    let Some(s) = r.status.0.lock().ok().and_then(|s| s.clone()) else {
        return Ok(());
    };
    let name = kres.name_any();
    if let Ok(mut all) = sh.served.statuses.lock() {
        all.insert(
            format!("{}/{name}", kres.namespace().unwrap_or_default()),
            serde_json::to_value(&s).unwrap_or_default(),
        );
    }
    let previous = r.written.lock().ok().and_then(|w| w.clone());
    let mut new = status::from_status(&s, &name, generation);
    let now = crate::time::unix_ms();
    let moved_at = match r.progress.lock() {
        Ok(mut p) => {
            let print = status::progress_fingerprint(&s);
            if p.0 != print {
                *p = (print, now);
            }
            p.1
        }
        Err(_) => now,
    };
    if kres.spec.rollout.paused {
        // The planner holds the rollout (and only repairs); Progressing says why.
        status::pause(&mut new, kres.status.as_ref(), generation, Timestamp::now());
        if !kres.status.as_ref().is_some_and(status::is_paused) {
            event(
                sh,
                kres,
                EventType::Normal,
                status::PAUSED,
                "spec.rollout.paused: no rollout step until it is false",
            )
            .await;
        }
    }
    let exceeded = status::exceed_deadline(
        &mut new,
        moved_at,
        now,
        deadline,
        s.waiting_for.as_deref(),
        generation,
    );
    let was_exceeded = kres.status.as_ref().is_some_and(status::deadline_exceeded);
    if exceeded && !was_exceeded {
        let message = status::condition_message(&new, status::PROGRESSING);
        event(
            sh,
            kres,
            EventType::Warning,
            status::PROGRESS_DEADLINE_EXCEEDED,
            &message,
        )
        .await;
    }
    if previous.as_ref() != Some(&new) || kres.status.as_ref() != Some(&new) {
        write_status(api, &name, &new).await?;
        if let Ok(mut w) = r.written.lock() {
            *w = Some(new);
        }
    }
    let since = r.events_until.lock().map(|u| *u).unwrap_or(0);
    let fresh: Vec<_> = s
        .events
        .iter()
        .filter(|e| e.at_unix_ms > since)
        .cloned()
        .collect();
    // The canary on the target answered and is ready: announced once per target revision.
    let canary_ready = s
        .workers
        .iter()
        .find(|w| {
            w.slot == Slot::Surge
                && w.state == SlotState::Ready
                && Some(&w.revision) == s.desired_revision.as_ref()
        })
        .filter(|canary| {
            r.canary_ready.lock().is_ok_and(|mut announced| {
                let new = announced.as_ref() != Some(&canary.revision);
                *announced = Some(canary.revision.clone());
                new
            })
        });
    if let Some(canary) = canary_ready {
        event_about(
            sh,
            kres,
            EventType::Normal,
            "CanaryReady",
            &format!("canary ready on revision {}", canary.revision),
            Some(Slot::Surge),
        )
        .await;
    }
    for e in &fresh {
        let (type_, reason) = reason_of(&e.kind, e.slot);
        event_about(sh, kres, type_, &reason, &e.message, e.slot).await;
    }
    if let Some(last) = fresh.last()
        && let Ok(mut u) = r.events_until.lock()
    {
        *u = last.at_unix_ms;
    }
    Ok(())
}

/// The Kubernetes event type and reason of a reconciler event of `kind` about `slot`.
fn reason_of(kind: &str, slot: Option<Slot>) -> (EventType, String) {
    let canary = slot == Some(Slot::Surge);
    let reason = match (kind, canary) {
        ("failed", _) => return (EventType::Warning, "RevisionFailed".into()),
        ("error", _) => return (EventType::Warning, "BackendError".into()),
        ("good", _) => "RolloutComplete",
        ("target", _) => "TargetRevision",
        ("start", true) => "CanaryCreated",
        ("start", false) => "SlotStarted",
        ("drain", true) => "CanaryDraining",
        ("drain", false) => "SlotDraining",
        ("stop", true) => "CanaryRemoved",
        ("stop", false) => "SlotStopped",
        (k, _) => return (EventType::Normal, pascal(k)),
    };
    (EventType::Normal, reason.into())
}

fn pascal(kind: &str) -> String {
    kind.split(['-', '_', ' '])
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_uppercase().chain(c).collect::<String>())
                .unwrap_or_default()
        })
        .collect()
}

async fn write_status(
    api: &Api<KnotResolver>,
    name: &str,
    s: &KnotResolverStatus,
) -> Result<(), Error> {
    let body = serde_json::json!({
        "apiVersion": KnotResolver::api_version(&()),
        "kind": KnotResolver::kind(&()),
        "status": s,
    });
    api.patch_status(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(body),
    )
    .await
    .map(|_| ())
    .map_err(|e| Error::Api(format!("patch status of {name}"), e))
}

/// `note` cut to the 1000 bytes an event note may hold.
fn truncated(note: &str) -> String {
    let mut note = note.to_string();
    if note.len() > 1000 {
        let cut = (0..=1000)
            .rev()
            .find(|i| note.is_char_boundary(*i))
            .unwrap_or(0);
        note.truncate(cut);
    }
    note
}

async fn event(sh: &Shared, kres: &KnotResolver, type_: EventType, reason: &str, note: &str) {
    event_about(sh, kres, type_, reason, note, None).await;
}

/// An event on `kres`; one about a slot names the slot's pod as the related object (so the
/// recorder keeps one event per pod, not one series per reason).
async fn event_about(
    sh: &Shared,
    kres: &KnotResolver,
    type_: EventType,
    reason: &str,
    note: &str,
    slot: Option<Slot>,
) {
    let secondary = slot.map(|slot| ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: Some(build::pod_name(&kres.name_any(), slot)),
        namespace: kres.namespace(),
        ..ObjectReference::default()
    });
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(truncated(note)),
        action: "Reconcile".into(),
        secondary,
    };
    if let Err(e) = sh.recorder.publish(&ev, &kres.object_ref(&())).await {
        tracing::warn!(error = %e, "event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_events_get_reasons_of_their_own() {
        let r = |kind, slot| reason_of(kind, slot).1;
        assert_eq!(r("start", Some(Slot::Surge)), "CanaryCreated");
        assert_eq!(r("start", Some(Slot::Worker(1))), "SlotStarted");
        assert_eq!(r("drain", Some(Slot::Worker(0))), "SlotDraining");
        assert_eq!(r("stop", Some(Slot::Surge)), "CanaryRemoved");
        assert_eq!(r("good", None), "RolloutComplete");
        assert_eq!(r("cache-gc", None), "CacheGc");
        assert!(matches!(
            reason_of("failed", Some(Slot::Surge)).0,
            EventType::Warning
        ));
    }
}
