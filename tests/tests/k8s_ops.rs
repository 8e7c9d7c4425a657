//! Operating `kres-operator kube` end to end (same environment as k8s_operator.rs: the real
//! control plane, the node agent, the operator as a ServiceAccount bound to manifests/rbac.yaml):
//! its `/metrics` and `/status`, no API writes in steady state (from the apiserver's audit log),
//! `kresctl kube` status/history/rollback as a user bound to manifests/kresctl-rbac.yaml, and
//! the 50-resolver benchmark (`make bench`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kres_crd::k8s::KnotResolver;
use kres_tests::k8s::operator::*;
use kres_tests::k8s::wait::eventually;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use serde_json::json;

type R = anyhow::Result<()>;

#[ctor::ctor(unsafe)]
fn private_network() {
    kres_tests::k8s::netns::isolate_process()
}

const RECORD: &str = "www.corp.example.test. 300 A 192.0.2.80\n";

/// The example resolver as `name` with `replicas` pods and `record`.
fn resolver(
    name: &str,
    replicas: u32,
    record: &str,
    script: Option<&str>,
) -> anyhow::Result<String> {
    let mut v: serde_json::Value = serde_json::from_str(&example_with(record, script)?)?;
    v["metadata"]["name"] = json!(name);
    v["spec"]["replicas"] = json!(replicas);
    Ok(v.to_string())
}

fn series(metric: &str, ns: &str, name: &str, extra: &str) -> String {
    format!("{metric}{{namespace=\"{ns}\",name=\"{name}\"{extra}}}")
}

/// `/metrics` counts each resolver's reconciles and shows its phase; `/status` lists every
/// resolver, an invalid one with its errors; a deleted resolver's series and entry go away.
/// After convergence, reconciles triggered without a spec change (annotation edits) are
/// processed (the counter grows) and the operator's ServiceAccount sends no write request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_status_and_no_writes_in_steady_state() -> R {
    let env = Env::new("kres-ops").await?;
    let ns = env.ns.clone();
    env.apply(&resolver("resolver", 2, RECORD, None)?)?;
    let mut bad: serde_json::Value = serde_json::from_str(&resolver("broken", 1, RECORD, None)?)?;
    bad["spec"]["config"]["forward"] = json!([{ "subtree": ".", "servers": ["not-an-ip"] }]);
    env.apply(&bad.to_string())?;
    let (revision, _) = env.converged("resolver", 2).await?;

    let (_, metrics) = env.get("/metrics")?;
    for s in [
        series("kres_resolver_phase", &ns, "resolver", ",phase=\"Idle\""),
        series(
            "kres_resolver_reconcile_duration_seconds_count",
            &ns,
            "resolver",
            "",
        ),
        series(
            "kres_resolver_reconciles_total",
            &ns,
            "broken",
            ",result=\"ok\"",
        ),
    ] {
        assert!(
            metric(&metrics, &s).is_some_and(|v| v >= 1.0),
            "{s} in\n{metrics}"
        );
    }
    assert_eq!(
        metric(
            &metrics,
            &series("kres_resolver_phase", &ns, "resolver", ",phase=\"Canary\"")
        ),
        Some(0.0)
    );
    let (_, status) = env.get("/status")?;
    let status: serde_json::Value = serde_json::from_str(&status)?;
    assert_eq!(
        status[format!("{ns}/resolver")]["current-revision"],
        json!(revision),
        "{status:#}"
    );
    let invalid = status[format!("{ns}/broken")]["invalid-config"]
        .as_str()
        .unwrap_or_default();
    assert!(
        invalid.contains("/spec/config/forward/0/servers/0"),
        "{status:#}"
    );

    // Steady state: reconciles without a spec change write nothing. Each annotation edit
    // triggers a reconcile; the counter proves the operator finished one after it.
    let mark = env.cp.audit().mark()?;
    let mut count = env.reconciles("resolver")?;
    for i in 0..3 {
        kubectl(
            env.cp,
            &[
                "annotate",
                "-n",
                &ns,
                "--overwrite",
                "kres/resolver",
                &format!("kres-ops.test/poke={i}"),
            ],
            "",
        )?;
        count = env.reconciled_beyond("resolver", count).await?;
    }
    let writes = env.operator_writes(&mark)?;
    assert!(
        writes.is_empty(),
        "the operator wrote in steady state: {writes:#?}"
    );

    // A deleted resolver's series and /status entry are dropped.
    kubectl(env.cp, &["delete", "-n", &ns, "kres/broken"], "")?;
    let env_ref = &env;
    eventually(30, "broken forgotten", || async move {
        let (_, m) = env_ref.get("/metrics")?;
        let (_, s) = env_ref.get("/status")?;
        Ok((!m.contains("name=\"broken\"") && !s.contains("/broken\"")).then_some(()))
    })
    .await?;
    let (_, metrics) = env.get("/metrics")?;
    assert!(metrics.contains("name=\"resolver\""), "{metrics}");
    Ok(())
}

