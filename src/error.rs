//! Errors with an exit code, shared by the engine (which decides that a problem is the user's to
//! fix) and the CLI (which turns it into a message and a process exit code).
//!
//! Exit codes: 0 ok, 1 failure, 2 usage or validation error, 3 cluster locked by another run.

/// Exit code for usage and validation errors.
pub const EXIT_USAGE: u8 = 2;
/// Exit code when the cluster is locked by another run.
pub const EXIT_LOCKED: u8 = 3;

/// An error that carries its exit code: the engine returns one when the input (flags, spec,
/// environment) is wrong, so the CLI exits 2 instead of reporting a failure of kprov.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ExitError {
    /// The process exit code this error maps to.
    pub code: u8,
    /// The whole message, including the `fix:` the user should apply.
    pub message: String,
}

impl ExitError {
    /// A usage error (exit 2).
    pub fn usage(message: impl Into<String>) -> anyhow::Error {
        ExitError {
            code: EXIT_USAGE,
            message: message.into(),
        }
        .into()
    }
}

/// Map an error to its exit code: the first cause in the chain that says whose problem it is.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<ExitError>() {
            return e.code;
        }
        if cause.downcast_ref::<crate::spec::SpecErrors>().is_some() {
            return EXIT_USAGE;
        }
        // A refused input (a bad image reference, a corrupt or incomplete bundle) is the
        // user's to fix, like a bad spec file: not a failure of kprov or of a remote side.
        if let Some(
            crate::mirror::MirrorError::Usage(_)
            | crate::mirror::MirrorError::Bundle { .. }
            | crate::mirror::MirrorError::BundlePart { .. },
        ) = cause.downcast_ref::<crate::mirror::MirrorError>()
        {
            return EXIT_USAGE;
        }
        if let Some(crate::repo::RepoError::NotFound { .. }) =
            cause.downcast_ref::<crate::repo::RepoError>()
        {
            return EXIT_USAGE;
        }
        if let Some(kprov_state::StateError::Locked { .. }) =
            cause.downcast_ref::<kprov_state::StateError>()
        {
            return EXIT_LOCKED;
        }
    }
    1
}
