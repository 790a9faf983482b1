"""deploy/k8s and compose.yaml: every manifest valid against the Kubernetes schemas (the
`kubernetes-validate` package, offline) or KEDA's CRD fields, and saying only what the code
has: images, ports, probes, commands, settings, secret files, queue names."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from conveyor.config import ConsumerSettings, ProducerSettings
from conveyor.producer.http.app import create_app
from conveyor.shared.topology import Topology
from tests.support import REPO
from tests.unit.keda_schema import SCHEMAS

K8S = REPO / "deploy" / "k8s"
KUBERNETES_VERSION = "1.30.0"  # the oldest Kubernetes the base is meant for
IMAGE = "conveyor"  # the image compose.yaml builds from the Dockerfile (kustomize sets the tag)
SETTINGS = {
    "producer": {f"CONVEYOR_{name.upper()}" for name in ProducerSettings.model_fields},
    "consumer": {f"CONVEYOR_{name.upper()}" for name in ConsumerSettings.model_fields},
}


def documents() -> list[tuple[Path, dict[str, Any]]]:
    """Every resource of the base: (its file, the parsed document)."""
    found = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        found += [(path, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


def resource(kind: str, name: str) -> dict[str, Any]:
    [doc] = [d for _, d in documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def container(deployment: str) -> dict[str, Any]:
    [only] = resource("Deployment", deployment)["spec"]["template"]["spec"]["containers"]
    return dict(only)


def config_map() -> dict[str, str]:
    return dict(resource("ConfigMap", "conveyor-settings")["data"])


def test_the_kustomization_lists_every_manifest_and_only_those() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(files)
    assert [image["name"] for image in kustomization["images"]] == [IMAGE]


@pytest.mark.parametrize(
    "path, doc",
    [(p, d) for p, d in documents() if not d["apiVersion"].startswith("keda.sh/")],
    ids=lambda value: value.name if isinstance(value, Path) else "",
)
def test_each_kubernetes_manifest_is_valid_against_the_schemas(
    path: Path, doc: dict[str, Any]
) -> None:
    # strict: fields the schema does not know (typos, wrong nesting) fail too.
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("kind", sorted(SCHEMAS))
def test_each_keda_object_uses_only_fields_of_kedas_crds(kind: str) -> None:
    [doc] = [d for _, d in documents() if d["kind"] == kind]
    jsonschema.validate(doc, SCHEMAS[kind])


def test_the_keda_schema_refuses_a_field_keda_does_not_have() -> None:
    doc = resource("ScaledObject", "conveyor-consumer")
    doc["spec"]["triggers"][0]["metadata"]["queueLength"] = "5"  # the pre-2.0 spelling
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, SCHEMAS["ScaledObject"])


def test_images_commands_and_ports_are_the_ones_the_code_has() -> None:
    producer, consumer = container("conveyor-producer"), container("conveyor-consumer")
    for one, module in ((producer, "conveyor.producer"), (consumer, "conveyor.consumer")):
        assert one["image"] == IMAGE
        assert one["command"] == ["python", "-m", module]
        assert importlib.util.find_spec(f"{module}.__main__") is not None
    settings = config_map()
    [http] = producer["ports"]
    assert http["containerPort"] == int(settings["CONVEYOR_HTTP_PORT"])
    assert ProducerSettings(http_port=settings["CONVEYOR_HTTP_PORT"]).http_port == 8000
    [metrics] = consumer["ports"]
    assert metrics["containerPort"] == int(settings["CONVEYOR_METRICS_PORT"])
    service = resource("Service", "conveyor-producer")
    assert [port["targetPort"] for port in service["spec"]["ports"]] == [http["name"]]
    assert consumer["livenessProbe"]["exec"]["command"] == [
        "python",
        "-m",
        "conveyor.shared.health",
    ]
    assert importlib.util.find_spec("conveyor.shared.health") is not None


def test_probes_are_routes_the_producer_serves() -> None:
    producer = container("conveyor-producer")
    assert producer["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert producer["livenessProbe"]["httpGet"]["path"] == "/healthz"
    app = create_app(None)  # type: ignore[arg-type]  # routes only: no request is served
    assert {"/readyz", "/healthz"} <= set(app.openapi()["paths"])
    named = {port["name"] for port in producer["ports"]}
    assert {producer[p]["httpGet"]["port"] for p in ("readinessProbe", "livenessProbe")} <= named


@pytest.mark.parametrize("service", ["producer", "consumer"])
def test_every_variable_a_service_gets_is_one_of_its_settings(service: str) -> None:
    one = container(f"conveyor-{service}")
    names = {entry["name"] for entry in one["env"] if entry["name"].startswith("CONVEYOR_")}
    names = {name.removesuffix("_FILE") for name in names}
    unknown = names - SETTINGS[service]
    assert not unknown, unknown
    shared = set(config_map()) - SETTINGS["producer"] - SETTINGS["consumer"]
    assert not shared, shared
    for value in config_map().values():
        assert isinstance(value, str)  # a ConfigMap holds strings only


@pytest.mark.parametrize("service", ["producer", "consumer"])
def test_the_config_map_and_secret_files_make_valid_settings(
    service: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service's settings load from exactly what the pod gets: the ConfigMap as env vars
    and the Secret's keys as files at the mounted paths."""
    one = container(f"conveyor-{service}")
    secret = resource("Secret", "conveyor-secrets")["stringData"]
    [mount] = [m for m in one["volumeMounts"] if m["name"] == "secrets"]
    for name, value in config_map().items():
        monkeypatch.setenv(name, value)
    for entry in one["env"]:
        if not entry["name"].endswith("_FILE"):
            continue
        path = Path(entry["value"])
        assert path.parent == Path(mount["mountPath"])
        assert path.name in secret, f"{entry['name']} reads key {path.name}, not in the Secret"
        (tmp_path / path.name).write_text(secret[path.name])
        monkeypatch.setenv(entry["name"], str(tmp_path / path.name))
    settings = (ProducerSettings if service == "producer" else ConsumerSettings)()
    assert settings.amqp_url.get_secret_value() == secret["amqp-url"]
    if isinstance(settings, ProducerSettings):
        assert "postgresql" in settings.database_url.get_secret_value()


