"""Static checks of the Kubernetes manifests in k8s/: every document validates against the schema
of its apiVersion + kind (vendored in tests/k8s/schemas/, see the README there) and follows
gazerm's deployment rules (secrets by reference only, non-root containers with resource limits,
GPU workers with GPUs and a memory-backed /dev/shm, Ray token authentication on every Ray cluster,
NetworkPolicies that admit only peers of the namespace). Negative tests make sure broken manifests
are caught. Nothing here talks to a cluster or starts Ray.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
SCHEMAS = Path(__file__).parent / "schemas"
NAMESPACE = "gazerm"
SCHEMA_FILES = {
    ("v1", "Namespace"): "namespace-v1.json",
    ("v1", "PersistentVolumeClaim"): "persistentvolumeclaim-v1.json",
    ("v1", "Service"): "service-v1.json",
    ("apps/v1", "Deployment"): "deployment-apps-v1.json",
    ("apps/v1", "StatefulSet"): "statefulset-apps-v1.json",
    ("ray.io/v1", "RayCluster"): "raycluster-ray-v1.json",
    ("ray.io/v1", "RayJob"): "rayjob-ray-v1.json",
    ("ray.io/v1", "RayService"): "rayservice-ray-v1.json",
    ("networking.k8s.io/v1", "NetworkPolicy"): "networkpolicy-networking-v1.json",
}
# Where each Ray kind keeps its cluster spec.
CLUSTER_SPEC = {"RayCluster": None, "RayJob": "rayClusterSpec", "RayService": "rayClusterConfig"}
# Environment variable names that carry credentials: such values must come from a Secret.
SECRET_NAME = re.compile(r"(TOKEN|PASSWORD|PASSWD|SECRET|KEY|CREDENTIALS?)(_|$)")
# Literal credentials of the kinds gazerm deals with, wherever they would appear.
SECRET_VALUE = re.compile(r"hf_[A-Za-z0-9]{30,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{30,}|-----BEGIN")

# Ray token authentication (Ray >= 2.52, KubeRay >= 1.6 for authOptions): the Secret holding the
# cluster token and its data key, the key KubeRay's authOptions.secretName requires.
RAY_TOKEN_SECRET = {"name": "gazerm-ray-token", "key": "auth_token"}
RAY_AUTH_MIN_VERSION = (2, 52, 0)
# The one peer from outside the namespace the NetworkPolicies may admit: the KubeRay operator (its
# Helm chart in kuberay-system), on the head ports it polls (dashboard: RayJob status, Serve
# deploys; Serve proxy: /-/healthz).
KUBERAY_OPERATOR_PEER = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kuberay-system"}},
    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "kuberay-operator"}},
}
KUBERAY_OPERATOR_PORTS = {8265, 8000}

# Every image by tag (for people) and digest (what is pulled: a tag can be moved to other content).
# The repository ships the all-zero digest as a placeholder that fails to pull until replaced with the
# real one (k8s/README.md, Images): no digest here is invented.
PINNED_IMAGE = re.compile(r"[a-z0-9.-]+(?::\d+)?(?:/[a-z0-9._-]+)*:[A-Za-z0-9._-]+@sha256:[0-9a-f]{64}")
PLACEHOLDER_DIGEST = "sha256:" + "0" * 64

Doc = dict[str, Any]


def load_documents() -> list[tuple[str, Doc]]:
    """(``file#index``, document) for every non-empty YAML document in k8s/."""
    return [
        (f"{path.name}#{index}", doc)
        for path in sorted(K8S.glob("*.yaml"))
        for index, doc in enumerate(yaml.safe_load_all(path.read_text()))
        if doc
    ]


DOCUMENTS = load_documents()


def find(kind: str, name: str) -> Doc:
    """A deep copy of the document of that kind and name (tests mutate it)."""
    for _, doc in DOCUMENTS:
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return copy.deepcopy(doc)
    raise LookupError(f"no {kind} {name} in k8s/")


@cache
def registry() -> Registry:
    resources = []
    for path in SCHEMAS.glob("*.json"):
        contents = json.loads(path.read_text())
        resources.append((contents["$id"], Resource.from_contents(contents)))
    return Registry().with_resources(resources)


@cache
def validator(api_version: str, kind: str) -> Draft202012Validator:
    schema = json.loads((SCHEMAS / SCHEMA_FILES[(api_version, kind)]).read_text())
    return Draft202012Validator(schema, registry=registry())


def schema_errors(doc: Doc) -> list[str]:
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key not in SCHEMA_FILES:
        return [f"no schema for apiVersion {key[0]} kind {key[1]}"]
    return [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator(*key).iter_errors(doc)
    ]


def ray_cluster(doc: Doc) -> Doc | None:
    """The Ray cluster spec of a RayCluster, RayJob or RayService; None for other kinds."""
    if doc["kind"] not in CLUSTER_SPEC:
        return None
    key = CLUSTER_SPEC[doc["kind"]]
    return doc.get("spec", {}) if key is None else doc.get("spec", {}).get(key)


def pod_specs(doc: Doc) -> Iterator[tuple[str, Doc, bool]]:
    """(where, pod spec, runs Ray) for every pod template in a document."""
    spec = doc.get("spec", {})
    if doc["kind"] in ("Deployment", "StatefulSet"):
        yield "template", spec["template"]["spec"], False
    cluster = ray_cluster(doc)
    if cluster:
        yield "head", cluster["headGroupSpec"]["template"]["spec"], True
        for group in cluster.get("workerGroupSpecs", []):
            yield f"worker group {group.get('groupName')}", group["template"]["spec"], True
    if doc["kind"] == "RayJob" and "submitterPodTemplate" in spec:
        yield "submitter", spec["submitterPodTemplate"]["spec"], False


def containers(pod: Doc) -> list[Doc]:
    return pod.get("initContainers", []) + pod.get("containers", [])


def env_problems(where: str, env: list[Doc]) -> list[str]:
    problems = []
    for var in env:
        from_secret = "secretKeyRef" in var.get("valueFrom", {}) and "value" not in var
        if SECRET_NAME.search(var["name"]) and not from_secret:
            problems.append(f"{where}: {var['name']} must come from valueFrom.secretKeyRef, not a literal")
    return problems


def container_problems(where: str, pod: Doc, container: Doc, runs_ray: bool) -> list[str]:
    where = f"{where} container {container.get('name')}"
    problems = env_problems(where, container.get("env", []))
    if not container.get("image"):
        problems.append(f"{where}: no image")
    elif not PINNED_IMAGE.fullmatch(container["image"]):
        problems.append(f"{where}: image {container['image']} is not pinned by digest (REPO:TAG@sha256:...)")
    pod_security, security = pod.get("securityContext", {}), container.get("securityContext", {})
    if not (security.get("runAsNonRoot") or pod_security.get("runAsNonRoot")):
        problems.append(f"{where}: runAsNonRoot is not set")
    if security.get("runAsUser", pod_security.get("runAsUser", 0)) == 0:
        problems.append(f"{where}: runs as uid 0 (set a non-zero runAsUser)")
    if security.get("allowPrivilegeEscalation") is not False:
        problems.append(f"{where}: allowPrivilegeEscalation must be false")
    if "ALL" not in security.get("capabilities", {}).get("drop", []):
        problems.append(f"{where}: capabilities must drop ALL")
    if not runs_ray and security.get("readOnlyRootFilesystem") is not True and "submitter" not in where:
        problems.append(f"{where}: readOnlyRootFilesystem must be true")
    resources = container.get("resources", {})
    for part in ("requests", "limits"):
        missing = {"cpu", "memory"} - set(resources.get(part, {}))
        if missing:
            problems.append(f"{where}: no {part} for {', '.join(sorted(missing))}")
    return problems


def ray_pod_problems(where: str, pod: Doc) -> list[str]:
    problems = []
    volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
    shm = [
        mount["name"]
        for container in pod.get("containers", [])
        for mount in container.get("volumeMounts", [])
        if mount["mountPath"] == "/dev/shm"
    ]
    if not shm or volumes.get(shm[0], {}).get("emptyDir", {}).get("medium") != "Memory":
        problems.append(f"{where}: /dev/shm must be an emptyDir with medium Memory")
    return problems


def worker_group_problems(cluster: Doc) -> list[str]:
    problems = []
    for group in cluster.get("workerGroupSpecs", []):
        where = f"worker group {group.get('groupName')}"
        for container in group["template"]["spec"].get("containers", []):
            resources = container.get("resources", {})
            gpus = {part: resources.get(part, {}).get("nvidia.com/gpu") for part in ("requests", "limits")}
            if not gpus["limits"] or int(gpus["limits"]) < 1:
                problems.append(f"{where}: no nvidia.com/gpu limit")
            elif gpus["requests"] not in (None, gpus["limits"]):
                problems.append(f"{where}: nvidia.com/gpu requests must equal limits")
        replicas = [group.get(key) for key in ("minReplicas", "replicas", "maxReplicas")]
        if all(isinstance(value, int) for value in replicas) and replicas != sorted(replicas):
            problems.append(f"{where}: needs minReplicas <= replicas <= maxReplicas")
    return problems


def runtime_env_problems(where: str, runtime_env: Any) -> list[str]:
    if not isinstance(runtime_env, dict):
        return [f"{where} is not a YAML mapping"]
    return [
        f"{where}: env_vars.{name} is a credential: pass it from a Secret in the pod env instead"
        for name in runtime_env.get("env_vars", {})
        if SECRET_NAME.search(name)
    ]


def serve_config_problems(serve_config: str) -> list[str]:
    """serveConfigV2 must be a YAML mapping, without credentials in its applications' runtime envs."""
    config = yaml.safe_load(serve_config)
    if not isinstance(config, dict):
        return ["serveConfigV2 is not a YAML mapping"]
    return [
        problem
        for index, application in enumerate(config.get("applications", []))
        for problem in runtime_env_problems(
            f"serveConfigV2 applications[{index}].runtime_env", application.get("runtime_env", {})
        )
    ]


def ray_auth_problems(doc: Doc) -> list[str]:
    """Ray token authentication on a RayCluster, RayJob or RayService: authOptions with the token
    Secret, and on every Ray container and the RayJob's submitter RAY_AUTH_MODE=token and
    RAY_AUTH_TOKEN from that Secret (the operator would add both; the manifests spell them out)."""
    cluster = ray_cluster(doc)
    if cluster is None:
        return []
    found = []
    auth = cluster.get("authOptions", {})
    if auth.get("mode") != "token":
        found.append("authOptions.mode must be token (Ray token authentication)")
    if auth.get("secretName") != RAY_TOKEN_SECRET["name"]:
        found.append(f"authOptions.secretName must be {RAY_TOKEN_SECRET['name']}")
    version = tuple(int(part) for part in re.findall(r"\d+", str(cluster.get("rayVersion", "")))[:3])
    if version < RAY_AUTH_MIN_VERSION:
        found.append("rayVersion must be >= 2.52.0 for token authentication")
    for where, pod, runs_ray in pod_specs(doc):
        if not runs_ray and where != "submitter":
            continue
        for container in pod.get("containers", []):
            # A variable set twice: the last one wins, as in Kubernetes.
            env = {var["name"]: var for var in container.get("env", [])}
            here = f"{where} container {container.get('name')}"
            if env.get("RAY_AUTH_MODE", {}).get("value") != "token":
                found.append(f"{here}: RAY_AUTH_MODE must be token")
            token = env.get("RAY_AUTH_TOKEN", {})
            if "value" in token or token.get("valueFrom", {}).get("secretKeyRef") != RAY_TOKEN_SECRET:
                found.append(f"{here}: RAY_AUTH_TOKEN must come from Secret {RAY_TOKEN_SECRET['name']}")
    return found


def shared_volume_problems(doc: Doc) -> list[str]:
    """Serving pods (a RayService's) mount every PersistentVolumeClaim read-only, both the claim and each
    mount, and keep their Hugging Face cache off it: the volume holds the training runs' checkpoints,
    which training loads back (torch.load), so a compromised replica must not be able to write there.
    Training pods (RayCluster, RayJob) mount it read-write: they write checkpoints and shards."""
    found = []
    serving = doc["kind"] == "RayService"
    for where, pod, runs_ray in pod_specs(doc):
        if not runs_ray:
            continue
        volumes = pod.get("volumes", [])
        claims = {v["name"]: v["persistentVolumeClaim"] for v in volumes if "persistentVolumeClaim" in v}
        for name, claim in claims.items():
            if serving and claim.get("readOnly") is not True:
                found.append(f"{where}: volume {name} (claim {claim['claimName']}) must be readOnly: true")
        for container in containers(pod):
            here = f"{where} container {container.get('name')}"
            mounts = [m for m in container.get("volumeMounts", []) if m["name"] in claims]
            for mount in mounts:
                if serving and mount.get("readOnly") is not True:
                    found.append(f"{here}: mount {mount['mountPath']} of a claim must be readOnly: true")
                if not serving and mount.get("readOnly"):
                    found.append(f"{here}: training writes to {mount['mountPath']}: it cannot be read-only")
            env = {var["name"]: var.get("value", "") for var in container.get("env", [])}
            cache = env.get("HF_HOME", "")
            if serving and any(cache.startswith(mount["mountPath"]) for mount in mounts):
                found.append(f"{here}: HF_HOME {cache} is on the shared volume; give serving pods their own")
    return found


def peer_problems(where: str, peer: Doc, ports: set[Any] | None) -> list[str]:
    """A NetworkPolicy peer must be pods of the namespace, or the KubeRay operator on its ports."""
    if "ipBlock" in peer:
        return [f"{where}: ipBlock {peer['ipBlock'].get('cidr')} admits addresses, not pods of the namespace"]
    if "namespaceSelector" not in peer:
        return []  # a podSelector alone selects pods of the policy's own namespace
    if peer["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": NAMESPACE}}:
        return []
    if peer == KUBERAY_OPERATOR_PEER:
        if ports is None or not ports <= KUBERAY_OPERATOR_PORTS:
            return [f"{where}: the KubeRay operator may reach ports {sorted(KUBERAY_OPERATOR_PORTS)} only"]
        return []
    return [f"{where}: namespaceSelector {peer['namespaceSelector']} admits pods of other namespaces"]


