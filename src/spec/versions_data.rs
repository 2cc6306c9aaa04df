// Data for `versions.rs` (included with `include!`, so it only has items, no `use`).
//
// Where the numbers come from (no checksum here was typed by hand or computed locally):
// - kubeadm / kubelet / kubectl / crictl SHA-256: kubernetes-sigs/kubespray commit
//   58425096a95abb38dba0e7b44e01eeef73866132 (branch component_hash_update/release-2.29,
//   "Patch versions updates", 2026-06-14), roles/kubespray_defaults/vars/main/checksums.yml.
//   The 1.31.14, 1.32.13 and crictl values are the same on the merged release-2.29 branch
//   (3f2daa1dddb3c4a0c8a2a1af065de8e1a1b9a80e, #13146). 1.33.13 is on that automated branch only
//   (component_hash_update/release-2.30 and -2.31 have the same values).
// - crictl version per minor: kubespray's rule (newest cri-tools below the next minor), same file.
// - cni-plugins 1.9.1 SHA-256: kubespray master 46dbdd3994b32640bcd806b0097f50e8fdf1d514,
//   same file (its default `cni_version`).
// - pause / etcd / coredns tags: what `kubeadm config images list` prints for each release, as
//   recorded in kubernetes/minikube eb25dbc703701fa38c3f65c89a1896baa375e5ed
//   pkg/minikube/constants/constants_kubeadm_images.go. Pause and coredns match kubespray's
//   pod_infra_supported_versions / coredns_supported_versions at 58425096.

/// The container runtime nodes get from the file repository when their image lacks a suitable
/// one (see `docs/bootstrap.md`, phase `binaries`): containerd's static release archive (1.7:
/// kprov's `config.toml` is config version 2) and runc, the same for every Kubernetes release.
/// SHA-256: kubespray master 46dbdd3994b32640bcd806b0097f50e8fdf1d514,
/// roles/kubespray_defaults/vars/main/checksums.yml (`containerd_static_archive_checksums`,
/// `runc_checksums`).
pub static RUNTIME: &[BinaryAsset] = &[
    BinaryAsset {
        name: "containerd",
        url: "https://github.com/containerd/containerd/releases/download/v1.7.34/containerd-static-1.7.34-linux-{arch}.tar.gz",
        sha256_amd64: "8e244782bbbbe39b2213b961f0939974e88b33f68bed13c6b51f8b4c4ab8ca47",
        sha256_arm64: "4aa54ecace7a22bc9e5dccbf06de7a0d8ad79db02fb04b348191802c8880cbc7",
        archive: true,
    },
    BinaryAsset {
        name: "runc",
        url: "https://github.com/opencontainers/runc/releases/download/v1.3.6/runc.{arch}",
        sha256_amd64: "3f3921dbbee7723e9868f97e88e51ffc910206e3ba55646e74d93d24ea76023c",
        sha256_arm64: "6be27a061ef89bb14c6cb495405bba80f46cea213b8f79378a6086b1bac6b747",
        archive: false,
    },
];

