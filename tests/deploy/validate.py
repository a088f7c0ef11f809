#!/usr/bin/env python3
"""Validates Kubernetes manifests offline, for tests/deploy.rs.

Usage: validate.py --kubernetes 1.27 [--kubernetes 1.28 ...] FILE...

Every document of every FILE (multi-document YAML) is checked:

- built-in kinds with kubernetes-validate's strict schemas (unknown fields are errors), once
  per requested Kubernetes version;
- the CRD kinds the deploy/ components use (ServiceMonitor, cert-manager's Issuer and
  Certificate), which kubernetes-validate has no schema for, with models generated from
  those projects' CRD schemas (the cloudcoil model packages, pydantic). A round trip through
  the model must give back the document unchanged: pydantic ignores unknown fields, so a
  field the CRD does not define shows up as a difference, which is an error here as it is
  for kube-apiserver with strict field validation.

A kind that neither knows is reported as an error, never skipped silently.

Prints one JSON object: {"documents": [[file, index, document], ...], "results": [...]},
each result {"file", "index", "kind", "name", "validator", "ok", "error"}. Exits 0 when the
report was written (whatever it says), non-zero when the tools themselves are missing.
"""

import argparse
import json
import sys

import yaml

import kubernetes_validate
from kubernetes_validate import utils as kv_utils


def crd_models():
    """The CRD kinds we can check, keyed by (apiVersion, kind)."""
    from cloudcoil.models.cert_manager import v1 as cert_manager
    from cloudcoil.models.prometheus_operator import v1 as prometheus_operator

    return {
        ("monitoring.coreos.com/v1", "ServiceMonitor"): prometheus_operator.ServiceMonitor,
        ("cert-manager.io/v1", "Certificate"): cert_manager.Certificate,
        ("cert-manager.io/v1", "Issuer"): cert_manager.Issuer,
    }


def differences(want, got, path=""):
    """Paths where `got` (the model's round trip) differs from `want` (the document)."""
    if isinstance(want, dict) and isinstance(got, dict):
        out = []
        for key in sorted(set(want) | set(got), key=str):
            sub = f"{path}.{key}"
            if key not in got:
                out.append(f"{sub}: not a field of the CRD schema")
            elif key not in want:
                # Defaults the model fills in are not the document's doing.
                continue
            else:
                out.extend(differences(want[key], got[key], sub))
        return out
    if isinstance(want, list) and isinstance(got, list):
        if len(want) != len(got):
            return [f"{path}: {len(want)} items became {len(got)}"]
        out = []
        for i, (w, g) in enumerate(zip(want, got)):
            out.extend(differences(w, g, f"{path}[{i}]"))
        return out
    if type(want) is not type(got) or want != got:
        return [f"{path}: {want!r} is read as {got!r}"]
    return []


def check_crd(model, doc):
    try:
        obj = model.model_validate(doc)
    except Exception as e:  # pydantic.ValidationError, with every failing field
        return str(e)
    diff = differences(doc, obj.model_dump(by_alias=True, exclude_unset=True, mode="json"))
    return "; ".join(diff) or None


def check_builtin(doc, version):
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kv_utils.ValidationError as e:
        path = ".".join(str(p) for p in e.path)
        return f"{path}: {e.message}" if path else e.message
    except (
        kv_utils.SchemaNotFoundError,
        kv_utils.InvalidSchemaError,
        kv_utils.VersionNotSupportedError,
    ) as e:
        return f"no schema for {doc.get('apiVersion')} {doc.get('kind')} in Kubernetes {version} ({type(e).__name__}) {e}".strip()
    return None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--kubernetes", action="append", required=True)
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    versions = [v if v.count(".") == 2 else f"{v}.0" for v in args.kubernetes]
    models = crd_models()
    # Overlays repeat the base's documents: each distinct document is checked once per
    # validator, and its verdict reported for every file that holds it.
    verdicts = {}

    def verdict(validator, doc, check):
        key = (validator, json.dumps(doc, sort_keys=True))
        if key not in verdicts:
            verdicts[key] = check()
        return verdicts[key]

    documents, results = [], []
    for path in args.files:
        with open(path, encoding="utf-8") as f:
            docs = [d for d in yaml.safe_load_all(f) if d is not None]
        for index, doc in enumerate(docs):
            documents.append([path, index, doc])
            api_version, kind = doc.get("apiVersion"), doc.get("kind")
            name = (doc.get("metadata") or {}).get("name")

            def report(validator, error):
                results.append(
                    {
                        "file": path,
                        "index": index,
                        "kind": kind,
                        "name": name,
                        "validator": validator,
                        "ok": error is None,
                        "error": error,
                    }
                )

            model = models.get((api_version, kind))
            if model is not None:
                validator = f"crd {api_version} {kind}"
                report(validator, verdict(validator, doc, lambda: check_crd(model, doc)))
            else:
                for version in versions:
                    validator = f"kubernetes {version} strict"
                    check = lambda: check_builtin(doc, version)  # noqa: E731
                    report(validator, verdict(validator, doc, check))
    json.dump({"documents": documents, "results": results}, sys.stdout)


if __name__ == "__main__":
    main()
