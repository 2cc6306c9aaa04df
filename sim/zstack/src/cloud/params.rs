//! The MN's generic `@APIParam` checks (`portal/.../ApiMessageProcessorImpl.java`
//! apiParamValidation), worded as it words them. `msg` is the message's class name as
//! `msg.getClass().getName()` prints it (fully qualified).
//!
//! The MN runs them field by field, in the order of a HashMap of the fields (unspecified); the
//! simulator checks fields in declaration order.

use crate::error::ErrorCode;

/// Class names of the messages the VIP / load-balancer APIs carry.
pub(super) mod msg {
    /// `CreateVip`.
    pub const CREATE_VIP: &str = "org.zstack.network.service.vip.APICreateVipMsg";
    /// `CreateLoadBalancer`.
    pub const CREATE_LB: &str = "org.zstack.network.service.lb.APICreateLoadBalancerMsg";
    /// `CreateLoadBalancerListener`.
    pub const CREATE_LISTENER: &str =
        "org.zstack.network.service.lb.APICreateLoadBalancerListenerMsg";
    /// `AddVmNicToLoadBalancer`.
    pub const ADD_NIC: &str = "org.zstack.network.service.lb.APIAddVmNicToLoadBalancerMsg";
    /// `RemoveVmNicFromLoadBalancer`.
    pub const REMOVE_NIC: &str = "org.zstack.network.service.lb.APIRemoveVmNicFromLoadBalancerMsg";
}

/// `required = true` on a null field: SYS.1007.
pub(super) fn mandatory<T>(v: Option<T>, field: &str, msg: &str) -> Result<T, ErrorCode> {
    v.ok_or_else(|| {
        ErrorCode::invalid_argument(format!(
            "field[{field}] of message[{msg}] is mandatory, can not be null"
        ))
    })
}

/// `maxLength`: SYS.1007 when the (trimmed) string is longer, in UTF-16 units as Java counts.
pub(super) fn max_length(
    v: Option<&str>,
    field: &str,
    msg: &str,
    max: usize,
) -> Result<(), ErrorCode> {
    let Some(s) = v else { return Ok(()) };
    let len = s.encode_utf16().count();
    if len > max {
        return Err(ErrorCode::invalid_argument(format!(
            "field[{field}] of message[{msg}] exceeds max length of string. expected was <= {max}, actual was {len}"
        )));
    }
    Ok(())
}

/// `numberRange`: SYS.1007 outside `[low, high]`.
pub(super) fn number_range(
    v: Option<i64>,
    field: &str,
    low: i64,
    high: i64,
) -> Result<(), ErrorCode> {
    match v {
        Some(x) if x < low || x > high => Err(ErrorCode::invalid_argument(format!(
            "field[{field}] must be in range of [{low}, {high}]"
        ))),
        _ => Ok(()),
    }
}

/// `validValues` (compared lowercased): SYS.1007 naming the lowercased list.
pub(super) fn valid_values(
    v: Option<&str>,
    field: &str,
    msg: &str,
    values: &[&str],
) -> Result<(), ErrorCode> {
    let Some(s) = v else { return Ok(()) };
    let vals: Vec<String> = values.iter().map(|x| x.to_lowercase()).collect();
    if vals.contains(&s.to_lowercase()) {
        return Ok(());
    }
    Err(ErrorCode::invalid_argument(format!(
        "valid value for field[{field}] of message[{msg}] are [{}], but {s} found",
        vals.join(", ")
    )))
}

/// `nonempty` on a list: SYS.1007.
pub(super) fn nonempty<T>(v: &[T], field: &str) -> Result<(), ErrorCode> {
    if v.is_empty() {
        return Err(ErrorCode::invalid_argument(format!(
            "field[{field}] must be a nonempty list"
        )));
    }
    Ok(())
}

/// `resourceType` on a uuid field naming nothing: SYS.1003.
pub(super) fn not_found(field: &str, uuid: &str, type_: &str) -> ErrorCode {
    ErrorCode::new(
        "SYS.1003",
        format!("invalid field[{field}], resource[uuid:{uuid}, type:{type_}] not found"),
    )
}

/// `resourceType` on a uuid list with unknown members: SYS.1003 naming them.
pub(super) fn not_found_list(field: &str, uuids: &[String], type_: &str) -> ErrorCode {
    ErrorCode::new(
        "SYS.1003",
        format!(
            "invalid field[{field}], resource[uuids:{}, type:{type_}] not found",
            java_list(uuids)
        ),
    )
}

/// The `successIfResourceNotExisting` delete of a missing resource: the value must still look
/// like a uuid (`PortApiValidator`), else SYS.1003.
pub(super) fn check_delete_target(uuid: &str) -> Result<(), ErrorCode> {
    if super::is_zstack_uuid(uuid) {
        Ok(())
    } else {
        Err(ErrorCode::new(
            "SYS.1003",
            format!("invalid value[{uuid}] of field [uuid]"),
        ))
    }
}

/// A Java `List.toString()`: `[a, b]`.
pub(super) fn java_list<S: AsRef<str>>(items: &[S]) -> String {
    let v: Vec<&str> = items.iter().map(AsRef::as_ref).collect();
    format!("[{}]", v.join(", "))
}

/// String parameters are trimmed before any check (`noTrim = false`).
pub(super) fn trimmed(v: &Option<String>) -> Option<String> {
    v.as_ref().map(|s| s.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wording_matches_the_mn() {
        let e = mandatory::<&str>(None, "name", msg::CREATE_VIP).unwrap_err();
        assert_eq!(e.code, "SYS.1007");
        assert_eq!(
            e.details.as_deref(),
            Some("field[name] of message[org.zstack.network.service.vip.APICreateVipMsg] is mandatory, can not be null")
        );
        let e = number_range(Some(0), "loadBalancerPort", 1, 65535).unwrap_err();
        assert_eq!(
            e.details.as_deref(),
            Some("field[loadBalancerPort] must be in range of [1, 65535]")
        );
        assert!(number_range(Some(65535), "p", 1, 65535).is_ok());
        let e = valid_values(
            Some("SCTP"),
            "protocol",
            msg::CREATE_LISTENER,
            &["udp", "tcp"],
        )
        .unwrap_err();
        assert!(e
            .details
            .unwrap()
            .ends_with("are [udp, tcp], but SCTP found"));
        assert!(valid_values(Some("TCP"), "protocol", "m", &["udp", "tcp"]).is_ok());
        let e = max_length(Some(&"x".repeat(256)), "name", "m", 255).unwrap_err();
        assert!(e
            .details
            .unwrap()
            .ends_with("expected was <= 255, actual was 256"));
        assert_eq!(
            nonempty::<u8>(&[], "vmNicUuids").unwrap_err().code,
            "SYS.1007"
        );
        let e = not_found_list("vmNicUuids", &["a".into(), "b".into()], "VmNicVO");
        assert_eq!(e.code, "SYS.1003");
        assert!(e
            .details
            .unwrap()
            .contains("resource[uuids:[a, b], type:VmNicVO]"));
        assert_eq!(check_delete_target("nope").unwrap_err().code, "SYS.1003");
    }
}
