//! Smoke tests of the test Kubernetes control plane (etcd + kube-apiserver +
//! kube-controller-manager built by `make k8s-tools`) and of the test node agent.
//! They FAIL (never skip) when the tooling is missing, telling how to build it.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::rr::RecordType;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kres_tests::dns;
use kres_tests::k8s::wait::{eventually, pod_ready};
use kres_tests::k8s::{ControlPlane, tools};
use kube::api::{ApiResource, DeleteParams, DynamicObject, ObjectMeta, PostParams};
use kube::core::GroupVersionKind;
use kube::{Api, Client};

type R = anyhow::Result<()>;

#[ctor::ctor(unsafe)]
fn private_network() {
    kres_tests::k8s::netns::isolate_process()
}

#[tokio::test]
async fn kubectl_applies_a_crd_and_an_object_and_reads_it_back() -> R {
    let cp = ControlPlane::shared().await?;
    let ns = cp.namespace("crd").await?;
    let client = cp.admin_client().await?;
    // /version is stamped with the pinned release.
    let v = client.apiserver_version().await?;
    assert_eq!(v.git_version, tools::kubernetes_version());

    // Unique group per test binary run is not needed: the control plane is private to this binary.
    let crd = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: { name: widgets.smoke.kres.test }
spec:
  group: smoke.kres.test
  scope: Namespaced
  names: { plural: widgets, singular: widget, kind: Widget }
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: { type: integer, minimum: 1 }
"#;
    cp.kubectl_stdout(&["apply", "-f", "-"], crd)?;
    cp.kubectl_stdout(
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=30s",
            "crd/widgets.smoke.kres.test",
        ],
        "",
    )?;
    let obj = format!(
        "apiVersion: smoke.kres.test/v1\nkind: Widget\nmetadata: {{ name: w1, namespace: {ns} }}\nspec: {{ size: 3 }}\n"
    );
    cp.kubectl_stdout(&["apply", "-f", "-"], &obj)?;

    // Read back with kubectl ...
    let json: serde_json::Value = serde_json::from_str(
        &cp.kubectl_stdout(&["get", "-n", &ns, "widget", "w1", "-o", "json"], "")?,
    )?;
    assert_eq!(json["spec"]["size"], 3);
    // ... and with kube-rs.
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk("smoke.kres.test", "v1", "Widget"));
    let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &ar);
    let w = api.get("w1").await?;
    assert_eq!(w.data["spec"]["size"], 3);

    // The schema is enforced: size 0 is refused by the apiserver.
    let bad = obj.replace("size: 3", "size: 0");
    let err = cp
        .kubectl_stdout(&["apply", "-f", "-"], &bad)
        .expect_err("size 0 must be refused");
    assert!(err.to_string().contains("spec.size"), "{err}");
    Ok(())
}

fn kresd_pod(name: &str, config_map: &str) -> anyhow::Result<Pod> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "labels": { "app": name } },
        "spec": {
            "containers": [{
                "name": "kresd",
                "image": "docker.io/cznic/knot-resolver:5",
                "args": ["-c", "/etc/knot-resolver/kresd.conf"],
                "terminationMessagePolicy": "FallbackToLogsOnError",
                "env": [{ "name": "POD_IP", "valueFrom": { "fieldRef": { "fieldPath": "status.podIP" } } }],
                "volumeMounts": [{ "name": "config", "mountPath": "/etc/knot-resolver" }]
            }],
            "volumes": [{ "name": "config", "configMap": { "name": config_map } }]
        }
    }))?)
}

fn config_map(name: &str, kresd_conf: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some([("kresd.conf".to_string(), kresd_conf.to_string())].into()),
        ..Default::default()
    }
}

fn container_status(p: &Pod) -> Option<&k8s_openapi::api::core::v1::ContainerStatus> {
    p.status.as_ref()?.container_statuses.as_ref()?.first()
}

