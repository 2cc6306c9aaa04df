//! libvirt errors as [`CloudError`]s, and the "not found" test that makes deletes idempotent.

use virt::error::{Error as VirtError, ErrorNumber};

use super::PROVIDER;
use crate::CloudError;

/// Map a libvirt error to a [`CloudError`], saying what kprov was doing.
pub(super) fn verr(what: &str, e: VirtError) -> CloudError {
    let code = e.code();
    let msg = format!("{what}: {}", e.message());
    let known = |n: ErrorNumber| code == virt::enumutil::Enum::Known(n);
    if known(ErrorNumber::AuthFailed)
        || known(ErrorNumber::AuthCancelled)
        || known(ErrorNumber::AccessDenied)
    {
        CloudError::Auth {
            provider: PROVIDER,
            message: msg,
            fix: "check the libvirt URI's user and permissions (e.g. membership of group libvirt)"
                .into(),
        }
    } else if known(ErrorNumber::SystemError)
        || known(ErrorNumber::Rpc)
        || known(ErrorNumber::NoConnect)
    {
        CloudError::Unreachable {
            provider: PROVIDER,
            endpoint: "libvirt".into(),
            message: msg,
        }
    } else if known(ErrorNumber::OperationTimeout) || known(ErrorNumber::AgentUnresponsive) {
        CloudError::Transient {
            provider: PROVIDER,
            code: format!("{code:?}"),
            message: msg,
        }
    } else {
        CloudError::fatal(
            PROVIDER,
            &format!("{code:?}"),
            msg,
            "see libvirtd's log on the libvirt host for details",
        )
    }
}

/// Whether `e` is libvirt error `n`.
pub(super) fn is(e: &VirtError, n: ErrorNumber) -> bool {
    e.code() == virt::enumutil::Enum::Known(n)
}

/// Whether `e` says the domain, network, pool or volume does not exist.
pub(super) fn not_found(e: &VirtError) -> bool {
    is(e, ErrorNumber::NoDomain)
        || is(e, ErrorNumber::NoNetwork)
        || is(e, ErrorNumber::NoStoragePool)
        || is(e, ErrorNumber::NoStorageVolume)
}
