#!/usr/bin/env python3
"""Derive kprov's CNI / add-on manifest templates from upstream release manifests.

Usage: derive.py COMPONENT UPSTREAM_FILE VERSION > templates/manifests/COMPONENT.yaml.tera
COMPONENT: flannel | calico | metallb. (dashboard, nfs-provisioner and nvidia-device-plugin are
small and were edited by hand from upstream; see README.md.)

What changes, and why (everything else is upstream, byte-for-byte in meaning):
* images -> `{{ images["REPO/PATH"] }}`: the renderer fills in the mirror reference of the image
  the versions table pins (src/spec/versions_data.rs), so templates hard-code no image.
* every Deployment / DaemonSet gets a required node affinity `kubernetes.io/arch In [cluster arches]`
  (flannel's existing affinity is extended).
* CRDs (calico, metallb): `description` fields are removed from the schemas. They are
  documentation only (kubectl explain) and make up ~70% of the gzip size; the user-data of the
  first control plane must stay under provider limits (EC2: 16 KiB).
* flannel: net-conf.json Network = the cluster's pod CIDR.
* calico: VXLAN instead of IP-in-IP (calico's documented switch: calico_backend vxlan,
  CALICO_IPV4POOL_IPIP Never, CALICO_IPV4POOL_VXLAN Always, no bird probes), since IP protocol 4 is
  often blocked by cloud security groups; CALICO_IPV4POOL_CIDR = the pod CIDR.
Requires PyYAML.
"""
import sys

import yaml


class Dumper(yaml.SafeDumper):
    pass


def _str(dumper, data):
    if "\n" in data and not any(line != line.rstrip() for line in data.split("\n")):
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", data)


Dumper.add_representer(str, _str)


def strip_descriptions(o):
    if isinstance(o, dict):
        return {k: strip_descriptions(v) for k, v in o.items() if k != "description"}
    if isinstance(o, list):
        return [strip_descriptions(x) for x in o]
    return o


def image_key(ref):
    first, rest = ref.split("/", 1)
    if not ("." in first or ":" in first):
        rest = ref
    return rest.rsplit(":", 1)[0]


def pod_spec(d):
    return d["spec"]["template"]["spec"]


def arch_expr():
    return {"key": "kubernetes.io/arch", "operator": "In", "values": "__ARCHES__"}


def add_arch_affinity(spec):
    aff = spec.setdefault("affinity", {}).setdefault("nodeAffinity", {})
    req = aff.setdefault("requiredDuringSchedulingIgnoredDuringExecution", {"nodeSelectorTerms": [{"matchExpressions": []}]})
    for term in req["nodeSelectorTerms"]:
        term.setdefault("matchExpressions", []).append(arch_expr())


def rewrite_images(spec, images):
    for c in spec.get("initContainers", []) + spec.get("containers", []):
        images.add(c["image"])
        c["image"] = "__IMG_%s__" % image_key(c["image"])


def env_set(container, name, value):
    for e in container.setdefault("env", []):
        if e["name"] == name:
            e["value"] = value
            return
    container["env"].append({"name": name, "value": value})


def main():
    component, path, version = sys.argv[1:4]
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    images = set()
    out = []
    for d in docs:
        kind = d["kind"]
        if kind == "CustomResourceDefinition":
            d = strip_descriptions(d)
        if kind in ("DaemonSet", "Deployment"):
            spec = pod_spec(d)
            rewrite_images(spec, images)
            add_arch_affinity(spec)
            if component == "calico" and d["metadata"]["name"] == "calico-node":
                node = next(c for c in spec["containers"] if c["name"] == "calico-node")
                env_set(node, "CALICO_IPV4POOL_IPIP", "Never")
                env_set(node, "CALICO_IPV4POOL_VXLAN", "Always")
                env_set(node, "CALICO_IPV4POOL_CIDR", "__POD_CIDR__")
                for probe in ("livenessProbe", "readinessProbe"):
                    cmd = node[probe]["exec"]["command"]
                    node[probe]["exec"]["command"] = [a for a in cmd if a not in ("-bird-live", "-bird-ready")]
        if kind == "ConfigMap" and component == "calico" and d["metadata"]["name"] == "calico-config":
            d["data"]["calico_backend"] = "vxlan"
        if kind == "ConfigMap" and component == "flannel" and "net-conf.json" in d["data"]:
            d["data"]["net-conf.json"] = d["data"]["net-conf.json"].replace('"10.244.0.0/16"', '"__POD_CIDR__"')
            assert "__POD_CIDR__" in d["data"]["net-conf.json"]
        out.append(d)
    text = yaml.dump_all(out, Dumper=Dumper, sort_keys=False, width=4096, explicit_start=True)
    assert "{{" not in text and "{%" not in text and "{#" not in text, "upstream text would be read as tera syntax"
    import re

    text = re.sub(r"__IMG_([^_][^ \n]*?)__", lambda m: '{{ images["%s"] }}' % m.group(1), text)
    text = text.replace("__POD_CIDR__", "{{ pod_cidr }}").replace("__ARCHES__", "{{ arches | json_encode() }}")
    sys.stdout.write(
        "{#- %s %s: derived from upstream by templates/manifests/derive.py (see README.md). Images: %s -#}\n"
        % (component, version, ", ".join(sorted(images)))
    )
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
