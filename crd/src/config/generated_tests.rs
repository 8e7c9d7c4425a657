//! Drift checks of the committed generated files; `KRES_UPDATE_GENERATED=1` rewrites them.

use std::path::PathBuf;

/// A file of the repository, by its path from the top.
pub(crate) fn repo_file(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel)
}

fn check(rel: &str, generated: &str) {
    let path = repo_file(rel);
    if std::env::var_os("KRES_UPDATE_GENERATED").is_some_and(|v| v == "1") {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(&path, generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{rel} is out of date with the code; regenerate with \
         `KRES_UPDATE_GENERATED=1 cargo test -p kres-crd generated` and commit it"
    );
}

#[test]
fn generated_config_schema_is_current() {
    let mut text = serde_json::to_string_pretty(&super::json_schema()).unwrap();
    text.push('\n');
    check("manifests/config.schema.json", &text);
}

#[test]
fn generated_config_reference_is_current() {
    check("docs/config-reference.md", &super::reference_markdown());
}

#[test]
fn generated_crd_yaml_is_current() {
    check("manifests/crd.yaml", &crate::k8s::crd_yaml());
}

#[test]
fn generated_knotresolver_reference_is_current() {
    check(
        "docs/knotresolver-reference.md",
        &crate::k8s::reference_markdown(),
    );
}
