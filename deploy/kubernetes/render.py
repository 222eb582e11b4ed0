#!/usr/bin/env python3
"""Render a kustomization offline, for validating the manifests in CI.

Implements the subset of kustomize these files use: `resources` (files and
directories holding a kustomization.yaml), `labels` (pairs), `images`
(newName/newTag) and JSON 6902 `patches` (add, remove, replace, move).
With `kubectl` at hand, `kubectl kustomize DIR` renders the same output.

    python3 deploy/kubernetes/render.py DIR OUT_DIR [--skip-group GROUP]...

writes one file per resource into OUT_DIR (NN-kind-name.yaml) and prints
their paths; resources of a skipped API group (say monitoring.coreos.com,
whose CRD schemas are not available offline) are left out.
"""
import copy
import os
import sys

import yaml


def load_docs(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def pointer(path):
    if not path.startswith("/"):
        raise ValueError(f"bad JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def parent_of(doc, path):
    parts = pointer(path)
    node = doc
    for p in parts[:-1]:
        node = node[int(p)] if isinstance(node, list) else node[p]
    return node, parts[-1]


def op_remove(doc, path):
    node, key = parent_of(doc, path)
    if isinstance(node, list):
        return node.pop(int(key))
    return node.pop(key)


def op_add(doc, path, value):
    node, key = parent_of(doc, path)
    if isinstance(node, list):
        if key == "-":
            node.append(value)
        else:
            i = int(key)
            if i > len(node):
                raise IndexError(f"{path}: index out of range")
            node.insert(i, value)
    else:
        node[key] = value


def apply_patch(doc, ops):
    for op in ops:
        kind = op["op"]
        if kind == "add":
            op_add(doc, op["path"], copy.deepcopy(op["value"]))
        elif kind == "remove":
            op_remove(doc, op["path"])
        elif kind == "replace":
            op_remove(doc, op["path"])
            op_add(doc, op["path"], copy.deepcopy(op["value"]))
        elif kind == "move":
            op_add(doc, op["path"], op_remove(doc, op["from"]))
        else:
            raise ValueError(f"unsupported patch op {kind!r}")


def matches(doc, target):
    group, _, version = doc["apiVersion"].rpartition("/")
    want = {
        "group": group,
        "version": version,
        "kind": doc["kind"],
        "name": doc["metadata"]["name"],
    }
    return all(want[k] == v for k, v in target.items() if k in want)


def set_images(doc, images):
    spec = doc.get("spec", {}).get("template", {}).get("spec", {})
    for key in ("initContainers", "containers"):
        for c in spec.get(key, []) or []:
            name, _, _ = c["image"].partition(":")
            for img in images:
                if img["name"] == name:
                    c["image"] = f"{img.get('newName', name)}:{img.get('newTag', 'latest')}"


def render(directory):
    kfile = os.path.join(directory, "kustomization.yaml")
    (k,) = load_docs(kfile)
    docs = []
    for res in k.get("resources", []):
        path = os.path.normpath(os.path.join(directory, res))
        docs.extend(render(path) if os.path.isdir(path) else load_docs(path))
    for entry in k.get("labels", []):
        for doc in docs:
            doc.setdefault("metadata", {}).setdefault("labels", {}).update(entry["pairs"])
    for doc in docs:
        set_images(doc, k.get("images", []))
    for p in k.get("patches", []):
        (ops,) = load_docs(os.path.join(directory, p["path"]))
        hits = [d for d in docs if matches(d, p.get("target", {}))]
        if not hits:
            raise ValueError(f"{kfile}: patch {p['path']} matches no resource")
        for doc in hits:
            apply_patch(doc, ops)
    return docs


def main(argv):
    args, skip = [], []
    it = iter(argv)
    for a in it:
        if a == "--skip-group":
            skip.append(next(it))
        else:
            args.append(a)
    if len(args) != 2:
        sys.exit(__doc__)
    directory, out = args
    os.makedirs(out, exist_ok=True)
    for i, doc in enumerate(render(directory)):
        group = doc["apiVersion"].rpartition("/")[0]
        if group in skip:
            continue
        name = f"{i:02d}-{doc['kind'].lower()}-{doc['metadata']['name']}.yaml"
        path = os.path.join(out, name)
        with open(path, "w", encoding="utf-8") as f:
            yaml.safe_dump(doc, f, sort_keys=False)
        print(path)


if __name__ == "__main__":
    main(sys.argv[1:])
