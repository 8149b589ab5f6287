"""The Helm chart, rendered offline by Helm's own engine (helm-python-sdk): lint, Kubernetes schema
validation and the deployment policy, for the defaults and every value set in helm/herald/ci/."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml
from yamllint import linter
from yamllint.config import YamlLintConfig

from .chart import CHART, CI_VALUES, KUBE_VERSIONS, policy_problems, prestop_command, render, render_docs, validate_docs

YAMLLINT = YamlLintConfig(
    "{extends: default, rules: {line-length: {max: 160}, document-start: disable, "
    "comments: {min-spaces-from-content: 1}, comments-indentation: disable, "
    "truthy: {check-keys: false}, "
    "indentation: {spaces: consistent, indent-sequences: whatever}}}"
)
#: Lint findings we accept: an icon URL is a publishing nicety, not correctness.
LINT_ACCEPTED = {"icon is recommended"}


def _values(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text()) or {}


def _by(docs: list[dict[str, Any]], kind: str, suffix: str = "") -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(suffix)]


def _node(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (deploy,) = _by(docs, "Deployment", "-node")
    return deploy


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


@pytest.fixture(scope="module")
def renders() -> dict[str, list[dict[str, Any]]]:
    """Every ci/ value set rendered once (the default set is ci/default-values.yaml)."""
    return {p.stem: render_docs(_values(p)) for p in CI_VALUES}


def test_ci_value_sets_cover_the_required_scenarios() -> None:
    """ci/ holds the defaults, external Redis with 3 shards, bundled Redis, HPA + ServiceMonitor, KEDA."""
    sets = {p.stem: _values(p) for p in CI_VALUES}
    assert sets["default-values"] == {}
    assert len(sets["external-redis-values"]["redis"]["urls"]) == 3
    assert sets["bundled-redis-values"]["redis"]["mode"] == "bundled"
    assert sets["hpa-values"]["autoscaling"]["mode"] == "hpa"
    assert sets["hpa-values"]["metrics"]["serviceMonitor"]["enabled"]
    assert sets["keda-values"]["autoscaling"]["mode"] == "keda"


@pytest.mark.parametrize("values_file", CI_VALUES, ids=lambda p: p.stem)
def test_helm_lint_strict_passes(values_file: Path) -> None:
    """`helm lint --strict` (schema, templates, deprecated APIs for k8s 1.30) finds nothing to fix."""
    result = helm.lint(str(CHART), _values(values_file), strict=True, kube_version=f"v{KUBE_VERSIONS[0]}")
    assert not result["errors"], result["errors"]
    findings = [m for m in result["messages"] if m["error"] not in LINT_ACCEPTED]
    assert not findings, findings


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_every_rendered_manifest_is_valid_kubernetes(
    renders: dict[str, list[dict[str, Any]]], kube_version: str
) -> None:
    """kubernetes-validate --strict (unknown fields fail) for 1.30 and the newest bundled version;
    CRD-backed kinds (ServiceMonitor, ScaledObject, HTTPRoute) have no bundled schema."""
    for name, docs in renders.items():
        assert validate_docs(docs, kube_version) >= 10, name


def test_rendered_manifests_follow_the_deployment_policy(renders: dict[str, list[dict[str, Any]]]) -> None:
    """Requests/limits, probes, non-root read-only containers, drain-sized grace periods, `herald
    drain` preStop, PDB iff >1 replica, one autoscaler kind, slow scale-down (see chart.policy_problems)."""
    problems = {name: policy_problems(docs) for name, docs in renders.items()}
    assert not any(problems.values()), problems


def test_policy_check_catches_broken_manifests(renders: dict[str, list[dict[str, Any]]]) -> None:
    """The policy check is not vacuous: each deliberate breakage is reported."""
    base = renders["default-values"]

    def broken(mutate: Any) -> list[str]:
        docs = copy.deepcopy(base)
        mutate(docs)
        return policy_problems(docs)

    def pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
        return _node(docs)["spec"]["template"]["spec"]

    assert any(
        "terminationGracePeriodSeconds" in p for p in broken(lambda d: pod(d).update(terminationGracePeriodSeconds=30))
    )
    assert any("herald drain" in p for p in broken(lambda d: pod(d)["containers"][0].pop("lifecycle")))
    assert any("resources.limits" in p for p in broken(lambda d: pod(d)["containers"][0]["resources"].pop("limits")))
    assert any("readinessProbe" in p for p in broken(lambda d: pod(d)["containers"][0].pop("readinessProbe")))
    assert any(
        "runAsNonRoot" in p
        for p in broken(
            lambda d: (
                pod(d)["containers"][0]["securityContext"].pop("runAsNonRoot"),
                pod(d)["securityContext"].pop("runAsNonRoot"),
            )
        )
    )
    assert any("PDB" in p for p in broken(lambda d: d.remove(_by(d, "PodDisruptionBudget", "-router")[0])))
    assert any(
        "maxUnavailable 0" in p
        for p in broken(lambda d: _node(d)["spec"]["strategy"]["rollingUpdate"].update(maxUnavailable=1))
    )
    keda = renders["keda-values"]
    both = copy.deepcopy(keda) + [d for d in renders["hpa-values"] if d["kind"] == "HorizontalPodAutoscaler"]
    for d in both:
        if d["kind"] == "HorizontalPodAutoscaler":
            d["spec"]["scaleTargetRef"]["name"] = _node(keda)["metadata"]["name"]
    assert any("both an HPA and a KEDA ScaledObject" in p for p in policy_problems(both))


def test_node_grace_period_is_derived_from_the_drain_window() -> None:
    """terminationGracePeriodSeconds = preStop sleep + ceil(drainWindow) + margin, for any window,
    and HERALD_DRAIN_WINDOW carries the same window."""
    for window, sleep, margin in [(30, 5, 15), (2.5, 0, 5), (600, 10, 30)]:
        docs = render_docs(
            {"node": {"drainWindow": window, "preStopDelaySeconds": sleep, "terminationMarginSeconds": margin}}
        )
        pod = _node(docs)["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert pod["terminationGracePeriodSeconds"] == sleep + -(-window // 1) + margin
        assert float(_env(container)["HERALD_DRAIN_WINDOW"]) == window
        assert prestop_command(container) == (sleep, ["herald", "drain", "--url", "http://127.0.0.1:8000"])


def test_the_dashboard_url_goes_to_the_control_plane_only() -> None:
    """control.dashboardUrl -> HERALD_DASHBOARD_URL on control (the dashboard's live feed); unset by default."""
    url = "https://herald.example.com"
    docs = render_docs({"control": {"dashboardUrl": url}, "config": {"allowed_origins": ["http://127.0.0.1:8002"]}})
    envs = {
        d["metadata"]["name"]: _env(d["spec"]["template"]["spec"]["containers"][0]) for d in _by(docs, "Deployment")
    }
    assert envs["herald-control"]["HERALD_DASHBOARD_URL"] == url
    assert all("HERALD_DASHBOARD_URL" not in env for name, env in envs.items() if name != "herald-control")
    assert not any(
        "HERALD_DASHBOARD_URL" in _env(d["spec"]["template"]["spec"]["containers"][0])
        for d in _by(render_docs(), "Deployment")
    )
    assert f"live through {url}" in render({"control": {"dashboardUrl": url}})["herald/templates/NOTES.txt"]


def test_pdb_is_rendered_only_for_more_than_one_replica() -> None:
    one = render_docs({"node": {"replicas": 1}})
    assert not _by(one, "PodDisruptionBudget", "-node")
    assert len(_by(one, "PodDisruptionBudget")) == 2  # router and control
    three = render_docs({"node": {"replicas": 3}})
    (pdb,) = _by(three, "PodDisruptionBudget", "-node")
    assert pdb["spec"]["maxUnavailable"] == 1 and pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    scaled = render_docs({"node": {"replicas": 1}, "autoscaling": {"enabled": True, "minReplicas": 2}})
    assert _by(scaled, "PodDisruptionBudget", "-node"), "the autoscaler's floor of 2 needs a PDB"


def test_autoscaling_renders_an_hpa_or_a_scaledobject_never_both(renders: dict[str, list[dict[str, Any]]]) -> None:
    hpa, keda, default = renders["hpa-values"], renders["keda-values"], renders["default-values"]
    assert len(_by(hpa, "HorizontalPodAutoscaler")) == 1 and not _by(hpa, "ScaledObject")
    assert len(_by(keda, "ScaledObject")) == 1 and not _by(keda, "HorizontalPodAutoscaler")
    assert not _by(default, "HorizontalPodAutoscaler") and not _by(default, "ScaledObject")
    (h,) = _by(hpa, "HorizontalPodAutoscaler")
    assert [m["type"] for m in h["spec"]["metrics"]] == ["Pods", "Resource"]
    assert h["spec"]["metrics"][0]["pods"]["target"] == {"type": "AverageValue", "averageValue": "8000"}
    (so,) = _by(keda, "ScaledObject")
    trigger = so["spec"]["triggers"][0]
    assert trigger["metadata"]["query"] == 'sum(herald_connections{namespace="herald",pod=~"herald-node-.*"})'
    assert so["spec"]["fallback"]["replicas"] == 4
    # The autoscaler owns the replica count: seeded on install, absent on upgrade.
    assert _node(hpa)["spec"]["replicas"] == 3
    upgraded = render_docs(_values(CHART / "ci" / "hpa-values.yaml"), is_install=False)
    assert "replicas" not in _node(upgraded)["spec"]


def test_redis_external_shards_and_bundled_statefulsets(renders: dict[str, list[dict[str, Any]]]) -> None:
    """Every component gets the same HERALD_REDIS list, one URL per shard, external or bundled."""
    (cm,) = _by(renders["external-redis-values"], "ConfigMap", "-config")
    assert cm["data"]["HERALD_REDIS"].count(",") == 2
    assert not _by(renders["external-redis-values"], "StatefulSet")
    bundled = renders["bundled-redis-values"]
    sts = _by(bundled, "StatefulSet")
    assert [s["metadata"]["name"] for s in sts] == ["herald-redis-0", "herald-redis-1"]
    headless = [s for s in _by(bundled, "Service") if s["spec"].get("clusterIP") == "None"]
    assert [s["metadata"]["name"] for s in headless] == ["herald-redis-0", "herald-redis-1"]
    (cm,) = _by(bundled, "ConfigMap", "-config")
    assert cm["data"]["HERALD_REDIS"] == "redis://herald-redis-0:6379/0,redis://herald-redis-1:6379/0"
    args = sts[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert "volumeClaimTemplates" in _by(renders["default-values"], "StatefulSet")[0]["spec"]
    # URLs with passwords come from a Secret instead of the ConfigMap.
    secret_urls = renders["hpa-values"]
    (cm,) = _by(secret_urls, "ConfigMap", "-config")
    assert "HERALD_REDIS" not in cm["data"]
    for deploy in _by(secret_urls, "Deployment"):
        env = _env(deploy["spec"]["template"]["spec"]["containers"][0])
        assert env["HERALD_REDIS"] == {"secretKeyRef": {"name": "herald-redis", "key": "redis-urls"}}


def test_credentials_come_from_secrets(renders: dict[str, list[dict[str, Any]]]) -> None:
    (secret,) = _by(renders["external-redis-values"], "Secret")
    assert set(secret["data"]) == {"api-key", "jwt-secret"}
    keda = renders["keda-values"]
    assert not _by(keda, "Secret"), "existingSecret: the chart renders none"
    for deploy in _by(keda, "Deployment"):
        pod = deploy["spec"]["template"]["spec"]
        env = _env(pod["containers"][0])
        assert env["HERALD_JWKS_FILE"] == "/etc/herald/auth/jwks.json" and "HERALD_JWT_SECRET" not in env
        assert env["HERALD_API_KEY"] == {"secretKeyRef": {"name": "herald-auth", "key": "api-key"}}
        (vol,) = [v for v in pod["volumes"] if v["name"] == "auth"]
        assert vol["secret"]["secretName"] == "herald-auth"
    # Generated credentials: present and different per render (kept across upgrades by `lookup`).
    a, b = (_by(render_docs(), "Secret")[0]["data"] for _ in range(2))
    assert a["api-key"] and a["jwt-secret"] and a != b


def test_config_changes_roll_the_pods() -> None:
    def checksum(values: dict[str, Any]) -> str:
        return _node(render_docs(values))["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    base = checksum({})
    assert checksum({}) == base
    assert checksum({"config": {"partitions": 64, "history_size": 500}}) != base
    assert checksum({"auth": {"apiKey": "rotated"}}) != base
    assert checksum({"redis": {"bundled": {"shards": 2}}}) != base


def test_exposure_observability_and_notes(renders: dict[str, list[dict[str, Any]]]) -> None:
    hpa, keda = renders["hpa-values"], renders["keda-values"]
    (ing,) = _by(hpa, "Ingress")
    backends = {p["path"]: p["backend"]["service"]["name"] for p in ing["spec"]["rules"][0]["http"]["paths"]}
    assert backends == {
        "/ws": "herald-node",
        "/events": "herald-node",
        "/notify": "herald-node",
        "/client.js": "herald-node",
        "/api": "herald-router",
    }
    (route,) = _by(keda, "HTTPRoute")
    assert route["spec"]["parentRefs"][0]["name"] == "public"
    assert not _by(renders["default-values"], "Ingress") and not _by(renders["default-values"], "HTTPRoute")
    for docs in (hpa, keda):
        (sm,) = _by(docs, "ServiceMonitor")
        assert sm["spec"]["endpoints"][0]["path"] == "/metrics"
    assert _by(hpa, "ServiceMonitor")[0]["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert not _by(renders["default-values"], "ServiceMonitor"), "never detected from the cluster"
    (dash,) = _by(renders["default-values"], "ConfigMap", "-dashboards")
    assert dash["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert yaml.safe_load(dash["data"]["herald.json"])["title"] == "Herald"
    notes = render()["herald/templates/NOTES.txt"]
    assert "port-forward svc/herald-router 8001:8001" in notes and "/api/publish" in notes
    assert "port-forward svc/herald-control 8002:8002" in notes and "/dashboard" in notes
    assert "apikey" in notes


def test_yamllint_values_and_rendered_output(renders: dict[str, list[dict[str, Any]]]) -> None:
    """yamllint (default rules, 160 columns) on Chart.yaml, values.yaml, ci/*.yaml and every render."""
    sources = {p: p.read_text() for p in [CHART / "Chart.yaml", CHART / "values.yaml", *CI_VALUES]}
    for p in CI_VALUES:
        for path, text in render(_values(p)).items():
            if path.endswith(".yaml") and text.strip():
                sources[Path(f"{p.stem}:{path}")] = text.lstrip("\n")
    problems = [
        f"{path}:{e.line}: {e.message}"
        for path, text in sources.items()
        for e in linter.run(text, YAMLLINT)
        if e.level == "error"
    ]
    assert not problems, problems
