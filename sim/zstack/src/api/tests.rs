use super::routing::{route, Api, RouteErr};
use crate::query::Kind;
use axum::http::Method;

#[test]
fn routes_and_templates() {
    let r = |m: Method, p: &str| route(&m, p).map(|(_, t)| t);
    assert_eq!(
        r(Method::GET, "/vm-instances/nics").ok().as_deref(),
        Some("/zstack/v1/vm-instances/nics")
    );
    assert_eq!(
        r(Method::GET, "/vm-instances/0123").ok().as_deref(),
        Some("/zstack/v1/vm-instances/{uuid}")
    );
    assert_eq!(
        r(Method::GET, "/pci-device/pci-devices/abc")
            .ok()
            .as_deref(),
        Some("/zstack/v1/pci-device/pci-devices/{uuid}")
    );
    assert!(matches!(
        route(&Method::GET, "/pci-devices"),
        Err(RouteErr::NotFound)
    ));
    assert!(matches!(
        route(&Method::POST, "/api-jobs/x"),
        Err(RouteErr::Method)
    ));
    assert!(matches!(
        route(&Method::GET, "/l3-networks/ip-ranges").map(|(a, _)| a),
        Ok(Api::Query(Kind::IpRange, None))
    ));
    assert!(crate::inventory::is_hex32(&crate::cloud::new_uuid()));
}
