//! [`PodsBackend`]: the worker backend of one KnotResolver over the Kubernetes API. Observes
//! from reflector stores shared by every resolver (no polling); requests return once the API
//! accepted them (create, label, delete) and are observed to completion through the watches.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::Store;
use tokio::sync::Notify;

use super::build::{
    self, ANNOTATION_DRAIN_SINCE, KEY_POD_TEMPLATE, LABEL_INSTANCE, LABEL_REVISION, LABEL_SERVING,
    MANAGER, Owner, PodTemplate,
};
use super::observe::{self, pod_ip};
use crate::backend::{Backend, BackendError, BackendResult};
use crate::kresd::probe::{ProbeQuestion, probe};
use crate::reconcile::{
    Desired, GcSpec, Observed, ObservedSlot, Revision, Slot, SlotState, WorkerRef,
};

/// The watches every pod backend reads (one set per operator).
#[derive(Clone)]
pub struct Stores {
    /// Pods managed by the operator.
    pub pods: Store<Pod>,
    /// Revision ConfigMaps managed by the operator.
    pub config_maps: Store<ConfigMap>,
    /// EndpointSlices of the operator's Services.
    pub slices: Store<EndpointSlice>,
    /// The operator's Services.
    pub services: Store<Service>,
    /// The operator's PodDisruptionBudgets.
    pub pdbs: Store<PodDisruptionBudget>,
    /// Signalled on every watch event.
    pub changed: Arc<Notify>,
}

/// What a reconcile of the resolver gives the backend (changes with the spec).
#[derive(Clone, Debug, PartialEq)]
pub struct Inputs {
    /// `spec.config` as given (kept in the revision's ConfigMap).
    pub config: serde_json::Value,
    /// The Service to apply.
    pub service: Service,
    /// The PodDisruptionBudget to apply (`None`: delete it).
    pub pdb: Option<PodDisruptionBudget>,
    /// How long a drained pod waits after leaving the endpoints.
    pub drain: Duration,
}

/// The pod backend of one KnotResolver.
pub struct PodsBackend {
    client: Client,
    owner: Owner,
    stores: Stores,
    inputs: Mutex<Inputs>,
    /// What was last applied (Service, PDB), so an unchanged one is not written again.
    applied: Mutex<Option<(Service, Option<PodDisruptionBudget>)>>,
    /// The endpoints last set (the Service follows the config; kept for the planner).
    endpoints: Mutex<Option<Vec<String>>>,
    /// Pods (by uid) that answered the operator's DNS probe.
    probed: Mutex<BTreeSet<String>>,
    /// First time each (pod uid, state) was seen (the planner's `since`).
    seen: Mutex<BTreeMap<String, (SlotState, Duration)>>,
    epoch: Instant,
}

fn api_error(what: &str, e: kube::Error) -> BackendError {
    match &e {
        kube::Error::Api(s) if s.code == 409 => BackendError::Conflict(format!("{what}: {e}")),
        _ => BackendError::Transient(format!("{what}: {e}")),
    }
}

/// Treat "already exists" (409 on create) as done.
fn created<T>(what: &str, r: Result<T, kube::Error>) -> BackendResult<()> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 && s.reason == "AlreadyExists" => Ok(()),
        Err(e) => Err(api_error(what, e)),
    }
}

/// Treat "not found" (404) as done.
fn gone<T>(what: &str, r: Result<T, kube::Error>) -> BackendResult<()> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(api_error(what, e)),
    }
}

impl PodsBackend {
    /// A backend for the resolver `owner`.
    pub fn new(client: Client, owner: Owner, stores: Stores, inputs: Inputs) -> Self {
        PodsBackend {
            client,
            owner,
            stores,
            inputs: Mutex::new(inputs),
            applied: Mutex::new(None),
            endpoints: Mutex::new(None),
            probed: Mutex::new(BTreeSet::new()),
            seen: Mutex::new(BTreeMap::new()),
            epoch: Instant::now(),
        }
    }

    /// Take the inputs of a new reconcile.
    pub fn set_inputs(&self, inputs: Inputs) {
        if let Ok(mut i) = self.inputs.lock() {
            *i = inputs;
        }
    }

    fn inputs(&self) -> Inputs {
        self.inputs
            .lock()
            .map(|i| i.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    fn ns(&self) -> &str {
        &self.owner.namespace
    }

    fn pods_api(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), self.ns())
    }