#[tokio::test]
async fn node_agent_runs_a_kresd_pod_that_answers_dns_on_its_pod_ip() -> R {
    let cp = ControlPlane::shared().await?;
    let ns = cp.namespace("pod").await?;
    let client = cp.admin_client().await?;
    let node = cp.node_agent(&ns).await?;

    let conf = "net.listen(os.getenv('POD_IP'), 53, { kind = 'dns' })\n\
                modules.load('hints > iterate')\n\
                hints['resolver.kres-smoke.'] = '192.0.2.7'\n";
    Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &config_map("kresd", conf))
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    pods.create(&PostParams::default(), &kresd_pod("resolver", "kresd")?)
        .await?;

    let pods = &pods;
    let pod = eventually(30, "pod resolver Running and Ready", || async move {
        let p = pods.get("resolver").await?;
        let running = p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
        Ok((running && pod_ready(&p)).then_some(p))
    })
    .await?;
    let spec = pod.spec.as_ref().expect("spec");
    assert_eq!(
        spec.node_name.as_deref(),
        Some(node.agent.node_name()),
        "bound to the agent's node"
    );
    let status = pod.status.as_ref().expect("status");
    let ip = status.pod_ip.clone().expect("podIP");
    assert!(ip.starts_with("198.18."), "a pod CIDR address: {ip}");
    assert_eq!(
        status.pod_ips.as_ref().map(|v| v[0].ip.clone()),
        Some(ip.clone())
    );
    let cs = container_status(&pod).expect("container status");
    assert!(
        cs.ready && cs.state.as_ref().and_then(|s| s.running.as_ref()).is_some(),
        "{cs:?}"
    );
    assert_eq!(cs.restart_count, 0);

    let server: SocketAddr = format!("{ip}:53").parse()?;
    let answers = tokio::task::spawn_blocking(move || {
        dns::resolve(server, "resolver.kres-smoke.", RecordType::A)
    })
    .await??;
    assert_eq!(answers, vec!["192.0.2.7".to_string()]);

    // The disruption controller counts the Ready pod as healthy for a PodDisruptionBudget.
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &ns);
    let pdb: PodDisruptionBudget = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "resolver" },
        "spec": { "minAvailable": 1, "selector": { "matchLabels": { "app": "resolver" } } },
    }))?;
    pdbs.create(&PostParams::default(), &pdb).await?;
    let pdbs = &pdbs;
    eventually(30, "PDB resolver with 1 healthy pod", || async move {
        let st = pdbs.get("resolver").await?.status;
        Ok(st
            .filter(|s| {
                s.current_healthy == Some(1)
                    && s.expected_pods == Some(1)
                    && s.desired_healthy == Some(1)
            })
            .map(|_| ()))
    })
    .await?;

    // Deletion with the default grace period: SIGTERM, then the agent removes the pod.
    pods.delete("resolver", &DeleteParams::default()).await?;
    eventually(30, "pod resolver gone", || async move {
        Ok(pods.get_opt("resolver").await?.is_none().then_some(()))
    })
    .await?;
    let gone = tokio::task::spawn_blocking(move || {
        dns::query_with(
            server,
            "resolver.kres-smoke.",
            RecordType::A,
            Duration::from_millis(300),
            |_| {},
        )
    })
    .await?;
    assert!(
        gone.is_err(),
        "kresd still answers after its pod was deleted: {gone:?}"
    );
    node.agent.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn a_pod_with_a_broken_kresd_config_goes_crash_loop_back_off() -> R {
    let cp = ControlPlane::shared().await?;
    let ns = cp.namespace("crash").await?;
    let client = cp.admin_client().await?;
    let _node = cp.node_agent(&ns).await?;
    Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .create(
            &PostParams::default(),
            &config_map("broken", "net.listen(os.getenv('POD_IP'), 53\n"),
        )
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    pods.create(&PostParams::default(), &kresd_pod("broken", "broken")?)
        .await?;

    let pods = &pods;
    let pod = eventually(
        30,
        "pod broken in CrashLoopBackOff after a restart",
        || async move {
            let p = pods.get("broken").await?;
            let cs = container_status(&p).cloned();
            let looping = cs.as_ref().is_some_and(|cs| {
                cs.restart_count >= 1
                    && cs
                        .state
                        .as_ref()
                        .and_then(|s| s.waiting.as_ref())
                        .and_then(|w| w.reason.as_deref())
                        == Some("CrashLoopBackOff")
            });
            Ok(looping.then_some(p))
        },
    )
    .await?;
    let cs = container_status(&pod).expect("container status");
    assert!(!cs.ready && !pod_ready(&pod));
    let last = cs
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .expect("lastState.terminated");
    assert_eq!(last.exit_code, 1, "{last:?}");
    assert!(
        last.message
            .as_deref()
            .unwrap_or_default()
            .contains("error while loading config"),
        "{last:?}"
    );
    Ok(())
}

