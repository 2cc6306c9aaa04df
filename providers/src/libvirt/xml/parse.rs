//! Reading libvirt XML: kprov's `<metadata>` of a domain, and the host documents kprov inspects
//! (capabilities, node devices, pool target path, hostdevs in use).

use std::collections::BTreeMap;

use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;

use super::{PciAddress, METADATA_NS};

/// kprov's metadata as read back from a domain.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParsedMetadata {
    /// Name of the kprov cluster the domain belongs to.
    pub cluster: String,
    /// Every kprov tag stored in the metadata.
    pub tags: BTreeMap<String, String>,
}

fn attrs(e: &quick_xml::events::BytesStart<'_>) -> BTreeMap<String, String> {
    e.attributes()
        .flatten()
        .filter_map(|a| {
            let k = String::from_utf8_lossy(a.key.local_name().as_ref()).to_string();
            let v = a.unescape_value().ok()?.to_string();
            Some((k, v))
        })
        .collect()
}

/// Read kprov's `<instance>` element (namespace [`METADATA_NS`], any prefix) from a domain XML.
/// `None` when the domain has none (not kprov's).
pub fn parse_metadata(domain_xml: &str) -> Option<ParsedMetadata> {
    let mut r = NsReader::from_str(domain_xml);
    let mut found: Option<ParsedMetadata> = None;
    loop {
        let ev = r.read_resolved_event();
        let (ns, ev) = match ev {
            Ok(x) => x,
            Err(_) => return None,
        };
        let ours = matches!(ns, ResolveResult::Bound(n) if n.as_ref() == METADATA_NS.as_bytes());
        match ev {
            Event::Start(e) | Event::Empty(e) if ours => {
                let a = attrs(&e);
                match e.local_name().as_ref() {
                    b"instance" => {
                        found = Some(ParsedMetadata {
                            cluster: a.get("cluster").cloned().unwrap_or_default(),
                            tags: BTreeMap::new(),
                        });
                    }
                    b"tag" => {
                        if let (Some(m), Some(k), Some(v)) =
                            (found.as_mut(), a.get("key"), a.get("value"))
                        {
                            m.tags.insert(k.clone(), v.clone());
                        }
                    }
                    _ => {}
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    found
}

/// The first text of every element with local name `name` (no namespace handling), in order.
pub fn texts_of(xml: &str, name: &str) -> Vec<String> {
    let mut r = quick_xml::Reader::from_str(xml);
    let mut out = Vec::new();
    let mut inside = false;
    loop {
        match r.read_event() {
            Ok(Event::Start(e)) => inside = e.local_name().as_ref() == name.as_bytes(),
            Ok(Event::Text(t)) if inside => {
                if let Ok(s) = t.unescape() {
                    out.push(s.trim().to_string());
                }
                inside = false;
            }
            Ok(Event::End(_)) => inside = false,
            Ok(Event::Eof) | Err(_) => break,
            _ => {}
        }
    }
    out
}

/// Attributes of every element with local name `name`, in document order.
pub fn attrs_of(xml: &str, name: &str) -> Vec<BTreeMap<String, String>> {
    let mut r = quick_xml::Reader::from_str(xml);
    let mut out = Vec::new();
    loop {
        match r.read_event() {
            Ok(Event::Start(e)) | Ok(Event::Empty(e))
                if e.local_name().as_ref() == name.as_bytes() =>
            {
                out.push(attrs(&e))
            }
            Ok(Event::Eof) | Err(_) => break,
            _ => {}
        }
    }
    out
}

/// Host PCI addresses of the `<hostdev type='pci'>` devices in a domain XML.
pub fn hostdev_addresses(domain_xml: &str) -> Vec<PciAddress> {
    let mut r = quick_xml::Reader::from_str(domain_xml);
    let mut out = Vec::new();
    let mut depth_hostdev = false;
    let mut in_source = false;
    loop {
        match r.read_event() {
            Ok(Event::Start(e)) => match e.local_name().as_ref() {
                b"hostdev" => {
                    depth_hostdev = attrs(&e).get("type").map(String::as_str) == Some("pci")
                }
                b"source" if depth_hostdev => in_source = true,
                _ => {}
            },
            Ok(Event::Empty(e)) if in_source && e.local_name().as_ref() == b"address" => {
                let a = attrs(&e);
                let g = |k: &str| a.get(k).map(String::as_str).unwrap_or("0");
                if let Some(p) = PciAddress::parse(g("domain"), g("bus"), g("slot"), g("function"))
                {
                    out.push(p);
                }
            }
            Ok(Event::End(e)) => match e.local_name().as_ref() {
                b"hostdev" => depth_hostdev = false,
                b"source" => in_source = false,
                _ => {}
            },
            Ok(Event::Eof) | Err(_) => break,
            _ => {}
        }
    }
    out
}

/// A PCI device of the host, from its node-device XML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciDevice {
    /// Node device name (`pci_0000_01_00_0`).
    pub name: String,
    /// PCI address of the device on the host.
    pub address: PciAddress,
    /// Vendor name (or id when unnamed).
    pub vendor: String,
    /// Product name (or id when unnamed).
    pub product: String,
    /// PCI class (`0x030200` for 3D controllers), when given.
    pub class: Option<String>,
}

/// Parse a node device XML of capability `pci`; `None` for other devices.
pub fn parse_pci_device(xml: &str) -> Option<PciDevice> {
    let caps = attrs_of(xml, "capability");
    if !caps
        .iter()
        .any(|c| c.get("type").map(String::as_str) == Some("pci"))
    {
        return None;
    }
    let first = |n: &str| texts_of(xml, n).into_iter().next();
    let name = first("name")?;
    let address = PciAddress::parse(
        &first("domain").unwrap_or_else(|| "0".into()),
        &first("bus")?,
        &first("slot")?,
        &first("function")?,
    )?;
    let named = |el: &str| {
        let text = first(el).filter(|s| !s.is_empty());
        let id = attrs_of(xml, el)
            .into_iter()
            .next()
            .and_then(|a| a.get("id").cloned());
        match (text, id) {
            (Some(t), Some(i)) => format!("{t} ({i})"),
            (Some(t), None) => t,
            (None, Some(i)) => i,
            (None, None) => String::new(),
        }
    };
    Some(PciDevice {
        name,
        address,
        vendor: named("vendor"),
        product: named("product"),
        class: first("class"),
    })
}
