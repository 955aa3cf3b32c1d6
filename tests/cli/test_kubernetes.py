"""The Kubernetes manifests stay in step with the command line and with the cluster rule.

No cluster is needed: every manifest is parsed as YAML, every container's arguments (with
the environment Kubernetes would substitute, for every pod) are parsed by the real
``meterwax`` CLI, every ``METERWAX_*`` setting a container receives is one its command
reads, and the main flow's StatefulSet keeps the deployment rule: one process per pod, the
pod ordinal as process id, one address per replica through the headless Service, one volume
per pod for its recovery store, the lake on object storage with credentials from a Secret.
"""

from __future__ import annotations

import re
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from tests.cli.test_compose import parse

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "deploy" / "kubernetes"


def documents() -> list[dict[str, Any]]:
    """Every resource of the kustomization, in its order."""
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    found: list[dict[str, Any]] = []
    for name in kustomization["resources"]:
        found += [doc for doc in yaml.safe_load_all((MANIFESTS / name).read_text()) if doc]
    return found


def resource(kind: str, name: str) -> dict[str, Any]:
    (match,) = [d for d in documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    return match


def workloads() -> list[dict[str, Any]]:
    return [d for d in documents() if d["kind"] in {"StatefulSet", "Deployment", "Job"}]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def environment(container: dict[str, Any], pod_index: int) -> dict[str, str]:
    """What the container's environment holds in pod ``pod_index`` (ConfigMaps, Secrets,
    literal values, the pod index label)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env |= resource("ConfigMap", source["configMapRef"]["name"])["data"]
        if "secretRef" in source:
            env |= resource("Secret", source["secretRef"]["name"])["stringData"]
    for variable in container.get("env", []):
        if "value" in variable:
            env[variable["name"]] = variable["value"]
        else:
            field = variable["valueFrom"]["fieldRef"]["fieldPath"]
            assert field == "metadata.labels['apps.kubernetes.io/pod-index']", field
            env[variable["name"]] = str(pod_index)
    return env


def arguments(container: dict[str, Any], env: dict[str, str]) -> list[str]:
    """The container's arguments with ``$(VAR)`` replaced as Kubernetes does."""
    return [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], arg) for arg in container["args"]]


@cache
def settings_read_by(*command: str) -> frozenset[str]:
    """The METERWAX_* variables a command reads, as its --help lists them."""
    shown = subprocess.run(
        [sys.executable, "-m", "meterwax", *command, "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return frozenset(re.findall(r"METERWAX_[A-Z_]+", shown))


def replicas(workload: dict[str, Any]) -> int:
    return workload["spec"].get("replicas", 1) if workload["kind"] != "Job" else 1


def test_every_container_command_is_a_valid_meterwax_command_line_in_every_pod():
    seen = set()
    for workload in workloads():
        for container in pod_spec(workload)["containers"]:
            assert container["image"].startswith("meterwax:"), container["image"]
            for pod_index in range(replicas(workload)):
                env = environment(container, pod_index)
                context = parse(arguments(container, env))
                command = [c.info_name for c in _chain(context)][1:]
                seen.add(" ".join(command))
                given = {name for name in env if name.startswith("METERWAX_")}
                unread = given - settings_read_by(*command)
                if command == ["run"]:  # the main flow reads every setting it is given
                    assert not unread, unread
    assert seen == {"run", "corrections", "heartbeat", "topics create"}


def test_every_meterwax_setting_in_the_config_map_is_read_by_some_command():
    data = resource("ConfigMap", "meterwax")["data"]
    read = (
        settings_read_by("run")
        | settings_read_by("corrections")
        | settings_read_by("heartbeat")
        | settings_read_by("topics", "create")
    )
    assert {name for name in data if name.startswith("METERWAX_")} <= read


def test_the_main_flow_is_one_process_per_pod_with_its_own_recovery_store():
    service = resource("Service", "meterwax")
    statefulset = resource("StatefulSet", "meterwax")
    assert service["spec"]["clusterIP"] == "None"  # headless: a DNS name per pod
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"]
    assert statefulset["spec"]["podManagementPolicy"] == "Parallel"
    pod_labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (container,) = pod_spec(statefulset)["containers"]
    (port,) = service["spec"]["ports"]
    count = replicas(statefulset)
    assert count >= 2

    for pod_index in range(count):
        params = parse(arguments(container, environment(container, pod_index))).params
        # The pod ordinal is the process id, and the address list names every pod in order.
        assert params["process_id"] == pod_index
        addresses = params["addresses"].split(";")
        assert len(addresses) == count
        name, service_name = statefulset["metadata"]["name"], service["metadata"]["name"]
        assert addresses == [f"{name}-{k}.{service_name}:{port['port']}" for k in range(count)]
        # Its own store: on the volume each pod gets from the claim template.
        (claim,) = statefulset["spec"]["volumeClaimTemplates"]
        (mount,) = container["volumeMounts"]
        assert mount["name"] == claim["metadata"]["name"]
        assert Path(params["recovery_dir"]).is_relative_to(mount["mountPath"])
        assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert {p["containerPort"] for p in container["ports"]} >= {port["port"]}


def test_the_lake_is_on_object_storage_with_credentials_from_a_secret():
    config = resource("ConfigMap", "meterwax")["data"]
    assert config["METERWAX_LAKE"].startswith("s3://")
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(config)
    secret = resource("Secret", "meterwax-lake-credentials")
    assert set(secret["stringData"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    for workload in workloads():
        for container in pod_spec(workload)["containers"]:
            command = container["args"][0]
            refs = {
                s["secretRef"]["name"] for s in container.get("envFrom", []) if "secretRef" in s
            }
            if command in {"run", "corrections"}:  # the two that open the lake
                assert refs == {"meterwax-lake-credentials"}, command
            literal = {variable["name"] for variable in container.get("env", [])}
            assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & literal


def test_the_correction_flow_is_its_own_single_pod_deployment():
    corrections = resource("Deployment", "meterwax-corrections")
    assert replicas(corrections) == 1
    # A rolling update would run an old and a new correction flow side by side.
    assert corrections["spec"]["strategy"]["type"] == "Recreate"
    (container,) = pod_spec(corrections)["containers"]
    assert container["args"][0] == "corrections"


def test_every_container_runs_as_the_images_unprivileged_user():
    dockerfile = (REPO / "Dockerfile").read_text()
    uid = re.search(r"useradd .*--uid (\d+) meterwax", dockerfile)
    assert uid
    for workload in workloads():
        context = pod_spec(workload)["securityContext"]
        assert context["runAsNonRoot"] is True
        assert context["runAsUser"] == int(uid.group(1))
    statefulset = resource("StatefulSet", "meterwax")
    assert pod_spec(statefulset)["securityContext"]["fsGroup"] == int(uid.group(1))


def _chain(context) -> list:
    """The contexts from the root command down to ``context``."""
    chain = []
    while context is not None:
        chain.append(context)
        context = context.parent
    return list(reversed(chain))
