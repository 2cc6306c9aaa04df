//! Every domain XML the libvirt adapter can produce, checked by libvirt itself rather than by
//! string matching: each variant of [`domain_xml`] — amd64 (`pc` and `q35`, disk boot and direct
//! kernel boot) and aarch64 (UEFI and direct kernel boot), domain type `qemu` and `kvm`, a NIC
//! on a libvirt network (NAT or an existing one: the same XML) and restricted user-mode
//! networking, with 0, 1 and 4 passed-through PCI GPUs, with and without a console log — is
//!
//! 1. validated against libvirt's own RelaxNG schema (`virt-xml-validate FILE domain`), and
//! 2. defined on the host's `qemu:///system` (define only: nothing is started) and read back:
//!    libvirt kept the UUID, kprov's metadata, every hostdev's host address (read with kprov's
//!    own parser, as `kprov` finds GPUs in use) and the QEMU arguments of the user-mode NIC, and
//!    the guest PCI addresses libvirt assigned do not collide with that NIC's fixed slot on
//!    bus 0 (libvirt does not know it: QEMU would refuse to start).
//!    Then it is undefined.
//!
//! The GPUs are at host addresses `0000:fe:1c.0`–`0000:fe:1f.0`, which no host here has
//! (checked): libvirt 9 accepts such a hostdev at define time — the device is looked up, and
//! detached from its host driver (`managed='yes'`), only when the domain starts — so defining
//! proves the XML without a GPU and without touching any host device.
//!
//! A (type, arch) pair the host's domain capabilities do not offer (`kvm` for an aarch64 guest
//! on an x86_64 host, or `kvm` on a host without /dev/kvm) cannot be defined: for those the
//! test requires libvirt's refusal to be exactly that ("does not support virt type"), so the
//! rest of that XML is still covered by the schema and by its `qemu` twin.
//!
//! Test domains are named `kprovxmlcheck-PID-N`; they are undefined after each check and, on
//! the way out (also after a failed assertion), every `kprovxmlcheck-*` domain is removed.
#![cfg(feature = "libvirt")]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Instant;

use kprov_providers::libvirt::cloud::{
    domain_uuid, domain_xml, DirectBootPaths, DomainParams, Nic,
};
use kprov_providers::libvirt::xml::{
    attrs_of, hostdev_addresses, parse_metadata, to_xml, PciAddress,
};
use kprov_providers::libvirt::{cluster_object_name, volume_prefix};
use kprov_providers::*;
use kprov_testkit::{peers, vm};

/// Prefix of every domain this test defines (distinctive: cleanup removes all of them).
const PREFIX: &str = "kprovxmlcheck-";
const URI: &str = "qemu:///system";

/// One input of the domain XML builder.
struct Variant {
    /// What it is, for messages (`arm64-uefi/qemu/user/4gpu/log`).
    label: String,
    req: InstanceRequest,
    domain_type: &'static str,
    machine_x86: &'static str,
    direct_boot: Option<DirectBootPaths>,
    nic: Nic,
    hostdevs: Vec<PciAddress>,
    console_log: Option<String>,
}

impl Variant {
    fn params(&self) -> DomainParams<'_> {
        let prefix = volume_prefix(&self.req.cluster);
        DomainParams {
            req: &self.req,
            domain_type: self.domain_type.into(),
            machine_x86: self.machine_x86.into(),
            pool: cluster_object_name(&self.req.cluster),
            root_volume: format!("{prefix}{}.root.qcow2", self.req.name),
            seed_volume: format!("{prefix}{}.seed.iso", self.req.name),
            direct_boot: self.direct_boot.clone(),
            nic: self.nic.clone(),
            hostdevs: self.hostdevs.clone(),
            console_log: self.console_log.clone(),
        }
    }

    fn xml(&self) -> String {
        let doc = domain_xml(&self.params()).unwrap_or_else(|e| panic!("{}: {e}", self.label));
        to_xml(&doc).unwrap_or_else(|e| panic!("{}: {e}", self.label))
    }

    /// The libvirt arch of the guest (`x86_64`, `aarch64`).
    fn arch(&self) -> &'static str {
        self.req.arch.machine()
    }
}

