//! From a validated `ResolverConfig` to the planner's [`Desired`].

use std::time::Duration;

use std::net::SocketAddr;

use kres_crd::config::{ConfigError, ConfigErrors, InterfaceHost, ResolverConfig};
use kres_crd::lua::{RenderOptions, SocketMode, render};

use crate::reconcile::{Desired, GcSpec, revision_of};
use crate::sockets::specs_for_listen;

/// The one config pipeline of host mode: every rule (the datamodel's
/// [`ResolverConfig::validate`], checked by `render`, plus host mode's listen rules) with
/// pointers, then an infallible build: render the worker config (sockets inherited or bound by
/// kresd), hash it into the revision, resolve the worker count, derive the cache-gc arguments.
/// Every source (file, SIGHUP, `--watch`, API) and `kresctl validate` go through it.
pub fn desired_from(
    cfg: &ResolverConfig,
    sockets: SocketMode,
    start_timeout: Duration,
) -> Result<Desired, ConfigErrors> {
    desired_with(
        cfg,
        &RenderOptions {
            sockets,
            ..RenderOptions::default()
        },
        start_timeout,
    )
}

/// [`desired_from`] with every render option (the pod backend renders for `$POD_IP` and the
/// pod's cache volume).
pub fn desired_with(
    cfg: &ResolverConfig,
    options: &RenderOptions,
    start_timeout: Duration,
) -> Result<Desired, ConfigErrors> {
    let rendered = render(cfg, options);
    let listen = match options.sockets {
        SocketMode::Inherited => listen_specs(cfg),
        SocketMode::Listen | SocketMode::PodIp => Ok(vec![]),
    };
    let workers = cfg.worker_count();
    let workers = u16::try_from(workers).map_err(|_| {
        ConfigErrors::single(
            "/workers",
            format!("{workers} workers is more than host mode supports"),
        )
    });
    let (mut config, listen, workers) = match (rendered, listen, workers) {
        (Ok(c), Ok(l), Ok(w)) => (c, l, w),
        (r, l, w) => {
            let mut all = vec![];
            for e in [r.err(), l.err(), w.err()].into_iter().flatten() {
                all.extend(e.0);
            }
            return Err(ConfigErrors(all));
        }
    };
    if !listen.is_empty() {
        // The inherited sockets are part of what a worker runs: a change of them is a new
        // revision, so every worker is replaced and fetches the new set from the holder.
        config.push_str(&format!("-- inherited sockets: {}\n", listen.join(" ")));
    }
    Ok(Desired {
        revision: revision_of(&config, &serde_json::Value::Null),
        config,
        workers,
        gc: gc_spec(cfg),
        start_timeout,
        // Host mode's drain bound is the backend's (`--drain-timeout-ms`); no soak.
        drain: Duration::ZERO,
        soak: Duration::ZERO,
        template: serde_json::Value::Null,
        listen,
        paused: false,
    })
}

/// Check `cfg` as host mode would run it (what `kresctl validate` reports).
pub fn validate(cfg: &ResolverConfig) -> Result<(), ConfigErrors> {
    desired_from(cfg, crate::host::run::SOCKETS, Duration::ZERO).map(|_| ())
}

/// The socket holder's bind specs for `network.listen` (IP interfaces; `dns` = UDP + TCP);
/// every entry host mode cannot serve is an error naming it.
pub fn listen_specs(cfg: &ResolverConfig) -> Result<Vec<String>, ConfigErrors> {
    let mut specs = vec![];
    let mut errors = vec![];
    for (i, l) in cfg.network.listen.iter().enumerate() {
        let port = l.effective_port();
        for item in l.interface.iter().flat_map(|x| x.items()) {
            let InterfaceHost::Ip(ip) = &item.host else {
                errors.push(ConfigError::new(
                    format!("/network/listen/{i}/interface"),
                    "interface names are not supported in host mode; give IP addresses",
                ));
                continue;
            };
            let addr = SocketAddr::new(*ip, item.port.map(|p| p.get()).unwrap_or(port));
            match specs_for_listen(l.kind.as_str(), addr, l.freebind) {
                Ok(more) => specs.extend(more.iter().map(ToString::to_string)),
                Err(e) => errors.push(ConfigError::new(
                    format!("/network/listen/{i}"),
                    e.to_string(),
                )),
            }
        }
    }
    if errors.is_empty() {
        Ok(specs)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// `kres-cache-gc` arguments for the config's `cache.garbage-collector` (None when disabled).
pub fn gc_spec(cfg: &ResolverConfig) -> Option<GcSpec> {
    gc_spec_in(cfg, cfg.cache.storage.as_str())
}

/// [`gc_spec`] for a cache in `cache_dir` (a pod's cache volume) instead of `cache.storage`.
pub fn gc_spec_in(cfg: &ResolverConfig, cache_dir: &str) -> Option<GcSpec> {
    let gc = &cfg.cache.garbage_collector;
    if !gc.enable {
        return None;
    }
    let micros = |d: Duration| d.as_micros().to_string();
    let mut args = vec![
        "-c".to_string(),
        cache_dir.to_string(),
        "-d".into(),
        gc.interval.as_duration().as_millis().max(1).to_string(),
        "-u".into(),
        gc.threshold.get().to_string(),
        "-f".into(),
        gc.release.get().to_string(),
        "-l".into(),
        gc.rw_deletes.get().to_string(),
        "-L".into(),
        gc.rw_reads.get().to_string(),
        "-t".into(),
        (gc.temp_keys_space.bytes() / (1024 * 1024)).to_string(),
        "-m".into(),
        micros(gc.rw_duration.as_duration()),
        "-w".into(),
        micros(gc.rw_delay.as_duration()),
    ];
    if gc.dry_run {
        args.push("-n".into());
    }
    Some(GcSpec { args })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_config_same_revision_and_gc_follows_config() {
        let cfg = ResolverConfig::from_yaml_str(
            "workers: 3\ncache:\n  storage: /tmp/x\n  garbage-collector:\n    interval: 2s\n",
        )
        .expect("valid");
        let a = desired_from(&cfg, SocketMode::Inherited, Duration::from_secs(5)).expect("ok");
        let b = desired_from(&cfg, SocketMode::Inherited, Duration::from_secs(5)).expect("ok");
        assert_eq!(a.revision, b.revision);
        assert_eq!(a.workers, 3);
        let gc = a.gc.expect("gc on by default");
        assert_eq!(gc.args[..4], ["-c", "/tmp/x", "-d", "2000"]);
        let mut off = cfg.clone();
        off.cache.garbage_collector.enable = false;
        assert_eq!(gc_spec(&off), None);
        let mut other = cfg.clone();
        other.lua.script = Some("-- x".into());
        let c = desired_from(&other, SocketMode::Inherited, Duration::from_secs(5)).expect("ok");
        assert_ne!(a.revision, c.revision);
    }

    #[test]
    fn every_host_rule_is_reported_with_its_pointer() {
        let cfg = ResolverConfig::from_yaml_str(
            "network:\n  listen:\n    - interface: lo\n    - interface: 127.0.0.1@8443\n      kind: doh2\n",
        )
        .expect("valid datamodel");
        let e = validate(&cfg).expect_err("host mode refuses both");
        let pointers: Vec<&str> = e.0.iter().map(|e| e.pointer.as_str()).collect();
        assert_eq!(
            pointers,
            ["/network/listen/0/interface", "/network/listen/1"],
            "{e}"
        );
    }
}
