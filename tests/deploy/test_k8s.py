"""The Kubernetes manifests (deploy/k8s), offline: kustomize renders the base and the example
overlay, every rendered object must pass the Kubernetes API schemas in strict mode, and the
properties the service relies on are read back from the rendered YAML."""

from __future__ import annotations

import base64
import configparser
import functools
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from harness.processes import PROJECT_ROOT

K8S = PROJECT_ROOT / "deploy" / "k8s"
KUSTOMIZATIONS = {"base": K8S / "base", "overlay": K8S / "overlays" / "example"}
# The schemas to check against (all shipped with the pinned kubernetes-validate): an older
# release still in wide use and a recent one.
KUBERNETES_VERSIONS = ("1.30", "1.35")
OVERLAY_NAMESPACE = "booking"
# Kinds without a namespace; everything else must get the overlay's.
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "IngressClass",
    "PersistentVolume",
    "PriorityClass",
    "StorageClass",
}
APP = "booking-service"  # the API's Deployment, Service, HPA, PDB and Ingress
APP_CONTAINER = "app"
MIGRATION_JOB = "booking-service-migrate"
PGBOUNCER = "pgbouncer"  # its Deployment and Service
PGBOUNCER_INI = "/etc/pgbouncer/pgbouncer.ini"  # where the image's start script looks
POD_TEMPLATE_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}
# PostgreSQL's default max_connections and superuser_reserved_connections: what PgBouncer's
# server connections, the migration Job and an admin session must fit into.
POSTGRES_MAX_CONNECTIONS = 100
POSTGRES_RESERVED_CONNECTIONS = 3
GUNICORN_TIMEOUT_SECONDS = 30  # gunicorn.conf.py's default worker timeout


def kubectl() -> str:
    """kubectl (KUBECTL overrides); its absence is a failure, not a reason to skip."""
    path = os.environ.get("KUBECTL") or shutil.which("kubectl")
    if path is None:
        pytest.fail(
            "kubectl is not installed; these tests render deploy/k8s with it "
            "(apt-get install kubernetes-client; scripts/test.sh installs it)"
        )
    return path


@dataclass(frozen=True)
class Rendered:
    """The objects of one `kubectl kustomize` run."""

    name: str
    objects: tuple[dict[str, Any], ...]

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [obj for obj in self.objects if obj["kind"] == kind]

    def one(self, kind: str, name: str) -> dict[str, Any]:
        found = [obj for obj in self.all(kind) if obj["metadata"]["name"] == name]
        assert len(found) == 1, f"{self.name}: expected one {kind} {name}, found {len(found)}"
        return found[0]

    def data(self, kind: str, name: str) -> dict[str, str]:
        """A ConfigMap's or Secret's values as text (Secret data decoded)."""
        obj = self.one(kind, name)
        values = dict(obj.get("data") or {})
        if kind == "Secret":
            values = {key: base64.b64decode(value).decode() for key, value in values.items()}
            values.update(obj.get("stringData") or {})
        return values

    def pod_templates(self) -> list[tuple[str, dict[str, Any]]]:
        templates = [
            (f"{obj['kind']}/{obj['metadata']['name']}", obj["spec"]["template"])
            for obj in self.objects
            if obj["kind"] in POD_TEMPLATE_KINDS
        ]
        templates += [
            (f"CronJob/{obj['metadata']['name']}", obj["spec"]["jobTemplate"]["spec"]["template"])
            for obj in self.all("CronJob")
        ]
        return templates

    def container(self, kind: str, name: str, container: str) -> dict[str, Any]:
        containers = self.one(kind, name)["spec"]["template"]["spec"]["containers"]
        found = [c for c in containers if c["name"] == container]
        assert len(found) == 1, f"{kind} {name} has no container {container}"
        return found[0]

    def env(self, container: dict[str, Any]) -> dict[str, str]:
        """The container's environment as the kubelet would build it (env over envFrom).

        Downward API values read as ``fieldRef:<path>``.
        """
        values: dict[str, str] = {}
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                values.update(self.data("ConfigMap", source["configMapRef"]["name"]))
            if "secretRef" in source:
                values.update(self.data("Secret", source["secretRef"]["name"]))
        for variable in container.get("env", []):
            if "value" in variable:
                values[variable["name"]] = variable["value"]
                continue
            source = variable["valueFrom"]
            if "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                values[variable["name"]] = self.data("Secret", ref["name"])[ref["key"]]
            elif "configMapKeyRef" in source:
                ref = source["configMapKeyRef"]
                values[variable["name"]] = self.data("ConfigMap", ref["name"])[ref["key"]]
            elif "fieldRef" in source:
                values[variable["name"]] = f"fieldRef:{source['fieldRef']['fieldPath']}"
        return values

    def app_env(self) -> dict[str, str]:
        return self.env(self.container("Deployment", APP, APP_CONTAINER))

    def pgbouncer_database(self) -> dict[str, str]:
        """The connection string PgBouncer uses for the app's database, as key -> value."""
        value = self.pgbouncer_ini()["databases"]["booking_service"]
        return dict(pair.split("=", 1) for pair in shlex.split(value))

    def pgbouncer_ini(self) -> configparser.ConfigParser:
        """pgbouncer.ini as mounted into the PgBouncer container."""
        spec = self.one("Deployment", PGBOUNCER)["spec"]["template"]["spec"]
        mounts = [
            m for m in spec["containers"][0]["volumeMounts"] if m["mountPath"] == PGBOUNCER_INI
        ]
        assert len(mounts) == 1, f"nothing is mounted at {PGBOUNCER_INI}"
        volume = next(v for v in spec["volumes"] if v["name"] == mounts[0]["name"])
        text = self.data("ConfigMap", volume["configMap"]["name"])[mounts[0]["subPath"]]
        ini = configparser.ConfigParser()
        ini.read_string(text)
        return ini


