//! Tests whose root-only paths the docs cite (privilege drop to `knot-resolver`, port 53) must
//! not quietly cover less when run unprivileged: they fail, as for a missing tool.

/// Set to `1` to run root-dependent tests unprivileged on purpose (reduced coverage, said loudly).
pub const ALLOW_UNPRIVILEGED: &str = "KRES_TESTS_ALLOW_UNPRIVILEGED";

/// Whether the test runs as root. Not root: panics naming `what` is left untested, unless
/// [`ALLOW_UNPRIVILEGED`]`=1`, then prints that it is skipped and returns false.
pub fn require_root(what: &str) -> bool {
    if euid_is_root() {
        return true;
    }
    if std::env::var(ALLOW_UNPRIVILEGED).as_deref() == Ok("1") {
        eprintln!("WARNING: not root, {ALLOW_UNPRIVILEGED}=1: NOT tested: {what}");
        return false;
    }
    panic!(
        "this test covers {what} only as root (CI and `make test` run as root); run it as \
         root, or set {ALLOW_UNPRIVILEGED}=1 to accept the reduced coverage"
    );
}

fn euid_is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