def test_pods_run_as_non_root_with_a_read_only_root_filesystem() -> None:
    for name in ("conveyor-producer", "conveyor-consumer"):
        pod = resource("Deployment", name)["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001  # the Dockerfile's user
        [one] = pod["containers"]
        assert one["securityContext"]["readOnlyRootFilesystem"] is True
        assert one["securityContext"]["allowPrivilegeEscalation"] is False
        # The only writable place: /tmp, where the health file lives.
        writable = {m["mountPath"] for m in one["volumeMounts"] if not m.get("readOnly")}
        assert writable == {"/tmp"}
        assert config_map()["CONVEYOR_HEALTH_FILE"].startswith("/tmp/")
        assert {"requests", "limits"} <= set(one["resources"])
    assert "USER conveyor" in (REPO / "Dockerfile").read_text()
    assert "--uid 10001" in (REPO / "Dockerfile").read_text()


def _mebibytes(quantity: str) -> float:
    number, unit = re.fullmatch(r"(\d+)(Mi|Gi)", quantity).groups()  # type: ignore[union-attr]
    return float(number) * (1024 if unit == "Gi" else 1)


def test_consumer_grace_and_memory_bounds_fit_its_settings() -> None:
    settings = config_map()
    pod = resource("Deployment", "conveyor-consumer")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > float(settings["CONVEYOR_SHUTDOWN_GRACE_S"])
    limit_mb = _mebibytes(container("conveyor-consumer")["resources"]["limits"]["memory"])
    child_mb = float(settings["CONVEYOR_MAX_CHILD_RSS_MB"])
    # A sync task's child is killed before the container's limit is: the parent keeps ~200 MB.
    assert child_mb + 200 <= limit_mb
    assert settings["CONVEYOR_PREFETCH"] == "1"  # the queue length is then an honest backlog


def test_pod_disruption_budgets_select_the_deployments() -> None:
    for name in ("conveyor-producer", "conveyor-consumer"):
        budget = resource("PodDisruptionBudget", name)
        labels = resource("Deployment", name)["spec"]["template"]["metadata"]["labels"]
        assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert resource("Deployment", "conveyor-producer")["spec"]["replicas"] == 2


def test_keda_scales_the_consumers_on_their_work_queue_with_the_secrets_url() -> None:
    scaled = resource("ScaledObject", "conveyor-consumer")["spec"]
    assert scaled["scaleTargetRef"]["name"] == "conveyor-consumer"
    assert scaled["scaleTargetRef"]["kind"] == "Deployment"
    settings = config_map()
    topology = Topology(settings["CONVEYOR_NAMESPACE"])
    queues = [topology.work_queue(q) for q in settings["CONVEYOR_QUEUES"].split(",")]
    triggers = scaled["triggers"]
    assert sorted(t["metadata"]["queueName"] for t in triggers) == sorted(queues)
    secret = resource("Secret", "conveyor-secrets")
    for trigger in triggers:
        assert trigger["metadata"]["mode"] == "QueueLength"
        auth = resource("TriggerAuthentication", trigger["authenticationRef"]["name"])
        [ref] = auth["spec"]["secretTargetRef"]
        assert ref["parameter"] == "host"  # the rabbitmq trigger's connection string
        assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]
        assert "," not in secret["stringData"][ref["key"]]  # KEDA takes one URL


COMPOSE = yaml.safe_load((REPO / "compose.yaml").read_text())


def test_compose_producer_scales_without_a_host_port_clash() -> None:
    producer = COMPOSE["services"]["producer"]
    for port in producer["ports"]:
        published = str(port).rpartition(":")[0] if ":" in str(port) else ""
        # No fixed host port (`--scale producer=2` would clash): none, or a range.
        assert published == "" or "-" in published, port
    assert "deploy" not in producer or "replicas" not in producer.get("deploy", {})


@pytest.mark.parametrize("service", ["producer", "consumer"])
def test_compose_passwords_come_from_secrets_files(service: str) -> None:
    spec = COMPOSE["services"][service]
    env = spec["environment"]
    assert "CONVEYOR_AMQP_URL" not in env and "CONVEYOR_DATABASE_URL" not in env
    files = {k: v for k, v in env.items() if k.endswith("_FILE")}
    assert "CONVEYOR_AMQP_URL_FILE" in files
    for variable, path in files.items():
        assert variable.removesuffix("_FILE") in SETTINGS[service]
        name = Path(path).name
        assert path == f"/run/secrets/{name}" and name in spec["secrets"]
        assert name in COMPOSE["secrets"]
    for value in env.values():
        assert not re.search(r"://[^/@\s]*:[^/@\s]+@", str(value)), value  # no password inline
