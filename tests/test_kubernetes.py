"""deploy/kubernetes/: the kustomize base and the ha overlay, rendered and checked.

The manifests are rendered by a small helper that implements only what they use
(`resources` plus strategic-merge `patches` matched by kind/name), validated against the
Kubernetes OpenAPI schemas with `kubernetes-validate`, and the embedded config.toml is run
through `python -m syncwatch validate` with its secret files provided as temp files.
"""

from __future__ import annotations

import copy
import importlib
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from syncwatch.simulator import rsa_keypair
from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parent.parent
KUBE = ROOT / "deploy" / "kubernetes"
BASE = KUBE / "base"
RULES_FILE = ROOT / "deploy" / "prometheus" / "syncwatch-rules.yml"

KUBERNETES_VERSION = "1.32.0"  # fixed: the schemas the manifests must satisfy
CONFIG_DIR = "/etc/syncwatch"
SECRETS_DIR = "/run/secrets/syncwatch"
STATE_DIR = "/var/lib/syncwatch"
UID = 10001
# Custom resources of the Prometheus Operator: kubernetes-validate only ships the core API
# schemas, so these are checked field by field in test_custom_resources_have_required_fields.
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}

# (overlay directory, replicas, shard_count): the base runs one replica per shard, the ha
# overlay two per shard.
VARIANTS = [
    pytest.param(BASE, 2, 2, id="base"),
    pytest.param(KUBE / "overlays" / "ha", 4, 2, id="ha"),
]

Obj = dict[str, Any]


def _require(module: str, package: str) -> ModuleType:
    """Import `module`, or skip loudly (fail under CI) when its PyPI package is missing."""
    try:
        return importlib.import_module(module)
    except ImportError:
        message = f"PyPI package {package!r} is not installed - kubernetes manifests NOT VALIDATED"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


# --- a minimal kustomize ------------------------------------------------------------------


def _load_all(path: Path) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def _merge(base: Obj, patch: Obj) -> None:
    """Strategic merge, as far as our patches need: maps merge, lists of named maps merge
    by `name` (containers, env, volumes), anything else is replaced."""
    for key, value in patch.items():
        current = base.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            _merge(current, value)
        elif (
            isinstance(value, list)
            and isinstance(current, list)
            and all(isinstance(item, dict) and "name" in item for item in value + current)
        ):
            by_name = {item["name"]: item for item in current}
            for item in value:
                if item["name"] in by_name:
                    _merge(by_name[item["name"]], item)
                else:
                    current.append(copy.deepcopy(item))
        else:
            base[key] = copy.deepcopy(value)


def render(directory: Path) -> list[Obj]:
    kustomization = _load_all(directory / "kustomization.yaml")[0]
    unsupported = set(kustomization) - {"apiVersion", "kind", "resources", "patches"}
    assert not unsupported, f"render() does not implement kustomization keys {unsupported}"
    objects: list[Obj] = []
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        objects += render(path) if path.is_dir() else _load_all(path)
    for patch_ref in kustomization.get("patches", []):
        assert set(patch_ref) == {"path"}, f"only `patches: - path:` is implemented: {patch_ref}"
        for patch in _load_all(directory / patch_ref["path"]):
            _merge(find(objects, patch["kind"], patch["metadata"]["name"]), patch)
    return objects


def find(objects: list[Obj], kind: str, name: str | None = None) -> Obj:
    matches = [
        o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def container(objects: list[Obj]) -> Obj:
    pod = find(objects, "StatefulSet", "syncwatch")["spec"]["template"]["spec"]
    (main,) = pod["containers"]
    assert isinstance(main, dict)
    return main


def env_of(objects: list[Obj]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container(objects)["env"]}


def config_text(objects: list[Obj]) -> str:
    text = find(objects, "ConfigMap", "syncwatch")["data"]["config.toml"]
    assert isinstance(text, str)
    return text


def _file_keys(node: object, where: str = "") -> dict[str, str]:
    """Every `*_file` key of a parsed TOML document, by dotted path."""
    found: dict[str, str] = {}
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{where}.{key}" if where else key
            if key.endswith("_file") and isinstance(value, str) and value:
                found[path] = value
            found.update(_file_keys(value, path))
    elif isinstance(node, list):
        for i, item in enumerate(node):
            found.update(_file_keys(item, f"{where}[{i}]"))
    return found


def example_secret() -> Obj:
    (secret,) = _load_all(BASE / "secret.example.yaml")
    return secret


# --- rendering ----------------------------------------------------------------------------


@pytest.mark.parametrize(("directory", "replicas", "shards"), VARIANTS)
def test_renders_every_object_once(directory: Path, replicas: int, shards: int) -> None:
    objects = render(directory)
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in objects)
    assert kinds == sorted(
        [
            ("ConfigMap", "syncwatch"),
            ("StatefulSet", "syncwatch"),
            ("Service", "syncwatch-headless"),
            ("Service", "syncwatch-metrics"),
            ("PodDisruptionBudget", "syncwatch"),
            ("NetworkPolicy", "syncwatch"),
            ("ServiceMonitor", "syncwatch"),
            ("PrometheusRule", "syncwatch"),
        ]
    )
    # The example Secret holds placeholders: it must never be applied by `kubectl apply -k`.
    assert all(o["kind"] != "Secret" for o in objects)


