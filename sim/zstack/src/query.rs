//! The ZStack query API (§4): condition parser with its operator-precedence quirk, evaluation over
//! the wire-shaped JSON inventories, dotted joins, tag pseudo-fields, paging, sorting, fields.

use crate::error::ErrorCode;
use crate::model::*;
use crate::time::GsonTime;
use serde::Serialize;
use serde_json::{Map, Value};
use std::cmp::Ordering;
use std::collections::HashMap;

/// A queryable resource kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Vm,
    Nic,
    Volume,
    Image,
    ImageBsRef,
    Offering,
    L3,
    IpRange,
    NetworkService,
    Zone,
    Cluster,
    Host,
    PrimaryStorage,
    BackupStorage,
    PciDevice,
    /// The 5.x GPU view of PCI devices (`sdk/GpuDeviceInventory.java`).
    Gpu,
    PciSpec,
    MdevDevice,
    MdevSpec,
    SystemTag,
    UserTag,
    Vip,
    /// A VIP's `servicesRefs` (for dotted joins only).
    VipServiceRef,
    LoadBalancer,
    LbListener,
    /// A listener's `vmNicRefs` (for dotted joins only).
    LbNicRef,
}

/// Query paths (after `/zstack/v1/`) and the kind they list (`sdk/Query*Action.java`).
pub(crate) const QUERY_PATHS: &[(&str, Kind)] = &[
    ("vm-instances/nics", Kind::Nic),
    ("vm-instances", Kind::Vm),
    ("volumes", Kind::Volume),
    ("images", Kind::Image),
    ("instance-offerings", Kind::Offering),
    ("l3-networks/ip-ranges", Kind::IpRange),
    ("l3-networks", Kind::L3),
    ("zones", Kind::Zone),
    ("clusters", Kind::Cluster),
    ("hosts", Kind::Host),
    ("primary-storage", Kind::PrimaryStorage),
    ("backup-storage", Kind::BackupStorage),
    ("pci-device/pci-devices", Kind::PciDevice),
    ("gpu-device/gpu-devices", Kind::Gpu),
    ("pci-device-specs", Kind::PciSpec),
    ("mdev-devices", Kind::MdevDevice),
    ("mdev-device-specs", Kind::MdevSpec),
    ("system-tags", Kind::SystemTag),
    ("user-tags", Kind::UserTag),
    ("vips", Kind::Vip),
    ("load-balancers/listeners", Kind::LbListener),
    ("load-balancers", Kind::LoadBalancer),
];

/// Fields the GPU view adds to a PCI device.
pub(crate) const GPU_EXTRA_FIELDS: &[&str] = &["serialNumber", "memory", "power", "isDriverLoaded"];