def network_policy_problems(doc: Doc) -> list[str]:
    spec = doc.get("spec", {})
    found = []
    if "Ingress" not in spec.get("policyTypes", []):
        found.append("policyTypes must include Ingress")
    for index, rule in enumerate(spec.get("ingress", [])):
        where = f"ingress[{index}]"
        if not rule.get("from"):
            found.append(f"{where}: no `from`: admits every source")
            continue
        ports = {port.get("port") for port in rule["ports"]} if rule.get("ports") else None
        for peer in rule["from"]:
            found += peer_problems(where, peer, ports)
    return found


def problems(doc: Doc) -> list[str]:
    """Everything wrong with a manifest document: schema errors, then gazerm's rules."""
    found = schema_errors(doc)
    if doc.get("kind") == "Secret":
        found.append("Secret objects must not be in the repository: create them with kubectl")
    if doc.get("kind") != "Namespace" and doc.get("metadata", {}).get("namespace") != NAMESPACE:
        found.append(f"not in namespace {NAMESPACE}")
    if found:
        return found
    for where, pod, runs_ray in pod_specs(doc):
        if pod.get("automountServiceAccountToken") is not False:
            found.append(f"{where}: automountServiceAccountToken must be false")
        for container in containers(pod):
            found += container_problems(where, pod, container, runs_ray)
        if runs_ray:
            found += ray_pod_problems(where, pod)
    cluster = ray_cluster(doc)
    if cluster:
        found += worker_group_problems(cluster)
        found += ray_auth_problems(doc)
        found += shared_volume_problems(doc)
    if doc["kind"] == "NetworkPolicy":
        found += network_policy_problems(doc)
    if doc["kind"] == "RayJob":
        found += runtime_env_problems(
            "runtimeEnvYAML", yaml.safe_load(doc["spec"].get("runtimeEnvYAML") or "{}")
        )
    if doc["kind"] == "RayService":
        found += serve_config_problems(doc["spec"]["serveConfigV2"])
    return found


