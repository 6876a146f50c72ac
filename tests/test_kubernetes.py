"""deploy/kubernetes/: the kustomize base and the ha and ha-postgres overlays, rendered and
checked.

The manifests are rendered by a small helper that implements only what they use
(`resources` plus strategic-merge `patches` matched by kind/name, with `$patch: delete` and
null), validated against the Kubernetes OpenAPI schemas with `kubernetes-validate`, and the
embedded config.toml is run through `python -m syncwatch validate` with its secret files
provided as temp files.
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
from urllib.parse import parse_qsl, urlsplit

import pytest
import yaml

from syncwatch.simulator import rsa_keypair
from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parent.parent
KUBE = ROOT / "deploy" / "kubernetes"
BASE = KUBE / "base"
HA_POSTGRES = KUBE / "overlays" / "ha-postgres"
RULES_FILE = ROOT / "deploy" / "prometheus" / "syncwatch-rules.yml"

KUBERNETES_VERSION = "1.32.0"  # fixed: the schemas the manifests must satisfy
CONFIG_DIR = "/etc/syncwatch"
SECRETS_DIR = "/run/secrets/syncwatch"
STATE_DIR = "/var/lib/syncwatch"
UID = 10001
STATE_URL_DIR = "/run/secrets/syncwatch-state"  # ha-postgres: the DSN's Secret
# Custom resources of the Prometheus Operator: kubernetes-validate only ships the core API
# schemas, so these are checked field by field in test_custom_resources_have_required_fields.
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
# The example Secrets (placeholders, never in `resources`), one per overlay that needs one.
EXAMPLE_SECRETS = [BASE / "secret.example.yaml", HA_POSTGRES / "secret.example.yaml"]

# (overlay directory, replicas, shard_count): the base runs one replica per shard, the ha
# and ha-postgres overlays two per shard.
VARIANTS = [
    pytest.param(BASE, 2, 2, id="base"),
    pytest.param(KUBE / "overlays" / "ha", 4, 2, id="ha"),
    pytest.param(HA_POSTGRES, 4, 2, id="ha-postgres"),
]
# The variants whose state is the SQLite file on each pod's PersistentVolume.
SQLITE_VARIANTS = {BASE, KUBE / "overlays" / "ha"}

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
    by `name` (containers, env, volumes, volumeMounts), an entry `$patch: delete` removes
    its namesake, null removes the key, anything else is replaced."""
    for key, value in patch.items():
        current = base.get(key)
        if value is None:
            assert key in base, f"the patch deletes {key!r}, which is not there"
            del base[key]
        elif isinstance(value, dict) and isinstance(current, dict):
            _merge(current, value)
        elif (
            isinstance(value, list)
            and isinstance(current, list)
            and all(isinstance(item, dict) and "name" in item for item in value + current)
        ):
            by_name = {item["name"]: item for item in current}
            for item in value:
                if item.get("$patch") == "delete":
                    assert item["name"] in by_name, f"the patch deletes {item['name']!r}: absent"
                    current.remove(by_name.pop(item["name"]))
                elif item["name"] in by_name:
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


def example_secret(path: Path = BASE / "secret.example.yaml") -> Obj:
    (secret,) = _load_all(path)
    return secret


def example_secrets() -> dict[str, Obj]:
    """The example Secrets by name."""
    return {s["metadata"]["name"]: s for s in map(example_secret, EXAMPLE_SECRETS)}


def secret_files(objects: list[Obj]) -> dict[str, dict[str, str]]:
    """{mount path: {file name: example value}} for every Secret the container mounts,
    whole (`secret:`) or by `items` (`projected:`); sources marked optional (made by an
    operator, e.g. CloudNativePG's CA) have no example and are left out."""
    pod = find(objects, "StatefulSet", "syncwatch")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    examples = example_secrets()
    found: dict[str, dict[str, str]] = {}
    for mount in container(objects)["volumeMounts"]:
        volume = volumes.get(mount["name"], {})
        if "secret" in volume:
            sources = [{"name": volume["secret"]["secretName"]}]
        else:
            projected = volume.get("projected", {}).get("sources", [])
            sources = [s["secret"] for s in projected if "secret" in s]
        files: dict[str, str] = {}
        for source in sources:
            if source.get("optional"):
                continue
            data = examples[source["name"]]["stringData"]
            items = source.get("items") or [{"key": k, "path": k} for k in data]
            for item in items:
                assert item["key"] in data, f"{source['name']} has no key {item['key']!r}"
                files[item["path"]] = data[item["key"]]
        if sources:
            assert mount.get("readOnly") is True, f"{mount['mountPath']} is writable"
            found[mount["mountPath"]] = files
    return found