    fn mine<'a>(&'a self, labels: Option<&'a BTreeMap<String, String>>) -> bool {
        labels.and_then(|l| l.get(LABEL_INSTANCE)) == Some(&self.owner.name)
    }

    /// This resolver's objects in `store` (its namespace, its instance label).
    fn owned<K>(&self, store: &Store<K>) -> Vec<Arc<K>>
    where
        K: kube::Resource + Clone + 'static,
        K::DynamicType: std::hash::Hash + Eq + Clone,
    {
        store
            .state()
            .into_iter()
            .filter(|o| {
                o.meta().namespace.as_deref() == Some(self.ns())
                    && self.mine(o.meta().labels.as_ref())
            })
            .collect()
    }

    /// This resolver's pods in the store.
    pub fn pods(&self) -> Vec<Arc<Pod>> {
        self.owned(&self.stores.pods)
    }

    fn config_maps(&self) -> Vec<Arc<ConfigMap>> {
        self.owned(&self.stores.config_maps)
    }

    /// Whether the Service's EndpointSlices list `ip`.
    fn in_endpoints(&self, ip: &str) -> bool {
        self.stores.slices.state().iter().any(|s| {
            s.metadata.namespace.as_deref() == Some(self.ns())
                && s.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("kubernetes.io/service-name"))
                    == Some(&self.owner.name)
                && s.endpoints
                    .iter()
                    .flatten()
                    .any(|e| e.addresses.iter().any(|a| a == ip))
        })
    }

    /// Whether the Service (and the PDB, when `pdb`) of this resolver are in the stores (an
    /// owned object deleted by hand is applied again).
    fn owned_present(&self, pdb: bool) -> bool {
        self.stores
            .services
            .state()
            .iter()
            .any(|s| self.is_owned_name(&s.metadata))
            && (!pdb || self.pdb_present())
    }

    /// Whether this resolver's PodDisruptionBudget is in the store.
    fn pdb_present(&self) -> bool {
        self.stores
            .pdbs
            .state()
            .iter()
            .any(|p| self.is_owned_name(&p.metadata))
    }

    /// Whether `m` names the object of this resolver's own name (its Service or PDB).
    fn is_owned_name(&self, m: &kube::api::ObjectMeta) -> bool {
        m.namespace.as_deref() == Some(self.ns())
            && m.name.as_deref() == Some(self.owner.name.as_str())
    }

    fn pod_in(&self, slot: Slot) -> Option<Arc<Pod>> {
        let name = build::pod_name(&self.owner.name, slot);
        self.pods()
            .into_iter()
            .find(|p| p.metadata.name.as_deref() == Some(name.as_str()))
    }

    /// The operator's own DNS probe of a ready pod (once per pod).
    async fn probed_ok(&self, pod: &Pod) -> Result<(), String> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        if self.probed.lock().is_ok_and(|p| p.contains(&uid)) {
            return Ok(());
        }
        let ip: IpAddr = pod_ip(pod)
            .and_then(|ip| ip.parse().ok())
            .ok_or_else(|| "no pod IP".to_string())?;
        let port = pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .and_then(|c| c.ports.as_ref())
            .and_then(|ports| {
                ports
                    .iter()
                    .find(|p| p.protocol.as_deref() == Some("UDP"))
                    .map(|p| p.container_port)
            })
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(53);
        probe(SocketAddr::new(ip, port), &ProbeQuestion::default())
            .await
            .map_err(|e| e.to_string())?;
        if let Ok(mut p) = self.probed.lock() {
            p.insert(uid);
        }
        Ok(())
    }

    fn since(&self, uid: &str, state: SlotState, now: Duration) -> Duration {
        let Ok(mut seen) = self.seen.lock() else {
            return now;
        };
        match seen.get(uid) {
            Some((s, at)) if *s == state => *at,
            _ => {
                seen.insert(uid.to_string(), (state, now));
                now
            }
        }
    }

    async fn template_of(&self, revision: &Revision) -> BackendResult<PodTemplate> {
        let name = build::config_map_name(&self.owner.name, revision);
        let cm = match self
            .config_maps()
            .into_iter()
            .find(|c| c.metadata.name.as_deref() == Some(name.as_str()))
        {
            Some(cm) => (*cm).clone(),
            None => Api::<ConfigMap>::namespaced(self.client.clone(), self.ns())
                .get(&name)
                .await
                .map_err(|e| api_error(&format!("get configmap {name}"), e))?,
        };
        let text = cm
            .data
            .as_ref()
            .and_then(|d| d.get(KEY_POD_TEMPLATE))
            .ok_or_else(|| {
                BackendError::Transient(format!("configmap {name}: no {KEY_POD_TEMPLATE}"))
            })?;
        serde_json::from_str(text).map_err(|e| {
            BackendError::Transient(format!("configmap {name}: {KEY_POD_TEMPLATE}: {e}"))
        })
    }

    async fn apply<K>(&self, api: Api<K>, name: &str, obj: &K) -> BackendResult<()>
    where
        K: kube::Resource<DynamicType = ()>
            + serde::Serialize
            + serde::de::DeserializeOwned
            + Clone
            + std::fmt::Debug,
    {
        let mut value = serde_json::to_value(obj)
            .map_err(|e| BackendError::Transient(format!("serialize {name}: {e}")))?;
        let gvk_api = K::api_version(&());
        let kind = K::kind(&());
        value["apiVersion"] = gvk_api.to_string().into();
        value["kind"] = kind.to_string().into();
        api.patch(
            name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(value),
        )
        .await
        .map(|_| ())
        .map_err(|e| api_error(&format!("apply {kind} {name}"), e))
    }
}