/// `kresctl kube` as a user bound to manifests/kresctl-rbac.yaml: `status` and `history` of a
/// resolver with a good, a previous and a failed revision; `rollback` refuses the failed and an
/// unknown revision, and rolls back to the previous one: its pods and the ClusterIP answer the
/// previous record again, and `spec.config` is exactly that revision's (the failed one's `lua`
/// key is gone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kresctl_kube_status_history_and_rollback() -> R {
    let env = Env::new("kres-ctl").await?;
    for role in documents("manifests/kresctl-rbac.yaml", "ClusterRole")? {
        kubectl(
            env.cp,
            &["apply", "--server-side", "-f", "-"],
            &role.to_string(),
        )?;
    }
    bind_service_account(&env.client, &env.ns, "kresctl", "kres-kresctl").await?;
    let kc = env
        .cp
        .kubeconfig_for_service_account(&env.ns, "kresctl")
        .await?;
    let kc = kc.as_path();

    env.apply(&resolver("resolver", 2, RECORD, None)?)?;
    env.processed("resolver").await?;
    let (r1, _) = env.converged("resolver", 2).await?;
    env.apply(&resolver(
        "resolver",
        2,
        "www.corp.example.test. 300 A 192.0.2.81\n",
        None,
    )?)?;
    env.processed("resolver").await?;
    let (r2, _) = env.converged("resolver", 2).await?;
    assert_ne!(r1, r2);
    env.apply(&resolver(
        "resolver",
        2,
        "www.corp.example.test. 300 A 192.0.2.81\n",
        Some("error('kres-ctl-x')"),
    )?)?;
    env.wait_condition("resolver", "Degraded", 120)?;
    let r3 = env.update_revision("resolver").await?;

    let (ok, out, err) = env.kresctl_kube(kc, &["status", "resolver"])?;
    assert!(ok, "{err}");
    for want in [
        format!("current revision: {r2}"),
        format!("target revision:  {r3}"),
        "pod resolver-0".into(),
        "Degraded:".into(),
        "kres-ctl-x".into(),
    ] {
        assert!(out.contains(&want), "{want:?} in\n{out}");
    }

    let (ok, out, err) = env.kresctl_kube(kc, &["--json", "history", "resolver"])?;
    assert!(ok, "{err}");
    let h: serde_json::Value = serde_json::from_str(&out)?;
    let rows: Vec<(String, String)> = h["revisions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["revision"].as_str().unwrap_or_default().to_string(),
                e["state"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (r3.clone(), "failed".to_string()),
            (r2.clone(), "good".into()),
            (r1.clone(), "previous".into())
        ],
        "{out}"
    );
    assert_eq!(h["revisions"][0]["changed"], json!(["lua"]), "{out}");
    assert_eq!(h["revisions"][1]["changed"], json!(["local-data"]), "{out}");
    let (ok, text, _) = env.kresctl_kube(kc, &["history", "resolver"])?;
    assert!(
        ok && text.contains(&r1) && text.contains("kres-ctl-x"),
        "{text}"
    );

    // Refused: the failed revision, an unknown one. Nothing changes.
    let generation = env.resolvers().get("resolver").await?.metadata.generation;
    let (ok, _, err) = env.kresctl_kube(kc, &["rollback", "resolver", &r3])?;
    assert!(
        !ok && err.contains("failed") && err.contains("kres-ctl-x"),
        "{err}"
    );
    let (ok, _, err) = env.kresctl_kube(kc, &["rollback", "resolver", "0123456789ab"])?;
    assert!(!ok && err.contains("has no revision 0123456789ab"), "{err}");
    assert_eq!(
        env.resolvers().get("resolver").await?.metadata.generation,
        generation
    );

    // Back to r1: waits until the resolver converged on it.
    let (ok, out, err) = env.kresctl_kube(kc, &["rollback", "resolver", &r1])?;
    assert!(ok, "{err}\n{}", env.log_tail());
    assert!(out.contains(&format!("runs revision {r1}")), "{out}");
    let (_, pods) = env.converged_on(2, &r1).await?;
    for p in pods.values() {
        let addr: SocketAddr = format!("{}:53", pod_ip(p)?).parse()?;
        assert_eq!(ask(addr, "www.corp.example.test.").await?, "192.0.2.80");
    }
    let svc = Api::<Service>::namespaced(env.client.clone(), &env.ns)
        .get("resolver")
        .await?;
    assert_eq!(
        ask(cluster_ip(&svc)?, "www.corp.example.test.").await?,
        "192.0.2.80"
    );
    let k = env.resolvers().get("resolver").await?;
    let want: serde_json::Value = serde_json::from_str(&resolver("resolver", 2, RECORD, None)?)?;
    assert_eq!(k.spec.config, want["spec"]["config"]);
    assert!(
        k.managed_fields()
            .iter()
            .any(|f| f.manager.as_deref() == Some("kresctl")),
        "field manager"
    );
    Ok(())
}