/// Supported releases, oldest first.
pub static RELEASES: &[Release] = &[
    Release {
        version: "1.31.14",
        pause: "3.10",
        etcd: "3.5.24-0",
        coredns: "v1.11.3",
        binaries: &[
            BinaryAsset {
                name: "kubeadm",
                url: "https://dl.k8s.io/release/v1.31.14/bin/linux/{arch}/kubeadm",
                sha256_amd64: "6358aae72b191842b95f0b3a805a5470841c80d6b2e29990afc6624e4840e316",
                sha256_arm64: "ff9d9351423fd9c7b40a39a9be11df077b1f5a40c85b70349ca0ce55cd4fd336",
                archive: false,
            },
            BinaryAsset {
                name: "kubelet",
                url: "https://dl.k8s.io/release/v1.31.14/bin/linux/{arch}/kubelet",
                sha256_amd64: "d0c57fcda647babc5e45f2fad27bbc8be2c325fc3ab9c5b55fb1bb83352da099",
                sha256_arm64: "e2842f132933b990a8cbc285be3a28ff1cd213fe1a3380e24e37b1d2ce5e0ca6",
                archive: false,
            },
            BinaryAsset {
                name: "kubectl",
                url: "https://dl.k8s.io/release/v1.31.14/bin/linux/{arch}/kubectl",
                sha256_amd64: "8791ec7c8966b61420d55103a5fb948de9f0ca3d7306d789734975ad9704bdb0",
                sha256_arm64: "3abb0c2d7121e1833831f56fd857a93de386e76d14b64baf86220d0afe495209",
                archive: false,
            },
            BinaryAsset {
                name: "crictl",
                url: "https://github.com/kubernetes-sigs/cri-tools/releases/download/v1.31.1/crictl-v1.31.1-linux-{arch}.tar.gz",
                sha256_amd64: "0a03ba6b1e4c253d63627f8d210b2ea07675a8712587e697657b236d06d7d231",
                sha256_arm64: "cd70f9b2f75c9619f40450d4b6e2c74aaab619917da517eff6787b442f8b0e56",
                archive: true,
            },
            BinaryAsset {
                name: "cni-plugins",
                url: "https://github.com/containernetworking/plugins/releases/download/v1.9.1/cni-plugins-linux-{arch}-v1.9.1.tgz",
                sha256_amd64: "b98f74a0f8522f0a83867178729c1aa70f2158f90c45a2ca8fa791db1c76b303",
                sha256_arm64: "56171987d3947707c3563db2f4001bccaf50fd63468611b9f3cbecb1375ee7ec",
                archive: true,
            },
        ],
    },
    Release {
        version: "1.32.13",
        pause: "3.10",
        etcd: "3.5.24-0",
        coredns: "v1.11.3",
        binaries: &[
            BinaryAsset {
                name: "kubeadm",
                url: "https://dl.k8s.io/release/v1.32.13/bin/linux/{arch}/kubeadm",
                sha256_amd64: "9060bc1257ac219cab0a91d66842cac5b9213f5c3159a5cf4aea674e73edd05c",
                sha256_arm64: "53d7235bb72f25af3613b383600e89b5fd20a902a976a29218f9c4bd1ba08316",
                archive: false,
            },
            BinaryAsset {
                name: "kubelet",
                url: "https://dl.k8s.io/release/v1.32.13/bin/linux/{arch}/kubelet",
                sha256_amd64: "4bc04c3f50725fa29ac9f0626c553941cfe07d128b3a313b7f5d176b07ab786e",
                sha256_arm64: "46b5b8d313b47aa027e5a874fb8301503e848f313b56f54b9a2697f75409913c",
                archive: false,
            },
            BinaryAsset {
                name: "kubectl",
                url: "https://dl.k8s.io/release/v1.32.13/bin/linux/{arch}/kubectl",
                sha256_amd64: "db2ae479a63f3665d7f704ab18c0d4d4050144237980763221835b7305703c4c",
                sha256_arm64: "b1f87f196633a89208546d79bfa4e2470bda70e7bf42c4d3adb008ec208da9d1",
                archive: false,
            },
            BinaryAsset {
                name: "crictl",
                url: "https://github.com/kubernetes-sigs/cri-tools/releases/download/v1.32.0/crictl-v1.32.0-linux-{arch}.tar.gz",
                sha256_amd64: "f050b71d3a73a91a4e0990b90143ed04dcd100cc66f953736fcb6a2730e283c4",
                sha256_arm64: "f2f4e20658b72d00897f41e4b57093c8080e2d800ee894a5f4351f31d1833e30",
                archive: true,
            },
            BinaryAsset {
                name: "cni-plugins",
                url: "https://github.com/containernetworking/plugins/releases/download/v1.9.1/cni-plugins-linux-{arch}-v1.9.1.tgz",
                sha256_amd64: "b98f74a0f8522f0a83867178729c1aa70f2158f90c45a2ca8fa791db1c76b303",
                sha256_arm64: "56171987d3947707c3563db2f4001bccaf50fd63468611b9f3cbecb1375ee7ec",
                archive: true,
            },
        ],
    },
    Release {
        version: "1.33.13",
        pause: "3.10",
        etcd: "3.5.24-0",
        coredns: "v1.12.0",
        binaries: &[
            BinaryAsset {
                name: "kubeadm",
                url: "https://dl.k8s.io/release/v1.33.13/bin/linux/{arch}/kubeadm",
                sha256_amd64: "0d7ba3cb4d8913305d0de966bdd9964f76942bc0274055eb7cb21f67bde4b2b9",
                sha256_arm64: "8b50c20ebe4600ee65bed74192c2595e89cd9b48e1f5e6e51cd8710d0b07902f",
                archive: false,
            },
            BinaryAsset {
                name: "kubelet",
                url: "https://dl.k8s.io/release/v1.33.13/bin/linux/{arch}/kubelet",
                sha256_amd64: "0415ef7778646172f7aad830cbe09a7d903461eef9e15cd34193b85d95dfff0d",
                sha256_arm64: "db573f065eb9f9153b60270b209ea7992b79849ecac4387dbda88401fb2ed0ff",
                archive: false,
            },
            BinaryAsset {
                name: "kubectl",
                url: "https://dl.k8s.io/release/v1.33.13/bin/linux/{arch}/kubectl",
                sha256_amd64: "316d712726d857c20744c57cb36aa47cfc79bc0af7e82cebf3780244b654c073",
                sha256_arm64: "9fe8aadd5aab9421978c7ac95de6fad304a3c4c0ce9dbf4127579779e0699080",
                archive: false,
            },
            BinaryAsset {
                name: "crictl",
                url: "https://github.com/kubernetes-sigs/cri-tools/releases/download/v1.33.0/crictl-v1.33.0-linux-{arch}.tar.gz",
                sha256_amd64: "8307399e714626e69d1213a4cd18c8dec3d0201ecdac009b1802115df8973f0f",
                sha256_arm64: "e1f34918d77d5b4be85d48f5d713ca617698a371b049ea1486000a5e86ab1ff3",
                archive: true,
            },
            BinaryAsset {
                name: "cni-plugins",
                url: "https://github.com/containernetworking/plugins/releases/download/v1.9.1/cni-plugins-linux-{arch}-v1.9.1.tgz",
                sha256_amd64: "b98f74a0f8522f0a83867178729c1aa70f2158f90c45a2ca8fa791db1c76b303",
                sha256_arm64: "56171987d3947707c3563db2f4001bccaf50fd63468611b9f3cbecb1375ee7ec",
                archive: true,
            },
        ],
    },
];