impl Backend for PodsBackend {
    async fn ensure(&self) -> BackendResult<bool> {
        let inputs = self.inputs();
        let want = (inputs.service.clone(), inputs.pdb.clone());
        if self.applied.lock().is_ok_and(|a| a.as_ref() == Some(&want))
            && self.owned_present(want.1.is_some())
        {
            return Ok(false);
        }
        let name = self.owner.name.clone();
        self.apply(
            Api::<Service>::namespaced(self.client.clone(), self.ns()),
            &name,
            &inputs.service,
        )
        .await?;
        let pdbs = Api::<PodDisruptionBudget>::namespaced(self.client.clone(), self.ns());
        match &inputs.pdb {
            Some(pdb) => self.apply(pdbs, &name, pdb).await?,
            // Deleted only when there is one: in the (synced) store, or applied by this process
            // (the store may not have it yet).
            None => {
                let applied = self
                    .applied
                    .lock()
                    .is_ok_and(|a| a.as_ref().is_some_and(|(_, pdb)| pdb.is_some()));
                if applied || self.pdb_present() {
                    gone(
                        &format!("delete poddisruptionbudget {name}"),
                        pdbs.delete(&name, &DeleteParams::default()).await,
                    )?;
                }
            }
        }
        if let Ok(mut a) = self.applied.lock() {
            *a = Some(want);
        }
        Ok(false)
    }

    async fn observe(&self) -> BackendResult<Observed> {
        let now = self.epoch.elapsed();
        let drain = self.inputs().drain;
        let now_ms = crate::time::unix_ms();
        let mut slots = Vec::new();
        for pod in self.pods() {
            let ip = pod_ip(&pod);
            let in_endpoints = ip.as_deref().is_some_and(|ip| self.in_endpoints(ip));
            let Some(mut v) = observe::view(&pod, in_endpoints, drain, now_ms) else {
                continue;
            };
            if v.state == SlotState::Ready
                && let Err(e) = self.probed_ok(&pod).await
            {
                v.state = SlotState::Starting;
                v.detail = Some(e);
            }
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            let ready_since_unix_ms = (v.state == SlotState::Ready).then(|| {
                now_ms.saturating_sub((now - self.since(&uid, v.state, now)).as_millis() as u64)
            });
            slots.push(ObservedSlot {
                slot: v.slot,
                revision: v.revision,
                state: v.state,
                worker: Some(WorkerRef {
                    name: pod.metadata.name.clone().unwrap_or_default(),
                    address: ip.and_then(|ip| ip.parse().ok()),
                    control: None,
                    pid: None,
                }),
                since: self.since(&uid, v.state, now),
                ready_since_unix_ms,
                detail: v.detail,
            });
        }
        let staged = self
            .config_maps()
            .iter()
            .filter_map(|c| c.metadata.labels.as_ref()?.get(LABEL_REVISION).cloned())
            .collect();
        Ok(Observed {
            now,
            slots,
            gc: None,
            endpoints: self.endpoints.lock().ok().and_then(|e| e.clone()),
            staged,
        })
    }