/// `spec.cache.volumeClaimTemplate`: each regular slot mounts its own claim
/// `<name>-cache-<slot>` (the canary a memory emptyDir); after a rollout replaced every pod,
/// each slot's new pod mounts the same claim (same PVC uid) and kresd reopened the cache file
/// its predecessor created there (same inode). A record slot 0 resolved from a real knotd
/// before the rollout is answered by slot 0's new pod after knotd was stopped (from the warm
/// cache), while slot 1, which never asked, cannot answer it. Deleting the resolver
/// garbage-collects the claims. The harness has no provisioner: static hostPath PersistentVolumes are pre-bound to
/// the claim names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_claims_per_slot_survive_pod_replacement() -> R {
    use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
    use std::os::unix::fs::MetadataExt;
    let env = Env::new("kres-pvc").await?;
    let ns = env.ns.clone();
    let mut dirs = Vec::new();
    for slot in 0..2 {
        let dir = env.cp.dir().join(format!("pv-{ns}-{slot}"));
        std::fs::create_dir_all(&dir)?;
        Api::<PersistentVolume>::all(env.client.clone())
            .create(
                &Default::default(),
                &serde_json::from_value(json!({
                    "metadata": { "name": format!("{ns}-cache-{slot}") },
                    "spec": {
                        "capacity": { "storage": "1Gi" },
                        "accessModes": ["ReadWriteOnce"],
                        "storageClassName": "",
                        "persistentVolumeReclaimPolicy": "Retain",
                        "hostPath": { "path": dir },
                        "claimRef": { "namespace": ns, "name": format!("resolver-cache-{slot}") },
                    },
                }))?,
            )
            .await?;
        dirs.push(dir);
    }
    // The upstream of example.test., in this process's network namespace (as the pods).
    let mut knotd = Some(kres_tests::knotd::Knotd::start(
        kres_tests::net::unique_loopback(),
        &[kres_tests::knotd::Zone::example_test()],
    )?);
    let upstream = knotd
        .as_ref()
        .map(|k| k.addr.to_string().replace(':', "@"))
        .unwrap_or_default();
    let with_claims = |record: &str| -> anyhow::Result<String> {
        let mut v: serde_json::Value =
            serde_json::from_str(&resolver("resolver", 2, record, None)?)?;
        v["spec"]["config"]["cache"]["size-max"] = json!("20M");
        v["spec"]["config"]["forward"] = json!([{
            "subtree": "example.test.",
            "servers": [upstream],
            "options": { "dnssec": false },
        }]);
        v["spec"]["cache"] = json!({ "volumeClaimTemplate": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "",
            "resources": { "requests": { "storage": "1Gi" } },
        }});
        Ok(v.to_string())
    };
    env.apply(&with_claims(RECORD)?)?;
    let (r1, pods1) = env.converged("resolver", 2).await?;
    let claim_of = |p: &Pod| -> Option<String> {
        p.spec
            .as_ref()?
            .volumes
            .as_ref()?
            .iter()
            .find(|v| v.name == "cache")?
            .persistent_volume_claim
            .as_ref()
            .map(|c| c.claim_name.clone())
    };
    for (name, p) in &pods1 {
        let slot = name.trim_start_matches("resolver-");
        assert_eq!(
            claim_of(p),
            Some(format!("resolver-cache-{slot}")),
            "{name}"
        );
    }
    let claims = Api::<PersistentVolumeClaim>::namespaced(env.client.clone(), &ns);
    let uid = |pvc: PersistentVolumeClaim| pvc.uid().unwrap_or_default();
    let claim_uids = [
        uid(claims.get("resolver-cache-0").await?),
        uid(claims.get("resolver-cache-1").await?),
    ];
    // Slot 0 resolves (and caches) www.example.test.; slot 1 never asks.
    let slot0: SocketAddr = format!("{}:53", pod_ip(&pods1["resolver-0"])?).parse()?;
    assert_eq!(ask(slot0, "www.example.test.").await?, "192.0.2.10");
    let inodes = dirs
        .iter()
        .map(|d| Ok(std::fs::metadata(d.join("data.mdb"))?.ino()))
        .collect::<anyhow::Result<Vec<u64>>>()?;

    // knotd goes away; a rollout replaces both pods (canary first, on a memory emptyDir).
    knotd = None;
    let seen = watch_rollout(&env.client, &ns, "resolver");
    env.apply(&with_claims("www.corp.example.test. 300 A 192.0.2.81\n")?)?;
    env.processed("resolver").await?;
    let (r2, pods2) = env.converged("resolver", 2).await?;
    assert_ne!(r1, r2);
    let created = seen
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .pods
        .created_on(&r2);
    assert_eq!(
        created.first().map(String::as_str),
        Some("resolver-canary"),
        "{created:?}"
    );
    for (name, p) in &pods2 {
        assert_ne!(p.uid(), pods1[name].uid(), "{name} was not replaced");
        assert_eq!(claim_of(p), claim_of(&pods1[name]), "{name}");
        let addr: SocketAddr = format!("{}:53", pod_ip(p)?).parse()?;
        assert_eq!(ask(addr, "www.corp.example.test.").await?, "192.0.2.81");
    }
    assert_eq!(
        [
            uid(claims.get("resolver-cache-0").await?),
            uid(claims.get("resolver-cache-1").await?),
        ],
        claim_uids,
        "the claims were recreated"
    );
    let after = dirs
        .iter()
        .map(|d| Ok(std::fs::metadata(d.join("data.mdb"))?.ino()))
        .collect::<anyhow::Result<Vec<u64>>>()?;
    assert_eq!(
        after, inodes,
        "a successor did not reopen its slot's cache file"
    );
    assert!(knotd.is_none());
    let slot0: SocketAddr = format!("{}:53", pod_ip(&pods2["resolver-0"])?).parse()?;
    assert_eq!(
        ask(slot0, "www.example.test.").await?,
        "192.0.2.10",
        "slot 0's new pod answers from its predecessor's cache"
    );
    let slot1: SocketAddr = format!("{}:53", pod_ip(&pods2["resolver-1"])?).parse()?;
    let cold = ask(slot1, "www.example.test.").await;
    assert!(
        cold.as_deref().map_or(true, |a| a != "192.0.2.10"),
        "slot 1 never resolved the name and knotd is gone, yet it answered: {cold:?}"
    );

    // Deleting the resolver garbage-collects the claims (owner references).
    kubectl(env.cp, &["delete", "-n", &ns, "kres/resolver"], "")?;
    let claims = &claims;
    // (Gone, or deleted and held only by the pvc-protection finalizer: the harness runs no
    // pvc-protection controller to remove it.)
    eventually(60, "cache claims garbage-collected", || async move {
        let left = claims.list(&Default::default()).await?;
        Ok(left
            .items
            .iter()
            .all(|c| c.metadata.deletion_timestamp.is_some())
            .then_some(()))
    })
    .await?;
    Ok(())
}