/// The GPUs' host addresses: `0000:fe:1c.0` onwards (bus 0xfe exists on no host here).
fn gpu_addresses(n: u32) -> Vec<PciAddress> {
    (0..n)
        .map(|i| PciAddress::new(0, 0xfe, 0x1c + i, 0))
        .collect()
}

/// A node request as the engine makes it (the tags kprov's metadata carries).
fn request(cluster: &str, name_index: usize, arch: Arch, gpus: u32) -> InstanceRequest {
    let ig = if gpus > 0 { "gpu" } else { "nodes" };
    let index = name_index as u32;
    let id = instance_id(cluster, ig, index);
    let mut tags = BTreeMap::new();
    tags.insert(TAG_CLUSTER.to_string(), cluster.to_string());
    tags.insert(TAG_INSTANCE_GROUP.to_string(), ig.to_string());
    tags.insert(TAG_ROLE.to_string(), Role::Node.as_str().to_string());
    tags.insert(TAG_INDEX.to_string(), index.to_string());
    tags.insert(TAG_SPEC_HASH.to_string(), "h1".to_string());
    tags.insert(TAG_INSTANCE_ID.to_string(), id.clone());
    InstanceRequest {
        cluster: cluster.into(),
        name: format!("{cluster}-{name_index}"),
        id,
        instance_group: ig.into(),
        index,
        role: Role::Node,
        arch,
        size: MachineSize::Shape {
            cpus: 2,
            memory_mib: 1024,
        },
        image: None,
        root_disk_gib: Some(8),
        gpu: (gpus > 0).then(|| GpuRequest {
            count: gpus,
            vendor: Some("nvidia".into()),
            model: None,
            mode: GpuMode::Passthrough,
        }),
        network_id: None,
        user_data: b"#cloud-config\n".to_vec(),
        tags,
    }
}

