//! Classification of AWS errors into [`CloudError`], by error CODE (never by message text).
//!
//! * throttling and server-side codes, and any 5xx: [`CloudError::Transient`] (retried);
//! * `DependencyViolation` and the "in use / wrong state" family: also transient, because during
//!   a delete they mean "something that depends on it is still going away", which later passes
//!   of the executor's delete loop resolve;
//! * credential and permission codes: [`CloudError::Auth`];
//! * no answer at all (connect failure, reset, dropped response, timeout):
//!   [`CloudError::Unreachable`] — ambiguous for mutations, see `AwsCloud::create_instance`;
//! * everything else: [`CloudError::Fatal`] with the code and a hint.

use std::error::Error as StdError;

use aws_sdk_ec2::config::http::HttpResponse;
use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use crate::CloudError;

use super::PROVIDER;

/// What a code means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Retrying later may succeed.
    Transient,
    /// Credentials missing, wrong or not allowed.
    Auth,
    /// The resource does not exist (deleting it is then a success).
    NotFound,
    /// The request is wrong; retrying will not help.
    Fatal,
}

/// Throttling codes of EC2, ELBv2 and the generic AWS query protocol.
const THROTTLING: &[&str] = &[
    "RequestLimitExceeded",
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "SlowDown",
    "EC2ThrottledException",
    "PriorRequestNotComplete",
    "BandwidthLimitExceeded",
];

/// Server-side and capacity codes worth retrying.
const SERVER: &[&str] = &[
    "InternalError",
    "InternalFailure",
    "ServiceUnavailable",
    "Unavailable",
    "InsufficientInstanceCapacity",
    "InsufficientCapacity",
    "RequestTimeout",
    "RequestTimeoutException",
    "IDPCommunicationError",
];

/// "Wait until what depends on it is gone": retryable during deletes.
const BUSY: &[&str] = &[
    "DependencyViolation",
    "ResourceInUse",
    "VolumeInUse",
    "IncorrectState",
    "IncorrectInstanceState",
    "InvalidGroup.InUse",
    "InvalidNetworkInterface.InUse",
    "InvalidState",
    "OperationNotPermitted",
];

/// Credential / permission codes.
const AUTH: &[&str] = &[
    "AuthFailure",
    "UnauthorizedOperation",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "MissingAuthenticationToken",
    "InvalidAccessKeyId",
    "ExpiredToken",
    "ExpiredTokenException",
    "AccessDenied",
    "AccessDeniedException",
    "OptInRequired",
    "Blocked",
];

/// Classify an AWS error code (and the HTTP status, for codes kprov does not know).
pub fn classify(code: &str, status: u16) -> Class {
    if THROTTLING.contains(&code) || SERVER.contains(&code) || BUSY.contains(&code) {
        Class::Transient
    } else if AUTH.contains(&code) {
        Class::Auth
    } else if is_not_found(code) {
        Class::NotFound
    } else if status >= 500 {
        Class::Transient
    } else {
        Class::Fatal
    }
}

/// Codes meaning "no such resource" (EC2's `*.NotFound`, `*.Malformed` ids are not included).
pub fn is_not_found(code: &str) -> bool {
    code.ends_with(".NotFound")
        || matches!(
            code,
            "LoadBalancerNotFound"
                | "TargetGroupNotFound"
                | "ListenerNotFound"
                | "Gateway.NotAttached"
                | "InvalidAssociationID.NotFound"
        )
}

/// What the user can do about a fatal code.
pub fn fix_for(code: &str) -> &'static str {
    match code {
        "InvalidParameterValue" | "InvalidParameterCombination" | "InvalidParameter" | "MissingParameter" => {
            "check the instance group's flavor, image, rootDisk and the provider block of the spec"
        }
        "InvalidInstanceType" | "InvalidInstanceType.NotFound" | "Unsupported" => {
            "pick an instance type offered in this region (aws ec2 describe-instance-types)"
        }
        "InvalidAMIID.NotFound" | "InvalidAMIID.Malformed" | "InvalidAMIID.Unavailable" => {
            "set the instance group's image to an AMI of this region, or unset it to use the default"
        }
        "InvalidKeyPair.NotFound" | "InvalidKeyPair.Format" | "InvalidKey.Format" => {
            "set spec.sshPublicKey to an OpenSSH rsa or ed25519 public key"
        }
        "VpcLimitExceeded" | "InstanceLimitExceeded" | "VcpuLimitExceeded" | "AddressLimitExceeded" | "RulesPerSecurityGroupLimitExceeded" => {
            "raise the quota in the Service Quotas console, or delete unused resources, and re-run"
        }
        "InvalidVpcID.NotFound" | "InvalidSubnetID.NotFound" => "check spec.provider.aws.vpcId / subnetIds",
        "InvalidSubnet.Conflict" | "InvalidSubnet.Range" | "InvalidVpc.Range" => "choose another spec.provider.aws.vpcCidr",
        "IdempotentParameterMismatch" => "a previous request with the same client token had other parameters; re-run",
        "InvalidUserData.Malformed" => "the rendered user-data was rejected; run `kprov userdata` to inspect it",
        _ => "see the AWS error code in the EC2 / ELB documentation; fix the spec or the account and re-run",
    }
}

