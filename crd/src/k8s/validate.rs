//! The Kubernetes validation profile of a `KnotResolver` spec: the datamodel's validator plus
//! refusing what the pod backend owns. Pure; every error points under `/spec`.

use serde_json::Value;

use super::resource::KnotResolverSpec;
use crate::config::{ConfigError, ConfigErrors, ResolverConfig};
use crate::lua::{self, RenderOptions};

/// Largest rendered Lua: a ConfigMap holds at most 1 MiB, shared with `config.yaml` and the
/// pod template.
pub const MAX_RENDERED_LUA_BYTES: usize = 900 * 1024;

/// Address each `network.listen` entry gets in the validated config: the pod's every address
/// (each pod has its own network namespace). The pod backend may narrow it to the pod IP.
pub const POD_LISTEN_ADDRESS: &str = "0.0.0.0";

/// Prefix of every pointer into `spec.config`.
pub const CONFIG_POINTER: &str = "/spec/config";

/// A spec that passed [`validate_spec`].
#[derive(Clone, Debug, PartialEq)]
pub struct ValidatedSpec {
    /// The spec as given.
    pub spec: KnotResolverSpec,
    /// The typed config; listen entries carry [`POD_LISTEN_ADDRESS`].
    pub config: ResolverConfig,
    /// The rendered kresd Lua (at most [`MAX_RENDERED_LUA_BYTES`]).
    pub lua: String,
}

/// Keys of `spec.config` the pod backend owns, with the reason shown to the user.
const OWNED: &[(&str, &str)] = &[
    ("/workers", "one kresd per pod: set spec.replicas instead"),
    ("/rundir", "the pod backend chooses the run directory"),
    (
        "/management",
        "the operator manages each pod; there is no per-pod management API",
    ),
    (
        "/cache/storage",
        "the cache lives on the pod's cache volume: see spec.cache",
    ),
];

/// Validates `spec` for the pod backend; all errors at once, pointers under `/spec`.
pub fn validate_spec(spec: &KnotResolverSpec) -> Result<ValidatedSpec, ConfigErrors> {
    let mut errors = Vec::new();
    spec_rules(spec, &mut errors);
    let mut value = match &spec.config {
        Value::Null => Value::Object(Default::default()),
        v => v.clone(),
    };
    if !value.is_object() {
        errors.push(ConfigError::new(CONFIG_POINTER, "must be a mapping"));
        return Err(ConfigErrors(errors));
    }
    let refused_before = errors.len();
    let listen_given = refuse_owned(&mut value, &mut errors);
    // A refused listen entry got the pod address; what the datamodel says about that address
    // (e.g. two such entries on one port) would only repeat the refusal.
    let refused: Vec<String> = errors[refused_before..]
        .iter()
        .filter_map(|e| {
            e.pointer
                .rsplit_once('/')
                .map(|(entry, _)| format!("{entry}/"))
        })
        .filter(|entry| entry.contains("/network/listen/"))
        .collect();
    let config = match ResolverConfig::from_json_value(value) {
        Ok(mut config) => {
            if !listen_given {
                config.network.listen = vec![crate::config::ListenConfig::interface(
                    crate::config::InterfaceHost::Ip([0, 0, 0, 0].into()),
                    false,
                )];
            }
            Some(config)
        }
        Err(e) => {
            errors.extend(
                e.0.into_iter()
                    .map(|e| under_config(e.pointer, e.message))
                    .filter(|e| !refused.iter().any(|r| e.pointer.starts_with(r.as_str()))),
            );
            None
        }
    };
    let Some(config) = config else {
        return Err(ConfigErrors(errors));
    };
    let lua = match lua::render(&config, &RenderOptions::default()) {
        Ok(lua) => Some(lua),
        Err(e) => {
            errors.extend(e.0.into_iter().map(|e| under_config(e.pointer, e.message)));
            None
        }
    };
    if let Some(lua) = &lua
        && lua.len() > MAX_RENDERED_LUA_BYTES
    {
        errors.push(ConfigError::new(
            CONFIG_POINTER,
            format!(
                "renders to {} bytes of Lua; the limit is {MAX_RENDERED_LUA_BYTES} (900 KiB), \
                 as a ConfigMap holds at most 1 MiB",
                lua.len()
            ),
        ));
    }
    match lua {
        Some(lua) if errors.is_empty() => Ok(ValidatedSpec {
            spec: spec.clone(),
            config,
            lua,
        }),
        _ => Err(ConfigErrors(errors)),
    }
}

fn under_config(pointer: String, message: String) -> ConfigError {
    ConfigError::new(format!("{CONFIG_POINTER}{pointer}"), message)
}

/// Rules on the spec outside `config` that the CRD schema cannot state.
fn spec_rules(spec: &KnotResolverSpec, errors: &mut Vec<ConfigError>) {
    if !(0..=256).contains(&spec.replicas) {
        errors.push(ConfigError::new(
            "/spec/replicas",
            format!("must be in 0..=256, got {}", spec.replicas),
        ));
    }
    let rollout = &spec.rollout;
    if let (Some(deadline), Some(min_ready)) =
        (rollout.progress_deadline_seconds, rollout.min_ready_seconds)
        && deadline <= min_ready
    {
        // Also a CEL rule of the CRD (resource.rs).
        errors.push(ConfigError::new(
            "/spec/rollout/progressDeadlineSeconds",
            format!(
                "progressDeadlineSeconds must be greater than minReadySeconds ({deadline} <= {min_ready})"
            ),
        ));
    }
    if let Some(image) = &spec.image
        && (image.is_empty() || image.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        errors.push(ConfigError::new(
            "/spec/image",
            "must be a non-empty image reference without whitespace",
        ));
    }
}

/// Reports and removes the keys the pod backend owns; gives listen entries the pod address.
/// Returns whether `network.listen` was given.
fn refuse_owned(value: &mut Value, errors: &mut Vec<ConfigError>) -> bool {
    for (pointer, why) in OWNED {
        if value.pointer(pointer).is_some_and(|v| !v.is_null()) {
            errors.push(ConfigError::new(
                format!("{CONFIG_POINTER}{pointer}"),
                format!("not allowed in a KnotResolver: {why}"),
            ));
            remove(value, pointer);
        }
    }
    let Some(listen) = value.pointer_mut("/network/listen") else {
        return false;
    };
    let Value::Array(entries) = listen else {
        // A type error the datamodel reports.
        return true;
    };
    for (i, entry) in entries.iter_mut().enumerate() {
        let Value::Object(map) = entry else { continue };
        for key in ["interface", "unix-socket"] {
            if map.get(key).is_some_and(|v| !v.is_null()) {
                errors.push(ConfigError::new(
                    format!("{CONFIG_POINTER}/network/listen/{i}/{key}"),
                    "not allowed in a KnotResolver: each pod listens on its own IP; \
                     set only 'kind' and 'port'",
                ));
            }
        }
        map.remove("unix-socket");
        map.insert("interface".into(), Value::String(POD_LISTEN_ADDRESS.into()));
    }
    true
}

fn remove(value: &mut Value, pointer: &str) {
    if let Some((parent, key)) = pointer.rsplit_once('/')
        && let Some(Value::Object(map)) = value.pointer_mut(parent)
    {
        map.remove(key);
    }
}