#[tokio::test]
async fn garbage_collector_and_namespace_deletion_remove_owned_objects() -> R {
    let cp = ControlPlane::shared().await?;
    let ns = cp.namespace("gc").await?;
    let client = cp.admin_client().await?;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let owner = cms
        .create(&PostParams::default(), &config_map("owner", ""))
        .await?;
    let mut owned = config_map("owned", "");
    owned.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        name: "owner".into(),
        uid: owner.metadata.uid.clone().expect("uid"),
        ..Default::default()
    }]);
    cms.create(&PostParams::default(), &owned).await?;
    cms.create(&PostParams::default(), &config_map("bystander", ""))
        .await?;

    // Owner references: deleting the owner lets the garbage collector delete the dependent.
    cms.delete("owner", &DeleteParams::default()).await?;
    let cms = &cms;
    eventually(60, "owned ConfigMap garbage-collected", || async move {
        Ok(cms.get_opt("owned").await?.is_none().then_some(()))
    })
    .await?;
    assert!(
        cms.get_opt("bystander").await?.is_some(),
        "an object without owner must stay"
    );

    // Namespace deletion: the namespace controller empties it and removes its finalizer.
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.delete(&ns, &DeleteParams::default()).await?;
    let (nss, ns) = (&nss, &ns);
    eventually(60, "namespace deleted", || async move {
        Ok(nss.get_opt(ns).await?.is_none().then_some(()))
    })
    .await?;
    let all: Api<ConfigMap> = Api::all(client);
    let left = all.list(&Default::default()).await?;
    assert!(
        !left
            .items
            .iter()
            .any(|c| c.metadata.namespace.as_deref() == Some(ns.as_str())),
        "ConfigMaps left in deleted namespace {ns}"
    );
    Ok(())
}

fn forbidden(r: Result<impl std::fmt::Debug, kube::Error>) -> bool {
    matches!(r, Err(kube::Error::Api(s)) if s.code == 403)
}

#[tokio::test]
async fn rbac_allows_granted_and_refuses_missing_permissions() -> R {
    let cp = ControlPlane::shared().await?;
    let ns = cp.namespace("rbac").await?;
    let admin = cp.admin_client().await?;
    Api::<ServiceAccount>::namespaced(admin.clone(), &ns)
        .create(
            &PostParams::default(),
            &ServiceAccount {
                metadata: ObjectMeta {
                    name: Some("reader".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await?;
    let role = Role {
        metadata: ObjectMeta {
            name: Some("configmap-reader".into()),
            ..Default::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["configmaps".into()]),
            verbs: vec!["get".into(), "list".into()],
            ..Default::default()
        }]),
    };
    Api::<Role>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &role)
        .await?;
    let binding: RoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "reader" },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "configmap-reader" },
        "subjects": [{ "kind": "ServiceAccount", "name": "reader", "namespace": ns }],
    }))?;
    Api::<RoleBinding>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &binding)
        .await?;
    Api::<ConfigMap>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &config_map("visible", ""))
        .await?;

    let sa: Client = cp.client_for_service_account(&ns, "reader").await?;
    let sa_cms: Api<ConfigMap> = Api::namespaced(sa.clone(), &ns);
    // The RBAC authorizer works from an informer cache: the grant may take a moment.
    let sa_cms_ref = &sa_cms;
    let listed = eventually(10, "reader may list configmaps", || async move {
        Ok(sa_cms_ref.list(&Default::default()).await.ok())
    })
    .await?;
    assert!(
        listed
            .items
            .iter()
            .any(|c| c.metadata.name.as_deref() == Some("visible"))
    );
    assert!(
        forbidden(
            sa_cms
                .create(&PostParams::default(), &config_map("nope", ""))
                .await
        ),
        "create must be refused"
    );
    assert!(
        forbidden(
            Api::<Pod>::namespaced(sa.clone(), &ns)
                .list(&Default::default())
                .await
        ),
        "pods must be refused"
    );
    assert!(
        forbidden(
            Api::<ConfigMap>::namespaced(sa, "default")
                .list(&Default::default())
                .await
        ),
        "other namespaces too"
    );

    // A user (client certificate) with no binding at all is refused.
    let alice = cp.client_for_user("alice", Some("kres-test-users")).await?;
    assert!(forbidden(
        Api::<ConfigMap>::namespaced(alice, &ns)
            .list(&Default::default())
            .await
    ));
    Ok(())
}