    async fn stage(&self, desired: &Desired) -> BackendResult<()> {
        let template: PodTemplate =
            serde_json::from_value(desired.template.clone()).map_err(|e| {
                BackendError::Rejected {
                    pointer: None,
                    reason: format!("not a pod template: {e}"),
                }
            })?;
        let cm = build::config_map(
            &self.owner,
            &desired.revision,
            &desired.config,
            &self.inputs().config,
            &template,
        );
        let api = Api::<ConfigMap>::namespaced(self.client.clone(), self.ns());
        created(
            &format!("create configmap for revision {}", desired.revision),
            api.create(&PostParams::default(), &cm).await,
        )
    }

    async fn start(&self, slot: Slot, revision: &Revision) -> BackendResult<()> {
        let template = self.template_of(revision).await?;
        if let (Slot::Worker(i), Some(spec)) = (slot, &template.cache_claim) {
            // Kept across replacements: created by the slot's first pod, then reused.
            let pvc = build::cache_claim(&self.owner, i, spec);
            created(
                &format!("create cache claim for {slot}"),
                Api::<PersistentVolumeClaim>::namespaced(self.client.clone(), self.ns())
                    .create(&PostParams::default(), &pvc)
                    .await,
            )?;
        }
        let pod = build::pod(&self.owner, slot, revision, &template);
        created(
            &format!("create pod for {slot}"),
            self.pods_api().create(&PostParams::default(), &pod).await,
        )
    }

    async fn drain(&self, slot: Slot) -> BackendResult<()> {
        let name = build::pod_name(&self.owner.name, slot);
        if self.pod_in(slot).is_some_and(|p| !observe::is_serving(&p)) {
            return Ok(());
        }
        let patch = serde_json::json!({
            "metadata": {
                "labels": { LABEL_SERVING: "false" },
                "annotations": { ANNOTATION_DRAIN_SINCE: crate::time::unix_ms().to_string() },
            }
        });
        gone(
            &format!("label pod {name} not serving"),
            self.pods_api()
                .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                .await,
        )
    }

    async fn stop(&self, slot: Slot) -> BackendResult<()> {
        let name = build::pod_name(&self.owner.name, slot);
        if self
            .pod_in(slot)
            .is_some_and(|p| p.metadata.deletion_timestamp.is_some())
        {
            return Ok(());
        }
        gone(
            &format!("delete pod {name}"),
            self.pods_api()
                .delete(&name, &DeleteParams::default())
                .await,
        )
    }

    async fn set_endpoints(&self, endpoints: &[String]) -> BackendResult<()> {
        // The Service's ports follow the config (ensure); each pod binds its own IP.
        if let Ok(mut e) = self.endpoints.lock() {
            *e = Some(endpoints.to_vec());
        }
        Ok(())
    }

    async fn set_gc(&self, _spec: Option<&GcSpec>) -> BackendResult<()> {
        Ok(())
    }

    async fn collect_revisions(&self, keep: &BTreeSet<Revision>) -> BackendResult<()> {
        let used: BTreeSet<String> = self
            .pods()
            .iter()
            .filter_map(|p| p.metadata.labels.as_ref()?.get(LABEL_REVISION).cloned())
            .collect();
        let api = Api::<ConfigMap>::namespaced(self.client.clone(), self.ns());
        for cm in self.config_maps() {
            let Some(rev) = cm
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_REVISION))
            else {
                continue;
            };
            if keep.contains(rev) || used.contains(rev) {
                continue;
            }
            let name = cm.metadata.name.clone().unwrap_or_default();
            gone(
                &format!("delete configmap {name}"),
                api.delete(&name, &DeleteParams::default()).await,
            )?;
        }
        Ok(())
    }

    async fn wait_change(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.stores.changed.notified()).await;
    }

    async fn log_tail(&self, slot: Slot, max_bytes: usize) -> BackendResult<String> {
        let text = self
            .pod_in(slot)
            .and_then(|p| observe::termination_message(&p))
            .unwrap_or_default();
        let start = text.len().saturating_sub(max_bytes);
        let start = (start..text.len())
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(text.len());
        Ok(text[start..].to_string())
    }

    async fn shutdown(&self) -> BackendResult<()> {
        // The pods serve on without the operator.
        Ok(())
    }
}
