"""The docker-compose stack, checked without a Docker engine.

* ``docker-compose.yml`` and the GPU override validate against the Compose Specification's
  JSON schema with the ``jsonschema`` package. The schema file, ``compose-spec.json`` next
  to this test, is the Compose Specification's published ``schema/compose-spec.json``
  (``"$id": "compose_spec.json"``) as shipped unchanged inside the npm package
  ``dclint@3.1.0`` (``schemas/compose.schema.json``); no package on PyPI carries it, and CI
  has no network access beyond package registries, so it is kept here.
* The wiring the schema cannot see: ``depends_on`` conditions name services whose health
  checks / one-shot nature fit, files mounted from ``deploy/`` exist, the detector's
  settings (``deploy/config.yaml`` plus the compose ``STREAM_AE_...`` variables, loaded
  through the product's own ``load_settings``) bind the metrics server on 0.0.0.0 at the
  port Prometheus scrapes, and Grafana's provisioned data source is the one every panel uses.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
GPU_OVERRIDE = REPO / "deploy" / "docker-compose.gpu.yml"
SCHEMA = Path(__file__).with_name("compose-spec.json")
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "stream-ae.json"

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


class ComposeTag(dict):
    """A mapping written with Compose's ``!reset`` / ``!override`` merge tags."""

    def __init__(self, tag: str, value: dict) -> None:
        super().__init__(value)
        self.tag = tag


class _ComposeLoader(yaml.SafeLoader):
    """YAML loader that understands Compose's ``!reset`` and ``!override`` tags."""


def _tagged(loader: yaml.SafeLoader, node: yaml.Node):
    if isinstance(node, yaml.MappingNode):
        return ComposeTag(node.tag, loader.construct_mapping(node, deep=True))
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)


for _tag in ("!reset", "!override"):
    _ComposeLoader.add_constructor(_tag, _tagged)


def load_compose(path: Path) -> dict:
    with path.open() as handle:
        return yaml.load(handle, Loader=_ComposeLoader)


def interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """Compose's ``${VAR:-default}`` interpolation with an empty environment by default."""
    env = env or {}
    return _VARIABLE.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), value).replace("$$", "$")


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_compose(COMPOSE)


@pytest.fixture(scope="module")
def validator():
    jsonschema = pytest.importorskip(
        "jsonschema", reason="the jsonschema package is not installed (pip install jsonschema)")
    schema = json.loads(SCHEMA.read_text())
    assert "draft-07" in schema["$schema"]
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def _schema_errors(validator, document: dict) -> list[str]:
    return [f"{'/'.join(map(str, error.absolute_path)) or '(top)'}: {error.message}"
            for error in validator.iter_errors(json.loads(json.dumps(document)))]


@pytest.mark.parametrize("path", [COMPOSE, GPU_OVERRIDE], ids=lambda p: p.name)
def test_compose_files_match_the_compose_specification(validator, path):
    assert _schema_errors(validator, load_compose(path)) == []


def test_the_schema_catches_mistakes(validator, compose):
    """The validator is not vacuous: a misspelt key and a wrong condition are rejected."""
    broken = json.loads(json.dumps(compose))
    broken["services"]["detector"]["stop_grace_perio"] = "30s"
    broken["services"]["grafana"]["depends_on"]["prometheus"]["condition"] = "service_up"
    errors = _schema_errors(validator, broken)
    assert any("stop_grace_perio" in error for error in errors)
    assert any("service_up" in error for error in errors)


def test_the_stack_has_every_service(compose):
    services = compose["services"]
    assert set(services) >= {"kafka", "topics", "trainer", "detector", "replayer", "prometheus", "grafana"}
    assert interpolate(services["kafka"]["image"]).startswith("apache/kafka:")
    assert interpolate(services["prometheus"]["image"]).startswith("prom/prometheus:")
    assert "controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]  # KRaft
    # the first `docker compose up` needs no GPU: nothing in the base file reserves one
    assert not any("deploy" in service for service in services.values())
    assert services["detector"]["command"] == ["run", "--config", "/etc/stream-ae/config.yaml"]


