//! Rollout safety of `kres-operator kube` against the real control plane (apiserver,
//! controller-manager, kube-proxy; the node agent as kubelet), the operator running as its
//! ServiceAccount: DNS through the Service's ClusterIP during a config edit, an operator killed
//! mid-rollout, a pod deleted by hand, owned objects repaired, a failed revision not retried after
//! a restart, pause, the progress deadline, and resolvers the operator cannot use next to one it
//! can.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kres_tests::k8s::operator::*;
use kres_tests::k8s::wait::{eventually, pod_ready};
use kube::api::{DeleteParams, ListParams};
use kube::{Api, ResourceExt};
use serde_json::json;

type R = anyhow::Result<()>;

#[ctor::ctor(unsafe)]
fn private_network() {
    kres_tests::k8s::netns::isolate_process()
}

const QNAME: &str = "www.corp.example.test.";

fn record(last: u8) -> String {
    format!("{QNAME} 300 A 192.0.2.{last}\n")
}

/// The example resolver answering 192.0.2.`last`, with `edit` applied to it.
fn resolver(last: u8, edit: impl FnOnce(&mut serde_json::Value)) -> anyhow::Result<String> {
    let mut v: serde_json::Value = serde_json::from_str(&example_with(&record(last), None)?)?;
    edit(&mut v);
    Ok(v.to_string())
}

/// Condition `type_` of a resolver's status.
fn condition(r: &kres_crd::k8s::KnotResolver, type_: &str) -> Option<Condition> {
    r.status
        .as_ref()?
        .conditions
        .iter()
        .find(|x| x.type_ == type_)
        .cloned()
}