/// Turn an SDK error of operation `op` into a [`CloudError`]. `endpoint` names where the call
/// went, for unreachable errors.
pub fn from_sdk<E>(op: &str, endpoint: &str, err: SdkError<E, HttpResponse>) -> CloudError
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    match &err {
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            let code = err.code().unwrap_or("Unknown").to_string();
            let message = format!("{op}: {}", err.message().unwrap_or("no message"));
            from_code(&code, status, message)
        }
        SdkError::TimeoutError(_) => CloudError::Unreachable {
            provider: PROVIDER,
            endpoint: endpoint.to_string(),
            message: format!(
                "{op}: no answer within the per-call timeout (KPROV_AWS_CALL_TIMEOUT, default 60s)"
            ),
        },
        SdkError::DispatchFailure(_) => CloudError::Unreachable {
            provider: PROVIDER,
            endpoint: endpoint.to_string(),
            message: format!("{op}: {}", DisplayErrorContext(&err)),
        },
        SdkError::ResponseError(_) => CloudError::Unreachable {
            provider: PROVIDER,
            endpoint: endpoint.to_string(),
            message: format!(
                "{op}: the response could not be read: {}",
                DisplayErrorContext(&err)
            ),
        },
        _ => CloudError::Protocol {
            provider: PROVIDER,
            message: format!("{op}: {}", DisplayErrorContext(&err)),
        },
    }
}

/// Build the [`CloudError`] of an error code.
pub fn from_code(code: &str, status: u16, message: String) -> CloudError {
    match classify(code, status) {
        Class::Transient => CloudError::Transient { provider: PROVIDER, code: code.to_string(), message },
        Class::Auth => CloudError::Auth {
            provider: PROVIDER,
            message: format!("{message} (code {code})"),
            fix: "check the AWS credentials (AWS_ACCESS_KEY_ID / AWS_PROFILE) and that their policy allows EC2 and ELB".into(),
        },
        Class::NotFound | Class::Fatal => {
            CloudError::Fatal { provider: PROVIDER, code: code.to_string(), message, fix: fix_for(code).into() }
        }
    }
}

/// The AWS error code carried by a [`CloudError`] made here, if any.
pub fn code_of(e: &CloudError) -> Option<&str> {
    match e {
        CloudError::Transient { code, .. } | CloudError::Fatal { code, .. } => Some(code),
        _ => None,
    }
}

/// True when `e` says the resource does not exist.
pub fn is_gone(e: &CloudError) -> bool {
    code_of(e).is_some_and(is_not_found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_not_messages_decide() {
        assert_eq!(classify("RequestLimitExceeded", 503), Class::Transient);
        assert_eq!(classify("Throttling", 400), Class::Transient);
        assert_eq!(classify("DependencyViolation", 400), Class::Transient);
        assert_eq!(classify("InternalError", 500), Class::Transient);
        assert_eq!(classify("SomethingNew", 503), Class::Transient);
        assert_eq!(classify("AuthFailure", 401), Class::Auth);
        assert_eq!(classify("InvalidInstanceID.NotFound", 400), Class::NotFound);
        assert_eq!(classify("LoadBalancerNotFound", 400), Class::NotFound);
        assert_eq!(classify("InvalidParameterValue", 400), Class::Fatal);
        assert!(from_code("DependencyViolation", 400, "x".into()).is_retryable());
        assert!(!from_code("InvalidParameterValue", 400, "x".into()).is_retryable());
        assert!(is_gone(&from_code(
            "InvalidVpcID.NotFound",
            400,
            "x".into()
        )));
    }
}