def test_k8s_folder_has_manifests() -> None:
    kinds = {doc["kind"] for _, doc in DOCUMENTS}
    assert {
        "RayCluster",
        "RayJob",
        "RayService",
        "Deployment",
        "StatefulSet",
        "Service",
        "Namespace",
        "NetworkPolicy",
    } <= kinds


@pytest.mark.parametrize(("where", "doc"), DOCUMENTS, ids=[where for where, _ in DOCUMENTS])
def test_manifest_is_valid(where: str, doc: Doc) -> None:
    assert problems(doc) == []


def test_no_literal_credentials_anywhere() -> None:
    files = [*K8S.rglob("*"), *(ROOT / "cluster").glob("*"), ROOT / "jobs" / "runtime_env.yaml"]
    for path in files:
        if path.is_file():
            assert not SECRET_VALUE.search(path.read_text()), f"{path}: looks like a literal credential"


def test_rayjob_runs_the_raycluster_spec() -> None:
    """k8s/rayjob.yaml's cluster is k8s/raycluster.yaml's: one reviewed cluster definition."""
    assert (
        find("RayJob", "helpsteer2-mistral7b-gazeconcat")["spec"]["rayClusterSpec"]
        == find("RayCluster", "gazerm")["spec"]
    )


def test_rayjob_entrypoint_matches_the_deployment() -> None:
    spec = find("RayJob", "helpsteer2-mistral7b-gazeconcat")["spec"]
    service = find("Service", "mlflow")
    port = service["spec"]["ports"][0]["port"]
    argv = spec["entrypoint"].split()
    assert argv[:3] == ["gazerm", "train", "jobs/helpsteer2_mistral7b_gazeconcat.yaml"]
    assert (ROOT / argv[2]).is_file()
    assert argv[argv.index("--tracking-uri") + 1] == f"http://mlflow.{NAMESPACE}.svc:{port}"
    # Outputs on the volume every Ray pod mounts: Ray Train needs storage shared by all nodes.
    mounts = {
        mount["mountPath"]
        for _, pod, _ in pod_specs(find("RayCluster", "gazerm"))
        for container in pod["containers"]
        for mount in container["volumeMounts"]
    }
    overrides = dict(arg.split("=", 1) for arg in argv if "=" in arg)
    for key in ("output_dir", "data.prepare.output_dir"):
        assert any(overrides[key].startswith(mount + "/") for mount in mounts), key
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["ttlSecondsAfterFinished"] > 0
    assert yaml.safe_load(spec["runtimeEnvYAML"])["working_dir"]
    # A lost driver fails the job; KubeRay retries it, and the retry resumes from output_dir's
    # latest checkpoint (the entrypoint has neither --fresh nor a per-attempt output_dir).
    assert spec["backoffLimit"] > 0 and "--fresh" not in argv