@functools.cache
def render(name: str) -> Rendered:
    result = subprocess.run(
        [kubectl(), "kustomize", str(KUSTOMIZATIONS[name])],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"kubectl kustomize {name} failed:\n{result.stderr}"
    objects = tuple(obj for obj in yaml.safe_load_all(result.stdout) if obj)
    assert objects, f"kubectl kustomize {name} rendered nothing"
    return Rendered(name, objects)


@pytest.fixture(params=sorted(KUSTOMIZATIONS))
def rendered(request: pytest.FixtureRequest) -> Rendered:
    return render(request.param)


def seconds_of_sleep(hook: dict[str, Any]) -> float:
    """How long a preStop hook pauses: an exec of `sleep N` (alone or in a shell) or sleep."""
    if "sleep" in hook:
        return float(hook["sleep"]["seconds"])
    command = " ".join(hook["exec"]["command"])
    match = re.search(r"\bsleep (\d+(?:\.\d+)?)\b", command)
    assert match, f"the preStop hook does not pause: {command!r}"
    return float(match.group(1))


def test_every_object_passes_the_kubernetes_schemas_in_strict_mode(rendered: Rendered) -> None:
    errors = []
    for obj in rendered.objects:
        for version in KUBERNETES_VERSIONS:
            where = f"{obj['kind']}/{obj['metadata']['name']} (Kubernetes {version})"
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                path = ".".join(str(part) for part in error.path)
                errors.append(f"{where}: {path}: {error.message}")
            except kubernetes_validate.SchemaNotFoundError as error:
                # No CRDs: what the validator cannot check does not belong in these files.
                errors.append(f"{where}: {error.message}")
    assert not errors, "\n".join(errors)
    kinds = sorted(obj["kind"] for obj in rendered.objects)
    for kind in (
        "ConfigMap",
        "Deployment",
        "HorizontalPodAutoscaler",
        "Ingress",
        "Job",
        "PodDisruptionBudget",
        "Secret",
        "Service",
    ):
        assert kind in kinds, f"{rendered.name} renders no {kind}"


def test_every_reference_resolves(rendered: Rendered) -> None:
    # Generated ConfigMaps and Secrets get a hash suffix; every reference must follow it.
    for where, template in rendered.pod_templates():
        spec = template["spec"]
        for container in spec["containers"] + spec.get("initContainers", []):
            rendered.env(container)  # raises on a missing ConfigMap, Secret or key
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                rendered.one("ConfigMap", volume["configMap"]["name"])
            if "secret" in volume:
                rendered.one("Secret", volume["secret"]["secretName"])
        for container in spec["containers"]:
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in {v["name"] for v in spec.get("volumes", [])}, where
    for service in rendered.all("Service"):
        if service["spec"].get("type") == "ExternalName":
            continue
        selector = service["spec"]["selector"]
        assert any(
            selector.items() <= template["metadata"]["labels"].items()
            for _, template in rendered.pod_templates()
        ), f"Service {service['metadata']['name']} selects no pods"
    ingress = rendered.one("Ingress", APP)
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            ports = rendered.one("Service", backend["name"])["spec"]["ports"]
            assert backend["port"]["name"] in {port["name"] for port in ports}


def test_app_probes_readiness_on_readyz_and_liveness_on_livez(rendered: Rendered) -> None:
    container = rendered.container("Deployment", APP, APP_CONTAINER)
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports.get("http") == 8000
    readiness = container["readinessProbe"]["httpGet"]
    liveness = container["livenessProbe"]["httpGet"]
    assert readiness["path"] == "/readyz"
    assert liveness["path"] == "/livez"
    assert readiness["port"] in ("http", 8000)
    assert liveness["port"] in ("http", 8000)
    # A startup probe, if any, must not look at the dependencies either.
    if "startupProbe" in container:
        assert container["startupProbe"]["httpGet"]["path"] == "/livez"


def test_grace_period_outlasts_pre_stop_lock_wait_and_lease(rendered: Rendered) -> None:
    pod = rendered.one("Deployment", APP)["spec"]["template"]["spec"]
    container = rendered.container("Deployment", APP, APP_CONTAINER)
    assert "preStop" in container.get("lifecycle", {}), "the app container has no preStop hook"
    pause = seconds_of_sleep(container["lifecycle"]["preStop"])
    assert pause >= 1, "the preStop pause is too short to take the pod out of the endpoints"
    env = rendered.app_env()
    worst_case = pause + float(env["LOCK_WAIT_SECONDS"]) + float(env["LOCK_EXPIRE_SECONDS"])
    grace = pod.get("terminationGracePeriodSeconds", 30)  # Kubernetes' default
    assert grace > worst_case, f"terminationGracePeriodSeconds {grace} <= {worst_case}"


def test_every_container_has_requests_and_limits(rendered: Rendered) -> None:
    checked = 0
    for where, template in rendered.pod_templates():
        spec = template["spec"]
        for container in spec["containers"] + spec.get("initContainers", []):
            resources = container.get("resources", {})
            for part in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    assert resource in resources.get(part, {}), (
                        f"{where} container {container['name']}: no {part}.{resource}"
                    )
            checked += 1
    assert checked >= 4  # app, migration, PgBouncer, purge


def test_app_runs_as_the_image_user_on_a_read_only_root(rendered: Rendered) -> None:
    for kind, name, container_name in (
        ("Deployment", APP, APP_CONTAINER),
        ("Job", MIGRATION_JOB, "migrate"),
    ):
        spec = rendered.one(kind, name)["spec"]["template"]["spec"]
        container = rendered.container(kind, name, container_name)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] == 10001  # the Dockerfile's user
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        # gunicorn's heartbeat files and the Prometheus multiprocess directory.
        tmp = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
        assert tmp, f"{kind} {name}: no writable /tmp"
        volume = next(v for v in spec["volumes"] if v["name"] == tmp[0]["name"])
        assert "emptyDir" in volume


