"""Bad values fail at `helm install/upgrade/template` time with a message naming the problem:
values.schema.json for shapes and bounds, template checks for the rules across keys."""

from __future__ import annotations

import json
from typing import Any

import helm_python as helm
import pytest

from .chart import CHART, render

SCHEMA_CASES: list[tuple[str, dict[str, Any], list[str]]] = [
    ("a typo in a top-level key", {"nodes": {"replicas": 3}}, ["additional properties 'nodes' not allowed"]),
    (
        "a typo in a component key",
        {"node": {"drainWindowSeconds": 30}},
        ["/node", "additional properties 'drainWindowSeconds' not allowed"],
    ),
    ("a single router", {"router": {"replicas": 1}}, ["/router/replicas", "minimum: got 1, want 2"]),
    ("a single control replica", {"control": {"replicas": 1}}, ["/control/replicas", "minimum: got 1, want 2"]),
    ("no drain window", {"node": {"drainWindow": 0}}, ["/node/drainWindow", "minimum: got 0, want 1"]),
    ("a string drain window", {"node": {"drainWindow": "30s"}}, ["/node/drainWindow", "got string, want number"]),
    ("external Redis without URLs", {"redis": {"mode": "external"}}, ["/redis/urls", "minItems: got 0, want 1"]),
    (
        "a Redis URL that is not redis://",
        {"redis": {"mode": "external", "urls": ["http://redis:6379"]}},
        ["/redis/urls/0", "does not match pattern"],
    ),
    (
        "both autoscalers",
        {"autoscaling": {"enabled": True, "mode": "both"}},
        ["/autoscaling/mode", "value must be one of 'hpa', 'keda'"],
    ),
    (
        "a fast scale-down",
        {
            "autoscaling": {
                "behavior": {
                    "scaleDown": {
                        "stabilizationWindowSeconds": 30,
                        "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
                    }
                }
            }
        },
        ["/autoscaling/behavior/scaleDown/stabilizationWindowSeconds", "minimum: got 30, want 300"],
    ),
    (
        "root pods",
        {"podSecurityContext": {"runAsNonRoot": False}},
        ["/podSecurityContext/runAsNonRoot", "value must be true"],
    ),
    (
        "privilege escalation",
        {"securityContext": {"runAsNonRoot": True, "allowPrivilegeEscalation": True}},
        ["/securityContext/allowPrivilegeEscalation", "value must be false"],
    ),
    (
        "no memory limit (null removes a default)",
        {"node": {"resources": {"limits": {"memory": None}}}},
        ["/node/resources/limits", "missing property 'memory'"],
    ),
    ("a chart-owned setting in config", {"config": {"partitions": 64, "drain_window": 5}}, ["'drain_window'"]),
    ("a secret in config", {"config": {"partitions": 64, "api_key": "plain"}}, ["'api_key'"]),
    (
        "an unknown JWT algorithm",
        {"config": {"partitions": 64, "jwt_algorithm": "none"}},
        ["/config/jwt_algorithm", "value must be one of"],
    ),
    (
        "a dashboard URL that is not http(s)",
        {"control": {"dashboardUrl": "wss://herald.example.com"}},
        ["/control/dashboardUrl", "does not match pattern"],
    ),
    (
        "an unknown route target",
        {"routes": [{"path": "/ws", "component": "redis"}]},
        ["/routes/0/component", "value must be one of"],
    ),
]


@pytest.mark.parametrize(("values", "messages"), [c[1:] for c in SCHEMA_CASES], ids=[c[0] for c in SCHEMA_CASES])
def test_schema_rejects_bad_values_with_a_clear_message(values: dict[str, Any], messages: list[str]) -> None:
    with pytest.raises(helm.HelmValuesError) as err:
        render(values)
    text = str(err.value)
    assert "values don't meet the specifications of the schema" in text
    for message in messages:
        assert message in text, text


TEMPLATE_CASES: list[tuple[str, dict[str, Any], str]] = [
    (
        "RS256 without a key",
        {"config": {"partitions": 64, "jwt_algorithm": "RS256"}},
        "config.jwt_algorithm is RS256: set auth.jwtPublicKey (PEM) or auth.jwks",
    ),
    (
        "min above max replicas",
        {"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 3}},
        "autoscaling: minReplicas (5) is above maxReplicas (3)",
    ),
    (
        "a target at the node limit",
        {"autoscaling": {"enabled": True, "targetConnectionsPerPod": 20000}},
        "targetConnectionsPerPod (20000) must be below node.maxConnections (20000)",
    ),
    ("an HTTPRoute without a Gateway", {"httpRoute": {"enabled": True}}, "httpRoute: enabled without parentRefs"),
]


@pytest.mark.parametrize(("values", "message"), [c[1:] for c in TEMPLATE_CASES], ids=[c[0] for c in TEMPLATE_CASES])
def test_cross_key_rules_fail_the_render(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmError) as err:
        render(values)
    assert message in str(err.value), str(err.value)


def test_lint_reports_schema_violations() -> None:
    """`helm lint` (what CI runs on ci/*.yaml) reports the same violations as errors."""
    result = helm.lint(str(CHART), {"router": {"replicas": 1}}, strict=True)
    assert any("minimum: got 1, want 2" in e for e in result["errors"]), result


def test_schema_describes_every_default_value() -> None:
    """The schema knows every key of values.yaml (additionalProperties: false down the tree, except
    the free-form maps), so typos anywhere fail."""
    import yaml

    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    free_form = {
        "config",
        "env",
        "podAnnotations",
        "podLabels",
        "nodeSelector",
        "affinity",
        "annotations",
        "additionalLabels",
        "labels",
        "extraMetadata",
        "global",
        "seccompProfile",
        "capabilities",
        "behavior",
        "timeouts",
        "service",
        "requests",
        "limits",
        "scaleUp",
        "scaleDown",
    }

    def walk(node: Any, sch: dict[str, Any], path: str) -> None:
        if not isinstance(node, dict) or path.rsplit(".", 1)[-1] in free_form:
            return
        props = sch.get("properties", {})
        assert sch.get("additionalProperties") is False, f"{path}: schema allows unknown keys"
        for key, value in node.items():
            assert key in props, f"{path}.{key} is not in values.schema.json"
            walk(value, props[key], f"{path}.{key}")

    walk(values, schema, "values")
