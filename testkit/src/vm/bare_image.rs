//! What a bare test image (no containerd, runc, conntrack or socat; `tests/vm/build-image.sh`)
//! needs from a restricted network, built from the Debian packages the image build downloaded
//! into `IMAGE/debs`: the real container runtime for the file repository, and an internal APT
//! repository (`spec.assets.packageRepository`) with the OS packages.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// Guest port of the internal APT repository.
pub const GUEST_APT_PORT: u16 = 8082;
/// The APT repository's suite (one component, `main`).
pub const APT_SUITE: &str = "kprov-test";

/// The image's downloaded packages (`IMAGE/debs/*.deb`), sorted.
fn debs(image: &Path) -> Vec<PathBuf> {
    let dir = image.join("debs");
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}; rebuild with tests/vm/build-image.sh",
                dir.display()
            )
        })
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    out.sort();
    out
}

/// The package name of a `.deb` file (`containerd_1.6.20~ds1-1+b1_amd64.deb` → `containerd`).
fn package_of(deb: &Path) -> String {
    let name = deb.file_name().unwrap().to_string_lossy().to_string();
    name.split('_').next().unwrap_or(&name).to_string()
}

/// `dpkg-deb ARGS DEB`'s stdout (dpkg is on every Debian host).
fn dpkg_deb(args: &[&str], deb: &Path) -> Vec<u8> {
    let out = Command::new("dpkg-deb")
        .args(args)
        .arg(deb)
        .output()
        .expect("dpkg-deb (package dpkg)");
    assert!(
        out.status.success(),
        "dpkg-deb {args:?} {}: {out:?}",
        deb.display()
    );
    out.stdout
}

/// The files `paths` (`usr/bin/containerd`) from the data of package `deb`.
fn files_of(deb: &Path, paths: &[&str]) -> BTreeMap<String, Vec<u8>> {
    let tar_bytes = dpkg_deb(&["--fsys-tarfile"], deb);
    let mut archive = tar::Archive::new(tar_bytes.as_slice());
    let mut found = BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().to_string();
        let path = path.trim_start_matches("./").to_string();
        if paths.contains(&path.as_str()) {
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            found.insert(path, data);
        }
    }
    for p in paths {
        assert!(found.contains_key(*p), "{p} in {}", deb.display());
    }
    found
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Put the real container runtime into the file repository `files` (from
/// [`super::file_repository`]) in place of the stand-ins, as upstream ships it: Debian's
/// containerd binaries (`bin/containerd`, `bin/ctr`, `bin/containerd-shim-runc-v2`) in the
/// static release archive's layout, and Debian's runc. Returns the guest path each binary is
/// installed at → its SHA-256.
pub fn use_real_runtime(
    files: &mut BTreeMap<String, Vec<u8>>,
    image: &Path,
    arch: &str,
) -> BTreeMap<String, String> {
    let all = debs(image);
    let find = |name: &str| {
        all.iter()
            .find(|d| package_of(d) == name)
            .unwrap_or_else(|| panic!("{name}_*.deb in {}/debs", image.display()))
            .clone()
    };
    let bins = ["containerd", "ctr", "containerd-shim-runc-v2"];
    let paths: Vec<String> = bins.iter().map(|b| format!("usr/bin/{b}")).collect();
    let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
    let from_deb = files_of(&find("containerd"), &refs);
    let runc = files_of(&find("runc"), &["usr/sbin/runc"])
        .remove("usr/sbin/runc")
        .unwrap();
    let mut installed = BTreeMap::new();
    let mut entries = Vec::new();
    for b in bins {
        let data = from_deb[&format!("usr/bin/{b}")].clone();
        installed.insert(format!("/usr/local/bin/{b}"), sha256_hex(&data));
        entries.push((format!("bin/{b}"), data));
    }
    installed.insert("/usr/local/sbin/runc".to_string(), sha256_hex(&runc));
    let entries: Vec<(&str, Vec<u8>)> = entries
        .iter()
        .map(|(n, d)| (n.as_str(), d.clone()))
        .collect();
    files.insert(
        format!("containerd-static-*-linux-{arch}.tar.gz"),
        super::stand_ins::tgz(&entries),
    );
    files.insert(format!("/runc.{arch}"), runc);
    installed
}

/// An APT repository (URL path → body) of the image's downloaded OS packages, without the
/// container runtime (that comes from the file repository): `dists/SUITE/Release` (unsigned;
/// kprov marks a source without a key `trusted=yes`), `dists/SUITE/main/binary-ARCH/Packages`
/// and `pool/main/*.deb` — the layout apt-mirror/aptly produce.
pub fn apt_repository(image: &Path, arch: &str) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut packages = String::new();
    for deb in debs(image) {
        if ["containerd", "runc"].contains(&package_of(&deb).as_str()) {
            continue;
        }
        let data = std::fs::read(&deb).unwrap();
        let control = String::from_utf8(dpkg_deb(&["-f"], &deb)).unwrap();
        // The pool's name, as Debian's archive has it: PACKAGE_VERSION-WITHOUT-EPOCH_ARCH.deb
        // (apt's cache names it with the epoch escaped, `1%3a1.4.7`, which is no URL path).
        let field = |k: &str| {
            control
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{k}: ")))
                .unwrap_or_else(|| panic!("{k} in {}'s control", deb.display()))
                .trim()
                .to_string()
        };
        let version = field("Version");
        let version = version.split_once(':').map_or(version.as_str(), |(_, v)| v);
        let file = format!(
            "{}_{version}_{}.deb",
            field("Package"),
            field("Architecture")
        );
        packages.push_str(control.trim_end());
        packages.push_str(&format!(
            "\nFilename: pool/main/{file}\nSize: {}\nSHA256: {}\n\n",
            data.len(),
            sha256_hex(&data)
        ));
        out.insert(format!("/pool/main/{file}"), data);
    }
    let index = format!("main/binary-{arch}/Packages");
    let release = format!(
        "Origin: kprov-test\nLabel: kprov-test\nSuite: {APT_SUITE}\nCodename: {APT_SUITE}\n\
         Date: Thu, 01 Jan 2026 00:00:00 UTC\nArchitectures: {arch}\nComponents: main\n\
         SHA256:\n {} {} {index}\n",
        sha256_hex(packages.as_bytes()),
        packages.len()
    );
    out.insert(format!("/dists/{APT_SUITE}/{index}"), packages.into_bytes());
    out.insert(format!("/dists/{APT_SUITE}/Release"), release.into_bytes());
    out
}

/// The packages in [`apt_repository`] (`conntrack`, `socat` and the libraries they need).
pub fn apt_packages(image: &Path) -> Vec<String> {
    debs(image)
        .iter()
        .map(|d| package_of(d))
        .filter(|p| !["containerd", "runc"].contains(&p.as_str()))
        .collect()
}