// Add-on image sources:
// - flannel: flannel-io/flannel tag v0.28.9, Documentation/kube-flannel.yml.
// - calico: kubespray master 46dbdd39 (calico_version = newest calicoctl checksum, 3.31.7).
// - dashboard: kubespray release-2.29 defaults/main/download.yml (master no longer ships it).
// - metallb: metallb/metallb tag v0.16.1, config/manifests/metallb-native.yaml.
// - nfs-provisioner: kubernetes-sigs/nfs-subdir-external-provisioner chart values.yaml (v4.0.2).
// - nvidia-device-plugin: NVIDIA/k8s-device-plugin tag v0.20.0,
//   deployments/static/nvidia-device-plugin.yml.
// - kube-vip: kube-vip/kube-vip release v1.0.0 (`kube-vip manifest pod` of that release writes
//   the environment the static pod template uses).
/// Images of CNI plugins and add-ons (same for every Kubernetes release).
pub static ADDON_IMAGES: &[AddonImage] = &[
    AddonImage {
        component: "flannel",
        image: "ghcr.io/flannel-io/flannel:v0.28.9",
    },
    AddonImage {
        component: "flannel",
        image: "ghcr.io/flannel-io/flannel-cni-plugin:v1.9.1-flannel3",
    },
    AddonImage {
        component: "calico",
        image: "quay.io/calico/cni:v3.31.7",
    },
    AddonImage {
        component: "calico",
        image: "quay.io/calico/node:v3.31.7",
    },
    AddonImage {
        component: "calico",
        image: "quay.io/calico/kube-controllers:v3.31.7",
    },
    AddonImage {
        component: "dashboard",
        image: "docker.io/kubernetesui/dashboard:v2.7.0",
    },
    AddonImage {
        component: "dashboard",
        image: "docker.io/kubernetesui/metrics-scraper:v1.0.8",
    },
    AddonImage {
        component: "metallb",
        image: "quay.io/metallb/controller:v0.16.1",
    },
    AddonImage {
        component: "metallb",
        image: "quay.io/metallb/speaker:v0.16.1",
    },
    AddonImage {
        component: "nfs-provisioner",
        image: "registry.k8s.io/sig-storage/nfs-subdir-external-provisioner:v4.0.2",
    },
    AddonImage {
        component: "nvidia-device-plugin",
        image: "nvcr.io/nvidia/k8s-device-plugin:v0.20.0",
    },
    AddonImage {
        component: "kube-vip",
        image: "ghcr.io/kube-vip/kube-vip:v1.0.0",
    },
];
