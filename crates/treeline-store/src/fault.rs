//! Fault injection: `TREELINE_FAULT=<step>` aborts the process at that named step, as a
//! kill would, so tests can check that every interrupted write leaves a valid state.
//! With `TREELINE_FAULT_MODE=hang` the process instead says it reached the step (on
//! standard error, `treeline: fault point <step> reached`) and waits there forever, so
//! a test can cut the power of the machine it runs on at that exact point.

/// Every step name in the store, for tests that loop over them.
pub const STEPS: &[&str] = &[
    "commit-before-sync",
    "commit-during-rename",
    "commit-before-ref",
    "prune-during-delete",
    // treeline-sysroot: deploy, boot-list write and cleanup.
    "deploy-after-checkout",
    "deploy-after-etc-merge",
    "deploy-after-deployment-dir",
    "write-after-kernels",
    "write-after-bootlinks",
    "write-after-entries",
    "write-after-refs",
    "write-after-swap",
    "cleanup-after-boot-versions",
    "cleanup-during-deployments",
    "cleanup-before-prune",
    // treeline-sysroot: finalizing a staged deployment (then the write- steps).
    "finalize-after-etc",
];

/// Abort (or hang, see the module docs) here if `TREELINE_FAULT` names this step.
pub fn point(step: &str) {
    if std::env::var_os("TREELINE_FAULT").is_some_and(|v| v == step) {
        if std::env::var_os("TREELINE_FAULT_MODE").is_some_and(|m| m == "hang") {
            eprintln!("treeline: fault point {step} reached");
            loop {
                std::thread::park();
            }
        }
        eprintln!("treeline: fault injected at {step}");
        std::process::abort();
    }
}