def test_start_up_order_is_enforced_by_conditions(compose):
    services = compose["services"]
    for name, service in services.items():
        for target, rule in service.get("depends_on", {}).items():
            assert target in services, f"{name} depends on unknown service {target}"
            condition = rule["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits for {target}'s health but it has no check"
            elif condition == "service_completed_successfully":
                assert services[target].get("restart") == "no", f"{target} is one-shot but restarts"
            else:
                pytest.fail(f"{name} → {target}: condition {condition} does not wait for readiness")
    needs = {name: set(service.get("depends_on", {})) for name, service in services.items()}
    assert {"kafka", "topics", "trainer"} <= needs["detector"]
    assert "detector" in needs["replayer"] and "prometheus" in needs["grafana"]


def test_mounted_and_built_files_exist(compose):
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = interpolate(volume).split(":", 1)[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), f"{name} mounts missing {source}"
        if "build" in service:
            build = service["build"]
            dockerfile = REPO / build["context"] / build["dockerfile"]
            assert dockerfile.is_file()
            assert "torch" in dockerfile.read_text()
            assert Path(f"{dockerfile}.dockerignore").is_file()
    override = load_compose(GPU_OVERRIDE)
    for service in override["services"].values():
        if "build" in service:
            assert (REPO / service["build"]["context"] / service["build"]["dockerfile"]).is_file()


def test_gpu_variant_reserves_a_gpu_for_the_model_services(compose):
    override = load_compose(GPU_OVERRIDE)["services"]
    for name in ("trainer", "detector"):
        devices = override[name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    for name, service in override.items():
        assert interpolate(service["image"]) == "stream-ae:cuda" != interpolate(compose["services"][name]["image"])
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
    assert interpolate(override["detector"]["environment"]["STREAM_AE_MODEL__DEVICE"]) == "cuda"
    assert "cpu" in (REPO / "deploy" / "Dockerfile.cpu").read_text()


def test_image_variables_default_to_the_published_images(compose):
    """Each image is swapped by a variable (deploy/build-images.sh's stand-ins) whose default is the usual one."""
    env = {"STREAM_AE_KAFKA_IMAGE": "localhost/k:1", "STREAM_AE_PROMETHEUS_IMAGE": "localhost/p:1",
           "STREAM_AE_IMAGE": "localhost/s:1"}
    services = compose["services"]
    for name in ("kafka", "topics"):
        assert interpolate(services[name]["image"], env) == "localhost/k:1"
    assert interpolate(services["prometheus"]["image"], env) == "localhost/p:1"
    for name in ("trainer", "detector", "replayer"):
        assert interpolate(services[name]["image"], env) == "localhost/s:1"
        assert interpolate(services[name]["image"]) == "stream-ae:cpu"
        assert interpolate(services[name]["user"]) == "10001"


def test_detector_settings_in_the_container(compose, monkeypatch):
    """deploy/config.yaml + the compose environment, through the product's loader."""
    from stream_ae.service.config import load_settings

    detector = compose["services"]["detector"]
    for key in [k for k in os.environ if k.startswith("STREAM_AE_")]:
        monkeypatch.delenv(key)
    for key, value in detector["environment"].items():
        monkeypatch.setenv(key, interpolate(str(value)))
    mounts = dict(interpolate(v).split(":")[:2] for v in detector["volumes"])
    config = REPO / next(src for src, dst in mounts.items() if dst == "/etc/stream-ae/config.yaml")
    settings = load_settings(config)
    assert settings.metrics.host == "0.0.0.0"
    assert settings.kafka.bootstrap_servers == "kafka:9092"
    assert str(settings.model.checkpoint) == "/models/model.pt"
    assert settings.model.device == "auto"   # cuda where the container sees a GPU
    assert any(dst == "/models" for dst in mounts.values())
    # a dead letter larger than the broker takes goes as a reference instead of being refused
    # (Apache Kafka's message.max.bytes is 1 MiB + 12 bytes unless the stack sets it)
    kafka = compose["services"]["kafka"]["environment"]
    assert settings.kafka.max_request_bytes <= int(kafka.get("KAFKA_MESSAGE_MAX_BYTES", 1048588))

    prometheus = yaml.safe_load((REPO / "deploy" / "prometheus" / "prometheus.yml").read_text())
    job = next(j for j in prometheus["scrape_configs"] if j["job_name"] == "stream-ae")
    discovery = job["dns_sd_configs"][0]
    assert discovery["names"] == ["detector"] and discovery["port"] == settings.metrics.port
    assert str(settings.metrics.port) in detector["expose"]


def test_grafana_provisioning_matches_the_dashboard(compose):
    provisioning = REPO / "deploy" / "grafana" / "provisioning"
    sources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    uid = sources[0]["uid"]
    assert sources[0]["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((provisioning / "dashboards" / "stream-ae.yml").read_text())["providers"]
    mounts = dict(v.split(":")[:2] for v in compose["services"]["grafana"]["volumes"] if v.startswith("./"))
    assert mounts["./deploy/grafana/dashboards"] == providers[0]["options"]["path"]
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"

    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert panels
    for panel in panels:
        assert panel["datasource"]["uid"] == uid, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid and target["expr"].strip()
