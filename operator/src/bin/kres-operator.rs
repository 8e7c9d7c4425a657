//! `kres-operator`: the reconciler (host mode with supervisord; Kubernetes mode later).
fn main() {
    eprintln!("kres-operator: not implemented yet");
    std::process::exit(2);
}
