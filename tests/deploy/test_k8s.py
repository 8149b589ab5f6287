"""k8s/: plain manifests generated from the chart (`python -m tests.deploy.render_k8s`), usable
with `kubectl apply -k k8s/`. They never drift from the chart and pass the same policy."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import pytest
import yaml
from yamllint import linter

from .chart import K8S, KUBE_VERSIONS, policy_problems, validate_docs
from .render_k8s import generate
from .test_chart import YAMLLINT


def _docs() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return [d for name in kustomization["resources"] for d in yaml.safe_load_all((K8S / name).read_text()) if d]


def test_k8s_manifests_match_a_fresh_render_of_the_chart() -> None:
    """Re-render the chart with k8s/values.yaml: every generated file is identical, none is missing
    and none is left over (fix with `python -m tests.deploy.render_k8s`)."""
    wanted = generate()
    present = {p.name for p in K8S.glob("*.yaml")} - {"values.yaml"}
    assert present == set(wanted), f"run `python -m tests.deploy.render_k8s`: {sorted(present ^ set(wanted))}"
    stale = [name for name, text in wanted.items() if (K8S / name).read_text() != text]
    assert not stale, f"k8s/{stale} differ from the chart: run `python -m tests.deploy.render_k8s`"


def test_k8s_manifests_follow_the_deployment_policy() -> None:
    docs = _docs()
    assert not policy_problems(docs), policy_problems(docs)
    kinds = sorted({d["kind"] for d in docs})
    assert kinds == [
        "ConfigMap",
        "Deployment",
        "Namespace",
        "PodDisruptionBudget",
        "Service",
        "ServiceAccount",
        "StatefulSet",
    ], kinds
    assert not [d for d in docs if d["kind"] == "Secret"], "credentials never go into git"
    assert all(d["metadata"].get("namespace", "herald") == "herald" for d in docs)
    assert not any("helm.sh/chart" in d["metadata"].get("labels", {}) for d in docs)


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_k8s_manifests_are_valid_kubernetes(kube_version: str) -> None:
    assert validate_docs(_docs(), kube_version) == len(_docs())


def test_k8s_files_pass_yamllint() -> None:
    problems = [
        f"k8s/{p.name}:{e.line}: {e.message}"
        for p in sorted(K8S.glob("*.yaml"))
        for e in linter.run(p.read_text(), YAMLLINT)
        if e.level == "error"
    ]
    assert not problems, problems


def test_kubectl_kustomize_builds_the_folder() -> None:
    """`kubectl kustomize k8s/` (offline) builds every resource the kustomization lists."""
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed (apt-get install kubectl): cannot run `kubectl kustomize` here")
    out = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    built = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert sorted((d["kind"], d["metadata"]["name"]) for d in built) == sorted(
        (d["kind"], d["metadata"]["name"]) for d in _docs()
    )
    assert all(d["metadata"].get("namespace") == "herald" for d in built if d["kind"] != "Namespace")