def test_app_pods_are_named_and_scraped(rendered: Rendered) -> None:
    template = rendered.one("Deployment", APP)["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert annotations["prometheus.io/port"] == "8000"
    env = rendered.app_env()
    assert env["INSTANCE_NAME"] == "fieldRef:metadata.name"
    for key in ("METRICS_TOKEN", "OPS_TOKEN", "REDIS_URL", "TRUSTED_PROXIES"):
        assert env.get(key), f"the app gets no {key}"
    assert env["TRUSTED_PROXIES"] == "1"  # the ingress controller


def test_migration_goes_to_postgres_directly_and_the_app_through_pgbouncer(
    rendered: Rendered,
) -> None:
    pgbouncer = rendered.one("Service", PGBOUNCER)
    pgbouncer_port = pgbouncer["spec"]["ports"][0]["port"]

    app_url = urlsplit(rendered.app_env()["DATABASE_URL"])
    assert (app_url.hostname, app_url.port) == (PGBOUNCER, pgbouncer_port)

    job = rendered.container("Job", MIGRATION_JOB, "migrate")
    assert job["command"] == ["flask", "--app", "wsgi", "init-db"]
    job_url = urlsplit(rendered.env(job)["DATABASE_URL"])
    assert job_url.hostname != PGBOUNCER
    assert job_url.port != pgbouncer_port
    # Where PgBouncer itself connects: the same PostgreSQL, the same database.
    target = rendered.pgbouncer_database()
    assert (job_url.hostname, job_url.port) == (target["host"], int(target["port"]))
    assert job_url.path.lstrip("/") == app_url.path.lstrip("/") == target["dbname"]


def test_pgbouncer_pools_transactions_on_its_service_port(rendered: Rendered) -> None:
    ini = rendered.pgbouncer_ini()["pgbouncer"]
    assert ini["pool_mode"] == "transaction"
    for setting in ("default_pool_size", "max_client_conn", "max_db_connections"):
        assert int(ini[setting]) > 0, setting
    container = rendered.container("Deployment", PGBOUNCER, PGBOUNCER)
    container_ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    service_port = rendered.one("Service", PGBOUNCER)["spec"]["ports"][0]
    assert int(ini["listen_port"]) == container_ports[service_port["targetPort"]] == 6432
    # The app sets its timeouts per transaction (SET LOCAL); nothing may depend on session
    # state, so connection options are refused rather than dropped, and no server connection
    # carries settings of its own.
    assert "options" not in [p.strip() for p in ini["ignore_startup_parameters"].split(",")]
    assert "connect_query" not in rendered.pgbouncer_database()
    timeout = rendered.app_env()["DB_STATEMENT_TIMEOUT_MS"]
    assert float(timeout) < float(rendered.app_env()["LOCK_EXPIRE_SECONDS"]) * 1000


def test_connection_budget_fits_pgbouncer_and_postgres(rendered: Rendered) -> None:
    env = rendered.app_env()
    per_pod = int(env["WEB_CONCURRENCY"]) * (int(env["DB_POOL_SIZE"]) + int(env["DB_MAX_OVERFLOW"]))
    hpa = rendered.one("HorizontalPodAutoscaler", APP)
    ini = rendered.pgbouncer_ini()["pgbouncer"]
    # Every app connection fits into one PgBouncer, so either can restart.
    assert hpa["spec"]["maxReplicas"] * per_pod <= int(ini["max_client_conn"])
    server = min(int(ini["default_pool_size"]), int(ini["max_db_connections"]))
    replicas = rendered.one("Deployment", PGBOUNCER)["spec"]["replicas"]
    migration_and_admin = 2
    assert (
        replicas * server + migration_and_admin
        <= POSTGRES_MAX_CONNECTIONS - POSTGRES_RESERVED_CONNECTIONS
    )


def test_hpa_and_pdb_select_the_app_pods(rendered: Rendered) -> None:
    deployment = rendered.one("Deployment", APP)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()

    target = rendered.one("HorizontalPodAutoscaler", APP)["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == ("apps/v1", "Deployment", APP)
    # The HPA owns the count: a replicas field would reset it on every apply.
    assert "replicas" not in deployment["spec"]

    others = [
        template["metadata"]["labels"]
        for where, template in rendered.pod_templates()
        if where != f"Deployment/{APP}"
    ]
    assert others, "no other pods to tell apart (PgBouncer, migration)"
    selector = rendered.one("PodDisruptionBudget", APP)["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items(), "the PDB does not select the app's pods"
    for other in others:
        assert not selector.items() <= other.items(), f"the app's PDB also selects {other}"

    pgbouncer = rendered.one("Deployment", PGBOUNCER)["spec"]["template"]["metadata"]["labels"]
    pgbouncer_pdb = rendered.one("PodDisruptionBudget", PGBOUNCER)["spec"]["selector"]
    assert pgbouncer_pdb["matchLabels"].items() <= pgbouncer.items()


def test_ingress_waits_longer_than_a_lock_wait(rendered: Rendered) -> None:
    annotations = rendered.one("Ingress", APP)["metadata"]["annotations"]
    lock_wait = float(rendered.app_env()["LOCK_WAIT_SECONDS"])
    for name in ("proxy-read-timeout", "proxy-send-timeout"):
        timeout = float(annotations[f"nginx.ingress.kubernetes.io/{name}"])
        assert lock_wait < timeout < GUNICORN_TIMEOUT_SECONDS, name


def test_overlay_puts_every_namespaced_object_in_its_namespace() -> None:
    overlay = render("overlay")
    namespaced = [obj for obj in overlay.objects if obj["kind"] not in CLUSTER_SCOPED]
    assert len(namespaced) >= 10
    for obj in namespaced:
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        assert obj["metadata"].get("namespace") == OVERLAY_NAMESPACE, where
    assert [ns["metadata"]["name"] for ns in overlay.all("Namespace")] == [OVERLAY_NAMESPACE]


def test_overlay_replaces_every_placeholder_secret() -> None:
    def secret(name: str) -> dict[str, str]:
        secrets = render(name).all("Secret")
        assert len(secrets) == 1, f"{name}: one Secret expected"
        return render(name).data("Secret", secrets[0]["metadata"]["name"])

    base, overlay = secret("base"), secret("overlay")
    assert set(overlay) == set(base), "the overlay's Secret must have the base's keys"
    placeholders = {key for key, value in base.items() if "CHANGE-ME" in value}
    assert placeholders >= {"DATABASE_URL", "DATABASE_URL_DIRECT", "METRICS_TOKEN", "OPS_TOKEN"}
    assert not [key for key, value in overlay.items() if "CHANGE-ME" in value]


def test_purge_runs_both_commands_on_a_schedule_through_pgbouncer(rendered: Rendered) -> None:
    cron = rendered.one("CronJob", "booking-service-purge")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    [container] = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    command = " ".join(container["command"])
    assert "purge-tokens" in command and "purge-idempotency-keys" in command
    assert "purge-seat-intents" in command
    assert rendered.env(container)["DATABASE_URL"] == rendered.app_env()["DATABASE_URL"]