/// 50 KnotResolvers of 1 replica each applied at once: time until all are Available, the
/// operator's API requests by verb until then, and its write requests over a steady minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with `make bench`"]
async fn bench_fifty_resolvers_converge() -> R {
    const N: usize = 50;
    let env = Env::new("kres-bench").await?;
    let docs: Vec<String> = (0..N)
        .map(|i| resolver(&format!("r{i:02}"), 1, RECORD, None))
        .collect::<anyhow::Result<_>>()?;
    let user = format!("system:serviceaccount:{}:kres-operator", env.ns);
    let mark = env.cp.audit().mark()?;
    let started = Instant::now();
    env.apply(&docs.join("\n---\n"))?;
    // Follow the resolvers with a watch until every one is Available and done (Idle, on its
    // revision).
    let available = |k: &KnotResolver| {
        k.status.as_ref().is_some_and(|s| {
            s.current_revision.is_some()
                && s.current_revision == s.update_revision
                && s.phase == Some(kres_crd::k8s::ResolverPhase::Idle)
                && s.conditions
                    .iter()
                    .any(|c| c.type_ == "Available" && c.status == "True")
        })
    };
    let mut seen: BTreeMap<String, bool> = BTreeMap::new();
    let mut stream = watcher(env.resolvers(), watcher::Config::default()).boxed();
    let wait = async {
        while let Some(ev) = stream.next().await {
            if let watcher::Event::Apply(k) | watcher::Event::InitApply(k) = ev? {
                seen.insert(k.name_any(), available(&k));
            }
            if seen.len() == N && seen.values().all(|a| *a) {
                return Ok::<_, anyhow::Error>(());
            }
        }
        anyhow::bail!("watch ended")
    };
    tokio::time::timeout(Duration::from_secs(600), wait)
        .await
        .map_err(|_| anyhow::anyhow!("not all Available after 600 s\n{}", env.log_tail()))??;
    let converge = started.elapsed();
    let mut by_verb: BTreeMap<String, usize> = BTreeMap::new();
    let mut by_resource: BTreeMap<(String, String), usize> = BTreeMap::new();
    for e in env.cp.audit().since(&mark)? {
        if e.user == user {
            *by_verb.entry(e.verb.clone()).or_default() += 1;
            let (_, verb, res) = e.tuple();
            *by_resource.entry((verb, res)).or_default() += 1;
        }
    }
    // Steady state: every resolver converged; one minute is measured.
    let steady = env.cp.audit().mark()?;
    let before = Instant::now();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let writes = env.operator_writes(&steady)?;
    println!(
        "{N} KnotResolvers x 1 replica: all Available after {:.1} s",
        converge.as_secs_f64()
    );
    println!("| verb | requests |\n|---|---|");
    for (verb, n) in &by_verb {
        println!("| {verb} | {n} |");
    }
    println!("| verb | resource | requests |\n|---|---|---|");
    for ((verb, res), n) in &by_resource {
        println!("| {verb} | {res} | {n} |");
    }
    println!(
        "steady state: {} write requests in {:.0} s: {writes:?}",
        writes.len(),
        before.elapsed().as_secs_f64()
    );
    Ok(())
}
