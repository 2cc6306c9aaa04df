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

#[test]
fn load_balancer_routes_and_templates() {
    let r = |m: Method, p: &str| route(&m, p).map(|(_, t)| t).ok();
    let t = |s: &str| Some(format!("/zstack/v1/{s}"));
    assert_eq!(r(Method::POST, "/vips"), t("vips"));
    assert_eq!(r(Method::DELETE, "/vips/abc"), t("vips/{uuid}"));
    assert_eq!(r(Method::GET, "/vips/abc"), t("vips/{uuid}"));
    assert_eq!(
        r(Method::POST, "/load-balancers/abc/listeners"),
        t("load-balancers/{uuid}/listeners")
    );
    assert_eq!(
        r(Method::DELETE, "/load-balancers/listeners/abc"),
        t("load-balancers/listeners/{uuid}")
    );
    assert_eq!(
        r(Method::DELETE, "/load-balancers/abc"),
        t("load-balancers/{uuid}")
    );
    for m in [Method::POST, Method::DELETE] {
        assert_eq!(
            r(m, "/load-balancers/listeners/abc/vm-instances/nics"),
            t("load-balancers/listeners/{uuid}/vm-instances/nics")
        );
    }
    // `listeners` is a collection, never a load balancer's uuid.
    assert!(matches!(
        route(&Method::GET, "/load-balancers/listeners").map(|(a, _)| a),
        Ok(Api::Query(Kind::LbListener, None))
    ));
    assert!(matches!(
        route(&Method::GET, "/load-balancers/listeners/abc").map(|(a, _)| a),
        Ok(Api::Query(Kind::LbListener, Some(_)))
    ));
    assert!(matches!(
        route(&Method::GET, "/load-balancers/abc").map(|(a, _)| a),
        Ok(Api::Query(Kind::LoadBalancer, Some(_)))
    ));
    assert!(matches!(
        route(&Method::PUT, "/vips/abc"),
        Err(RouteErr::Method)
    ));
    assert!(matches!(
        route(&Method::POST, "/load-balancers/listeners"),
        Err(RouteErr::Method)
    ));
}