def test_claims_and_secrets_are_provided() -> None:
    """Every PVC a pod mounts is defined in k8s/, every Secret it reads is created in k8s/README.md."""
    claims = {doc["metadata"]["name"] for _, doc in DOCUMENTS if doc["kind"] == "PersistentVolumeClaim"}
    readme = (K8S / "README.md").read_text()
    for _, doc in DOCUMENTS:
        for where, pod, _ in pod_specs(doc):
            for volume in pod.get("volumes", []):
                if "persistentVolumeClaim" in volume:
                    assert volume["persistentVolumeClaim"]["claimName"] in claims, where
            for container in containers(pod):
                for var in container.get("env", []):
                    ref = var.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        assert f"secret generic {ref['name']}" in readme, ref["name"]
                        assert f"--from-literal={ref['key']}=" in readme, (ref["name"], ref["key"])
        cluster = ray_cluster(doc)
        if cluster and "secretName" in cluster.get("authOptions", {}):
            # KubeRay reads the token from the Secret's data key auth_token.
            assert f"secret generic {cluster['authOptions']['secretName']}" in readme
            assert "--from-literal=auth_token=" in readme


def test_rayservice_serves_the_trained_model_with_a_token() -> None:
    """serveConfigV2 is a valid Serve config whose application is gazerm's, with valid args, serving the
    model k8s/rayjob.yaml trains, and every Ray pod has the API token from a Secret."""
    from ray.serve.schema import ServeDeploySchema

    from gazerm.serve import deployment
    from gazerm.serve.api import TOKEN_ENV

    service = find("RayService", "gazerm-rm")
    config = yaml.safe_load(service["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(config)
    (application,) = config["applications"]
    module, _, name = application["import_path"].partition(":")
    assert module == deployment.__name__ and callable(getattr(deployment, name))
    args = deployment.ServeArgs.model_validate(application["args"])
    assert not args.no_auth and args.token_file is None  # the token comes from the environment
    assert application["route_prefix"] == "/"  # /healthz is the one path without auth
    assert [d["name"] for d in application["deployments"]] == [deployment.RewardService.name]

    trained = find("RayJob", "helpsteer2-mistral7b-gazeconcat")["spec"]["entrypoint"].split()
    output_dir = next(arg.split("=", 1)[1] for arg in trained if arg.startswith("output_dir="))
    assert args.model_dir == f"{output_dir}/model"
    (image,) = {
        c["image"] for _, pod, _ in pod_specs(find("RayCluster", "gazerm")) for c in pod["containers"]
    }
    for where, pod, _ in pod_specs(service):
        for container in pod["containers"]:
            assert container["image"] == image, where
            shared = [mount for mount in container["volumeMounts"] if mount["mountPath"] == "/mnt/shared"]
            assert [mount.get("readOnly") for mount in shared] == [True], where  # serving only reads
            env = {var["name"]: var for var in container["env"]}
            assert env[TOKEN_ENV]["valueFrom"]["secretKeyRef"] == {"name": "gazerm-serve", "key": "token"}, (
                where
            )
            ports = {port["name"]: port["containerPort"] for port in container["ports"]}
            assert ports["serve"] == config["http_options"]["port"], where


def test_mlflow_server_demands_a_user_and_keeps_credentials_out_of_argv() -> None:
    """MLflow's basic-auth app; the backend store URI (with the DB password) from a Secret through the
    environment variable `mlflow server` reads, never in argv; the admin password and the CSRF key
    from a Secret; the auth settings baked into the image, without credentials, their user store on a
    volume; the training pods log in with a (required) Secret's user."""
    import configparser

    pod = find("Deployment", "mlflow")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = container["args"]
    assert "--app-name=basic-auth" in args and "--serve-artifacts" in args
    assert not [arg for arg in args if "://" in arg and not arg.startswith("--artifacts-destination=s3://")]
    assert not [arg for arg in args if "$(" in arg or "backend-store-uri" in arg]
    env = {var["name"]: var for var in container["env"]}
    secrets = {
        "MLFLOW_BACKEND_STORE_URI": {"name": "gazerm-mlflow-db", "key": "backend_store_uri"},
        "MLFLOW_AUTH_ADMIN_PASSWORD": {"name": "gazerm-mlflow-admin", "key": "password"},
        "MLFLOW_FLASK_SERVER_SECRET_KEY": {"name": "gazerm-mlflow-admin", "key": "flask_secret_key"},
    }
    for name, ref in secrets.items():
        assert env[name] == {"name": name, "valueFrom": {"secretKeyRef": ref}}, name
    config_path = env["MLFLOW_AUTH_CONFIG_PATH"]["value"]
    dockerfile = (K8S / "images" / "mlflow.Dockerfile").read_text()
    assert f"COPY mlflow-basic-auth.ini {config_path}" in dockerfile
    ini = configparser.ConfigParser()
    ini.read(K8S / "images" / "mlflow-basic-auth.ini")
    assert "admin_password" not in ini["mlflow"] and ini["mlflow"]["default_permission"] == "READ"
    store = ini["mlflow"]["database_uri"].removeprefix("sqlite:///")
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    claims = {v["name"]: v.get("persistentVolumeClaim", {}).get("claimName") for v in pod["volumes"]}
    (directory,) = [path for path in mounts if store.startswith(path + "/")]
    assert claims[mounts[directory]] == "mlflow-auth"  # users survive a restart
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/health"  # the one path without auth
    for _, doc in RAY_KINDS:
        if doc["kind"] == "RayService":
            continue  # serving logs nothing to MLflow
        for where, ray_pod, runs_ray in pod_specs(doc):
            for ray_container in ray_pod["containers"] if runs_ray else []:
                ray_env = {var["name"]: var for var in ray_container["env"]}
                for key, name in (
                    ("username", "MLFLOW_TRACKING_USERNAME"),
                    ("password", "MLFLOW_TRACKING_PASSWORD"),
                ):
                    ref = ray_env[name]["valueFrom"]["secretKeyRef"]
                    assert ref == {"name": "gazerm-mlflow-client", "key": key}, where  # not optional


def test_images_are_pinned_by_digest_or_the_documented_placeholder() -> None:
    """Manifests (checked per container by `problems`), the Dockerfiles' base images and the launcher's
    optional container image name a tag and a digest; a placeholder digest is all zeros, and the README
    says how to fill it in."""
    references = [
        line.split()[1]
        for path in (K8S / "images").glob("*.Dockerfile")
        for line in path.read_text().splitlines()
        if line.startswith("FROM ")
    ]
    references += re.findall(r"image: (\S+)", (ROOT / "cluster" / "gpu-cluster.yaml").read_text())
    references += [
        c["image"] for _, doc in DOCUMENTS for _, pod, _ in pod_specs(doc) for c in containers(pod)
    ]
    assert len(references) >= 10
    for reference in references:
        assert PINNED_IMAGE.fullmatch(reference), reference
    readme = (K8S / "README.md").read_text()
    assert PLACEHOLDER_DIGEST in readme and "docker buildx imagetools inspect" in readme


RAY_KINDS = [(kind, doc) for _, doc in DOCUMENTS if (kind := doc["kind"]) in CLUSTER_SPEC]


@pytest.mark.parametrize(("kind", "doc"), RAY_KINDS, ids=[kind for kind, _ in RAY_KINDS])
def test_ray_clusters_use_token_authentication(kind: str, doc: Doc) -> None:
    """KubeRay's authOptions with the gazerm-ray-token Secret, and on every Ray container and the
    RayJob's submitter (which runs `ray job submit`) RAY_AUTH_MODE=token and RAY_AUTH_TOKEN from
    that Secret, never a literal."""
    cluster = ray_cluster(doc)
    assert cluster["authOptions"] == {"mode": "token", "secretName": RAY_TOKEN_SECRET["name"]}
    checked = []
    for where, pod, runs_ray in pod_specs(doc):
        if not runs_ray and where != "submitter":
            continue
        for container in pod["containers"]:
            env = {var["name"]: var for var in container["env"]}
            assert env["RAY_AUTH_MODE"] == {"name": "RAY_AUTH_MODE", "value": "token"}, where
            assert env["RAY_AUTH_TOKEN"] == {
                "name": "RAY_AUTH_TOKEN",
                "valueFrom": {"secretKeyRef": RAY_TOKEN_SECRET},
            }, where
            checked.append(where)
    expected = {"head", *(f"worker group {g['groupName']}" for g in cluster["workerGroupSpecs"])}
    if kind == "RayJob":
        expected.add("submitter")
    assert set(checked) == expected
    readme = (K8S / "README.md").read_text()
    assert f"secret generic {RAY_TOKEN_SECRET['name']}" in readme
    assert '--from-literal=auth_token="$(openssl rand -hex 32)"' in readme
    assert "export RAY_AUTH_MODE=token" in readme and "export RAY_AUTH_TOKEN=" in readme  # for clients


def selects(selector: Doc, labels: dict[str, str]) -> bool:
    """Whether a Kubernetes label selector (matchLabels, matchExpressions) matches the labels."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        matched = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[operator]
        if not matched:
            return False
    return True


Pod = tuple[dict[str, str], dict[str, str]]  # (namespace labels, pod labels)


def namespace_labels(name: str) -> dict[str, str]:
    return {"kubernetes.io/metadata.name": name}  # set by Kubernetes on every namespace


def admitted(policies: list[Doc], source: Pod, target: Pod, port: int) -> bool:
    """NetworkPolicy semantics for TCP ingress: a pod no policy selects accepts everything; a
    selected one what some rule of a policy selecting it admits (an ipBlock counts as anyone)."""
    (target_namespace, target_labels), (source_namespace, source_labels) = target, source
    selecting = [
        policy
        for policy in policies
        if namespace_labels(policy["metadata"]["namespace"]) == target_namespace
        and selects(policy["spec"]["podSelector"], target_labels)
        and "Ingress" in policy["spec"].get("policyTypes", ["Ingress"])
    ]

    def peer_matches(policy: Doc, peer: Doc) -> bool:
        if "ipBlock" in peer:
            return True
        if "namespaceSelector" in peer:
            in_namespace = selects(peer["namespaceSelector"], source_namespace)
        else:
            in_namespace = source_namespace == namespace_labels(policy["metadata"]["namespace"])
        return in_namespace and selects(peer.get("podSelector", {}), source_labels)

    return not selecting or any(
        (not rule.get("ports") or any(entry.get("port") == port for entry in rule["ports"]))
        and (not rule.get("from") or any(peer_matches(policy, peer) for peer in rule["from"]))
        for policy in selecting
        for rule in policy["spec"].get("ingress", [])
    )


def kuberay_pods(doc: Doc) -> Iterator[tuple[str, dict[str, str], Doc]]:
    """(where, labels, pod spec) of the Ray pods KubeRay creates for a RayCluster/RayJob/RayService:
    the template's labels plus those the operator sets (ray-operator/controllers/ray/common/pod.go,
    labelPod; ray.io/cluster is the generated cluster name for a RayJob or RayService)."""
    cluster = ray_cluster(doc)
    groups = [("head", "head", cluster["headGroupSpec"])]
    groups += [(f"worker group {g['groupName']}", "worker", g) for g in cluster["workerGroupSpecs"]]
    for where, node_type, group in groups:
        labels = {
            "ray.io/is-ray-node": "yes",
            "ray.io/node-type": node_type,
            "app.kubernetes.io/created-by": "kuberay-operator",
            **group["template"].get("metadata", {}).get("labels", {}),
            "ray.io/cluster": f"{doc['metadata']['name']}-x7k2p",
        }
        yield f"{doc['kind']} {where}", labels, group["template"]["spec"]


def test_network_policies_admit_only_namespace_peers() -> None:
    """No ipBlock; every `from` peer is a pod of the namespace, or the KubeRay operator on the
    ports it polls; no rule without `from` (which would admit everyone)."""
    policies = [doc for _, doc in DOCUMENTS if doc["kind"] == "NetworkPolicy"]
    assert policies
    for policy in policies:
        assert policy["metadata"]["namespace"] == NAMESPACE
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        for rule in policy["spec"].get("ingress", []):
            assert rule["from"], policy["metadata"]["name"]
            for peer in rule["from"]:
                assert "ipBlock" not in peer, policy["metadata"]["name"]
                if "namespaceSelector" in peer:
                    assert peer == KUBERAY_OPERATOR_PEER, policy["metadata"]["name"]
                    assert {entry["port"] for entry in rule["ports"]} <= KUBERAY_OPERATOR_PORTS
                else:
                    assert set(peer) == {"podSelector"}, policy["metadata"]["name"]
        assert network_policy_problems(policy) == []
    # A default deny covers every pod of the namespace, including ones the manifests do not create.
    assert any(p["spec"]["podSelector"] == {} and not p["spec"].get("ingress") for p in policies)


def test_network_policies_isolate_the_namespace() -> None:
    """Who reaches what, evaluated on the pods the manifests create: Ray pods reach each other on
    any port; other pods of the namespace reach the head's client ports, Serve and MLflow; only
    MLflow reaches PostgreSQL; nothing from another namespace gets in but the KubeRay operator."""
    policies = [doc for _, doc in DOCUMENTS if doc["kind"] == "NetworkPolicy"]
    here = namespace_labels(NAMESPACE)
    elsewhere = namespace_labels("default")
    operator = (namespace_labels("kuberay-system"), KUBERAY_OPERATOR_PEER["podSelector"]["matchLabels"])
    ray_pods = [pod for _, doc in RAY_KINDS for pod in kuberay_pods(doc)]
    assert {where for where, _, _ in ray_pods} >= {"RayCluster head", "RayJob head", "RayService head"}
    # Ports Ray listens on besides the declared ones: dashboard agent, metrics, a worker port, a
    # node manager port picked at start.
    ray_ports = {52365, 8080, 10002, 38153}
    for where, labels, pod in ray_pods:
        target = (here, labels)
        declared = {port["containerPort"] for c in pod["containers"] for port in c.get("ports", [])}
        assert declared <= {6379, 8265, 10001, 8000}, where
        for port in declared | ray_ports | {6379, 8265, 10001, 8000}:
            for _, peer_labels, _ in ray_pods:  # every Ray pod of the namespace, any port
                assert admitted(policies, (here, peer_labels), target, port), (where, port)
            # Ray's labels do not help a pod of another namespace, nor does the operator's namespace.
            for source in [(elsewhere, {}), (elsewhere, labels), (elsewhere, operator[1]), (operator[0], {})]:
                assert not admitted(policies, source, target, port), (where, port, source)
            assert admitted(policies, operator, target, port) == (port in KUBERAY_OPERATOR_PORTS), (
                where,
                port,
            )
        if where.endswith("head"):
            for port in declared:  # the client ports, for the submitter pod and the like
                assert admitted(policies, (here, {}), target, port), (where, port)
        for port in ray_ports:  # Ray internals: not for pods that are not Ray nodes
            assert not admitted(policies, (here, {}), target, port), (where, port)

    mlflow = (here, find("Deployment", "mlflow")["spec"]["template"]["metadata"]["labels"])
    postgres = (here, find("StatefulSet", "postgres")["spec"]["template"]["metadata"]["labels"])
    mlflow_port = find("Service", "mlflow")["spec"]["ports"][0]["port"]
    postgres_port = find("Service", "postgres")["spec"]["ports"][0]["port"]
    for _, labels, _ in ray_pods:  # the training jobs log to MLflow, never to its database
        assert admitted(policies, (here, labels), mlflow, mlflow_port)
        assert not admitted(policies, (here, labels), postgres, postgres_port)
    assert admitted(policies, (here, {}), mlflow, mlflow_port)
    assert admitted(policies, mlflow, postgres, postgres_port)
    assert not admitted(policies, (here, {}), postgres, postgres_port)
    for source in [(elsewhere, {}), (elsewhere, mlflow[1]), operator]:
        assert not admitted(policies, source, mlflow, mlflow_port)
        assert not admitted(policies, source, postgres, postgres_port)
    # Any other pod of the namespace (the RayJob's submitter, a debug pod) accepts nothing.
    assert not admitted(policies, (here, {}), (here, {"app": "debug"}), 8080)


# Negative tests: each mutation breaks one rule and must be reported.
def typo_in_raycluster_spec(doc: Doc) -> None:
    doc["spec"]["workerGroupSpec"] = doc["spec"].pop("workerGroupSpecs")


def replicas_as_string(doc: Doc) -> None:
    doc["spec"]["workerGroupSpecs"][0]["replicas"] = "1"


def ray_start_param_not_a_string(doc: Doc) -> None:
    doc["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0


def typo_in_pod_template(doc: Doc) -> None:
    doc["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"


def literal_hf_token(doc: Doc) -> None:
    env = doc["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]
    env[0] = {"name": "HF_TOKEN", "value": "not-a-real-token"}


def no_gpu_limit(doc: Doc) -> None:
    resources = doc["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resources"]
    del resources["limits"]["nvidia.com/gpu"], resources["requests"]["nvidia.com/gpu"]


def no_shm_volume(doc: Doc) -> None:
    pod = doc["spec"]["workerGroupSpecs"][0]["template"]["spec"]
    pod["volumes"] = [volume for volume in pod["volumes"] if volume["name"] != "dshm"]
    for container in pod["containers"]:
        container["volumeMounts"] = [m for m in container["volumeMounts"] if m["name"] != "dshm"]


def old_api_version(doc: Doc) -> None:
    doc["apiVersion"] = "ray.io/v1alpha1"


def runs_as_root(doc: Doc) -> None:
    pod = doc["spec"]["template"]["spec"]
    pod["securityContext"]["runAsUser"] = 0
    del pod["containers"][0]["securityContext"]["runAsUser"]


def no_image(doc: Doc) -> None:
    del doc["spec"]["template"]["spec"]["containers"][0]["image"]


def no_memory_limit(doc: Doc) -> None:
    del doc["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"]


def literal_db_password(doc: Doc) -> None:
    env = doc["spec"]["template"]["spec"]["containers"][0]["env"]
    env[2] = {"name": "POSTGRES_PASSWORD", "value": "hunter2"}


def typo_in_service(doc: Doc) -> None:
    doc["spec"]["selectors"] = doc["spec"].pop("selector")


def unknown_submission_mode(doc: Doc) -> None:
    doc["spec"]["submissionMode"] = "K8sJob"


def token_in_runtime_env(doc: Doc) -> None:
    doc["spec"]["runtimeEnvYAML"] += "env_vars:\n  HF_TOKEN: not-a-real-token\n"


def ttl_as_string(doc: Doc) -> None:
    doc["spec"]["ttlSecondsAfterFinished"] = "600"


def no_gpu_limit_in_rayservice(doc: Doc) -> None:
    no_gpu_limit({"spec": doc["spec"]["rayClusterConfig"]})


def image_by_tag_only(doc: Doc) -> None:
    container = doc["spec"]["template"]["spec"]["containers"][0]
    container["image"] = container["image"].split("@")[0]


def image_by_digest_of_another_form(doc: Doc) -> None:
    container = doc["spec"]["template"]["spec"]["containers"][0]
    container["image"] = container["image"].split("@")[0] + "@sha256:abc"


def unknown_upgrade_strategy(doc: Doc) -> None:
    doc["spec"]["upgradeStrategy"]["type"] = "BlueGreen"


def typo_in_rayservice_spec(doc: Doc) -> None:
    doc["spec"]["rayClusterSpec"] = doc["spec"].pop("rayClusterConfig")


def literal_serve_token(doc: Doc) -> None:
    env = doc["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]
    env[0] = {"name": "GAZERM_SERVE_TOKEN", "value": "not-a-real-token"}


def token_in_serve_runtime_env(doc: Doc) -> None:
    config = yaml.safe_load(doc["spec"]["serveConfigV2"])
    config["applications"][0]["runtime_env"] = {"env_vars": {"GAZERM_SERVE_TOKEN": "not-a-real-token"}}
    doc["spec"]["serveConfigV2"] = yaml.safe_dump(config)


def ray_env(pod: Doc, drop: str) -> None:
    for container in pod["containers"]:  # a new list: the containers share one env through a YAML anchor
        container["env"] = [var for var in container["env"] if var["name"] != drop]


def no_ray_token_on_worker(doc: Doc) -> None:
    ray_env(doc["spec"]["workerGroupSpecs"][0]["template"]["spec"], "RAY_AUTH_TOKEN")


def no_auth_options(doc: Doc) -> None:
    del doc["spec"]["authOptions"]


def auth_mode_misspelt(doc: Doc) -> None:
    doc["spec"]["authOptions"]["mode"] = "Token"


def ray_too_old_for_token_auth(doc: Doc) -> None:
    doc["spec"]["rayVersion"] = "2.51.0"


def no_ray_auth_mode_on_submitter(doc: Doc) -> None:
    ray_env(doc["spec"]["submitterPodTemplate"]["spec"], "RAY_AUTH_MODE")


def literal_ray_token_on_submitter(doc: Doc) -> None:
    env = doc["spec"]["submitterPodTemplate"]["spec"]["containers"][0]["env"]
    env[:] = [var for var in env if var["name"] != "RAY_AUTH_TOKEN"]
    env.append({"name": "RAY_AUTH_TOKEN", "value": "not-a-real-token"})


def token_auth_disabled_on_head(doc: Doc) -> None:
    pod = doc["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
    for container in pod["containers"]:
        container["env"] = [*container["env"], {"name": "RAY_AUTH_MODE", "value": "disabled"}]


def auth_options_disabled(doc: Doc) -> None:
    doc["spec"]["rayClusterConfig"]["authOptions"]["mode"] = "disabled"


def ray_token_secret_optional(doc: Doc) -> None:
    pod = doc["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]
    for container in pod["containers"]:
        container["env"] = copy.deepcopy(container["env"])
        for var in container["env"]:
            if var["name"] == "RAY_AUTH_TOKEN":
                var["valueFrom"]["secretKeyRef"]["optional"] = True


def serve_pods(doc: Doc) -> list[Doc]:
    cluster = doc["spec"]["rayClusterConfig"]
    return [cluster["headGroupSpec"]["template"]["spec"]] + [
        group["template"]["spec"] for group in cluster["workerGroupSpecs"]
    ]


def serve_mount_read_write(doc: Doc) -> None:
    for pod in serve_pods(doc):
        for container in pod["containers"]:  # new lists: the containers share one list through an anchor
            mounts = container["volumeMounts"]
            container["volumeMounts"] = [{k: v for k, v in m.items() if k != "readOnly"} for m in mounts]


def serve_claim_read_write(doc: Doc) -> None:
    pod = serve_pods(doc)[-1]
    pod["volumes"] = copy.deepcopy(pod["volumes"])
    del next(v for v in pod["volumes"] if "persistentVolumeClaim" in v)["persistentVolumeClaim"]["readOnly"]


def serve_hf_cache_on_shared_volume(doc: Doc) -> None:
    container = serve_pods(doc)[0]["containers"][0]
    container["env"] = [
        {"name": "HF_HOME", "value": "/mnt/shared/hf-cache"} if var["name"] == "HF_HOME" else var
        for var in container["env"]
    ]


def training_mount_read_only(doc: Doc) -> None:
    pod = doc["spec"]["workerGroupSpecs"][0]["template"]["spec"]
    for container in pod["containers"]:
        mounts = container["volumeMounts"]
        container["volumeMounts"] = [{**m, "readOnly": m["mountPath"] == "/mnt/shared"} for m in mounts]


def ingress_from_anywhere(doc: Doc) -> None:
    doc["spec"]["ingress"][1]["from"].append({"ipBlock": {"cidr": "0.0.0.0/0"}})


def ingress_from_every_namespace(doc: Doc) -> None:
    doc["spec"]["ingress"][0]["from"] = [{"namespaceSelector": {}}]


def ingress_rule_without_from(doc: Doc) -> None:
    del doc["spec"]["ingress"][0]["from"]


def operator_on_every_port(doc: Doc) -> None:
    del doc["spec"]["ingress"][2]["ports"]


def operator_namespace_without_pod_selector(doc: Doc) -> None:
    del doc["spec"]["ingress"][2]["from"][0]["podSelector"]


def egress_only_policy(doc: Doc) -> None:
    doc["spec"]["policyTypes"] = ["Egress"]


def typo_in_network_policy(doc: Doc) -> None:
    doc["spec"]["ingress"][0]["form"] = doc["spec"]["ingress"][0].pop("from")


MUTATIONS: list[tuple[str, str, Callable[[Doc], None], str]] = [
    ("RayCluster", "gazerm", typo_in_raycluster_spec, "Additional properties"),
    ("RayCluster", "gazerm", replicas_as_string, "is not of type 'integer'"),
    ("RayCluster", "gazerm", ray_start_param_not_a_string, "is not of type 'string'"),
    ("RayCluster", "gazerm", typo_in_pod_template, "imagePullPolcy"),
    ("RayCluster", "gazerm", literal_hf_token, "HF_TOKEN must come from valueFrom.secretKeyRef"),
    ("RayCluster", "gazerm", no_gpu_limit, "no nvidia.com/gpu limit"),
    ("RayCluster", "gazerm", no_shm_volume, "/dev/shm must be an emptyDir"),
    ("RayCluster", "gazerm", old_api_version, "no schema for apiVersion ray.io/v1alpha1"),
    ("StatefulSet", "postgres", runs_as_root, "runs as uid 0"),
    ("StatefulSet", "postgres", literal_db_password, "POSTGRES_PASSWORD must come from"),
    ("Deployment", "mlflow", no_image, "no image"),
    ("Deployment", "mlflow", image_by_tag_only, "is not pinned by digest"),
    ("StatefulSet", "postgres", image_by_digest_of_another_form, "is not pinned by digest"),
    ("Deployment", "mlflow", no_memory_limit, "no limits for memory"),
    ("Service", "mlflow", typo_in_service, "Additional properties"),
    ("RayJob", "helpsteer2-mistral7b-gazeconcat", unknown_submission_mode, "is not one of"),
    ("RayJob", "helpsteer2-mistral7b-gazeconcat", token_in_runtime_env, "env_vars.HF_TOKEN is a credential"),
    ("RayJob", "helpsteer2-mistral7b-gazeconcat", ttl_as_string, "is not of type 'integer'"),
    ("RayService", "gazerm-rm", unknown_upgrade_strategy, "is not one of"),
    ("RayService", "gazerm-rm", typo_in_rayservice_spec, "Additional properties"),
    (
        "RayService",
        "gazerm-rm",
        literal_serve_token,
        "GAZERM_SERVE_TOKEN must come from valueFrom.secretKeyRef",
    ),
    ("RayService", "gazerm-rm", token_in_serve_runtime_env, "env_vars.GAZERM_SERVE_TOKEN is a credential"),
    ("RayService", "gazerm-rm", no_gpu_limit_in_rayservice, "no nvidia.com/gpu limit"),
    ("RayCluster", "gazerm", no_ray_token_on_worker, "RAY_AUTH_TOKEN must come from Secret gazerm-ray-token"),
    ("RayCluster", "gazerm", no_auth_options, "authOptions.mode must be token"),
    ("RayCluster", "gazerm", auth_mode_misspelt, "is not one of"),
    ("RayCluster", "gazerm", ray_too_old_for_token_auth, "rayVersion must be >= 2.52.0"),
    (
        "RayJob",
        "helpsteer2-mistral7b-gazeconcat",
        no_ray_auth_mode_on_submitter,
        "submitter container ray-job-submitter: RAY_AUTH_MODE must be token",
    ),
    (
        "RayJob",
        "helpsteer2-mistral7b-gazeconcat",
        literal_ray_token_on_submitter,
        "RAY_AUTH_TOKEN must come from valueFrom.secretKeyRef",
    ),
    (
        "RayService",
        "gazerm-rm",
        token_auth_disabled_on_head,
        "head container ray-head: RAY_AUTH_MODE must be token",
    ),
    ("RayService", "gazerm-rm", auth_options_disabled, "authOptions.mode must be token"),
    ("RayService", "gazerm-rm", ray_token_secret_optional, "RAY_AUTH_TOKEN must come from Secret"),
    ("RayService", "gazerm-rm", serve_mount_read_write, "mount /mnt/shared of a claim must be readOnly"),
    ("RayService", "gazerm-rm", serve_claim_read_write, "(claim gazerm-shared) must be readOnly"),
    ("RayService", "gazerm-rm", serve_hf_cache_on_shared_volume, "HF_HOME /mnt/shared/hf-cache is on the"),
    ("RayCluster", "gazerm", training_mount_read_only, "training writes to /mnt/shared"),
    ("NetworkPolicy", "ray", ingress_from_anywhere, "ipBlock 0.0.0.0/0"),
    ("NetworkPolicy", "ray", ingress_from_every_namespace, "admits pods of other namespaces"),
    ("NetworkPolicy", "ray", ingress_rule_without_from, "admits every source"),
    ("NetworkPolicy", "ray", operator_on_every_port, "the KubeRay operator may reach ports"),
    ("NetworkPolicy", "ray", operator_namespace_without_pod_selector, "admits pods of other namespaces"),
    ("NetworkPolicy", "mlflow", egress_only_policy, "policyTypes must include Ingress"),
    ("NetworkPolicy", "mlflow", typo_in_network_policy, "Additional properties"),
]


@pytest.mark.parametrize(
    ("kind", "name", "mutate", "expected"), MUTATIONS, ids=[mutate.__name__ for _, _, mutate, _ in MUTATIONS]
)
def test_broken_manifest_is_rejected(
    kind: str, name: str, mutate: Callable[[Doc], None], expected: str
) -> None:
    doc = find(kind, name)
    assert problems(doc) == []
    mutate(doc)
    found = problems(doc)
    assert any(expected in problem for problem in found), found
