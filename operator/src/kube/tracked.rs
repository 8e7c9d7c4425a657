//! What the operator keeps per resolver besides its reconciler state: its `/status` entry and
//! its metrics series. Recorded after each reconcile, dropped when the resolver is deleted
//! (seen by a reflector on KnotResolvers: a delete event, or absence from a re-list), so
//! neither grows with resolvers that no longer exist.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kres_crd::k8s::KnotResolver;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};

use super::Shared;

fn key(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
}

/// A reconcile of `ns/name` ended: count it, and publish its phase.
pub(super) fn record_reconcile(sh: &Shared, ns: &str, name: &str, ok: bool, took: Duration) {
    let metrics = &sh.served.resolvers;
    metrics.reconciled(ns, name, ok, took);
    let phase = sh
        .resolvers
        .lock()
        .ok()
        .and_then(|all| all.get(&(ns.to_string(), name.to_string())).cloned())
        .and_then(|r| r.status.0.lock().ok().and_then(|s| s.clone()))
        .map(|s| super::status::from_status(&s, name, 0).phase);
    if let Some(Some(phase)) = phase {
        metrics.set_phase(ns, name, &phase);
    }
}

/// `ns/name`'s spec was refused: `/status` lists it with the errors (next to its last status).
pub(super) fn record_invalid(sh: &Shared, ns: &str, name: &str, message: &str) {
    if let Ok(mut all) = sh.served.statuses.lock() {
        let entry = all
            .entry(key(ns, name))
            .or_insert_with(|| serde_json::json!({}));
        if let Some(o) = entry.as_object_mut() {
            o.insert("invalid-config".into(), message.into());
        }
    }
}

/// Forget `ns/name`: its reconciler state, `/status` entry and metrics series.
pub(super) fn forget(sh: &Shared, ns: &str, name: &str) {
    if let Ok(mut r) = sh.resolvers.lock() {
        r.remove(&(ns.to_string(), name.to_string()));
    }
    if let Ok(mut all) = sh.served.statuses.lock() {
        all.remove(&key(ns, name));
    }
    sh.served.resolvers.forget(ns, name);
}

/// Forget every resolver `sh` tracks that `store` no longer holds.
fn prune(sh: &Shared, store: &Store<KnotResolver>) {
    let live: BTreeSet<(String, String)> = store
        .state()
        .iter()
        .map(|k| (k.namespace().unwrap_or_default(), k.name_any()))
        .collect();
    let mut gone: BTreeSet<(String, String)> = sh
        .resolvers
        .lock()
        .map(|r| r.keys().cloned().collect())
        .unwrap_or_default();
    if let Ok(all) = sh.served.statuses.lock() {
        gone.extend(all.keys().filter_map(|k| {
            k.split_once('/')
                .map(|(ns, name)| (ns.to_string(), name.to_string()))
        }));
    }
    for (ns, name) in gone.difference(&live) {
        tracing::info!(ns, name, "resolver deleted: forgetting it");
        forget(sh, ns, name);
    }
}

/// Watch the resolvers of `api` and forget deleted ones (until the process ends).
pub(super) fn forget_deleted(api: Api<KnotResolver>, sh: Arc<Shared>) {
    let (reader, writer) = reflector::store();
    let stream =
        reflector::reflector(writer, watcher(api, watcher::Config::default())).default_backoff();
    tokio::spawn(stream.for_each(move |ev| {
        // After a delete, or a re-list that completed (a deletion missed while disconnected).
        if matches!(ev, Ok(watcher::Event::Delete(_) | watcher::Event::InitDone)) {
            prune(&sh, &reader);
        }
        std::future::ready(())
    }));
}