# --- rendering ----------------------------------------------------------------------------


@pytest.mark.parametrize(("directory", "replicas", "shards"), VARIANTS)
def test_renders_every_object_once(directory: Path, replicas: int, shards: int) -> None:
    objects = render(directory)
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in objects)
    extra = [("NetworkPolicy", "syncwatch-postgres")] if directory == HA_POSTGRES else []
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
            *extra,
        ]
    )
    # The example Secrets hold placeholders: they must never be applied by `kubectl apply -k`;
    # nor the CloudNativePG Cluster, which needs the operator's CRDs.
    assert all(o["kind"] not in {"Secret", "Cluster"} for o in objects)


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


@pytest.mark.parametrize("path", EXAMPLE_SECRETS, ids=lambda p: p.parent.name)
def test_example_secret_passes_schema_and_only_holds_placeholders(path: Path) -> None:
    kv = _require("kubernetes_validate", "kubernetes-validate")
    secret = example_secret(path)
    kv.validate(secret, KUBERNETES_VERSION, strict=True)
    assert secret["stringData"]
    for name, value in secret["stringData"].items():
        assert "replace-me" in value, f"{path.name} {name} is not a placeholder"
    listed = _load_all(path.parent / "kustomization.yaml")[0]["resources"]
    assert path.name not in listed


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

    main = container(objects)
    mounts = {m["name"]: m for m in main["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert mounts["config"]["mountPath"] == CONFIG_DIR
    assert volumes["config"]["configMap"]["name"] == "syncwatch"
    assert main["args"] == ["run", "--config", f"{CONFIG_DIR}/config.toml"]
    assert mounts["secrets"]["mountPath"] == SECRETS_DIR
    assert volumes["secrets"]["secret"]["secretName"] == example_secret()["metadata"]["name"]
    if directory in SQLITE_VARIANTS:
        assert env["STATE_DIRECTORY"] == STATE_DIR
        (claim,) = spec["volumeClaimTemplates"]
        assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
        assert mounts[claim["metadata"]["name"]]["mountPath"] == STATE_DIR
        claims = {claim["metadata"]["name"]}
    else:  # the state is in PostgreSQL: no volume of its own, nothing under STATE_DIR
        assert "STATE_DIRECTORY" not in env
        assert "volumeClaimTemplates" not in spec
        assert all(not m["mountPath"].startswith(STATE_DIR) for m in main["volumeMounts"])
        claims = set()
    assert {m["name"] for m in main["volumeMounts"]} <= set(volumes) | claims

    # Every *_file of the config names a file of a Secret the container mounts read-only.
    mounted = secret_files(objects)
    files = _file_keys(tomllib.loads(config_text(objects)))
    assert files
    for key, path in files.items():
        folder, _, name = path.rpartition("/")
        assert folder in mounted, f"{key} = {path!r} is not under a Secret's mount"
        assert name in mounted[folder], f"{key}: no Secret file {name!r} in {folder}"


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
    """config.toml with every *_file under a Secret's mount pointed at a temp file holding
    the example Secret's value (a real RSA key for *.pem: the config loads the key)."""
    private_pem, _ = rsa_keypair()
    text = config_text(objects)
    assert SECRETS_DIR in text
    for i, (folder, files) in enumerate(sorted(secret_files(objects).items())):
        secrets = tmp_path / f"secrets-{i}"
        secrets.mkdir()
        for name, value in files.items():
            data = private_pem if name.endswith(".pem") else value.encode()
            (secrets / name).write_bytes(data)
        text = text.replace(f'"{folder}/', f'"{secrets}/')
    config = tmp_path / "config.toml"
    config.write_text(text, encoding="utf-8")
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
    # No secret value is echoed, the DSN (and its password) included.
    for files in secret_files(objects).values():
        for value in files.values():
            assert value.strip() not in result.stdout + result.stderr


@pytest.mark.parametrize(("directory", "replicas", "shards"), VARIANTS)
def test_pod_ordinals_cover_every_shard_evenly(
    directory: Path, replicas: int, shards: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = render(directory)
    owners = _shard_owners(objects, tmp_path, monkeypatch)
    assert sorted(owners) == list(range(shards))
    assert all(len(pods) == replicas // shards for pods in owners.values()), owners


def _shard_owners(
    objects: list[Obj], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[int, list[int]]:
    """{shard index: pod ordinals} as each pod derives its shard (`shard = "auto"` and the
    pod name syncwatch-<ordinal>), from the rendered config and environment."""
    from syncwatch.daemon import shard_of
    from syncwatch.settings import load_config

    config_path = _config_with_temp_secrets(objects, tmp_path)
    for name in list(os.environ):
        if name.startswith("SYNCWATCH_"):
            monkeypatch.delenv(name)
    for name, value in _pod_env(objects, tmp_path).items():
        if name.startswith("SYNCWATCH_") or name == "STATE_DIRECTORY":
            monkeypatch.setenv(name, value)
    daemon = load_config(config_path).daemon
    owners: dict[int, list[int]] = {}
    env = env_of(objects)
    for ordinal in range(find(objects, "StatefulSet", "syncwatch")["spec"]["replicas"]):
        index, count = shard_of(daemon, f"syncwatch-{ordinal}")
        assert count == int(env["SYNCWATCH_DAEMON__SHARD_COUNT"])
        owners.setdefault(index, []).append(ordinal)
    return owners


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


# --- the ha-postgres overlay --------------------------------------------------------------

DSN = re.compile(r"postgres(ql)?://", re.IGNORECASE)
CNPG_CLUSTER = HA_POSTGRES / "cnpg-cluster.yaml"


def _strings(node: object) -> list[str]:
    if isinstance(node, dict):
        return [s for key, value in node.items() for s in [str(key), *_strings(value)]]
    if isinstance(node, list):
        return [s for item in node for s in _strings(item)]
    return [str(node)]


def test_ha_postgres_two_pods_per_shard_share_the_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = render(HA_POSTGRES)
    sts = find(objects, "StatefulSet", "syncwatch")
    shards = int(env_of(objects)["SYNCWATCH_DAEMON__SHARD_COUNT"])
    assert sts["spec"]["replicas"] == 2 * shards
    # Each pod derives its shard from its ordinal as in the base; both pods of a shard get
    # the same index (so they compete for that shard's leadership), and every shard has two.
    owners = _shard_owners(objects, tmp_path, monkeypatch)
    assert sorted(owners) == list(range(shards))
    assert all(len(pods) == 2 for pods in owners.values()), owners

    daemon = tomllib.loads(config_text(objects))["daemon"]
    assert daemon["state_url_file"] == f"{STATE_URL_DIR}/state-url"
    assert "state_url" not in daemon
    assert "state_path" not in daemon
    # The rest of the config is the base's: the same sources and notifiers.
    base = tomllib.loads(config_text(render(BASE)))
    ours = tomllib.loads(config_text(objects))
    assert ours["daemon"] | {"state_path": base["daemon"]["state_path"]} == base["daemon"] | {
        "state_url_file": daemon["state_url_file"]
    }
    assert {k: v for k, v in ours.items() if k != "daemon"} == {
        k: v for k, v in base.items() if k != "daemon"
    }


def test_ha_postgres_dsn_is_a_read_only_secret_file_and_nowhere_else() -> None:
    objects = render(HA_POSTGRES)
    pod = find(objects, "StatefulSet", "syncwatch")["spec"]["template"]["spec"]
    main = container(objects)
    (mount,) = [m for m in main["volumeMounts"] if m["mountPath"] == STATE_URL_DIR]
    assert mount["readOnly"] is True
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    (required,) = [
        s["secret"] for s in volume["projected"]["sources"] if not s["secret"].get("optional")
    ]
    assert required["name"] == "syncwatch-state-url"
    assert required["items"] == [{"key": "state-url", "path": "state-url"}]
    assert volume["projected"]["defaultMode"] == 0o440
    # The CA source projects the certificate only, never the CA's private key.
    for source in volume["projected"]["sources"]:
        assert all(not item["key"].endswith(".key") for item in source["secret"]["items"])
    dsn = example_secrets()["syncwatch-state-url"]["stringData"]["state-url"]
    assert DSN.match(dsn)
    assert secret_files(objects)[STATE_URL_DIR] == {"state-url": dsn}

    # No DSN in the environment, the ConfigMap or any other rendered object; no env var
    # names the state URL or takes a value from the state Secret.
    assert not any(DSN.search(s) for o in objects for s in _strings(o))
    for variable in main["env"]:
        assert "STATE_URL" not in variable["name"], variable
        assert set(variable) == {"name", "value"}, variable
    assert "envFrom" not in main
    assert dsn not in config_text(objects)


def test_ha_postgres_budget_keeps_a_pod_of_every_shard() -> None:
    objects = render(HA_POSTGRES)
    sts = find(objects, "StatefulSet", "syncwatch")
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    per_shard = sts["spec"]["replicas"] // int(env_of(objects)["SYNCWATCH_DAEMON__SHARD_COUNT"])
    pdb = find(objects, "PodDisruptionBudget", "syncwatch")["spec"]
    assert pdb["selector"]["matchLabels"].items() <= pod_labels.items()
    # The budget cannot tell shards apart, so it allows one voluntary disruption in the
    # whole set at a time: whichever pod that is, the other pod of its shard stays up.
    assert "minAvailable" not in pdb
    assert pdb["maxUnavailable"] == 1 < per_shard
    # A not-Ready pod (a standby, if /readyz says so, or a pod starting) can be evicted
    # without blocking the drain; the Ready ones stay under the budget.
    assert pdb["unhealthyPodEvictionPolicy"] == "AlwaysAllow"

    # Every pod is scraped, Ready or not.
    assert find(objects, "Service", "syncwatch-metrics")["spec"]["publishNotReadyAddresses"]
    # Probes: liveness judges the process (/healthz), never readiness (/readyz).
    main = container(objects)
    assert main["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert main["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_ha_postgres_network_policy_adds_postgres_egress_only() -> None:
    objects = render(HA_POSTGRES)
    pod_labels = find(objects, "StatefulSet", "syncwatch")["spec"]["template"]["metadata"]["labels"]
    policy = find(objects, "NetworkPolicy", "syncwatch-postgres")["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["policyTypes"] == ["Egress"]
    assert [p for rule in policy["egress"] for p in rule["ports"]] == [
        {"port": 5432, "protocol": "TCP"}
    ]
    base = find(render(BASE), "NetworkPolicy", "syncwatch")
    assert find(objects, "NetworkPolicy", "syncwatch") == base


def test_cnpg_cluster_example_has_the_required_shape() -> None:
    """No schema for CloudNativePG's Cluster is available offline (kubernetes-validate
    ships the core API only): apiVersion, kind, the CRD's required fields (metadata, spec,
    spec.instances) and what the overlay relies on are checked by hand."""
    (cluster,) = _load_all(CNPG_CLUSTER)
    assert cluster["apiVersion"] == "postgresql.cnpg.io/v1"
    assert cluster["kind"] == "Cluster"
    assert set(cluster) == {"apiVersion", "kind", "metadata", "spec"}
    name = cluster["metadata"]["name"]
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name), name
    spec = cluster["spec"]
    assert isinstance(spec["instances"], int)
    assert spec["instances"] >= 2, "a primary and at least one replica to fail over to"
    assert re.fullmatch(r"\d+(Mi|Gi|Ti)", spec["storage"]["size"])
    initdb = spec["bootstrap"]["initdb"]
    # The example DSN is the one CloudNativePG's <name>-app Secret yields, plus TLS
    # verification against <name>-ca, the optional source projected next to the DSN.
    dsn = example_secrets()["syncwatch-state-url"]["stringData"]["state-url"]
    parts = urlsplit(dsn)
    assert parts.username == initdb["owner"]
    assert parts.hostname is not None
    assert parts.hostname.split(".")[0] == f"{name}-rw"
    assert parts.port == 5432
    assert parts.path == f"/{initdb['database']}"
    query = dict(parse_qsl(parts.query))
    assert query["sslmode"] == "verify-full"
    assert query["sslrootcert"] == f"{STATE_URL_DIR}/ca.crt"
    pod = find(render(HA_POSTGRES), "StatefulSet", "syncwatch")["spec"]["template"]["spec"]
    sources = [
        s["secret"] for v in pod["volumes"] for s in v.get("projected", {}).get("sources", [])
    ]
    (ca,) = [s for s in sources if s.get("optional")]
    assert ca["name"] == f"{name}-ca"
    assert ca["items"] == [{"key": "ca.crt", "path": "ca.crt"}]

    # Not applied by default; the kustomization says how to add it.
    text = (HA_POSTGRES / "kustomization.yaml").read_text(encoding="utf-8")
    assert CNPG_CLUSTER.name not in _load_all(HA_POSTGRES / "kustomization.yaml")[0]["resources"]
    assert f"# - {CNPG_CLUSTER.name}" in text