fn keys_of<T: Default + Serialize>() -> Vec<String> {
    match serde_json::to_value(T::default()) {
        Ok(Value::Object(m)) => m.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

impl Kind {
    /// Field names of the kind's inventory, taken from the serialized struct so they cannot drift.
    fn fields(self) -> Vec<String> {
        match self {
            Kind::Vm => keys_of::<VmInstance>(),
            Kind::Nic => keys_of::<VmNic>(),
            Kind::Volume => keys_of::<Volume>(),
            Kind::Image => keys_of::<Image>(),
            Kind::ImageBsRef => keys_of::<ImageBackupStorageRef>(),
            Kind::Offering => keys_of::<InstanceOffering>(),
            Kind::L3 => keys_of::<L3Network>(),
            Kind::IpRange => keys_of::<IpRange>(),
            Kind::NetworkService => keys_of::<NetworkServiceRef>(),
            Kind::Zone => keys_of::<Zone>(),
            Kind::Cluster => keys_of::<Cluster>(),
            Kind::Host => keys_of::<Host>(),
            Kind::PrimaryStorage => keys_of::<PrimaryStorage>(),
            Kind::BackupStorage => keys_of::<BackupStorage>(),
            Kind::PciDevice => keys_of::<PciDevice>(),
            Kind::Gpu => {
                let mut k = keys_of::<PciDevice>();
                k.extend(GPU_EXTRA_FIELDS.iter().map(|s| s.to_string()));
                k
            }
            Kind::PciSpec => keys_of::<PciDeviceSpec>(),
            Kind::MdevDevice => keys_of::<MdevDevice>(),
            Kind::MdevSpec => keys_of::<MdevDeviceSpec>(),
            Kind::SystemTag | Kind::UserTag => keys_of::<Tag>(),
            Kind::Vip => keys_of::<Vip>(),
            Kind::VipServiceRef => keys_of::<VipServicesRef>(),
            Kind::LoadBalancer => keys_of::<LoadBalancer>(),
            Kind::LbListener => keys_of::<LbListener>(),
            Kind::LbNicRef => keys_of::<LbVmNicRef>(),
        }
    }

    /// Dotted-path joins: embedded arrays (`vmNics.ip`) and references (`host.managementIp`).
    fn join(self, name: &str) -> Option<Join> {
        use Join::{Embedded as E, Ref as R};
        Some(match (self, name) {
            (Kind::Vm, "vmNics") => E(Kind::Nic),
            (Kind::Vm, "allVolumes") => E(Kind::Volume),
            (Kind::Vm, "host") => R("hostUuid", Kind::Host),
            (Kind::Vm, "cluster") => R("clusterUuid", Kind::Cluster),
            (Kind::Vm, "zone") => R("zoneUuid", Kind::Zone),
            (Kind::Vm, "image") => R("imageUuid", Kind::Image),
            (Kind::Vm, "instanceOffering") => R("instanceOfferingUuid", Kind::Offering),
            (Kind::Nic, "vmInstance") => R("vmInstanceUuid", Kind::Vm),
            (Kind::Nic, "l3Network") => R("l3NetworkUuid", Kind::L3),
            (Kind::Volume, "vmInstance") => R("vmInstanceUuid", Kind::Vm),
            (Kind::Image, "backupStorageRefs") => E(Kind::ImageBsRef),
            (Kind::L3, "ipRanges") => E(Kind::IpRange),
            (Kind::L3, "networkServices") => E(Kind::NetworkService),
            (Kind::L3, "zone") => R("zoneUuid", Kind::Zone),
            (Kind::IpRange, "l3Network") => R("l3NetworkUuid", Kind::L3),
            (Kind::Cluster, "zone") => R("zoneUuid", Kind::Zone),
            (Kind::Host, "cluster") => R("clusterUuid", Kind::Cluster),
            (Kind::Host, "zone") => R("zoneUuid", Kind::Zone),
            (Kind::PciDevice | Kind::Gpu, "host") => R("hostUuid", Kind::Host),
            (Kind::PciDevice | Kind::Gpu, "vmInstance") => R("vmInstanceUuid", Kind::Vm),
            (Kind::PciDevice | Kind::Gpu, "pciSpec") => R("pciSpecUuid", Kind::PciSpec),
            (Kind::MdevDevice, "host") => R("hostUuid", Kind::Host),
            (Kind::MdevDevice, "vmInstance") => R("vmInstanceUuid", Kind::Vm),
            (Kind::Vip, "l3Network") => R("l3NetworkUuid", Kind::L3),
            (Kind::Vip, "servicesRefs") => E(Kind::VipServiceRef),
            (Kind::LoadBalancer, "vip") => R("vipUuid", Kind::Vip),
            (Kind::LoadBalancer, "listeners") => E(Kind::LbListener),
            (Kind::LbListener, "loadBalancer") => R("loadBalancerUuid", Kind::LoadBalancer),
            (Kind::LbListener, "vmNicRefs") => E(Kind::LbNicRef),
            (Kind::LbNicRef, "vmNic") => R("vmNicUuid", Kind::Nic),
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy)]
enum Join {
    Embedded(Kind),
    Ref(&'static str, Kind),
}

/// A query operator (`RestServer.QUERY_OP_MAPPING`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    In,
    NotIn,
    Like,
    NotLike,
    IsNull,
    NotNull,
}

/// Operators in the order the parser tries them: the first one found *anywhere* in the string
/// wins, so `name=a!=b` parses as field `name=a`, op `!=`, value `b` (the §4 quirk).
const OPS: &[(&str, Op)] = &[
    ("!=", Op::Ne),
    (">=", Op::Ge),
    ("<=", Op::Le),
    ("!?=", Op::NotIn),
    ("!~=", Op::NotLike),
    ("~=", Op::Like),
    ("?=", Op::In),
    ("=", Op::Eq),
    (">", Op::Gt),
    ("<", Op::Lt),
    ("is null", Op::IsNull),
    ("not null", Op::NotNull),
];

/// One parsed `q=` condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cond {
    pub field: String,
    pub op: Op,
    pub value: String,
}

/// Parses one `q` value. `Err` is the plain-text 400 body.
pub(crate) fn parse_condition(q: &str) -> Result<Cond, String> {
    for (tok, op) in OPS {
        if let Some((field, value)) = q.split_once(tok) {
            let (field, value) = match op {
                // `uuid is null` leaves a trailing space on the field name; there is no value.
                Op::IsNull | Op::NotNull => (field.trim().to_string(), String::new()),
                _ => (field.to_string(), value.to_string()),
            };
            return Ok(Cond {
                field,
                op: *op,
                value,
            });
        }
    }
    Err(format!(
        "Invalid query parameter. The '{q}' in the parameter[q] doesn't contain any query operator. Valid query operators are [!=, >=, <=, !?=, !~=, ~=, ?=, =, >, <, is null, not null]"
    ))
}

/// Paging/sorting/projection options of a query call.
#[derive(Debug, Clone, Default)]
pub(crate) struct QueryOpts {
    pub conds: Vec<Cond>,
    pub limit: usize,
    pub start: usize,
    pub count: bool,
    pub reply_with_count: bool,
    pub sort: Option<(String, bool)>,
    pub fields: Option<Vec<String>>,
}

fn bool_param(v: &str) -> bool {
    v.eq_ignore_ascii_case("true")
}

/// Builds [`QueryOpts`] from the decoded query string. `Err` is the plain-text 400 body.
pub(crate) fn parse_opts(params: &[(String, String)]) -> Result<QueryOpts, String> {
    let mut o = QueryOpts {
        limit: 1000,
        ..Default::default()
    };
    for (k, v) in params {
        match k.as_str() {
            "q" => o.conds.push(parse_condition(v)?),
            "limit" => {
                o.limit = v
                    .trim()
                    .parse::<usize>()
                    .map_err(|_| format!("Invalid query parameter[limit], {v} is not an integer"))?
            }
            "start" => {
                o.start = v
                    .trim()
                    .parse::<usize>()
                    .map_err(|_| format!("Invalid query parameter[start], {v} is not an integer"))?
            }
            "count" => o.count = bool_param(v),
            "replyWithCount" => o.reply_with_count = bool_param(v),
            "sort" => {
                // An unescaped `+` arrives as a space (servlet decoding): treat it as ascending.
                let s = v.trim_start();
                let (asc, f) = if let Some(f) = s.strip_prefix('-') {
                    (false, f)
                } else if let Some(f) = s.strip_prefix('+') {
                    (true, f)
                } else {
                    (true, s)
                };
                o.sort = Some((f.trim().to_string(), asc));
            }
            "fields" => {
                o.fields = Some(
                    v.split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect(),
                )
            }
            _ => {} // unknown parameters (groupBy, ...) are ignored, as on the MN
        }
    }
    Ok(o)
}

/// Provides the inventories a query runs over (the simulator's state) and tags for `__userTag__`.
pub(crate) trait Source {
    fn list(&self, kind: Kind) -> Vec<Value>;
    /// Tags of `type_` (`User`/`System`) on `resource_uuid`.
    fn tags_of(&self, resource_uuid: &str, type_: &str) -> Vec<String>;
}

struct Evaluator<'a, S: Source> {
    src: &'a S,
    by_uuid: HashMap<Kind, HashMap<String, Value>>,
}

impl<'a, S: Source> Evaluator<'a, S> {
    fn lookup(&mut self, kind: Kind, uuid: &str) -> Option<Value> {
        let src = self.src;
        self.by_uuid
            .entry(kind)
            .or_insert_with(|| {
                src.list(kind)
                    .into_iter()
                    .filter_map(|v| Some((v.get("uuid")?.as_str()?.to_string(), v)))
                    .collect()
            })
            .get(uuid)
            .cloned()
    }

    /// Collects every value reachable by `path` from `item` (arrays fan out).
    fn values(&mut self, kind: Kind, item: &Value, path: &[&str]) -> Vec<Value> {
        let Some((head, rest)) = path.split_first() else {
            return vec![item.clone()];
        };
        if rest.is_empty() {
            return vec![item.get(*head).cloned().unwrap_or(Value::Null)];
        }
        match kind.join(head) {
            Some(Join::Embedded(k)) => match item.get(*head) {
                Some(Value::Array(a)) => a.iter().flat_map(|e| self.values(k, e, rest)).collect(),
                Some(v @ Value::Object(_)) => self.values(k, v, rest),
                _ => Vec::new(),
            },
            Some(Join::Ref(local, k)) => match item.get(local).and_then(Value::as_str) {
                Some(u) => match self.lookup(k, u) {
                    Some(t) => self.values(k, &t, rest),
                    None => Vec::new(),
                },
                None => Vec::new(),
            },
            None => Vec::new(),
        }
    }
}

/// Checks that `path` names a field of `kind`; unknown fields fail like the MN's QueryFacade.
fn validate_path(kind: Kind, path: &[&str], full: &str) -> Result<(), ErrorCode> {
    let err = || {
        ErrorCode::invalid_argument(format!(
            "condition name[{full}] is invalid, no such field on inventory class"
        ))
    };
    match path {
        [] => Err(err()),
        [f] => {
            if kind.fields().iter().any(|k| k == f) {
                Ok(())
            } else {
                Err(err())
            }
        }
        [head, rest @ ..] => match kind.join(head) {
            Some(Join::Embedded(k)) | Some(Join::Ref(_, k)) => validate_path(k, rest, full),
            None => Err(err()),
        },
    }
}

fn like(pattern: &str, s: &str) -> bool {
    // SQL LIKE: `%` any run, `_` one char; iterative matcher with backtracking on the last `%`.
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = s.chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    let (mut star, mut mark) = (None::<usize>, 0usize);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '_' || (p[pi] != '%' && p[pi] == t[ti])) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '%' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(sp) = star {
            pi = sp + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '%' {
        pi += 1;
    }
    pi == p.len()
}

/// Compares a stored value with a condition value; `None` when the types are incomparable.
fn compare(v: &Value, s: &str) -> Result<Option<Ordering>, ErrorCode> {
    Ok(match v {
        Value::Null | Value::Array(_) | Value::Object(_) => None,
        Value::Bool(b) => Some(b.to_string().as_str().cmp(s.trim())),
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            let y: f64 = s.trim().parse().map_err(|_| {
                ErrorCode::invalid_argument(format!("the value[{s}] is not a number"))
            })?;
            x.partial_cmp(&y)
        }
        Value::String(x) => Some(x.as_str().cmp(s)),
    })
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Does one value satisfy `op value`? SQL semantics: NULL never matches a comparison.
fn matches(v: &Value, op: Op, value: &str) -> Result<bool, ErrorCode> {
    Ok(match op {
        Op::IsNull => v.is_null(),
        Op::NotNull => !v.is_null(),
        Op::Eq => compare(v, value)? == Some(Ordering::Equal),
        Op::Ne => matches!(compare(v, value)?, Some(o) if o != Ordering::Equal),
        Op::Gt => compare(v, value)? == Some(Ordering::Greater),
        Op::Lt => compare(v, value)? == Some(Ordering::Less),
        Op::Ge => matches!(
            compare(v, value)?,
            Some(Ordering::Greater | Ordering::Equal)
        ),
        Op::Le => matches!(compare(v, value)?, Some(Ordering::Less | Ordering::Equal)),
        Op::In | Op::NotIn => {
            if v.is_null() {
                return Ok(false);
            }
            let mut found = false;
            for item in value.split(',') {
                if compare(v, item)? == Some(Ordering::Equal) {
                    found = true;
                    break;
                }
            }
            found == (op == Op::In)
        }
        Op::Like => text(v).is_some_and(|t| like(value, &t)),
        Op::NotLike => text(v).is_some_and(|t| !like(value, &t)),
    })
}

fn positive(op: Op) -> Op {
    match op {
        Op::Ne => Op::Eq,
        Op::NotIn => Op::In,
        Op::NotLike => Op::Like,
        o => o,
    }
}

fn sort_key_cmp(field: &str, a: &Value, b: &Value) -> Ordering {
    let av = a.get(field).unwrap_or(&Value::Null);
    let bv = b.get(field).unwrap_or(&Value::Null);
    match (av, bv) {
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::Null, _) => Ordering::Less,
        (_, Value::Null) => Ordering::Greater,
        (Value::Number(x), Value::Number(y)) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(Ordering::Equal),
        (Value::String(x), Value::String(y)) => {
            // Dates are Gson strings: compare them as instants, not as text.
            match (GsonTime::parse(x), GsonTime::parse(y)) {
                (Some(p), Some(q)) => p.cmp(&q),
                _ => x.cmp(y),
            }
        }
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        _ => Ordering::Equal,
    }
}

/// The outcome of a query: the page of inventories and the number of all matches.
pub(crate) struct QueryResult {
    pub inventories: Vec<Value>,
    pub total: usize,
}

/// Runs a query of `kind` over `src`. Errors are API errors (503 on the wire).
pub(crate) fn run<S: Source>(
    src: &S,
    kind: Kind,
    opts: &QueryOpts,
) -> Result<QueryResult, ErrorCode> {
    for c in &opts.conds {
        if c.field == "__userTag__" || c.field == "__systemTag__" {
            continue;
        }
        let path: Vec<&str> = c.field.split('.').collect();
        validate_path(kind, &path, &c.field)?;
    }
    if let Some((f, _)) = &opts.sort {
        if !kind.fields().iter().any(|k| k == f) {
            return Err(ErrorCode::invalid_argument(format!(
                "sort field[{f}] is not a field of the inventory"
            )));
        }
    }
    let mut ev = Evaluator {
        src,
        by_uuid: HashMap::new(),
    };
    let mut out = Vec::new();
    for item in src.list(kind) {
        let mut keep = true;
        for c in &opts.conds {
            let ok = if c.field == "__userTag__" || c.field == "__systemTag__" {
                let type_ = if c.field == "__userTag__" {
                    "User"
                } else {
                    "System"
                };
                let uuid = item.get("uuid").and_then(Value::as_str).unwrap_or_default();
                let tags = src.tags_of(uuid, type_);
                match c.op {
                    Op::IsNull => tags.is_empty(),
                    Op::NotNull => !tags.is_empty(),
                    // Negations on tags mean "no tag matches" (a NOT IN sub-query on the MN).
                    Op::Ne | Op::NotIn | Op::NotLike => {
                        let p = positive(c.op);
                        let mut any = false;
                        for t in &tags {
                            any |= matches(&Value::String(t.clone()), p, &c.value)?;
                        }
                        !any
                    }
                    op => {
                        let mut any = false;
                        for t in &tags {
                            any |= matches(&Value::String(t.clone()), op, &c.value)?;
                        }
                        any
                    }
                }
            } else {
                let path: Vec<&str> = c.field.split('.').collect();
                let vals = ev.values(kind, &item, &path);
                match c.op {
                    Op::IsNull if path.len() > 1 => {
                        vals.is_empty() || vals.iter().any(Value::is_null)
                    }
                    _ => {
                        let mut any = false;
                        for v in &vals {
                            if matches(v, c.op, &c.value)? {
                                any = true;
                                break;
                            }
                        }
                        any
                    }
                }
            };
            if !ok {
                keep = false;
                break;
            }
        }
        if keep {
            out.push(item);
        }
    }
    if let Some((f, asc)) = &opts.sort {
        out.sort_by(|a, b| {
            let o = sort_key_cmp(f, a, b);
            if *asc {
                o
            } else {
                o.reverse()
            }
        });
    }
    let total = out.len();
    let mut page: Vec<Value> = out.into_iter().skip(opts.start).take(opts.limit).collect();
    if let Some(fields) = &opts.fields {
        for v in &mut page {
            if let Value::Object(m) = v {
                let kept: Map<String, Value> = m
                    .iter()
                    .filter(|(k, _)| fields.iter().any(|f| f == *k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                *m = kept;
            }
        }
    }
    Ok(QueryResult {
        inventories: page,
        total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn operator_precedence_quirk() {
        let c = parse_condition("name?=a,b").unwrap();
        assert_eq!(
            (c.field.as_str(), c.op, c.value.as_str()),
            ("name", Op::In, "a,b")
        );
        // `!=` is looked for before `=`, anywhere in the string.
        let c = parse_condition("name=a!=b").unwrap();
        assert_eq!(
            (c.field.as_str(), c.op, c.value.as_str()),
            ("name=a", Op::Ne, "b")
        );
        let c = parse_condition("uuid not null").unwrap();
        assert_eq!((c.field.as_str(), c.op), ("uuid", Op::NotNull));
        let c = parse_condition("name= x ").unwrap();
        assert_eq!(c.value, " x ", "values are not trimmed");
        let c = parse_condition("__userTag__=kprov::cluster=demo").unwrap();
        assert_eq!(
            (c.field.as_str(), c.value.as_str()),
            ("__userTag__", "kprov::cluster=demo")
        );
        let c = parse_condition("cpuNum>=4").unwrap();
        assert_eq!(c.op, Op::Ge);
        assert!(parse_condition("name")
            .unwrap_err()
            .contains("doesn't contain any query operator"));
    }

    #[test]
    fn like_and_compare() {
        assert!(like("kprov-%", "kprov-master-0"));
        assert!(like("k_rov", "kprov"));
        assert!(!like("kprov", "kprov-x"));
        assert!(like("%a%b%", "xxaxxbxx"));
        assert!(matches(&json!(8), Op::Gt, "4").unwrap());
        assert!(!matches(&json!(null), Op::Ne, "x").unwrap());
        assert!(matches(&json!("b"), Op::In, "a,b").unwrap());
        assert!(matches(&json!("c"), Op::NotIn, "a,b").unwrap());
        assert!(matches(&json!(4), Op::Eq, "x").is_err());
    }

    #[test]
    fn opts_parse_errors_are_text() {
        let p = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        assert!(parse_opts(&p("limit", "ten")).is_err());
        assert!(parse_opts(&p("start", "-1")).is_err());
        let o = parse_opts(&p("sort", " name")).unwrap();
        assert_eq!(o.sort, Some(("name".into(), true)));
        let o = parse_opts(&p("sort", "-createDate")).unwrap();
        assert_eq!(o.sort, Some(("createDate".into(), false)));
        assert_eq!(parse_opts(&[]).unwrap().limit, 1000);
    }
}