/// Every combination the builder distinguishes (see the module docs): 6 boot set-ups × 2
/// domain types × 2 NICs × 3 GPU counts; the console log alternates.
fn variants(cluster: &str) -> Vec<Variant> {
    let dir = format!("/var/lib/libvirt/images/{}", cluster_object_name(cluster));
    let vol = volume_prefix(cluster);
    // (label, arch, x86 machine, direct kernel boot)
    let boots = [
        ("amd64-pc", Arch::Amd64, "pc", false),
        ("amd64-pc-kernel", Arch::Amd64, "pc", true),
        ("amd64-q35", Arch::Amd64, "q35", false),
        ("amd64-q35-kernel", Arch::Amd64, "q35", true),
        ("arm64-uefi", Arch::Arm64, "pc", false),
        ("arm64-kernel", Arch::Arm64, "pc", true),
    ];
    // the forwards the VM tests use: guest port on 10.0.2.100 → a loopback port
    let forwards: BTreeMap<u16, u16> = [(8080, 40001), (8081, 40002), (5000, 40003)].into();
    let mut out = Vec::new();
    for (boot, arch, machine, kernel) in boots {
        for domain_type in ["qemu", "kvm"] {
            for (net, nic) in [
                ("nat", Nic::Network(cluster_object_name(cluster))),
                ("user", Nic::User(forwards.clone())),
            ] {
                for gpus in [0u32, 1, 4] {
                    let n = out.len();
                    let req = request(cluster, n, arch, gpus);
                    let base = format!("{dir}/{vol}base-{arch}-0123456789ab");
                    let log = n % 2 == 0;
                    out.push(Variant {
                        label: format!(
                            "{boot}/{domain_type}/{net}/{gpus}gpu/{}",
                            if log { "log" } else { "nolog" }
                        ),
                        console_log: log.then(|| format!("{dir}/{vol}{}.console.log", req.name)),
                        req,
                        domain_type,
                        machine_x86: machine,
                        direct_boot: kernel.then(|| {
                            (
                                format!("{base}.vmlinuz"),
                                format!("{base}.initrd"),
                                "root=LABEL=root ro console=ttyS0".to_string(),
                            )
                        }),
                        nic: nic.clone(),
                        hostdevs: gpu_addresses(gpus),
                    });
                }
            }
        }
    }
    out
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn virsh_out(args: &[&str]) -> Output {
    Command::new("virsh")
        .args(["-q", "-c", URI])
        .args(args)
        .output()
        .expect("run virsh")
}

/// `virt-xml-validate FILE domain`: `Err(its output)` when libvirt's schema refuses it.
fn validate(file: &Path) -> Result<(), String> {
    let o = Command::new("virt-xml-validate")
        .arg(file)
        .arg("domain")
        .output()
        .expect("run virt-xml-validate");
    if o.status.success() {
        Ok(())
    } else {
        Err(text(&o))
    }
}

/// Whether the host's libvirt offers domain type `virt_type` for guests of `arch`.
fn offered(virt_type: &str, arch: &str) -> bool {
    virsh_out(&["domcapabilities", "--virttype", virt_type, "--arch", arch])
        .status
        .success()
}

/// What libvirt kept of a defined variant (`dumpxml --inactive`): the checks of step 2.
fn check_defined(v: &Variant, sent: &str) -> Result<(), String> {
    let o = virsh_out(&["dumpxml", "--inactive", &v.req.name]);
    if !o.status.success() {
        return Err(format!("dumpxml: {}", text(&o)));
    }
    let got = String::from_utf8_lossy(&o.stdout).to_string();
    let mut bad = Vec::new();
    if !got.contains(&format!("<uuid>{}</uuid>", domain_uuid(&v.req.id))) {
        bad.push("the UUID (kprov's instance id) was not kept".to_string());
    }
    let meta = parse_metadata(&got);
    if meta.as_ref().and_then(|m| m.tags.get(TAG_INSTANCE_ID)) != Some(&v.req.id) {
        bad.push(format!("kprov's metadata was not kept: {meta:?}"));
    }
    let hostdevs = hostdev_addresses(&got);
    if hostdevs != v.hostdevs {
        bad.push(format!(
            "hostdevs read back {hostdevs:?}, sent {:?}",
            v.hostdevs
        ));
    }
    let args = |x: &str| -> Vec<String> {
        attrs_of(x, "arg")
            .into_iter()
            .filter_map(|a| a.get("value").cloned())
            .collect()
    };
    if args(&got) != args(sent) {
        bad.push(format!(
            "QEMU arguments read back {:?}, sent {:?}",
            args(&got),
            args(sent)
        ));
    }
    if matches!(v.nic, Nic::User(_)) {
        // the user-mode NIC is added by QEMU arguments at a fixed slot of bus 0, which libvirt
        // does not know about: it must not have given that slot to a device of its own (QEMU
        // would refuse to start)
        let slot = args(sent)
            .iter()
            .find(|a| a.starts_with("virtio-net-pci,"))
            .and_then(|a| a.split(',').find_map(|kv| kv.strip_prefix("addr=")))
            .and_then(|h| u32::from_str_radix(h.trim_start_matches("0x"), 16).ok())
            .map(|n| format!("0x{n:02x}"));
        let Some(slot) = slot else {
            return Err(format!(
                "no virtio-net-pci addr= in the QEMU arguments {:?}",
                args(sent)
            ));
        };
        let taken: Vec<_> = attrs_of(&got, "address")
            .into_iter()
            .filter(|a| a.get("type").map(String::as_str) == Some("pci"))
            .filter(|a| {
                a.get("bus").map(String::as_str) == Some("0x00") && a.get("slot") == Some(&slot)
            })
            .collect();
        if !taken.is_empty() {
            bad.push(format!(
                "libvirt put a device at the user NIC's slot {slot} of bus 0: {taken:?}"
            ));
        }
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(format!("{}\n--- read back:\n{got}", bad.join("; ")))
    }
}

/// Define one variant and check it (step 2), or check that libvirt refuses a domain type the
/// host does not offer; always undefined afterwards.
fn define_and_check(v: &Variant, file: &Path, sent: &str, offered: bool) -> Result<bool, String> {
    let o = virsh_out(&["define", file.to_str().expect("utf-8 path")]);
    let r = match (o.status.success(), offered) {
        (true, true) => check_defined(v, sent).map(|_| true),
        (false, true) => Err(format!("define refused: {}", text(&o))),
        (true, false) => Err(format!(
            "libvirt defined a {} {} domain its capabilities do not offer",
            v.domain_type,
            v.arch()
        )),
        (false, false) if text(&o).contains("does not support virt type") => Ok(false),
        (false, false) => Err(format!(
            "refused, but not (only) for the domain type the host lacks: {}",
            text(&o)
        )),
    };
    if o.status.success() {
        let u = virsh_out(&["undefine", "--nvram", &v.req.name]);
        if !u.status.success() {
            return Err(format!("undefine {}: {}", v.req.name, text(&u)));
        }
    }
    r
}

/// On the way out (also after a failed assertion): remove every test domain, undo host setup.
struct Cleanup;

impl Drop for Cleanup {
    fn drop(&mut self) {
        vm::force_cleanup(PREFIX);
        vm::host_teardown();
    }
}

#[test]
fn every_domain_xml_kprov_produces_validates_and_defines_on_qemu_system() {
    let test = "every_domain_xml_kprov_produces_validates_and_defines_on_qemu_system";
    for p in [
        "/usr/sbin/libvirtd",
        "/usr/sbin/virtlogd",
        "virsh",
        "virt-xml-validate",
        "xmllint",
        "qemu-system-x86_64",
        "qemu-system-aarch64",
        "nc",
    ] {
        if peers::require(test, p).is_none() {
            return;
        }
    }
    let _serial = vm::vm_lock();
    let _host = vm::host_lock();
    let t0 = Instant::now();
    vm::host_setup();
    let _cleanup = Cleanup;
    // a crashed earlier run's domains (distinctive prefix: nothing else is touched)
    vm::force_cleanup(PREFIX);
    for a in gpu_addresses(4) {
        let sys = format!(
            "/sys/bus/pci/devices/{}:{}:{}.{}",
            &a.domain[2..],
            &a.bus[2..],
            &a.slot[2..],
            &a.function[2..]
        );
        assert!(
            !Path::new(&sys).exists(),
            "{sys} exists: the test's GPU addresses must be ones this host does not have"
        );
    }

    let cluster = format!("{PREFIX}{}", std::process::id() % 100000);
    let dir = tempfile::tempdir().unwrap();
    let all = variants(&cluster);
    let mut caps = BTreeMap::new();
    let (mut invalid, mut failed) = (Vec::new(), Vec::new());
    let (mut defined, mut refused) = (0, Vec::new());
    for v in &all {
        let xml = v.xml();
        let file = dir.path().join(format!("{}.xml", v.req.name));
        std::fs::write(&file, &xml).unwrap();
        if let Err(e) = validate(&file) {
            invalid.push(format!("{}: {e}\n{xml}", v.label));
            continue;
        }
        let ok = *caps
            .entry((v.domain_type, v.arch()))
            .or_insert_with(|| offered(v.domain_type, v.arch()));
        match define_and_check(v, &file, &xml, ok) {
            Ok(true) => defined += 1,
            Ok(false) => refused.push(v.label.clone()),
            Err(e) => failed.push(format!("{} ({}): {e}", v.label, v.req.name)),
        }
    }
    eprintln!(
        "[xml] {} variants: {} schema-valid, {defined} defined and read back, {} refused as the host offers no such domain type ({caps:?}): {refused:?}; {:.1}s",
        all.len(),
        all.len() - invalid.len(),
        refused.len(),
        t0.elapsed().as_secs_f64()
    );
    assert!(
        invalid.is_empty(),
        "{} domain XMLs fail libvirt's schema:\n{}",
        invalid.len(),
        invalid.join("\n\n")
    );
    assert!(
        failed.is_empty(),
        "{} domain XMLs failed on {URI}:\n{}",
        failed.len(),
        failed.join("\n\n")
    );
    // the qemu (TCG) variants exist for every arch on every host with the emulators
    assert!(
        defined >= all.len() / 2,
        "only {defined} of {} defined",
        all.len()
    );
    assert_eq!(vm::domains(PREFIX), Vec::<String>::new(), "left defined");
}
