"""The Helm chart renders to valid Kubernetes objects with the properties the deployment relies on.

Every template is rendered (with tests/gotemplate.py) from the chart's values.yaml plus the values an
installation must set, and with variants that switch on the optional objects; every output is parsed
with PyYAML and checked. Without the authentication settings of its mode the chart refuses to render.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.settings import Settings
from tests.gotemplate import ExecutionError, Renderer, TemplateError
from tests.test_dockerfile import final_stage_user

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "fhir-reindex-service"

# ---------------------------------------------------------------------------------------------------
# Rendering the chart.

RENDERER = Renderer(CHART)
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())

JWKS_URL = "https://idp.example.org/realms/ehealth/protocol/openid-connect/certs"
ISSUER = "https://idp.example.org/realms/ehealth"
# What an installation must set besides values.yaml in the default (jwks) mode.
REQUIRED = {"auth": {"jwksUrls": JWKS_URL, "jwtIssuers": ISSUER}}


def render(overrides: dict[str, Any] | None = None, release: str = "fhir") -> dict[str, str]:
    """The chart with REQUIRED, then `overrides` (an `auth` override replaces REQUIRED's whole)."""
    return RENDERER.render({**REQUIRED, **(overrides or {})}, release=release)


ALL_ON = {
    "autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 8},
    "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
    "auth": {"mode": "hs256", "hs256": {"existingSecret": "fhir-jwt"}},
    "istio": {"enabled": True},
    "podAnnotations": {"example.org/team": "fhir"},
    "extraConfig": {"FHIR_POOL_MAX_SIZE": 20, "FHIR_LOCK_TIMEOUT_MS": 2500},
    "extraEnv": [{"name": "OTEL_SERVICE_NAME", "value": "fhir"}],
    "config": {"publicBaseUrl": "https://fhir.example.org/fhir", "reindexWorkers": 4},
    "podDisruptionBudget": {"minAvailable": 1, "maxUnavailable": None},
    "tmpVolume": {"sizeLimit": None},
}


def manifests(rendered: dict[str, str]) -> list[dict[str, Any]]:
    docs = []
    for rel, text in rendered.items():
        if rel.endswith(".txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc is not None:
                assert isinstance(doc, dict), f"{rel}: a manifest is a mapping, got {doc!r}"
                docs.append(doc)
    return docs


def by_kind(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    kinds: dict[str, dict[str, Any]] = {}
    for doc in docs:
        assert doc["kind"] not in kinds, f"two objects of kind {doc['kind']}"
        kinds[doc["kind"]] = doc
    return kinds


@pytest.fixture(scope="module")
def default_render() -> dict[str, str]:
    return render()


@pytest.fixture(scope="module")
def default_objects(default_render: dict[str, str]) -> dict[str, dict[str, Any]]:
    return by_kind(manifests(default_render))


@pytest.fixture(scope="module")
def full_objects() -> dict[str, dict[str, Any]]:
    return by_kind(manifests(render(ALL_ON)))


def container(objects: dict[str, dict[str, Any]]) -> dict[str, Any]:
    containers = objects["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env_of(objects: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container(objects).get("env", [])}


# The Secrets an installation creates before it installs, by (name, key).
DB_SECRET = {(VALUES["database"]["existingSecret"], VALUES["database"]["urlKey"]): "postgresql://user@db.invalid/fhir"}


def pod_settings(objects: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch,
                 secrets: dict[tuple[str, str], str]) -> Settings:
    """The service's own Settings, read from the container environment as Kubernetes builds it: the
    ConfigMap, then `env`, whose secretKeyRefs must name one of `secrets`."""
    for key in list(os.environ):
        if key.startswith("FHIR_") or key == "DATABASE_URL":
            monkeypatch.delenv(key)
    for key, value in objects["ConfigMap"]["data"].items():
        monkeypatch.setenv(key, value)
    for entry in container(objects).get("env", []):
        if "value" in entry:
            monkeypatch.setenv(entry["name"], entry["value"])
        else:
            ref = entry["valueFrom"]["secretKeyRef"]
            monkeypatch.setenv(entry["name"], secrets[(ref["name"], ref["key"])])
    return Settings()


# ---------------------------------------------------------------------------------------------------
# The renderer itself.


def one_template_chart(chart_dir: Path, source: str, values: str) -> Renderer:
    """A chart `t` of one template, templates/t.yaml."""
    (chart_dir / "templates").mkdir()
    (chart_dir / "Chart.yaml").write_text("apiVersion: v2\nname: t\nversion: 0.1.0\n")
    (chart_dir / "values.yaml").write_text(values)
    (chart_dir / "templates" / "t.yaml").write_text(source)
    return Renderer(chart_dir)


@pytest.mark.parametrize(
    ("source", "values", "expected"),
    [
        ("a  {{- 1 -}}  b", {}, "a1b"),
        ("{{/* note */}}x{{- /* note */ -}} y", {}, "xy"),
        ('{{ if .Values.on }}yes{{ else if .Values.other }}other{{ else }}no{{ end }}',
         {"other": True}, "other"),
        ("{{ with .Values.name }}{{ . | quote }}{{ else }}none{{ end }}", {"name": "a\"b"}, '"a\\"b"'),
        ("{{ range $k, $v := .Values.m }}{{ $k }}={{ $v }};{{ end }}", {"m": {"b": 2, "a": "x"}}, "a=x;b=2;"),
        ("{{ .Values.big }}|{{ .Values.big | int }}|{{ .Values.small }}", {"big": 16777216, "small": 100000},
         "1.6777216e+07|16777216|100000"),
        ("{{ .Values.missing }}|{{ .Values.missing | quote }}|{{ default \"d\" .Values.missing }}", {}, "||d"),
        ('{{ printf "%s-%s" "rel" "chart" | trunc 5 | trimSuffix "-" }}', {}, "rel-c"),
        ("{{ toYaml .Values.m | nindent 2 }}", {"m": {"b": [1, "x"], "a": 8080}}, "\n  a: 8080\n  b:\n  - 1\n  - x"),
        ("{{ toYaml .Values.m }}", {"m": {"cpu": "1", "flag": "true", "s": "a: b"}},
         'cpu: "1"\nflag: "true"\ns: \'a: b\''),
        ('{{ eq .Values.mode "hs256" }} {{ not .Values.off }}', {"mode": "hs256", "off": False}, "true true"),
    ],
)
def test_renderer_follows_go_template_semantics(
    tmp_path: Path, source: str, values: dict[str, Any], expected: str
) -> None:
    assert one_template_chart(tmp_path, source, yaml.safe_dump(values)).render()["templates/t.yaml"] == expected


@pytest.mark.parametrize(
    "source",
    [
        "{{ .Values.missing.field }}",  # nil pointer, as in Helm
        "{{ .Values.m }}",  # printing a map
        "{{ lookup \"v1\" \"Secret\" \"ns\" \"name\" }}",  # a function this renderer does not know
        "{{ if .Values.m }}unterminated",
        "{{ .Release.Nope }}",  # unknown struct field
        '{{ eq .Values.n 1 }}',  # float64 against int: incompatible in Go
    ],
)
def test_renderer_fails_loudly(tmp_path: Path, source: str) -> None:
    with pytest.raises(TemplateError):  # some when parsed, the others when rendered
        one_template_chart(tmp_path, source, "m: {a: 1}\nn: 1\n").render()


def test_required_passes_values_through(tmp_path: Path) -> None:
    source = '{{ required "need v" .Values.v }}|{{ .Values.off | required "need off" }}'
    # Only nil and "" are missing to Helm's `required`: false is a value.
    assert one_template_chart(tmp_path, source, "v: x\n'off': false\n").render()["templates/t.yaml"] == "x|false"


@pytest.mark.parametrize(
    ("source", "values"),
    [
        ('{{ required "need v" .Values.v }}', "{}"),
        ('{{ .Values.v | required "need v" }}', "v: ''"),
        ('{{ if not .Values.v }}{{ fail "need v" }}{{ end }}', "v: false"),
    ],
)
def test_required_and_fail_refuse_with_their_message(tmp_path: Path, source: str, values: str) -> None:
    renderer = one_template_chart(tmp_path, source, values)
    with pytest.raises(ExecutionError, match=r"^execution error at \(t/templates/t\.yaml\): need v$"):
        renderer.render()


# ---------------------------------------------------------------------------------------------------
# The chart.

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def test_chart_metadata() -> None:
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert meta["apiVersion"] == "v2"
    assert meta["name"] == CHART.name == "fhir-reindex-service"
    assert meta["type"] == "application"
    assert re.fullmatch(r"\d+\.\d+\.\d+", meta["version"])
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert meta["appVersion"] == project["version"], "the default image tag is the package version"


@pytest.mark.parametrize("overrides", [{}, ALL_ON], ids=["defaults", "all-options-on"])
def test_every_template_renders_to_kubernetes_objects(overrides: dict[str, Any]) -> None:
    rendered = render(overrides)
    assert set(rendered) >= {
        "templates/deployment.yaml", "templates/service.yaml", "templates/configmap.yaml",
        "templates/poddisruptionbudget.yaml", "templates/hpa.yaml", "templates/servicemonitor.yaml",
        "templates/NOTES.txt",
    }
    for rel, text in rendered.items():
        assert "{{" not in text and "}}" not in text, f"{rel}: unrendered template text"
        assert "<no value>" not in text
    docs = manifests(rendered)
    assert docs
    for doc in docs:
        assert set(doc) >= {"apiVersion", "kind", "metadata"}, doc
        name = doc["metadata"]["name"]
        assert DNS_LABEL.match(name) and len(name) <= 63, name
        labels = doc["metadata"]["labels"]
        for key, value in labels.items():
            assert isinstance(value, str) and LABEL_VALUE.match(value) and len(value) <= 63, (key, value)
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/instance"] == "fhir"


def test_default_objects(default_objects: dict[str, dict[str, Any]]) -> None:
    assert set(default_objects) == {"Deployment", "Service", "ConfigMap", "PodDisruptionBudget"}
    apis = {kind: doc["apiVersion"] for kind, doc in default_objects.items()}
    assert apis == {"Deployment": "apps/v1", "Service": "v1", "ConfigMap": "v1",
                    "PodDisruptionBudget": "policy/v1"}
    names = {doc["metadata"]["name"] for doc in default_objects.values()}
    assert names == {"fhir-fhir-reindex-service"}


def test_deployment_replicas_strategy_and_selector(default_objects: dict[str, dict[str, Any]]) -> None:
    spec = default_objects["Deployment"]["spec"]
    assert isinstance(spec["replicas"], int) and spec["replicas"] >= 2
    assert spec["strategy"]["type"] == "RollingUpdate"
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod_labels = spec["template"]["metadata"]["labels"]
    selector = spec["selector"]["matchLabels"]
    assert selector and selector.items() <= pod_labels.items()
    assert "helm.sh/chart" not in selector and "app.kubernetes.io/version" not in selector


def test_probes(default_objects: dict[str, dict[str, Any]]) -> None:
    c = container(default_objects)
    ports = {p["name"]: p for p in c["ports"]}
    assert ports["http"]["containerPort"] == 8080 and ports["http"]["protocol"] == "TCP"
    assert c["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["startupProbe"]["httpGet"]["path"] in ("/livez", "/readyz", "/healthz")
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert c[probe]["httpGet"]["port"] == "http"
        assert "httpHeaders" not in c[probe]["httpGet"], "probes need no token"
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60


def test_security_context(default_objects: dict[str, dict[str, Any]]) -> None:
    pod = default_objects["Deployment"]["spec"]["template"]["spec"]
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True
    assert isinstance(psc["runAsUser"], int) and psc["runAsUser"] > 0
    assert isinstance(psc["fsGroup"], int)
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    csc = container(default_objects)["securityContext"]
    assert csc["readOnlyRootFilesystem"] is True
    assert csc["allowPrivilegeEscalation"] is False
    assert csc["capabilities"]["drop"] == ["ALL"]
    assert not csc.get("capabilities", {}).get("add")
    # The image's user is the chart's user (runAsNonRoot needs a numeric one in the image).
    assert psc["runAsUser"] == int(final_stage_user().split(":")[0])


def test_resources_and_tmp_volume(default_objects: dict[str, dict[str, Any]]) -> None:
    c = container(default_objects)
    assert set(c["resources"]["requests"]) >= {"cpu", "memory"}
    assert set(c["resources"]["limits"]) >= {"memory"}
    pod = default_objects["Deployment"]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert isinstance(volumes[mounts["/tmp"]]["emptyDir"], dict)


def test_environment_from_configmap_and_secret(default_objects: dict[str, dict[str, Any]]) -> None:
    c = container(default_objects)
    assert c["envFrom"] == [{"configMapRef": {"name": default_objects["ConfigMap"]["metadata"]["name"]}}]
    env = env_of(default_objects)
    assert env["DATABASE_URL"] == {
        "name": "DATABASE_URL",
        "valueFrom": {"secretKeyRef": {"name": VALUES["database"]["existingSecret"],
                                       "key": VALUES["database"]["urlKey"]}},
    }
    assert "FHIR_HS256_SECRET" not in env, "jwks mode needs no shared secret"
    data = default_objects["ConfigMap"]["data"]
    assert not {"DATABASE_URL", "FHIR_HS256_SECRET"} & set(data), "secrets stay out of the ConfigMap"
    assert c["args"] == ["serve"]


def test_install_time_database_secret_override() -> None:
    objects = by_kind(manifests(render({"database": {"existingSecret": "pg-app", "urlKey": "uri"}})))
    ref = env_of(objects)["DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "pg-app", "key": "uri"}


def test_configmap_is_what_the_service_reads(
    default_objects: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = default_objects["ConfigMap"]["data"]
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()), data
    fields = set(Settings.model_fields)
    for key in data:
        assert key.startswith("FHIR_") and key[5:].lower() in fields, f"{key} is not a setting"
    settings = pod_settings(default_objects, monkeypatch, DB_SECRET)
    assert settings.host == "0.0.0.0"
    assert settings.port == container(default_objects)["ports"][0]["containerPort"]
    assert settings.base_path == "/fhir"
    assert settings.auth_mode == "jwks"
    assert settings.jwks_urls == [JWKS_URL] and settings.jwt_issuers == [ISSUER]
    assert settings.problems() == []  # what create_app checks first: these pods start
    assert settings.max_body_bytes == VALUES["config"]["maxBodyBytes"] == 16777216
    assert settings.reindex_workers == VALUES["config"]["reindexWorkers"]
    assert settings.log_format == "json"
    # Graceful shutdown (readiness 503, drain, close) fits in the brief's 10 s and in the grace period.
    stop = settings.shutdown_drain_seconds + settings.shutdown_timeout_seconds
    assert stop <= 10
    grace = default_objects["Deployment"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= stop + 5


def test_service(default_objects: dict[str, dict[str, Any]]) -> None:
    svc = default_objects["Service"]["spec"]
    assert svc["type"] == "ClusterIP"
    (port,) = svc["ports"]
    assert port["name"] == "http" and port["targetPort"] == "http"
    pod_labels = default_objects["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert svc["selector"] and svc["selector"].items() <= pod_labels.items()


def test_pod_disruption_budget(default_objects: dict[str, dict[str, Any]]) -> None:
    pdb = default_objects["PodDisruptionBudget"]["spec"]
    assert ("minAvailable" in pdb) != ("maxUnavailable" in pdb)
    assert pdb.get("maxUnavailable") == 1 or pdb.get("minAvailable") == 1
    pod_labels = default_objects["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert pdb["selector"]["matchLabels"].items() <= pod_labels.items()


def test_optional_objects(full_objects: dict[str, dict[str, Any]]) -> None:
    assert set(full_objects) == {"Deployment", "Service", "ConfigMap", "PodDisruptionBudget",
                                 "HorizontalPodAutoscaler", "ServiceMonitor"}
    deployment = full_objects["Deployment"]
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    hpa = full_objects["HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": deployment["metadata"]["name"]}
    assert hpa["spec"]["minReplicas"] == 3 and hpa["spec"]["maxReplicas"] == 8
    assert hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 70
    sm = full_objects["ServiceMonitor"]
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["port"] == "http" and endpoint["path"] == "/metrics"
    svc_labels = full_objects["Service"]["metadata"]["labels"]
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc_labels.items()
    pdb = full_objects["PodDisruptionBudget"]["spec"]
    assert pdb["minAvailable"] == 1 and "maxUnavailable" not in pdb


def test_options_reach_the_pods(full_objects: dict[str, dict[str, Any]]) -> None:
    env = env_of(full_objects)
    assert env["FHIR_HS256_SECRET"]["valueFrom"]["secretKeyRef"] == {"name": "fhir-jwt",
                                                                     "key": "FHIR_HS256_SECRET"}
    assert env["OTEL_SERVICE_NAME"] == {"name": "OTEL_SERVICE_NAME", "value": "fhir"}
    data = full_objects["ConfigMap"]["data"]
    assert data["FHIR_AUTH_MODE"] == "hs256"
    assert data["FHIR_PUBLIC_BASE_URL"] == "https://fhir.example.org/fhir"
    assert data["FHIR_REINDEX_WORKERS"] == "4"
    assert data["FHIR_POOL_MAX_SIZE"] == "20" and data["FHIR_LOCK_TIMEOUT_MS"] == "2500"
    template = full_objects["Deployment"]["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    assert annotations["sidecar.istio.io/inject"] == "true"
    assert json.loads(annotations["proxy.istio.io/config"])["holdApplicationUntilProxyStarts"] is True
    assert annotations["example.org/team"] == "fhir"
    volumes = {v["name"]: v for v in template["spec"]["volumes"]}
    assert volumes["tmp"]["emptyDir"] == {}


def test_config_change_rolls_the_pods(default_objects: dict[str, dict[str, Any]]) -> None:
    def checksum(objects: dict[str, dict[str, Any]]) -> str:
        return objects["Deployment"]["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    same = by_kind(manifests(render({"replicaCount": 3})))
    changed = by_kind(manifests(render({"config": {"logLevel": "DEBUG"}})))
    assert re.fullmatch(r"[0-9a-f]{64}", checksum(default_objects))
    assert checksum(same) == checksum(default_objects)
    assert checksum(changed) != checksum(default_objects)


@pytest.mark.parametrize(
    ("release", "overrides", "expected"),
    [
        ("fhir-reindex-service", {}, "fhir-reindex-service"),
        ("prod", {"fullnameOverride": "fhir"}, "fhir"),
        ("a" * 60, {}, ("a" * 60 + "-fhir-reindex-service")[:63]),
    ],
)
def test_object_names(release: str, overrides: dict[str, Any], expected: str) -> None:
    docs = manifests(render(overrides, release=release))
    assert {d["metadata"]["name"] for d in docs} == {expected}


def test_notes(default_render: dict[str, str]) -> None:
    notes = default_render["templates/NOTES.txt"]
    assert "fhir-fhir-reindex-service.health.svc:8080/fhir" in notes
    assert "WARNING" not in notes
    unsigned = render({"auth": {"mode": "unsigned", "allowUnsigned": True}})["templates/NOTES.txt"]
    assert "WARNING" in unsigned


# ---------------------------------------------------------------------------------------------------
# Authentication: a release renders only with what its mode needs, and then its pods can start.


@pytest.mark.parametrize(
    ("auth", "message"),
    [
        ({}, "auth.jwksUrls is required when auth.mode is jwks"),
        ({"jwksUrls": JWKS_URL}, "auth.jwtIssuers is required when auth.mode is jwks"),
        ({"jwtIssuers": ISSUER}, "auth.jwksUrls is required when auth.mode is jwks"),
        ({"mode": "hs256", "jwksUrls": JWKS_URL}, "auth.hs256.existingSecret is required when auth.mode is hs256"),
        ({"mode": "hs256", "hs256": {"existingSecret": "fhir-jwt", "key": ""}}, "auth.hs256.key is required"),
        ({"mode": "unsigned"}, "set auth.allowUnsigned=true to confirm (test clusters only)"),
        ({"mode": "oidc", "jwksUrls": JWKS_URL, "jwtIssuers": ISSUER},
         'auth.mode must be jwks, hs256 or unsigned, not "oidc"'),
    ],
    ids=["nothing", "no-issuer", "no-jwks-url", "hs256-no-secret", "hs256-no-key", "unsigned-unconfirmed",
         "unknown-mode"],
)
def test_chart_refuses_to_render_without_the_auth_settings_of_its_mode(auth: dict[str, Any], message: str) -> None:
    with pytest.raises(ExecutionError) as refused:
        RENDERER.render({"auth": auth})
    assert str(refused.value).startswith("execution error at (fhir-reindex-service/templates/deployment.yaml): ")
    assert message in str(refused.value)


@pytest.mark.parametrize(
    "auth",
    [
        REQUIRED["auth"],
        {"mode": "hs256", "hs256": {"existingSecret": "fhir-jwt"}},
        {"mode": "unsigned", "allowUnsigned": True},
    ],
    ids=["jwks", "hs256", "unsigned"],
)
def test_each_mode_renders_pods_that_start(auth: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    objects = by_kind(manifests(RENDERER.render({"auth": auth})))
    mode = auth.get("mode", VALUES["auth"]["mode"])
    secrets = {**DB_SECRET, ("fhir-jwt", "FHIR_HS256_SECRET"): "a-shared-secret-of-32-characters"}
    settings = pod_settings(objects, monkeypatch, secrets)
    assert settings.auth_mode == mode
    assert settings.problems() == []
    assert ("FHIR_HS256_SECRET" in env_of(objects)) == (mode == "hs256"), "the shared secret only in hs256 mode"
