"""Render the Helm chart offline (helm-python-sdk: Helm's own engine, no binary, no cluster) and
check the rendered manifests against Herald's deployment policy.

`policy_problems(docs)` reads only the manifests (never the values), so the same checks apply to
the chart's renders and to the generated plain manifests in k8s/."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "CHART",
    "CI_VALUES",
    "CRD_GROUPS",
    "REPO",
    "K8S",
    "KUBE_VERSIONS",
    "MIN_GRACE_MARGIN",
    "manifests",
    "policy_problems",
    "render",
    "render_docs",
    "validate_docs",
    "workloads",
]

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "herald"
K8S = REPO / "k8s"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
#: API groups of CRD-backed kinds: kubernetes-validate bundles no schema for them.
CRD_GROUPS = ("monitoring.coreos.com/", "keda.sh/", "gateway.networking.k8s.io/")
#: Seconds the grace period must leave after the preStop sleep and the drain window.
MIN_GRACE_MARGIN = 10
#: Seconds a scale-down must be stabilised for at least (every scale-down is a drain).
MIN_SCALE_DOWN_WINDOW = 300


def _kube_versions() -> tuple[str, ...]:
    import kubernetes_validate

    return ("1.30.0", kubernetes_validate.latest_version())


KUBE_VERSIONS = _kube_versions()


def render(
    values: dict[str, Any] | None = None, *, name: str = "herald", namespace: str = "herald", is_install: bool = True
) -> dict[str, str]:
    """{template path: rendered text}; raises helm_python.HelmValuesError / HelmRenderError."""
    import helm_python as helm

    with helm.Chart.load(str(CHART)) as chart:  # a fresh handle per render (SDK gotcha 4)
        return chart.render(
            values or {}, name=name, namespace=namespace, is_install=is_install, is_upgrade=not is_install
        )


def manifests(files: dict[str, str]) -> list[dict[str, Any]]:
    return [
        doc for path, text in sorted(files.items()) if path.endswith(".yaml") for doc in yaml.safe_load_all(text) if doc
    ]


def render_docs(values: dict[str, Any] | None = None, **kw: Any) -> list[dict[str, Any]]:
    return manifests(render(values, **kw))


def validate_docs(docs: Iterable[dict[str, Any]], kube_version: str) -> int:
    """kubernetes-validate (strict: unknown fields fail) every non-CRD manifest; returns how many."""
    import kubernetes_validate

    n = 0
    for doc in docs:
        if doc["apiVersion"].startswith(CRD_GROUPS):
            continue
        try:
            kubernetes_validate.validate(doc, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(
                f"{doc['kind']}/{doc['metadata']['name']} invalid for k8s {kube_version}: "
                f"{exc.message} at {list(exc.path)}"
            ) from None
        except kubernetes_validate.SchemaNotFoundError:
            raise AssertionError(f"{doc['apiVersion']} {doc['kind']} does not exist in k8s {kube_version}") from None
        n += 1
    return n


# --- policy ------------------------------------------------------------------------------------

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet")


def workloads(docs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] in WORKLOAD_KINDS]


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def _is_herald(container: dict[str, Any]) -> bool:
    return container["image"].split("@")[0].rsplit(":", 1)[0].endswith("herald")


def prestop_command(container: dict[str, Any]) -> tuple[float, list[str]]:
    """(seconds slept first, the drain command) of an exec preStop hook."""
    cmd = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    if cmd[:2] == ["/bin/sh", "-c"] and len(cmd) == 3:
        sleep = 0.0
        parts = []
        for step in cmd[2].split(";"):
            words = shlex.split(step)
            if words[:1] == ["sleep"]:
                sleep += float(words[1])
            elif words:
                parts = words[1:] if words[0] == "exec" else words
        return sleep, parts
    return 0.0, list(cmd)


def _replicas(deploy: dict[str, Any], docs: list[dict[str, Any]]) -> int:
    """The replica floor: the autoscaler's minimum when one targets the Deployment."""
    name = deploy["metadata"]["name"]
    for d in docs:
        if d["kind"] == "HorizontalPodAutoscaler" and d["spec"]["scaleTargetRef"]["name"] == name:
            return int(d["spec"]["minReplicas"])
        if d["kind"] == "ScaledObject" and d["spec"]["scaleTargetRef"]["name"] == name:
            return int(d["spec"]["minReplicaCount"])
    return int(deploy["spec"].get("replicas", 1))


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def policy_problems(docs: list[dict[str, Any]]) -> list[str]:
    """Every way `docs` breaks the deployment policy (empty: compliant)."""
    p: list[str] = []
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    names = [(d["kind"], d["metadata"]["name"]) for d in docs]
    for dup in {n for n in names if names.count(n) > 1}:
        p.append(f"{dup} rendered twice")

    for w in workloads(docs):
        wid = f"{w['kind']}/{w['metadata']['name']}"
        pod = w["spec"]["template"]["spec"]
        psc = pod.get("securityContext", {})
        if pod.get("automountServiceAccountToken") is not False:
            p.append(f"{wid}: automountServiceAccountToken must be false")
        if pod.get("hostNetwork") or pod.get("hostPID") or pod.get("hostIPC"):
            p.append(f"{wid}: host namespaces")
        for c in [*pod.get("initContainers", []), *pod["containers"]]:
            cid = f"{wid} container {c['name']}"
            sc = c.get("securityContext", {})
            res = c.get("resources", {})
            if not {"cpu", "memory"} <= set(res.get("requests", {})):
                p.append(f"{cid}: resources.requests needs cpu and memory")
            if "memory" not in res.get("limits", {}):
                p.append(f"{cid}: resources.limits needs memory")
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                if probe not in c:
                    p.append(f"{cid}: no {probe}")
            if not (sc.get("runAsNonRoot") or (psc.get("runAsNonRoot") and "runAsUser" not in sc)):
                p.append(f"{cid}: not runAsNonRoot")
            uid = sc.get("runAsUser", psc.get("runAsUser"))
            if not isinstance(uid, int) or uid == 0:
                p.append(f"{cid}: no fixed non-zero runAsUser")
            if sc.get("allowPrivilegeEscalation") is not False:
                p.append(f"{cid}: allowPrivilegeEscalation must be false")
            if sc.get("readOnlyRootFilesystem") is not True:
                p.append(f"{cid}: readOnlyRootFilesystem must be true")
            if "ALL" not in sc.get("capabilities", {}).get("drop", []):
                p.append(f"{cid}: capabilities must drop ALL")
            if sc.get("privileged"):
                p.append(f"{cid}: privileged")
            if c["image"].endswith(":latest") or (":" not in c["image"].split("/")[-1] and "@" not in c["image"]):
                p.append(f"{cid}: image {c['image']!r} is not pinned")
            if _is_herald(c):
                p.extend(_herald_container_problems(w, c, cid))
        if w["kind"] == "Deployment" and any(_is_herald(c) for c in pod["containers"]):
            p.extend(_herald_deployment_problems(w, docs))

    # PodDisruptionBudget iff more than one replica; every PDB selects a workload.
    pdbs = by_kind.get("PodDisruptionBudget", [])
    for w in workloads(docs):
        labels = w["spec"]["template"]["metadata"]["labels"]
        covering = [b for b in pdbs if _selects(b["spec"]["selector"]["matchLabels"], labels)]
        replicas = _replicas(w, docs) if w["kind"] == "Deployment" else int(w["spec"].get("replicas", 1))
        if replicas > 1 and len(covering) != 1:
            p.append(
                f"{w['kind']}/{w['metadata']['name']}: {replicas} replicas need exactly one PDB, found {len(covering)}"
            )
        if replicas <= 1 and covering:
            p.append(f"{w['kind']}/{w['metadata']['name']}: a PDB on a single replica blocks node drains")
    for b in pdbs:
        if b["apiVersion"] != "policy/v1":
            p.append(f"PDB/{b['metadata']['name']}: apiVersion {b['apiVersion']}")
        if not any(
            _selects(b["spec"]["selector"]["matchLabels"], w["spec"]["template"]["metadata"]["labels"])
            for w in workloads(docs)
        ):
            p.append(f"PDB/{b['metadata']['name']} selects no workload")

    # Autoscaling: an HPA or a ScaledObject per target, never both; slow scale-down.
    hpa_targets = {d["spec"]["scaleTargetRef"]["name"] for d in by_kind.get("HorizontalPodAutoscaler", [])}
    keda_targets = {d["spec"]["scaleTargetRef"]["name"] for d in by_kind.get("ScaledObject", [])}
    for both in hpa_targets & keda_targets:
        p.append(f"{both}: both an HPA and a KEDA ScaledObject (KEDA owns its own HPA)")
    for d in [*by_kind.get("HorizontalPodAutoscaler", []), *by_kind.get("ScaledObject", [])]:
        spec = d["spec"]
        behavior = (
            spec.get("behavior")
            if d["kind"] == "HorizontalPodAutoscaler"
            else spec.get("advanced", {}).get("horizontalPodAutoscalerConfig", {}).get("behavior")
        ) or {}
        down = behavior.get("scaleDown", {})
        if down.get("stabilizationWindowSeconds", 0) < MIN_SCALE_DOWN_WINDOW:
            p.append(f"{d['kind']}/{d['metadata']['name']}: scale-down stabilization under {MIN_SCALE_DOWN_WINDOW}s")
        if not any(pol["type"] == "Pods" and pol["value"] == 1 for pol in down.get("policies", [])):
            p.append(f"{d['kind']}/{d['metadata']['name']}: scale-down is not limited to one pod per period")
        if d["kind"] == "HorizontalPodAutoscaler":
            kinds = {m["type"]: m for m in spec.get("metrics", [])}
            if "Pods" not in kinds or kinds["Pods"]["pods"]["metric"]["name"] != "herald_connections":
                p.append(f"HPA/{d['metadata']['name']}: no Pods metric on herald_connections")
            if kinds.get("Resource", {}).get("resource", {}).get("name") != "cpu":
                p.append(f"HPA/{d['metadata']['name']}: CPU is not the second metric")
        else:
            types = [t["type"] for t in spec.get("triggers", [])]
            if types[:1] != ["prometheus"] or "cpu" not in types:
                p.append(f"ScaledObject/{d['metadata']['name']}: triggers {types} (want prometheus, then cpu)")
            elif "herald_connections" not in spec["triggers"][0]["metadata"]["query"]:
                p.append(
                    f"ScaledObject/{d['metadata']['name']}: the prometheus trigger does not query herald_connections"
                )

    # Services select something; Ingress keeps streams open.
    for s in by_kind.get("Service", []):
        sel = s["spec"].get("selector", {})
        if not any(_selects(sel, w["spec"]["template"]["metadata"]["labels"]) for w in workloads(docs)):
            p.append(f"Service/{s['metadata']['name']} selects no pods")
        if s["spec"].get("sessionAffinity", "None") != "None":
            p.append(f"Service/{s['metadata']['name']}: session affinity (clients resume anywhere)")
    for ing in by_kind.get("Ingress", []):
        ann = ing["metadata"].get("annotations", {})
        if ing["spec"].get("ingressClassName") == "nginx":
            for key in ("proxy-read-timeout", "proxy-send-timeout"):
                if int(ann.get(f"nginx.ingress.kubernetes.io/{key}", 60)) < 3600:
                    p.append(f"Ingress/{ing['metadata']['name']}: {key} under 3600 s cuts WebSocket/SSE streams")
            if ann.get("nginx.ingress.kubernetes.io/proxy-buffering") != "off":
                p.append(f"Ingress/{ing['metadata']['name']}: proxy-buffering must be off for SSE")
        paths = {path["path"] for rule in ing["spec"]["rules"] for path in rule["http"]["paths"]}
        if {"/metrics", "/admin", "/"} & paths:
            p.append(f"Ingress/{ing['metadata']['name']}: exposes ops or admin endpoints: {sorted(paths)}")
    for cm in by_kind.get("ConfigMap", []):
        if cm["metadata"].get("labels", {}).get("grafana_dashboard") == "1" and len(yaml.safe_dump(cm)) > 1_000_000:
            p.append(f"ConfigMap/{cm['metadata']['name']}: over the 1 MiB object limit")
    return p