# kustomize v2 (kubectl <= 1.20) reads neither a directory in `resources` nor `patches:`,
# which the ha overlay uses; kubectl 1.21 bundles kustomize v4.
KUBECTL_INSTALL = (
    "kubectl >= 1.21, which bundles kustomize >= v3; Debian bookworm's kubernetes-client "
    "is kubectl 1.20 (kustomize v2.0.3) and cannot render the ha overlay"
)


def _kubectl_with_kustomize_v3() -> str:
    """kubectl, new enough to render our overlays; skip (fail under CI=true) without it."""
    kubectl = require_tool("kubectl", KUBECTL_INSTALL)
    result = subprocess.run(
        [kubectl, "version", "--client", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    client = json.loads(result.stdout)["clientVersion"]
    version = (int(client["major"]), int(re.sub(r"\D.*", "", client["minor"])))
    if version < (1, 21):
        message = f"{kubectl} is kubectl {client['gitVersion']}, too old ({KUBECTL_INSTALL})"
        if os.environ.get("CI"):
            pytest.fail(f"{message} - NOT TESTED; CI must have it")
        pytest.skip(f"{message} - NOT TESTED")
    return kubectl


@pytest.mark.parametrize(("directory", "replicas", "shards"), VARIANTS)
def test_render_helper_agrees_with_kubectl_kustomize(
    directory: Path, replicas: int, shards: int
) -> None:
    kubectl = _kubectl_with_kustomize_v3()
    result = subprocess.run(
        [kubectl, "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr

    def key(o: Obj) -> tuple[str, str]:
        return o["kind"], o["metadata"]["name"]

    expected = sorted((_by_name(o) for o in yaml.safe_load_all(result.stdout) if o), key=key)
    assert sorted((_by_name(o) for o in render(directory)), key=key) == expected


def _by_name(node: Any) -> Any:
    """Lists of named maps sorted by name: kustomize moves patched entries to the front."""
    if isinstance(node, dict):
        return {k: _by_name(v) for k, v in node.items()}
    if isinstance(node, list):
        items = [_by_name(i) for i in node]
        if all(isinstance(i, dict) and "name" in i for i in items):
            items.sort(key=lambda i: str(i["name"]))
        return items
    return node


# --- schemas ------------------------------------------------------------------------------


@pytest.mark.parametrize(("directory", "replicas", "shards"), VARIANTS)
def test_objects_pass_kubernetes_schema(directory: Path, replicas: int, shards: int) -> None:
    kv = _require("kubernetes_validate", "kubernetes-validate")
    skipped = set()
    for obj in render(directory):
        if obj["kind"] in CRD_KINDS:
            skipped.add(obj["kind"])  # no schema shipped for CRDs: checked by hand below
            continue
        try:
            kv.validate(obj, KUBERNETES_VERSION, strict=True)
        except kv.ValidationError as exc:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {exc}")
    assert skipped == CRD_KINDS


def test_example_secret_passes_schema_and_only_holds_placeholders() -> None:
    kv = _require("kubernetes_validate", "kubernetes-validate")
    secret = example_secret()
    kv.validate(secret, KUBERNETES_VERSION, strict=True)
    assert secret["metadata"]["name"] == "syncwatch"
    assert secret["stringData"]
    for name, value in secret["stringData"].items():
        assert "replace-me" in value, f"secret.example.yaml {name} is not a placeholder"
    listed = _load_all(BASE / "kustomization.yaml")[0]["resources"]
    assert "secret.example.yaml" not in listed


def test_custom_resources_have_required_fields() -> None:
    objects = render(BASE)
    monitor = find(objects, "ServiceMonitor", "syncwatch")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    service = find(objects, "Service", "syncwatch-metrics")
    labels = service["metadata"]["labels"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items(), "ServiceMonitor does not select the Service"
    headless = find(objects, "Service", "syncwatch-headless")
    assert not selector.items() <= headless["metadata"]["labels"].items(), "scraped twice"
    port_names = {p["name"] for p in service["spec"]["ports"]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in port_names
    assert endpoint["path"] == "/metrics"
    # job="syncwatch", which the alert rules select on.
    assert labels[monitor["spec"]["jobLabel"]] == "syncwatch"

    rule = find(objects, "PrometheusRule", "syncwatch")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    groups = rule["spec"]["groups"]
    assert groups
    assert len({g["name"] for g in groups}) == len(groups)
    exprs: dict[str, str] = {}
    for group in groups:
        assert group["rules"], group["name"]
        for r in group["rules"]:
            assert r["alert"], r
            assert r["expr"], r
            assert r["labels"]["severity"] in {"warning", "critical"}, r
            assert r["annotations"]["summary"], r
            assert r["annotations"]["description"], r
            exprs[r["alert"]] = str(r["expr"]).strip()
    # The PrometheusRule embeds deploy/prometheus/syncwatch-rules.yml: same expressions.
    if RULES_FILE.exists():
        source = {
            r["alert"]: str(r["expr"]).strip()
            for g in yaml.safe_load(RULES_FILE.read_text(encoding="utf-8"))["groups"]
            for r in g["rules"]
            if "alert" in r
        }
        for alert, expr in exprs.items():
            if alert in source:
                assert expr == source[alert], f"{alert} drifted from {RULES_FILE.name}"


# --- the StatefulSet ----------------------------------------------------------------------


@pytest.mark.parametrize(("directory", "replicas", "shards"), VARIANTS)
def test_statefulset_shards_state_config_and_secrets(
    directory: Path, replicas: int, shards: int
) -> None:
    objects = render(directory)
    sts = find(objects, "StatefulSet", "syncwatch")
    spec = sts["spec"]
    assert spec["replicas"] == replicas
    assert spec["podManagementPolicy"] == "Parallel"
    headless = find(objects, "Service", spec["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    pod = spec["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 15
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()

    env = env_of(objects)
    assert env["SYNCWATCH_DAEMON__SHARD"] == "auto"
    assert int(env["SYNCWATCH_DAEMON__SHARD_COUNT"]) == shards
    assert replicas % shards == 0
    assert env["STATE_DIRECTORY"] == STATE_DIR

    main = container(objects)
    mounts = {m["name"]: m for m in main["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert mounts["config"]["mountPath"] == CONFIG_DIR
    assert volumes["config"]["configMap"]["name"] == "syncwatch"
    assert main["args"] == ["run", "--config", f"{CONFIG_DIR}/config.toml"]
    assert mounts["secrets"]["mountPath"] == SECRETS_DIR
    assert volumes["secrets"]["secret"]["secretName"] == example_secret()["metadata"]["name"]
    (claim,) = spec["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    assert mounts[claim["metadata"]["name"]]["mountPath"] == STATE_DIR
    assert {m["name"] for m in main["volumeMounts"]} <= set(volumes) | {claim["metadata"]["name"]}

    # Every *_file of the config names a key of the Secret, under its mount.
    files = _file_keys(tomllib.loads(config_text(objects)))
    assert files
    for key, path in files.items():
        folder, _, name = path.rpartition("/")
        assert folder == SECRETS_DIR, f"{key} = {path!r} is not under {SECRETS_DIR}"
        assert name in example_secret()["stringData"], f"{key}: no Secret key {name!r}"


@pytest.mark.parametrize(("directory", "replicas", "shards"), VARIANTS)
def test_container_is_locked_down(directory: Path, replicas: int, shards: int) -> None:
    objects = render(directory)
    pod = find(objects, "StatefulSet", "syncwatch")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == UID
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container(objects)["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] == UID
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert "add" not in sc["capabilities"]
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}


@pytest.mark.parametrize(("directory", "replicas", "shards"), VARIANTS)
def test_probes_and_resources(directory: Path, replicas: int, shards: int) -> None:
    main = container(render(directory))
    ports = {p["name"]: p["containerPort"] for p in main["ports"]}
    assert ports == {"metrics": 9875}
    assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(main["resources"][kind]), kind


def test_services_budget_and_network_policy() -> None:
    objects = render(BASE)
    pod_labels = find(objects, "StatefulSet", "syncwatch")["spec"]["template"]["metadata"]["labels"]
    metrics = find(objects, "Service", "syncwatch-metrics")
    assert metrics["spec"]["ports"] == [
        {"name": "metrics", "port": 9875, "targetPort": "metrics", "protocol": "TCP"}
    ]
    for obj in (metrics, find(objects, "Service", "syncwatch-headless")):
        assert obj["spec"]["selector"].items() <= pod_labels.items()

    pdb = find(objects, "PodDisruptionBudget", "syncwatch")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()

    policy = find(objects, "NetworkPolicy", "syncwatch")["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]
    (ingress,) = policy["ingress"]
    assert ingress["ports"] == [{"port": 9875, "protocol": "TCP"}]
    (source,) = ingress["from"]
    assert source == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    }
    allowed = {(p["port"], p["protocol"]) for rule in policy["egress"] for p in rule["ports"]}
    assert allowed == {(53, "UDP"), (53, "TCP"), (443, "TCP"), (9093, "TCP")}
    (to_alertmanager,) = [r for r in policy["egress"] if r["ports"][0]["port"] == 9093]
    (peer,) = to_alertmanager["to"]
    assert peer["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "alertmanager"}


# --- the embedded config ------------------------------------------------------------------


def _config_with_temp_secrets(objects: list[Obj], tmp_path: Path) -> Path:
    """config.toml with every *_file under the Secret mount pointed at a temp file holding
    the example Secret's value (a real RSA key for *.pem: the config loads the key)."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    private_pem, _ = rsa_keypair()
    for name, value in example_secret()["stringData"].items():
        data = private_pem if name.endswith(".pem") else value.encode()
        (secrets / name).write_bytes(data)
    text = config_text(objects)
    assert SECRETS_DIR in text
    config = tmp_path / "config.toml"
    config.write_text(text.replace(f"{SECRETS_DIR}/", f"{secrets}/"), encoding="utf-8")
    return config


def _pod_env(objects: list[Obj], tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCWATCH_")}
    env.pop("CREDENTIALS_DIRECTORY", None)
    env.update(env_of(objects))
    state = tmp_path / "state"
    state.mkdir()
    env["STATE_DIRECTORY"] = str(state)
    return env


@pytest.mark.parametrize(("directory", "replicas", "shards"), VARIANTS)
def test_embedded_config_validates(
    directory: Path, replicas: int, shards: int, tmp_path: Path
) -> None:
    objects = render(directory)
    config = _config_with_temp_secrets(objects, tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "syncwatch", "validate", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env=_pod_env(objects, tmp_path),
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "listen" in result.stdout


@pytest.mark.parametrize(("directory", "replicas", "shards"), VARIANTS)
def test_pod_ordinals_cover_every_shard_evenly(
    directory: Path, replicas: int, shards: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from syncwatch.daemon import shard_of
    from syncwatch.settings import load_config

    objects = render(directory)
    config_path = _config_with_temp_secrets(objects, tmp_path)
    for name in list(os.environ):
        if name.startswith("SYNCWATCH_"):
            monkeypatch.delenv(name)
    for name, value in _pod_env(objects, tmp_path).items():
        if name.startswith("SYNCWATCH_") or name == "STATE_DIRECTORY":
            monkeypatch.setenv(name, value)
    daemon = load_config(config_path).daemon
    owners: dict[int, list[int]] = {}
    for ordinal in range(replicas):
        index, count = shard_of(daemon, f"syncwatch-{ordinal}")
        assert count == shards
        owners.setdefault(index, []).append(ordinal)
    assert sorted(owners) == list(range(shards))
    assert all(len(pods) == replicas // shards for pods in owners.values()), owners


def test_ha_overlay_alerts_through_alertmanager() -> None:
    objects = render(KUBE / "overlays" / "ha")
    notifiers = tomllib.loads(config_text(objects))["notifiers"]
    (am,) = [n for n in notifiers if n["type"] == "alertmanager"]
    assert len(am["urls"]) >= 2, "every Alertmanager of the HA cluster"
    assert all(url.endswith(":9093") for url in am["urls"])
    # Everything else of the base config is kept.
    base_notifiers = tomllib.loads(config_text(render(BASE)))["notifiers"]
    assert [n for n in notifiers if n["type"] != "alertmanager"] == base_notifiers
    assert all(n["type"] != "alertmanager" for n in base_notifiers)
