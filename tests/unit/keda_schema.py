"""The fields of KEDA's `keda.sh/v1alpha1` ScaledObject and TriggerAuthentication that
Conveyor's manifests may use, as a JSON Schema, so a misspelt or misplaced field fails.

Source: KEDA's CRDs (`config/crd/bases/keda.sh_scaledobjects.yaml` and
`keda.sh_triggerauthentications.yaml` in the kedacore/keda repository, v1alpha1, read in
December 2026), written out by hand for the subset used here; names, types and required
fields follow those CRDs. The rabbitmq trigger's metadata keys come from KEDA's scaler docs
(keda.sh/docs/scalers/rabbitmq-queue), as the CRD types trigger metadata only as strings.
No PyPI package ships these CRDs, so they are not vendored whole.
"""

from __future__ import annotations

from typing import Any

_INT: dict[str, Any] = {"type": "integer"}
_STR: dict[str, Any] = {"type": "string"}


def _object(required: list[str], **properties: dict[str, Any]) -> dict[str, Any]:
    """An object with exactly these properties (others refused), `required` among them."""
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


_METADATA = {"type": "object", "required": ["name"], "properties": {"name": _STR}}

_HPA_RULES = _object(
    [],
    stabilizationWindowSeconds=_INT,
    selectPolicy=_STR,
    policies={
        "type": "array",
        "items": _object(
            ["type", "value", "periodSeconds"],
            type={"enum": ["Pods", "Percent"]},
            value=_INT,
            periodSeconds=_INT,
        ),
    },
)

# Trigger metadata of the rabbitmq scaler (string values, as the CRD types them).
RABBITMQ_METADATA = _object(
    ["queueName", "mode", "value"],
    host=_STR,
    hostFromEnv=_STR,
    protocol={"enum": ["amqp", "http", "auto"]},
    mode={"enum": ["QueueLength", "MessageRate"]},
    value=_STR,
    activationValue=_STR,
    queueName=_STR,
    vhostName=_STR,
    unsafeSsl=_STR,
    timeout=_STR,
)

SCALED_OBJECT = _object(
    ["apiVersion", "kind", "metadata", "spec"],
    apiVersion={"const": "keda.sh/v1alpha1"},
    kind={"const": "ScaledObject"},
    metadata=_METADATA,
    spec=_object(
        ["scaleTargetRef", "triggers"],
        scaleTargetRef=_object(
            ["name"], apiVersion=_STR, kind=_STR, name=_STR, envSourceContainerName=_STR
        ),
        pollingInterval=_INT,
        cooldownPeriod=_INT,
        idleReplicaCount=_INT,
        minReplicaCount=_INT,
        maxReplicaCount=_INT,
        fallback=_object(["failureThreshold", "replicas"], failureThreshold=_INT, replicas=_INT),
        advanced=_object(
            [],
            restoreToOriginalReplicaCount={"type": "boolean"},
            horizontalPodAutoscalerConfig=_object(
                [], behavior=_object([], scaleUp=_HPA_RULES, scaleDown=_HPA_RULES)
            ),
        ),
        triggers={
            "type": "array",
            "minItems": 1,
            "items": _object(
                ["type", "metadata"],
                type={"const": "rabbitmq"},
                name=_STR,
                metricType={"enum": ["Value", "AverageValue", "Utilization"]},
                metadata=RABBITMQ_METADATA,
                authenticationRef=_object(
                    ["name"],
                    name=_STR,
                    kind={"enum": ["TriggerAuthentication", "ClusterTriggerAuthentication"]},
                ),
            ),
        },
    ),
)

TRIGGER_AUTHENTICATION = _object(
    ["apiVersion", "kind", "metadata", "spec"],
    apiVersion={"const": "keda.sh/v1alpha1"},
    kind={"const": "TriggerAuthentication"},
    metadata=_METADATA,
    spec=_object(
        [],
        secretTargetRef={
            "type": "array",
            "minItems": 1,
            "items": _object(["parameter", "name", "key"], parameter=_STR, name=_STR, key=_STR),
        },
    ),
)

SCHEMAS = {"ScaledObject": SCALED_OBJECT, "TriggerAuthentication": TRIGGER_AUTHENTICATION}