def _herald_container_problems(w: dict[str, Any], c: dict[str, Any], cid: str) -> list[str]:
    p = []
    env = _env(c)
    if c.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/readyz":
        p.append(f"{cid}: readiness must probe /readyz")
    if c.get("livenessProbe", {}).get("httpGet", {}).get("path") != "/healthz":
        p.append(f"{cid}: liveness must probe /healthz (it stays 200 while draining)")
    node_id = env.get("HERALD_NODE_ID", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
    if node_id != "metadata.name":
        p.append(f"{cid}: HERALD_NODE_ID must come from the pod name")
    if "secretKeyRef" not in env.get("HERALD_API_KEY", {}).get("valueFrom", {}):
        p.append(f"{cid}: HERALD_API_KEY must come from a Secret")
    if "HERALD_JWT_SECRET" in env and "secretKeyRef" not in env["HERALD_JWT_SECRET"].get("valueFrom", {}):
        p.append(f"{cid}: HERALD_JWT_SECRET must come from a Secret")
    if not ({"HERALD_JWT_SECRET", "HERALD_JWT_PUBLIC_KEY", "HERALD_JWKS_FILE"} & set(env)):
        p.append(f"{cid}: no JWT key")
    if not c.get("envFrom"):
        p.append(f"{cid}: no shared config (envFrom)")
    ports = [port["containerPort"] for port in c.get("ports", [])]
    if env.get("HERALD_PORT", {}).get("value") != (str(ports[0]) if ports else None):
        p.append(f"{cid}: HERALD_PORT {env.get('HERALD_PORT')} is not the container port {ports}")
    return p


def _herald_deployment_problems(w: dict[str, Any], docs: list[dict[str, Any]]) -> list[str]:
    p = []
    wid = f"Deployment/{w['metadata']['name']}"
    spec = w["spec"]
    pod = spec["template"]["spec"]
    c = pod["containers"][0]
    ru = spec.get("strategy", {}).get("rollingUpdate", {})
    rolling = spec.get("strategy", {}).get("type") == "RollingUpdate"
    if not rolling or ru.get("maxUnavailable") != 0 or ru.get("maxSurge") != 1:
        p.append(f"{wid}: rollout must be RollingUpdate maxSurge 1 maxUnavailable 0, got {spec.get('strategy')}")
    if not spec.get("minReadySeconds"):
        p.append(f"{wid}: minReadySeconds must pace the rollout")
    if "checksum/config" not in spec["template"]["metadata"].get("annotations", {}):
        p.append(f"{wid}: no checksum/config annotation (config changes would not roll the pods)")
    if not pod.get("topologySpreadConstraints"):
        p.append(f"{wid}: no topologySpreadConstraints")
    is_node = c.get("args", [None])[0] == "node"
    if is_node:
        env = _env(c)
        window = float(env.get("HERALD_DRAIN_WINDOW", {}).get("value", 30))
        sleep, drain = prestop_command(c)
        port = str(c["ports"][0]["containerPort"])
        if drain[:2] != ["herald", "drain"]:
            p.append(f"{wid}: the preStop hook must run `herald drain`, got {drain}")
        elif "--url" in drain and not re.fullmatch(r"http://127\.0\.0\.1:(\d+)", drain[drain.index("--url") + 1]):
            p.append(f"{wid}: `herald drain` must target the local node, got {drain}")
        elif "--url" in drain and drain[drain.index("--url") + 1].rsplit(":", 1)[1] != port:
            p.append(f"{wid}: `herald drain` targets another port than the node's")
        grace = pod.get("terminationGracePeriodSeconds", 30)
        if grace < sleep + window + MIN_GRACE_MARGIN:
            p.append(
                f"{wid}: terminationGracePeriodSeconds {grace} < preStop sleep {sleep:g} + drain window "
                f"{window:g} + margin {MIN_GRACE_MARGIN}"
            )
        if spec.get("progressDeadlineSeconds", 600) < 600:
            p.append(f"{wid}: progressDeadlineSeconds under 600 s trips during drains")
        if spec.get("minReadySeconds", 0) < 5:
            p.append(f"{wid}: minReadySeconds under 5 s does not pace drains")
    elif _replicas(w, docs) < 2:
        p.append(f"{wid}: routers and control need at least 2 replicas")
    return p
