//! `kres-operator kube` end to end against the real control plane (etcd, kube-apiserver,
//! kube-controller-manager, kube-proxy) with the node agent as the kubelet: the operator binary
//! runs with a ServiceAccount token bound to the ClusterRole of manifests/rbac.yaml (not as
//! admin), KnotResolvers are applied with `kubectl`, and every answer comes from real kresd
//! pods, through their pod IPs and the Service's ClusterIP.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::process::Command;

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kres_tests::k8s::operator::*;
use kres_tests::k8s::wait::{eventually, pod_ready};
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use serde_json::json;

type R = anyhow::Result<()>;

#[ctor::ctor(unsafe)]
fn private_network() {
    kres_tests::k8s::netns::isolate_process()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_knotresolver_end_to_end() -> R {
    let env = Env::new("kres-e2e").await?;
    let example = repo_file("manifests/examples/knotresolver.yaml");
    env.apply(&std::fs::read_to_string(&example)?)?;
    env.wait_condition("resolver", "Available", 120)?;
    let (r1, pods) = env.converged("resolver", 3).await?;
    assert_eq!(
        pods.keys().cloned().collect::<Vec<_>>(),
        ["resolver-0", "resolver-1", "resolver-2"]
    );
    // Beside kresd each pod runs kres-cache-gc (one PID namespace), on the LMDB cache kresd
    // opened.
    for (name, p) in &pods {
        let spec = p.spec.as_ref();
        assert_eq!(spec.and_then(|s| s.share_process_namespace), Some(true));
        let gc = p
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.name == "cache-gc"))
            .ok_or_else(|| anyhow::anyhow!("{name}: no cache-gc container status"))?;
        assert!(
            gc.ready && gc.state.as_ref().is_some_and(|s| s.running.is_some()),
            "{name}: {gc:?}"
        );
        let uid = p.uid().unwrap_or_default();
        let dir = cache_gc_dir(&uid)
            .ok_or_else(|| anyhow::anyhow!("{name}: no kres-cache-gc process on its cache"))?;
        assert!(dir.join("data.mdb").is_file(), "{name}: {}", dir.display());
    }

    // The immutable ConfigMap of the revision holds what `kresctl convert` renders.
    let cm = Api::<ConfigMap>::namespaced(env.client.clone(), &env.ns)
        .get(&format!("resolver-{r1}"))
        .await?;
    assert_eq!(cm.immutable, Some(true));
    let convert = Command::new(kresctl()?)
        .args(["convert", "--knotresolver"])
        .arg(&example)
        .output()?;
    assert!(
        convert.status.success(),
        "{}",
        String::from_utf8_lossy(&convert.stderr)
    );
    assert_eq!(
        cm.data
            .as_ref()
            .and_then(|d| d.get("kresd.conf"))
            .map(String::as_str),
        Some(String::from_utf8(convert.stdout)?.as_str())
    );

    // The Service's EndpointSlices list exactly the ready pods; every pod and the ClusterIP
    // answer the record.
    let ips: BTreeSet<String> = pods.values().map(pod_ip).collect::<anyhow::Result<_>>()?;
    let client = &env.client;
    let ns = env.ns.as_str();
    let ips_ref = &ips;
    eventually(30, "EndpointSlice = pod IPs", || async move {
        Ok((ready_endpoints(client, ns, "resolver").await? == *ips_ref).then_some(()))
    })
    .await?;
    for ip in &ips {
        let addr: SocketAddr = format!("{ip}:53").parse()?;
        assert_eq!(
            ask(addr, "www.corp.example.test.").await?,
            "192.0.2.80",
            "pod {ip}"
        );
    }
    let svc = Api::<Service>::namespaced(env.client.clone(), &env.ns)
        .get("resolver")
        .await?;
    let service = cluster_ip(&svc)?;
    for _ in 0..3 {
        assert_eq!(ask(service, "www.corp.example.test.").await?, "192.0.2.80");
    }
    assert!(env.get("/healthz")?.0.contains(" 200 "));
    let (line, status) = env.get("/status")?;
    assert!(
        line.contains(" 200 ") && status.contains(&format!("{}/resolver", env.ns)),
        "{line} {status}"
    );
    let (_, metrics) = env.get("/metrics")?;
    assert!(metrics.contains("kres_reconciles_total"), "{metrics}");
    let columns = kubectl(env.cp, &["get", "kres", "-n", &env.ns, "resolver"], "")?;
    assert!(
        columns.contains("REPLICAS") && columns.contains("AVAILABLE") && columns.contains(&r1),
        "{columns}"
    );

    // A config edit: canary first, then one slot at a time; ready endpoints never below 3.
    let seen = watch_rollout(&env.client, &env.ns, "resolver");
    env.apply(&example_with(
        "www.corp.example.test. 300 A 192.0.2.81\n",
        None,
    )?)?;
    let (r2, new_pods) = env.converged("resolver", 3).await?;
    assert_ne!(r1, r2);
    let (created_new, min_ready) = {
        let seen = seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        (seen.pods.created_on(&r2), seen.min_ready)
    };
    assert_eq!(
        created_new.first().map(String::as_str),
        Some("resolver-canary"),
        "{created_new:?}"
    );
    let mut regular: Vec<&str> = created_new[1..].iter().map(String::as_str).collect();
    regular.sort();
    assert_eq!(
        regular,
        ["resolver-0", "resolver-1", "resolver-2"],
        "{created_new:?}"
    );
    assert!(
        min_ready.is_some_and(|m| m >= 3),
        "ready endpoints dropped to {min_ready:?}"
    );
    for p in new_pods.values() {
        let addr: SocketAddr = format!("{}:53", pod_ip(p)?).parse()?;
        assert_eq!(ask(addr, "www.corp.example.test.").await?, "192.0.2.81");
    }
    assert_eq!(ask(service, "www.corp.example.test.").await?, "192.0.2.81");
    let reasons: Vec<String> = env
        .events()
        .await?
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    assert!(
        reasons.iter().any(|r| r == "RolloutComplete"),
        "{reasons:?}"
    );

    // Scaling through the scale subresource: 3 -> 5 -> 2, no new revision.
    for (n, names) in [
        (
            5,
            &[
                "resolver-0",
                "resolver-1",
                "resolver-2",
                "resolver-3",
                "resolver-4",
            ][..],
        ),
        (2, &["resolver-0", "resolver-1"][..]),
    ] {
        kubectl(
            env.cp,
            &[
                "scale",
                "-n",
                &env.ns,
                "kres/resolver",
                &format!("--replicas={n}"),
            ],
            "",
        )?;
        let (rev, pods) = env.converged("resolver", n).await?;
        assert_eq!(rev, r2);
        assert_eq!(pods.keys().map(String::as_str).collect::<Vec<_>>(), names);
    }
    // Below 2 replicas the PodDisruptionBudget goes: with one pod it could only block a drain.
    let pdbs = &Api::<PodDisruptionBudget>::namespaced(env.client.clone(), &env.ns);
    assert!(
        pdbs.get_opt("resolver").await?.is_some(),
        "no PDB at 2 replicas"
    );
    kubectl(
        env.cp,
        &["scale", "-n", &env.ns, "kres/resolver", "--replicas=1"],
        "",
    )?;
    let (rev, _) = env.converged("resolver", 1).await?;
    assert_eq!(rev, r2);
    eventually(60, "the PDB deleted at 1 replica", || async move {
        Ok(pdbs.get_opt("resolver").await?.is_none().then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_canary_or_invalid_spec_touches_no_pod_then_recovery_recreation_and_gc() -> R {
    let env = Env::new("kres-fail").await?;
    env.apply(&example_with(
        "www.corp.example.test. 300 A 192.0.2.80\n",
        None,
    )?)?;
    let (r1, pods) = env.converged("resolver", 3).await?;
    let uids = |pods: &BTreeMap<String, Pod>| -> BTreeMap<String, String> {
        pods.iter()
            .filter(|(_, p)| p.labels().get(SLOT).is_some_and(|s| s != "canary"))
            .map(|(n, p)| (n.clone(), p.uid().unwrap_or_default()))
            .collect()
    };
    let before = uids(&pods);

    // lua.script error('x'): the canary crash-loops, the revision fails with kresd's line.
    env.apply(&example_with(
        "www.corp.example.test. 300 A 192.0.2.80\n",
        Some("error('kres-e2e-x')"),
    )?)?;
    env.wait_condition("resolver", "Degraded", 120)?;
    let r = env.resolvers().get("resolver").await?;
    let s = r.status.clone().unwrap_or_default();
    let degraded = s
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .ok_or_else(|| anyhow::anyhow!("no Degraded"))?;
    assert_eq!(degraded.reason, "RevisionRejected");
    assert!(
        degraded.message.contains("kres-e2e-x"),
        "{}",
        degraded.message
    );
    assert_eq!(s.current_revision.as_deref(), Some(r1.as_str()));
    assert!(
        s.failed_revisions
            .iter()
            .any(|f| Some(&f.revision) == s.update_revision.as_ref())
    );
    let (_, after) = env.converged_on(3, &r1).await?;
    assert_eq!(uids(&after), before, "a regular pod was replaced");
    let events = env.events().await?;
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("RevisionFailed")
                && e.type_.as_deref() == Some("Warning")),
        "{:?}",
        events.iter().map(|e| &e.reason).collect::<Vec<_>>()
    );

    // A spec the validator refuses: Degraded InvalidConfig naming the field, nothing touched.
    let mut bad: serde_json::Value = serde_json::from_str(&example_with(
        "www.corp.example.test. 300 A 192.0.2.80\n",
        None,
    )?)?;
    bad["spec"]["config"]["forward"] = json!([{ "subtree": ".", "servers": ["not-an-ip"] }]);
    env.apply(&bad.to_string())?;
    let resolvers = &env.resolvers();
    let message = eventually(60, "Degraded InvalidConfig", || async move {
        let r = resolvers.get("resolver").await?;
        Ok(r.status.and_then(|s| {
            s.conditions
                .into_iter()
                .find(|c| c.type_ == "Degraded" && c.reason == "InvalidConfig")
                .map(|c| c.message)
        }))
    })
    .await?;
    assert!(
        message.contains("/spec/config/forward/0/servers/0"),
        "{message}"
    );
    let (_, after) = env.converged_on(3, &r1).await?;
    assert_eq!(uids(&after), before, "an invalid spec touched a pod");

    // Fixing the spec recovers: Available on a new revision.
    env.apply(&example_with(
        "www.corp.example.test. 300 A 192.0.2.82\n",
        None,
    )?)?;
    let (r3, pods) = env.converged("resolver", 3).await?;
    assert_ne!(r3, r1);

    // A pod deleted by hand is recreated (a new UID, same slot and revision).
    let old_uid = pods["resolver-1"].uid();
    env.pods()
        .delete("resolver-1", &kube::api::DeleteParams::default())
        .await?;
    let pods_api = &env.pods();
    let old_uid = &old_uid;
    eventually(60, "resolver-1 recreated and Ready", || async move {
        let p = pods_api.get_opt("resolver-1").await?;
        Ok(p.filter(|p| p.uid() != *old_uid && pod_ready(p))
            .map(|p| p.labels().get(REVISION).cloned()))
    })
    .await?
    .filter(|rev| *rev == r3)
    .ok_or_else(|| anyhow::anyhow!("recreated on another revision"))?;

    // Deleting the KnotResolver garbage-collects its pods, ConfigMaps, Service and PDB.
    kubectl(env.cp, &["delete", "-n", &env.ns, "kres/resolver"], "")?;
    let (client, ns) = (&env.client, env.ns.as_str());
    eventually(60, "owned objects garbage-collected", || async move {
        let lp = ListParams::default().labels("app.kubernetes.io/instance=resolver");
        let pods = Api::<Pod>::namespaced(client.clone(), ns).list(&lp).await?;
        let cms = Api::<ConfigMap>::namespaced(client.clone(), ns)
            .list(&lp)
            .await?;
        let svc = Api::<Service>::namespaced(client.clone(), ns)
            .list(&lp)
            .await?;
        let pdb = Api::<PodDisruptionBudget>::namespaced(client.clone(), ns)
            .list(&lp)
            .await?;
        Ok((pods.items.is_empty()
            && cms.items.is_empty()
            && svc.items.is_empty()
            && pdb.items.is_empty())
        .then_some(()))
    })
    .await?;
    Ok(())
}

/// An operator that may not list pods is not ready and reconciles nothing: `/readyz` names the
/// cold watch cache. Once the grant is there the cache syncs, `/readyz` is ok and the resolver
/// that was waiting converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_reconciles_only_once_its_watch_caches_are_synced() -> R {
    let mut env = Env::new("kres-sync").await?;
    env.operator = None; // replaced by one that may not list pods
    env.apply(&example_with(
        "www.corp.example.test. 300 A 192.0.2.80\n",
        None,
    )?)?;
    // ServiceAccount kres-nopods: the shipped ClusterRole's rules but the one on pods, as a Role.
    let mut role = documents("manifests/rbac.yaml", "ClusterRole")?
        .into_iter()
        .find(|r| r["metadata"]["name"] == "kres-operator")
        .ok_or_else(|| anyhow::anyhow!("no ClusterRole kres-operator"))?;
    let rules = role["rules"]
        .as_array_mut()
        .ok_or_else(|| anyhow::anyhow!("rules"))?;
    let before = rules.len();
    rules.retain(|r| r["resources"] != json!(["pods"]));
    assert_eq!(rules.len(), before - 1, "one rule on pods");
    role["kind"] = json!("Role");
    role["metadata"] = json!({ "name": "kres-nopods", "namespace": env.ns });
    let account = json!({ "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": { "name": "kres-nopods", "namespace": env.ns } });
    let binding = |name: &str, kind: &str, role: &str| {
        json!({ "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": { "name": name, "namespace": env.ns },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role },
            "subjects": [{ "kind": "ServiceAccount", "name": "kres-nopods", "namespace": env.ns }] })
    };
    for doc in [account, role, binding("kres-nopods", "Role", "kres-nopods")] {
        kubectl(
            env.cp,
            &["apply", "--server-side", "-f", "-"],
            &doc.to_string(),
        )?;
    }
    let http = http_address();
    let _operator = env
        .spawn_operator_as("kres-nopods", http, &[], "kres-nopods")
        .await?;
    let waiting = &format!("waiting for the watch caches: {}/pods", env.ns);
    eventually(60, "/readyz waits for the pod cache alone", || async move {
        Ok(http_get(http, "/readyz")
            .ok()
            .filter(|(line, body)| line.contains(" 503 ") && body.trim_end() == waiting))
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", env.log_tail()))?;
    // Waiting, it has touched nothing: no status, no pod, no ConfigMap.
    let resolver = env.resolvers().get("resolver").await?;
    assert!(resolver.status.is_none(), "{:?}", resolver.status);
    let lp = ListParams::default().labels("app.kubernetes.io/instance=resolver");
    assert!(env.pods().list(&lp).await?.items.is_empty());
    assert!(
        Api::<ConfigMap>::namespaced(env.client.clone(), &env.ns)
            .list(&lp)
            .await?
            .items
            .is_empty()
    );

    // The grant: the pod cache syncs, /readyz is ok, the resolver converges.
    kubectl(
        env.cp,
        &["apply", "--server-side", "-f", "-"],
        &binding("kres-nopods-full", "ClusterRole", "kres-operator").to_string(),
    )?;
    eventually(90, "/readyz ok", || async move {
        Ok(http_get(http, "/readyz")
            .ok()
            .filter(|(line, _)| line.contains(" 200 ")))
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", env.log_tail()))?;
    env.converged("resolver", 3).await?;
    Ok(())
}

/// Two operators with `--leader-elect` on the Role shipped in manifests/rbac.yaml. The first,
/// started before that Role is bound, retries until it may take the Lease; the holder reconciles,
/// the standby does not; killing the holder hands the Lease to the standby, which takes over the
/// resolver without restarting a pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_election_hands_over_without_restarting_pods() -> R {
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::rbac::v1::Role;
    let mut env = Env::new("kres-lease").await?;
    env.operator = None; // the default operator does not take part in the election
    // operator-a starts before it may read the Lease: it retries instead of exiting (a RoleBinding
    // the apiserver's RBAC cache has not seen yet used to kill a freshly started standby).
    let elect = ["--leader-elect", "--lease-namespace", env.ns.as_str()];
    let http_a = http_address();
    let a = env.spawn_operator(http_a, &elect, "operator-a").await?;
    let log = &env.log;
    eventually(
        30,
        "operator-a is refused the Lease and retries",
        || async move {
            let text = std::fs::read_to_string(log)?;
            Ok(text.contains("cannot read the Lease").then_some(()))
        },
    )
    .await?;
    // The leader-election Role and its binding, moved into this namespace.
    for kind in ["Role", "RoleBinding"] {
        for mut doc in documents("manifests/rbac.yaml", kind)? {
            doc["metadata"]["namespace"] = json!(env.ns);
            if let Some(subjects) = doc.get_mut("subjects").and_then(|s| s.as_array_mut()) {
                for s in subjects {
                    s["namespace"] = json!(env.ns);
                }
            }
            kubectl(
                env.cp,
                &["apply", "--server-side", "-f", "-"],
                &doc.to_string(),
            )?;
        }
    }
    assert!(
        Api::<Role>::namespaced(env.client.clone(), &env.ns)
            .get("kres-operator-leader-election")
            .await
            .is_ok()
    );
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), &env.ns);
    let leases = &leases;
    let holder = || async move {
        let lease = leases.get_opt("kres-operator").await?;
        Ok::<_, anyhow::Error>(
            lease
                .and_then(|l| l.spec)
                .and_then(|s| s.holder_identity)
                .filter(|h| !h.is_empty()),
        )
    };
    let first = eventually(60, "a Lease holder", || async move { holder().await })
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}", env.log_tail()))?;
    assert_eq!(first, "operator-a", "the only operator running");
    let http_b = http_address();
    let b = env.spawn_operator(http_b, &elect, "operator-b").await?;

    env.apply(&example_with(
        "www.corp.example.test. 300 A 192.0.2.80\n",
        None,
    )?)?;
    env.wait_condition("resolver", "Available", 120)?;
    let (revision, pods) = env.converged("resolver", 3).await?;
    let uids: BTreeMap<String, Option<String>> = pods
        .iter()
        .map(|(n, p)| (n.clone(), p.metadata.uid.clone()))
        .collect();
    // Only the holder reconciled: the standby's /status lists no resolver.
    let status = |addr: SocketAddr| -> anyhow::Result<String> {
        http_get(addr, "/status")
            .map(|(_, body)| body)
            .map_err(|e| anyhow::anyhow!("GET {addr}/status: {e}\n{}", env.log_tail()))
    };
    let key = format!("\"{}/resolver\"", env.ns);
    let key = key.as_str();
    assert!(status(http_a)?.contains(key), "leader /status");
    let standby = status(http_b)?;
    assert!(!standby.contains(key), "the standby reconciled: {standby}");

    // Kill the holder: the standby takes the Lease and then reconciles the resolver.
    let started = std::time::Instant::now();
    drop(a);
    let second = eventually(60, "the standby holds the Lease", || async move {
        Ok(holder().await?.filter(|h| h != "operator-a"))
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", env.log_tail()))?;
    assert_eq!(second, "operator-b");
    eprintln!(
        "lease handed over to {second} after {:?}",
        started.elapsed()
    );
    eventually(
        60,
        "the new leader reconciled the resolver",
        || async move {
            Ok(http_get(http_b, "/status")
                .ok()
                .filter(|(_, body)| body.contains(key))
                .map(|_| ()))
        },
    )
    .await?;
    let (after, pods) = env.converged("resolver", 3).await?;
    assert_eq!(after, revision);
    let uids_after: BTreeMap<String, Option<String>> = pods
        .iter()
        .map(|(n, p)| (n.clone(), p.metadata.uid.clone()))
        .collect();
    assert_eq!(uids_after, uids, "a pod was restarted by the takeover");
    drop(b);
    Ok(())
}
