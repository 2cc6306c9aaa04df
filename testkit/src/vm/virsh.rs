//! What libvirt holds, read with `virsh -c qemu:///system`: domains, and everything left of a
//! cluster (domains, pools, volumes, networks); forced cleanup after a failed run.

use std::process::Command;

/// `virsh -c qemu:///system ARGS` stdout (empty on failure).
pub fn virsh(args: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("virsh -q -c qemu:///system {args}"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Domain names starting with `prefix`.
pub fn domains(prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = virsh("list --all --name")
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with(prefix))
        .map(String::from)
        .collect();
    v.sort();
    v
}

/// Everything libvirt still has for cluster `c`: domains, pools, volumes (in any active pool)
/// and networks named after it.
pub fn leftovers(c: &str) -> Vec<String> {
    let mut left: Vec<String> = domains(&format!("{c}-"))
        .into_iter()
        .map(|d| format!("domain {d}"))
        .collect();
    for p in virsh("pool-list --all --name")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
    {
        if p == format!("kprov.{c}") {
            left.push(format!("pool {p}"));
        }
        for v in virsh(&format!("vol-list {p}")).lines() {
            if let Some(name) = v.split_whitespace().next() {
                if name.starts_with(&format!("kprov.{c}.")) {
                    left.push(format!("volume {p}/{name}"));
                }
            }
        }
    }
    for n in virsh("net-list --all --name").lines().map(str::trim) {
        if n == format!("kprov.{c}") {
            left.push(format!("network {n}"));
        }
    }
    left
}

/// Destroy + undefine (with NVRAM) every domain starting with `prefix` (cleanup of a failed run).
pub fn force_cleanup(prefix: &str) {
    for d in domains(prefix) {
        virsh(&format!("destroy {d}"));
        virsh(&format!("undefine {d} --nvram"));
    }
}
