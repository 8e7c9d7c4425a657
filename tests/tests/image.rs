//! The container image `make image` builds (image/build.sh), run by the real podman 4 with runc,
//! as root (CI runs as root; fails, not skips, otherwise): kresd from the image answers DNS on a
//! loopback address as the image's non-root default user with its cache in
//! /var/cache/knot-resolver, and the `kres-operator` on the image's PATH is this build's.
//! The image comes from the archives `make image` wrote (`make test` builds them first, cached);
//! the OCI archive and the docker-archive load as the same image.

use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hickory_proto::rr::RecordType;
use kres_crd::config::ResolverConfig;
use kres_crd::lua::{RenderOptions, render};
use kres_tests::dns::resolve;
use kres_tests::net::{free_port, unique_loopback};
use kres_tests::podman::{ImageBuild, Podman, RUN_LIMITS};
use kres_tests::process::proc_ids;
use kres_tests::root::require_root;

/// Loopback only: nothing these tests start can reach another host (see
/// `kres_tests::net::isolate_loopback_only`).
#[ctor::ctor(unsafe)]
fn private_network() {
    kres_tests::net::isolate_loopback_only()
}

/// Where the test's kresd config is mounted in the container.
const LUA_IN_CONTAINER: &str = "/etc/kres-test/kresd.lua";

/// kresd's config: one loopback listener, cache in the image's cache dir, one local-data record,
/// and nothing that sends queries off the machine (no priming, no DNSSEC trust anchor updates,
/// no time-skew check).
fn kresd_lua(listen: SocketAddr) -> Result<String> {
    let yaml = format!(
        "network:\n  listen:\n    - interface: {}@{}\ncache:\n  storage: /var/cache/knot-resolver\n  \
         size-max: 10M\noptions:\n  priming: false\ndnssec:\n  enable: false\nlocal-data:\n  \
         records: |\n    image.test. 300 A 192.0.2.7\nlua:\n  script: |\n    \
         modules.unload('detect_time_skew')\n",
        listen.ip(),
        listen.port()
    );
    let config = ResolverConfig::from_yaml_str(&yaml)?;
    Ok(render(&config, &RenderOptions::default())?)
}

#[test]
fn image_serves_dns_as_non_root_and_carries_this_operator() -> Result<()> {
    if !require_root("the container image under rootful podman") {
        return Ok(());
    }
    let build = ImageBuild::locate()?;
    let mut podman = Podman::new()?;
    podman.load(&build.oci_archive())?;
    let image = build.reference.as_str();
    // The docker-archive (for dockerd, which cannot load OCI archives) carries the same image.
    let id = podman.inspect(image, "{{.Id}}")?;
    podman.run(&["rmi", image])?;
    podman.load(&build.docker_archive())?;
    assert_eq!(
        podman.inspect(image, "{{.Id}}")?,
        id,
        "image ID from the docker-archive vs the OCI archive"
    );

    // The config the Kubernetes pods rely on: numeric non-root user (runAsNonRoot), entrypoint.
    let user = podman.inspect(image, "{{.Config.User}}")?;
    assert_eq!(user, build.user, "image user vs build-info");
    let (uid, gid) = user
        .split_once(':')
        .and_then(|(u, g)| Some((u.parse::<u32>().ok()?, g.parse::<u32>().ok()?)))
        .with_context(|| format!("image user {user:?} is not numeric UID:GID"))?;
    assert!(uid != 0 && gid != 0, "image user is root: {user}");
    assert_eq!(
        podman.inspect(image, "{{json .Config.Entrypoint}}")?,
        r#"["/usr/bin/kres-operator"]"#
    );

    // `kres-operator` by name: resolved through the image's PATH, as an exec probe would be.
    let version = podman.run(&[
        "run",
        "--rm",
        "--network",
        "none",
        RUN_LIMITS[0],
        RUN_LIMITS[1],
        RUN_LIMITS[2],
        RUN_LIMITS[3],
        "--entrypoint",
        "kres-operator",
        image,
        "--version",
    ])?;
    assert_eq!(
        version.trim(),
        format!("kres-operator {}", env!("CARGO_PKG_VERSION")),
        "the image's kres-operator is not this workspace's version"
    );

    // kresd from the image, host network, listening on a loopback address of this test only.
    let ip = unique_loopback();
    let listen = SocketAddr::new(IpAddr::V4(ip), free_port(ip));
    let dir = tempfile::Builder::new().prefix("kres-image-").tempdir()?;
    let lua = dir.path().join("kresd.lua");
    std::fs::write(&lua, kresd_lua(listen)?)?;
    let mount = format!("{}:{LUA_IN_CONTAINER}:ro", lua.display());
    let name = format!("kres-image-test-{}", std::process::id());
    podman.start(
        &name,
        &[
            "--network",
            "host",
            RUN_LIMITS[0],
            RUN_LIMITS[1],
            RUN_LIMITS[2],
            RUN_LIMITS[3],
            "--volume",
            &mount,
            "--entrypoint",
            "/usr/sbin/kresd",
            image,
            "-n",
            "-c",
            LUA_IN_CONTAINER,
        ],
    )?;

    let started = Instant::now();
    let answers = loop {
        match resolve(listen, "image.test.", RecordType::A) {
            Ok(a) => break a,
            Err(e) if started.elapsed() > Duration::from_secs(30) => bail!(
                "no answer from kresd in the image after {:?}: {e:#}\n{}",
                started.elapsed(),
                podman.logs(&name)
            ),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    assert_eq!(answers, vec!["192.0.2.7".to_string()]);

    // The process serving is /usr/sbin/kresd, running as the image's user, not root.
    let pid = podman.pid(&name)?;
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))?;
    assert_eq!(exe, std::path::Path::new("/usr/sbin/kresd"));
    let (uids, gids) = proc_ids(pid)?;
    assert_eq!(uids, vec![uid; 4], "kresd's real/effective/saved/fs uid");
    assert_eq!(gids, vec![gid; 4], "kresd's real/effective/saved/fs gid");

    // kresd created its cache in /var/cache/knot-resolver: writable by the default user.
    let cache = format!("/proc/{pid}/root/var/cache/knot-resolver/data.mdb");
    let meta = std::fs::metadata(&cache).with_context(|| format!("kresd's cache {cache}"))?;
    assert_eq!(meta.uid(), uid, "owner of {cache}");
    Ok(())
}