/// Wait until resolver `name` has processed its current generation and condition `type_`
/// has `reason`; the condition.
async fn wait_reason(
    env: &Env,
    name: &str,
    type_: &str,
    reason: &str,
) -> anyhow::Result<Condition> {
    let resolvers = &env.resolvers();
    eventually(60, &format!("{name}: {type_} {reason}"), || async move {
        let r = resolvers.get(name).await?;
        let processed =
            r.status.as_ref().and_then(|s| s.observed_generation) == r.metadata.generation;
        Ok(condition(&r, type_).filter(|c| processed && c.reason == reason))
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", env.log_tail()))
}

/// The uids of the regular (non-canary) pods of `resolver`, by name, from the apiserver.
async fn regular_uids(env: &Env) -> anyhow::Result<BTreeMap<String, String>> {
    let list = env
        .pods()
        .list(&ListParams::default().labels("app.kubernetes.io/instance=resolver"))
        .await?;
    Ok(list
        .items
        .iter()
        .filter(|p| p.labels().get(SLOT).is_some_and(|s| s != "canary"))
        .map(|p| (p.name_any(), p.uid().unwrap_or_default()))
        .collect())
}

/// Delete pod `name` (uid `old_uid`) by hand; the pod of that name that replaces it, once Ready.
async fn delete_and_recreated(env: &Env, name: &str, old_uid: &str) -> anyhow::Result<Pod> {
    let pods = env.pods();
    pods.delete(name, &DeleteParams::default()).await?;
    let pods = &pods;
    eventually(60, &format!("{name} recreated and Ready"), || async move {
        let p = pods.get_opt(name).await?;
        Ok(p.filter(|p| p.uid().as_deref() != Some(old_uid) && pod_ready(p)))
    })
    .await
}

/// A config edit under traffic: a client asking through the ClusterIP the whole time sees no
/// failure, ready endpoints never drop below `replicas`, events come in rollout order. Then the
/// operator is SIGKILLed after the first slot of the next rollout was replaced and restarted: no
/// slot is replaced twice, no extra pod exists. Then a pod deleted by hand comes back while the
/// slice keeps the others, and the Service, PDB and ConfigMap deleted by hand are re-created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_edit_under_traffic_operator_kill_and_repairs() -> R {
    let mut env = Env::new("kres-roll").await?;
    env.apply(&resolver(80, |_| {})?)?;
    let (r1, _) = env.converged("resolver", 3).await?;
    let svc = Api::<Service>::namespaced(env.client.clone(), &env.ns)
        .get("resolver")
        .await?;
    let service = cluster_ip(&svc)?;

    // 1. The edit, with a client asking through the ClusterIP all along.
    let rollout = watch_rollout(&env.client, &env.ns, "resolver");
    let events = watch_events(&env.client, &env.ns);
    let pods = watch_pods(&env.client, &env.ns);
    seen(&events, 30, "event watch", |l| l.ready.then_some(())).await?;
    seen(&pods, 30, "pod watch", |l| l.ready.then_some(())).await?;
    let client = query_loop(service, QNAME, 5000);
    let c = &client;
    eventually(30, "the client answered before the edit", || async move {
        Ok((c.tally().answers.get("192.0.2.80").copied().unwrap_or(0) >= 5).then_some(()))
    })
    .await?;
    env.apply(&resolver(81, |_| {})?)?;
    let (r2, _) = env.converged("resolver", 3).await?;
    assert_ne!(r1, r2);
    // The client goes on until the ClusterIP answered the new record a few times.
    eventually(30, "the client got the new answer", || async move {
        Ok((c.tally().answers.get("192.0.2.81").copied().unwrap_or(0) >= 5).then_some(()))
    })
    .await?;
    let tally = client.stop().await;
    eprintln!("queries through the ClusterIP during the rollout: {tally:?}");
    assert!(
        tally.failures.is_empty(),
        "{} of {} queries failed: {:?}",
        tally.failures.len(),
        tally.total(),
        tally.failures
    );
    let min_ready = rollout
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .min_ready;
    assert!(
        min_ready.is_some_and(|m| m >= 3),
        "ready endpoints dropped to {min_ready:?}"
    );
    // Events in rollout order: canary created, ready; each slot drained, stopped, started;
    // the canary removed; rollout complete.
    {
        let log = events.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        let all = log.reasons();
        let at = |from: usize, reason: &str, related: Option<&str>| {
            log.position(from, reason, related)
                .ok_or_else(|| anyhow::anyhow!("no {reason} {related:?} after #{from}: {all:?}"))
        };
        let created = at(0, "CanaryCreated", Some("resolver-canary"))?;
        let ready = at(created, "CanaryReady", Some("resolver-canary"))?;
        let mut last = ready;
        for i in 0..3 {
            let pod = format!("resolver-{i}");
            let drain = at(ready, "SlotDraining", Some(&pod))?;
            let stopped = at(drain, "SlotStopped", Some(&pod))?;
            let started = at(stopped, "SlotStarted", Some(&pod))?;
            last = last.max(started);
        }
        at(last, "CanaryRemoved", Some("resolver-canary"))?;
        at(last, "RolloutComplete", None)?;
    }
    let r = env.resolvers().get("resolver").await?;
    let s = r.status.clone().unwrap_or_default();
    assert_eq!(
        (s.current_revision.as_deref(), s.update_revision.as_deref()),
        (Some(r2.as_str()), Some(r2.as_str()))
    );
    assert_eq!(
        condition(&r, "Available").map(|c| c.status),
        Some("True".into())
    );

    // 2. The operator SIGKILLed once the first regular slot of the next rollout was replaced,
    // then restarted: it finishes the rollout without replacing any slot twice.
    env.apply(&resolver(82, |_| {})?)?;
    let old = [r1.clone(), r2.clone()];
    let old = &old;
    let first = seen(&pods, 120, "a slot replaced on the next revision", |l| {
        l.created
            .iter()
            .find(|(_, n, rev)| n != "resolver-canary" && !old.contains(rev))
            .cloned()
    })
    .await?;
    env.operator = None; // SIGKILL
    env.start_operator().await?;
    let (r3, _) = env.converged("resolver", 3).await?;
    assert_eq!(r3, first.2, "the rollout was not resumed: {first:?}");
    {
        let log = pods.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        for name in ["resolver-canary", "resolver-0", "resolver-1", "resolver-2"] {
            let uids = log.uids(name, &r3);
            assert_eq!(uids.len(), 1, "{name} created {} times on {r3}", uids.len());
        }
        assert!(
            log.max_live <= 4,
            "{} pods existed at once (3 slots + the canary at most)",
            log.max_live
        );
    }

    // 3. A pod deleted by hand is recreated; the Service's ready endpoints never drop below the
    // other two meanwhile.
    let watch = watch_rollout(&env.client, &env.ns, "resolver");
    let before = regular_uids(&env).await?;
    let recreated = delete_and_recreated(&env, "resolver-1", &before["resolver-1"]).await?;
    assert_eq!(recreated.labels().get(REVISION), Some(&r3));
    let ip = pod_ip(&recreated)?;
    let (client_ref, ns) = (&env.client, env.ns.as_str());
    let ip = &ip;
    eventually(30, "the new pod in the EndpointSlice", || async move {
        Ok(ready_endpoints(client_ref, ns, "resolver")
            .await?
            .contains(ip)
            .then_some(()))
    })
    .await?;
    let min_ready = watch
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .min_ready;
    assert_eq!(
        min_ready,
        Some(2),
        "fewest ready endpoints while resolver-1 was replaced"
    );

    // 4. The Service, the PDB and the revision's ConfigMap deleted by hand come back without a
    // spec change.
    let generation = env.resolvers().get("resolver").await?.metadata.generation;
    let services = Api::<Service>::namespaced(env.client.clone(), &env.ns);
    let pdbs = Api::<PodDisruptionBudget>::namespaced(env.client.clone(), &env.ns);
    let cms = Api::<ConfigMap>::namespaced(env.client.clone(), &env.ns);
    let cm_name = format!("resolver-{r3}");
    let uid_of = |m: &kube::api::ObjectMeta| m.uid.clone().unwrap_or_default();
    let old_uids = (
        uid_of(&services.get("resolver").await?.metadata),
        uid_of(&pdbs.get("resolver").await?.metadata),
        uid_of(&cms.get(&cm_name).await?.metadata),
    );
    services
        .delete("resolver", &DeleteParams::default())
        .await?;
    pdbs.delete("resolver", &DeleteParams::default()).await?;
    cms.delete(&cm_name, &DeleteParams::default()).await?;
    let (services, pdbs, cms, cm_name, old_uids) = (&services, &pdbs, &cms, &cm_name, &old_uids);
    eventually(60, "Service, PDB and ConfigMap re-created", || async move {
        let s = services.get_opt("resolver").await?;
        let p = pdbs.get_opt("resolver").await?;
        let c = cms.get_opt(cm_name).await?;
        Ok(match (s, p, c) {
            (Some(s), Some(p), Some(c))
                if uid_of(&s.metadata) != old_uids.0
                    && uid_of(&p.metadata) != old_uids.1
                    && uid_of(&c.metadata) != old_uids.2 =>
            {
                Some(())
            }
            _ => None,
        })
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", env.log_tail()))?;
    assert_eq!(
        env.resolvers().get("resolver").await?.metadata.generation,
        generation
    );
    // The new Service answers once its EndpointSlice and kube-proxy's rules are there.
    let service = cluster_ip(&services.get("resolver").await?)?;
    let answer = eventually(30, "the re-created Service answers", || async move {
        Ok(ask(service, QNAME).await.ok())
    })
    .await?;
    assert_eq!(answer, "192.0.2.82");
    Ok(())
}

/// Next to a resolver the operator cannot read and one whose spec the validator refuses, a
/// resolver is reconciled. Its failing canary (kresd's own error line in Degraded) is not
/// retried after an operator restart; fixing the spec recovers. Paused: a spec change creates no
/// pod until unpaused, a pod deleted by hand comes back on the current revision. An unschedulable canary exceeds the progress deadline without touching
/// the serving pods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_revision_survives_restart_pause_deadline_and_bad_neighbours() -> R {
    let mut env = Env::new("kres-safe").await?;
    let events = watch_events(&env.client, &env.ns);
    seen(&events, 30, "event watch", |l| l.ready.then_some(())).await?;

    // A resolver whose status holds a value its Rust type cannot (a condition time with ten
    // fractional digits: the apiserver's date-time format (Go) accepts it, jiff refuses it),
    // there when the operator starts (its first list holds it), and one whose spec the
    // validator refuses.
    env.operator = None;
    env.apply(&resolver(80, |v| {
        v["metadata"]["name"] = json!("unreadable");
        v["spec"]["replicas"] = json!(0);
    })?)?;
    kubectl(
        env.cp,
        &[
            "patch",
            "-n",
            &env.ns,
            "kres/unreadable",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"conditions":[{"type":"Available","status":"True","reason":"X","message":"","lastTransitionTime":"2026-01-01T00:00:00.1234567890Z"}]}}"#,
        ],
        "",
    )?;
    env.start_operator().await?;
    seen(&events, 60, "InvalidObject event for unreadable", |l| {
        l.position(0, "InvalidObject", None)
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", env.log_tail()))?;
    env.apply(&resolver(80, |v| {
        v["metadata"]["name"] = json!("refused");
        v["spec"]["config"]["forward"] = json!([{ "subtree": ".", "servers": ["not-an-ip"] }]);
    })?)?;
    env.apply(&resolver(80, |_| {})?)?;
    wait_reason(&env, "refused", "Degraded", "InvalidConfig").await?;
    let (r1, _) = env.converged("resolver", 3).await?;
    let before = regular_uids(&env).await?;

    // 1. A failing canary: Degraded with kresd's own error line, not the warnings around it.
    env.apply(&example_with(&record(80), Some("error('kres-e2e-x')"))?)?;
    let degraded = wait_reason(&env, "resolver", "Degraded", "RevisionRejected").await?;
    assert!(
        degraded.message.contains("kres-e2e-x") && degraded.message.contains("error"),
        "{}",
        degraded.message
    );
    for noise in ["file-descriptors", "[ta_", "trust anchor"] {
        assert!(
            !degraded.message.contains(noise),
            "Degraded carries {noise:?}: {}",
            degraded.message
        );
    }
    let warning = seen(&events, 30, "RevisionFailed event", |l| {
        l.position(0, "RevisionFailed", None)
            .map(|i| l.seen[i].2.clone())
    })
    .await?;
    assert!(warning.contains("kres-e2e-x"), "{warning}");
    let failed = env.update_revision("resolver").await?;
    // The failed canary is removed; the regular pods were never touched.
    let pods_api = &env.pods();
    eventually(60, "the failed canary removed", || async move {
        let l = pods_api
            .list(&ListParams::default().labels(&format!("{SLOT}=canary")))
            .await?;
        Ok(l.items.is_empty().then_some(()))
    })
    .await?;
    assert_eq!(
        regular_uids(&env).await?,
        before,
        "a regular pod was replaced"
    );

    // 2. Operator restart: the failed revision is read back from status and not retried.
    env.operator = None; // SIGKILL
    let pods = watch_pods(&env.client, &env.ns);
    seen(&pods, 30, "pod watch", |l| l.ready.then_some(())).await?;
    env.start_operator().await?;
    let key = format!("{}/resolver", env.ns);
    let (env_ref, key, failed_ref) = (&env, &key, &failed);
    // Proof the new operator stepped the resolver: its /status shows the observed workers and
    // the desired (failed) revision among the failed ones.
    let status = eventually(60, "the restarted operator reconciled", || async move {
        let Ok((_, body)) = env_ref.get("/status") else {
            return Ok(None);
        };
        // `/status`: "namespace/name" -> the reconciler's status.
        let v: serde_json::Value = serde_json::from_str(&body)?;
        let s = v.get(key).cloned().unwrap_or_default();
        let stepped = s["desired-revision"] == json!(failed_ref)
            && s["workers"].as_array().is_some_and(|w| w.len() == 3);
        Ok(stepped.then_some(s))
    })
    .await?;
    assert!(
        status["failed-revisions"]
            .as_array()
            .is_some_and(|f| f.contains(&json!(failed))),
        "{status}"
    );
    // Whatever that step did is in the apiserver by now: no pod on the failed revision.
    let on_failed = env
        .pods()
        .list(&ListParams::default().labels(&format!("{REVISION}={failed}")))
        .await?;
    assert!(
        on_failed.items.is_empty(),
        "the failed revision was retried: {:?}",
        on_failed
            .items
            .iter()
            .map(|p| p.name_any())
            .collect::<Vec<_>>()
    );
    let created_after = pods
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .created_on(&failed);
    assert!(created_after.is_empty(), "{created_after:?}");
    wait_reason(&env, "resolver", "Degraded", "RevisionRejected").await?;

    // 3. Fixing the spec recovers.
    env.apply(&resolver(81, |_| {})?)?;
    let (r2, _) = env.converged("resolver", 3).await?;
    assert!(r2 != r1 && r2 != failed);

    // 4. Paused: a spec change creates no pod; the status says Paused; unpausing rolls it out.
    let before = regular_uids(&env).await?;
    let pods_before = pods
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .created
        .len();
    env.apply(&resolver(82, |v| {
        v["spec"]["rollout"]["paused"] = json!(true)
    })?)?;
    let p = wait_reason(&env, "resolver", "Progressing", "Paused").await?;
    assert_eq!(p.status, "False");
    assert_eq!(regular_uids(&env).await?, before);
    let pods_now = pods
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .created
        .len();
    assert_eq!(pods_now, pods_before, "a pod was created while paused");
    // Paused is no rollout, not no repair: a pod deleted by hand comes back on the current
    // revision, and no pod is created on the paused one.
    let paused_rev = env
        .resolvers()
        .get("resolver")
        .await?
        .status
        .and_then(|s| s.update_revision)
        .ok_or_else(|| anyhow::anyhow!("no updateRevision"))?;
    assert_ne!(paused_rev, r2);
    let recreated = delete_and_recreated(&env, "resolver-1", &before["resolver-1"]).await?;
    assert_eq!(recreated.labels().get(REVISION), Some(&r2));
    let on_paused = pods
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .created_on(&paused_rev);
    assert!(on_paused.is_empty(), "{on_paused:?}");
    env.apply(&resolver(82, |_| {})?)?;
    let (r3, _) = env.converged("resolver", 3).await?;
    assert_ne!(r3, r2);

    // 5. A canary that cannot be scheduled: ProgressDeadlineExceeded, serving pods untouched.
    let before = regular_uids(&env).await?;
    env.apply(&resolver(83, |v| {
        v["spec"]["rollout"]["progressDeadlineSeconds"] = json!(10);
        v["spec"]["podTemplate"]["nodeSelector"] = json!({ "kres-e2e/unschedulable": "yes" });
    })?)?;
    let progressing =
        wait_reason(&env, "resolver", "Progressing", "ProgressDeadlineExceeded").await?;
    assert_eq!(progressing.status, "False");
    assert!(
        progressing.message.contains("canary"),
        "{}",
        progressing.message
    );
    let degraded = condition(&env.resolvers().get("resolver").await?, "Degraded")
        .ok_or_else(|| anyhow::anyhow!("no Degraded"))?;
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", "ProgressDeadlineExceeded")
    );
    seen(&events, 30, "ProgressDeadlineExceeded event", |l| {
        l.position(0, "ProgressDeadlineExceeded", None)
    })
    .await?;
    let canary = env.pods().get("resolver-canary").await?;
    assert_eq!(
        canary.status.and_then(|s| s.phase).as_deref(),
        Some("Pending")
    );
    assert_eq!(
        regular_uids(&env).await?,
        before,
        "a serving pod was touched"
    );
    let (_, serving) = env.converged_on(3, &r3).await?;
    assert!(serving.values().all(pod_ready));
    // Schedulable again: the rollout completes.
    env.apply(&resolver(83, |_| {})?)?;
    let (r4, _) = env.converged("resolver", 3).await?;
    assert_ne!(r4, r3);
    Ok(())
}
