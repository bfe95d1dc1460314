"""docker/: the compose files, the serving image and its Hayhooks wrapper, checked without Docker.

Nothing here builds an image or starts a container (the development machines have no Docker). The compose files,
the Dockerfile and .dockerignore are parsed and held to their rules (pinned images, health checks, security on by
default, no torch), and the wrapper the image serves runs in a child process in which importing torch raises, as
in the image: directly, and through Hayhooks' own FastAPI app.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from haystack import Document

from tests.conftest import PYTHON, ROOT
from tests.integration.opensearch_service import OPENSEARCH_IMAGE
from tests.unit.test_torch_free_and_pipelines import BLOCK_TORCH

DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "docker-compose.yml"
COMPOSE_DEV = DOCKER / "docker-compose.dev.yml"
DOCKERFILE = DOCKER / "serving" / "Dockerfile"
# The wrapper ships inside the package; the image links /app/pipelines to this folder, `syntriever serve` serves it.
PIPELINES = ROOT / "syntriever_haystack" / "serve" / "hayhooks" / "pipelines"
WRAPPER = PIPELINES / "search" / "pipeline_wrapper.py"
CHECK_SCRIPT = DOCKER / "serving" / "check_torch_free.py"
LOCALHOST_PORT = re.compile(r"^127\.0\.0\.1:(?:\d+|\$\{\w+:-\d+\}):\d+$")
DOCS = [
    ("Aspirin", "Low-dose aspirin reduces the risk of a second heart attack in patients with heart disease."),
    ("Anaemia", "Iron deficiency anaemia is caused by blood loss or a low iron diet."),
    ("Paris", "Paris is the capital city of France; the tower was built by the river."),
    ("Fox", "The quick brown fox jumps over the lazy dog."),
]


def _compose(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _image_tag(image: str) -> str:
    name, _, tag = image.rpartition(":")
    assert name, f"{image!r} has no tag"
    assert "/" not in tag, f"{image!r} has no tag"
    return tag


# ---------------------------------------------------------------- compose: both files


@pytest.mark.parametrize("path", [COMPOSE, COMPOSE_DEV], ids=["secure", "dev"])
def test_images_are_pinned_to_the_tested_opensearch(path: Path) -> None:
    services = _compose(path)["services"]
    assert services["opensearch"]["image"] == OPENSEARCH_IMAGE  # the version the integration tests run
    for name, service in services.items():
        tag = _image_tag(service["image"])
        assert re.fullmatch(r"\d+\.\d+\.\d+", tag), f"{name}: image {service['image']!r} is not pinned to a version"
    opensearch = _image_tag(services["opensearch"]["image"]).split(".")
    dashboards = _image_tag(services["dashboards"]["image"]).split(".")
    assert opensearch[0] == "3"
    assert dashboards[:2] == opensearch[:2], "Dashboards must match OpenSearch's major.minor"


@pytest.mark.parametrize("path", [COMPOSE, COMPOSE_DEV], ids=["secure", "dev"])
def test_every_service_has_a_healthcheck_and_ports_stay_on_localhost(path: Path) -> None:
    for name, service in _compose(path)["services"].items():
        test = service.get("healthcheck", {}).get("test")
        assert test, f"{name} has no healthcheck"
        assert test[0] in ("CMD", "CMD-SHELL"), f"{name}: healthcheck {test!r}"
        assert len(test) > 1, f"{name}: healthcheck {test!r}"
        assert not service["healthcheck"].get("disable", False)
        for port in service.get("ports", []):
            assert LOCALHOST_PORT.match(port), f"{name}: port {port!r} is published beyond 127.0.0.1"


@pytest.mark.parametrize("path", [COMPOSE, COMPOSE_DEV], ids=["secure", "dev"])
def test_serving_waits_for_healthy_opensearch_and_mounts_models_read_only(path: Path) -> None:
    services = _compose(path)["services"]
    serving = services["serving"]
    assert serving["depends_on"] == {"opensearch": {"condition": "service_healthy"}}
    assert serving["build"] == {"context": "..", "dockerfile": "docker/serving/Dockerfile"}
    assert (path.parent / serving["build"]["context"] / serving["build"]["dockerfile"]).resolve() == DOCKERFILE
    assert any(volume.endswith(":/app/run:ro") for volume in serving["volumes"]), serving["volumes"]
    env = serving["environment"]
    assert env["SYNTRIEVER_RUN"] == "/app/run"
    assert env["SYNTRIEVER_PIPELINE"] == "pipelines/${SERVING_PIPELINE:-query}.yaml"  # relative to SYNTRIEVER_RUN
    assert not any(key in env for key in ("SYNTRIEVER_EMBEDDER", "SYNTRIEVER_RANKER", "OPENSEARCH_URL"))
    assert "status/search" in " ".join(serving["healthcheck"]["test"])
    assert serving["read_only"] is True
    assert serving["cap_drop"] == ["ALL"]
    assert services["dashboards"]["depends_on"] == {"opensearch": {"condition": "service_healthy"}}


@pytest.mark.parametrize("path", [COMPOSE, COMPOSE_DEV], ids=["secure", "dev"])
def test_dashboards_and_serving_are_opt_in_profiles(path: Path) -> None:
    services = _compose(path)["services"]
    assert "profiles" not in services["opensearch"]
    assert services["dashboards"]["profiles"] == ["dashboards"]
    assert services["serving"]["profiles"] == ["serving"]


@pytest.mark.parametrize("path", [COMPOSE, COMPOSE_DEV], ids=["secure", "dev"])
def test_single_node_ml_commons_settings(path: Path) -> None:
    env = _compose(path)["services"]["opensearch"]["environment"]
    assert env["discovery.type"] == "single-node"
    assert env["bootstrap.memory_lock"] == "true"
    assert _compose(path)["services"]["opensearch"]["ulimits"]["memlock"] == {"soft": -1, "hard": -1}
    assert re.fullmatch(r"-Xms(\S+) -Xmx\1", env["OPENSEARCH_JAVA_OPTS"])  # equal min and max heap
    assert env["plugins.ml_commons.only_run_on_ml_node"] == "false"
    # The settings docs/ml-commons.md lists for a single-node cluster (syntriever mlcommons --dev-cluster-settings).
    from syntriever_haystack.opensearch.ml_commons import DEV_CLUSTER_SETTINGS

    for key, value in DEV_CLUSTER_SETTINGS.items():
        assert re.fullmatch(rf"(\$\{{\w+:-)?{value}\}}?", str(env[key])), f"{key}={env[key]!r}, docs say {value}"
    # The image's entrypoint turns only lowercase dotted variable names into -E settings.
    assert all(re.match(r"^[a-z0-9_]+\.[a-z0-9_]+", key) for key in env if "." in key)


# ---------------------------------------------------------------- compose: security


def test_secure_compose_requires_an_admin_password_and_hardcodes_none() -> None:
    text = COMPOSE.read_text(encoding="utf-8")
    services = _compose(COMPOSE)["services"]
    opensearch = services["opensearch"]["environment"]
    assert re.fullmatch(
        r"\$\{OPENSEARCH_INITIAL_ADMIN_PASSWORD:\?[^}]+\}", opensearch["OPENSEARCH_INITIAL_ADMIN_PASSWORD"]
    )
    for key in ("DISABLE_SECURITY_PLUGIN", "DISABLE_INSTALL_DEMO_CONFIG", "plugins.security.disabled"):
        assert key not in opensearch, f"{key} in the secure compose file"
    assert "DISABLE_SECURITY_DASHBOARDS_PLUGIN" not in services["dashboards"]["environment"]
    for name, service in services.items():
        for key, value in (service.get("environment") or {}).items():
            if "PASSWORD" in key:
                assert str(value).startswith("${"), f"{name}: {key} is not taken from a variable"
    # The health check reads the password inside the container ($$ stops Compose from interpolating it).
    assert "$${OPENSEARCH_INITIAL_ADMIN_PASSWORD}" in " ".join(services["opensearch"]["healthcheck"]["test"])
    assert "https://localhost:9200" in " ".join(services["opensearch"]["healthcheck"]["test"])
    assert "https://opensearch:9200" in text  # the address the serving YAML is written for (a comment)
    assert json.loads(services["dashboards"]["environment"]["OPENSEARCH_HOSTS"]) == ["https://opensearch:9200"]
    assert "admin:admin" not in text


def test_dev_compose_is_marked_local_only_and_keeps_its_data_apart() -> None:
    dev, secure = _compose(COMPOSE_DEV), _compose(COMPOSE)
    text = COMPOSE_DEV.read_text(encoding="utf-8")
    assert "LOCAL TESTING ONLY" in text.splitlines()[0]
    assert dev["services"]["opensearch"]["environment"]["DISABLE_SECURITY_PLUGIN"] == "true"
    assert dev["services"]["dashboards"]["environment"]["DISABLE_SECURITY_DASHBOARDS_PLUGIN"] == "true"
    assert "${OPENSEARCH_INITIAL_ADMIN_PASSWORD" not in text  # standalone: needs no password
    assert dev["name"] != secure["name"]
    assert set(dev["volumes"]).isdisjoint(secure["volumes"])


# ---------------------------------------------------------------- Dockerfile, .dockerignore, pyproject


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        pending = f"{pending} {line}".strip()
        if pending.endswith("\\"):
            pending = pending[:-1]
            continue
        keyword, _, args = pending.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        pending = ""
    return instructions


def test_dockerfile_is_multistage_pinned_non_root_and_torch_free() -> None:
    instructions = _dockerfile()
    args = dict(a.split("=", 1) for k, a in instructions if k == "ARG" and "=" in a)
    froms = [a for k, a in instructions if k == "FROM"]
    assert len(froms) >= 2, "build and runtime stages"
    for line in froms:
        image = line.split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        tag = _image_tag(image)
        assert re.match(r"\d+\.\d+", tag), f"base image {image!r} is not pinned"
    runtime = max(i for i, (k, _) in enumerate(instructions) if k == "FROM")
    users = [a for k, a in instructions[runtime:] if k == "USER"]
    assert users, "the runtime stage sets no USER"
    assert users[-1].split(":")[0] not in ("root", "0")
    runs = [a for k, a in instructions if k == "RUN"]
    installs = [r for r in runs if "pip install" in r]
    assert installs == ['pip install ".[serve]"']
    assert not any(re.search(r"torch|transformers|\[(all|train|export|llm-local)", r) for r in installs)
    assert any("check_torch_free.py" in r for r in runs), "no build-time torch check"
    env = " ".join(a for k, a in instructions[runtime:] if k == "ENV")
    for setting in (
        "HAYHOOKS_PIPELINES_DIR=/app/pipelines",
        "HAYHOOKS_DURABLE_MODE=true",
        "HAYHOOKS_HOST=0.0.0.0",
        "SYNTRIEVER_RUN=/app/run",
    ):
        assert setting in env
    assert "SYNTRIEVER_EMBEDDER" not in env
    # /app/pipelines is the installed package's wrapper folder, linked (the same file `syntriever serve` serves)
    link = [a for k, a in instructions[runtime:] if k == "RUN" and "/app/pipelines" in a]
    assert link, "no RUN links /app/pipelines"
    assert "ln -s" in link[0], link
    assert "serve.hayhooks import PIPELINES_DIR" in link[0], link
    assert not any("docker/serving/pipelines" in a for k, a in instructions if k == "COPY")
    assert [a for k, a in instructions if k == "CMD"][-1] == '["hayhooks", "run"]'
    healthcheck = [a for k, a in instructions if k == "HEALTHCHECK"]
    assert "/status/search" in healthcheck[-1]
    for keyword, arguments in instructions:  # every COPY source from the build context exists
        if keyword == "COPY" and not arguments.startswith("--from"):
            for source in arguments.split()[:-1]:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"


def _dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders decides."""

    def regex(pattern: str) -> re.Pattern[str]:
        parts = []
        for segment in pattern.strip("/").split("/"):
            if segment == "**":
                parts.append("(?:[^/]+/)*")
                continue
            body = "".join(
                "[^/]*" if c == "*" else "[^/]" if c == "?" else c if c in "[]" else re.escape(c) for c in segment
            )
            parts.append(body + "/")
        return re.compile("".join(parts).rstrip("/"))

    candidates = [path, *("/".join(path.split("/")[:i]) for i in range(1, path.count("/") + 1))]
    excluded = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        if any(regex(pattern.lstrip("!")).fullmatch(c) for c in candidates):
            excluded = not negated
    return excluded


def test_dockerignore_sends_only_the_build_inputs() -> None:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    for path in ("models/minilm-onnx/onnx/model.onnx", "runs/gen/x.jsonl", ".venv/bin/python", ".cache/a", ".git/HEAD"):
        assert _dockerignore_excludes(path, patterns), f"{path} would be sent to the Docker daemon"
    for path in ("syntriever_haystack/serve/__pycache__/x.pyc", "tests/conftest.py", "benchmarks/results/a.npy"):
        assert _dockerignore_excludes(path, patterns), path
    for keyword, arguments in _dockerfile():
        if keyword == "COPY" and not arguments.startswith("--from"):
            for source in arguments.split()[:-1]:
                for file in [ROOT / source] if (ROOT / source).is_file() else (ROOT / source).rglob("*.py"):
                    relative = file.relative_to(ROOT).as_posix()
                    if "__pycache__" not in relative:
                        assert not _dockerignore_excludes(relative, patterns), f"{relative} is needed by the build"


def test_serve_extra_is_hayhooks_plus_opensearch_without_torch() -> None:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    serve = extras["serve"]
    assert "syntriever-haystack[opensearch]" in serve
    assert any(re.match(r"hayhooks\s*>=\s*2", requirement) for requirement in serve)
    assert "serve" in re.search(r"\[(.*)\]", extras["all"][0]).group(1).split(",")  # type: ignore[union-attr]
    closure = " ".join(serve + extras["opensearch"])
    assert not re.search(r"torch|transformers|sentence-transformers|optimum|\[(train|export|llm-local)", closure)


# ---------------------------------------------------------------- the wrapper, torch-free


@pytest.fixture(scope="module")
def run_folder(
    exported_bi_encoder: Path, exported_cross_encoder: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A run folder as `syntriever quickstart` writes it (models/, data/document_store.json, pipelines/*.yaml)."""
    from tests.support.serving_run import build_run_folder

    documents = [Document(content=text, meta={"title": t}) for t, text in DOCS]
    return build_run_folder(
        tmp_path_factory.mktemp("docker-run") / "run", exported_bi_encoder, exported_cross_encoder, documents
    )


def _child(code: str, env: dict[str, str], cwd: Path) -> dict[str, Any]:
    """Run ``code`` after the torch blocker; its last stdout line is JSON."""
    proc = subprocess.run(
        [PYTHON, "-c", BLOCK_TORCH + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _serving_env(base: dict[str, str], tmp_path: Path, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in base.items() if not k.startswith(("OPENSEARCH_", "SYNTRIEVER_", "HAYHOOKS_"))}
    env.update({"PYTHONDONTWRITEBYTECODE": "1", "HOME": str(tmp_path), **overrides})
    return env


def test_build_check_script_passes_without_torch(subprocess_env: dict[str, str], tmp_path: Path) -> None:
    pytest.importorskip("hayhooks", reason="the serving image installs hayhooks (the `serve` extra)")
    code = f"""
        import json, runpy, sys
        sys.argv = ["check", "--skip-distribution-check"]  # the wrapper: the installed package's (WRAPPER)
        try:
            runpy.run_path({str(CHECK_SCRIPT)!r}, run_name="__main__")
        except SystemExit as exit:
            print(json.dumps({{"code": exit.code, "torch": "torch" in sys.modules}}))
        """
    assert _child(code, _serving_env(subprocess_env, tmp_path), tmp_path) == {"code": 0, "torch": False}


@pytest.mark.parametrize("rerank", [True, False], ids=["rerank", "no-ranker"])
def test_wrapper_runs_in_process_without_torch(
    run_folder: Path, subprocess_env: dict[str, str], tmp_path: Path, rerank: bool
) -> None:
    pytest.importorskip("hayhooks", reason="the serving image installs hayhooks (the `serve` extra)")
    env = _serving_env(subprocess_env, tmp_path, SYNTRIEVER_RUN=str(run_folder))
    if rerank:
        env["SYNTRIEVER_PIPELINE"] = "pipelines/query-rerank.yaml"
    code = f"""
        import importlib.util, json, sys
        spec = importlib.util.spec_from_file_location("pipeline_wrapper", {str(WRAPPER)!r})
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        wrapper = module.PipelineWrapper()
        wrapper.setup()
        hits = wrapper.run_api("heart attack aspirin", top_k=2)
        more = wrapper.run_api("capital of france", top_k=3)
        print(json.dumps({{"hits": hits, "more": len(more), "ranker": "ranker" in dict(wrapper.pipeline.walk()),
                           "torch": "torch" in sys.modules}}))
        """
    out = _child(code, env, tmp_path)
    assert out["torch"] is False
    assert out["ranker"] is rerank
    assert out["more"] == 3
    hits = out["hits"]
    assert len(hits) == 2
    assert {"id", "content", "score", "meta"} <= set(hits[0])
    assert hits[0]["score"] >= hits[1]["score"]
    assert {hit["meta"]["title"] for hit in hits} <= {title for title, _ in DOCS}


def test_wrapper_refuses_to_start_without_a_pipeline(subprocess_env: dict[str, str], tmp_path: Path) -> None:
    pytest.importorskip("hayhooks", reason="the serving image installs hayhooks (the `serve` extra)")
    code = f"""
        import importlib.util, json
        spec = importlib.util.spec_from_file_location("pipeline_wrapper", {str(WRAPPER)!r})
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        errors = []
        for run in (None, {str(tmp_path / "missing")!r}):
            if run:
                import os
                os.environ["SYNTRIEVER_RUN"] = run
            try:
                module.PipelineWrapper().setup()
                errors.append(None)
            except Exception as exc:
                errors.append(f"{{type(exc).__name__}}: {{exc}}")
        print(json.dumps({{"errors": errors}}))
        """
    unset, missing = _child(code, _serving_env(subprocess_env, tmp_path), tmp_path)["errors"]
    assert "SYNTRIEVER_RUN" in unset
    assert "SYNTRIEVER_PIPELINE" in unset
    assert "missing/pipelines/query.yaml" in missing


@pytest.mark.loopback
def test_wrapper_fails_start_up_when_opensearch_is_unreachable(
    exported_bi_encoder: Path, subprocess_env: dict[str, str], tmp_path: Path
) -> None:
    """An OpenSearch query.yaml (store and env-var secrets in the YAML): the cluster is probed at start-up."""
    pytest.importorskip("hayhooks", reason="the serving image installs hayhooks (the `serve` extra)")
    from syntriever_haystack.opensearch.connection import OpenSearchConnection
    from syntriever_haystack.opensearch.store import opensearch_document_store
    from syntriever_haystack.runtime.metadata import ModelMetadata
    from syntriever_haystack.serve.pipelines import query_pipeline, save_pipeline

    with socket.socket() as probe:  # a free loopback port: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    connection = OpenSearchConnection(url=f"http://127.0.0.1:{port}", verify_certs=False)
    store = opensearch_document_store(
        connection, "docker-assets", ModelMetadata.load(exported_bi_encoder), ensure=False
    )
    yaml_path = save_pipeline(query_pipeline(store, exported_bi_encoder), tmp_path / "os" / "query.yaml")
    assert "OPENSEARCH_PASSWORD" in yaml_path.read_text(encoding="utf-8")
    env = _serving_env(subprocess_env, tmp_path, SYNTRIEVER_PIPELINE=str(yaml_path))
    code = f"""
        import importlib.util, json
        spec = importlib.util.spec_from_file_location("pipeline_wrapper", {str(WRAPPER)!r})
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        try:
            module.PipelineWrapper().setup()
            print(json.dumps({{"error": None}}))
        except Exception as exc:
            print(json.dumps({{"error": f"{{type(exc).__name__}}: {{exc}}"}}))
        """
    error = _child(code, env, tmp_path)["error"]
    assert error is not None
    assert f"127.0.0.1:{port}" in error, error


def test_hayhooks_serves_the_wrapper_as_the_image_runs_it(
    run_folder: Path, subprocess_env: dict[str, str], tmp_path: Path
) -> None:
    """Hayhooks' own app (create_app, as `hayhooks run` builds it) with the image's settings, via TestClient."""
    pytest.importorskip("hayhooks", reason="the serving image installs hayhooks (the `serve` extra)")
    env = _serving_env(
        subprocess_env,
        tmp_path,
        HAYHOOKS_PIPELINES_DIR=str(PIPELINES),  # as /app/pipelines links to it in the image
        HAYHOOKS_DURABLE_MODE="true",
        HAYHOOKS_TRACING_ENABLED="false",
        HAYHOOKS_TRACING_INCLUDE_HAYSTACK_SPANS="false",
        HAYHOOKS_HOST="0.0.0.0",
        HAYHOOKS_MONITORING_ENABLED="false",
        SYNTRIEVER_RUN=str(run_folder),
        SYNTRIEVER_PIPELINE="pipelines/query-rerank.yaml",
    )
    code = """
        import json, sys
        from fastapi.testclient import TestClient
        from hayhooks.server.app import create_app

        with TestClient(create_app()) as client:
            status = client.get("/status").json()
            one = client.get("/status/search").status_code
            run = client.post("/search/run", json={"query": "heart attack aspirin", "top_k": 2})
            bad = client.post("/search/run", json={"query": "heart", "top_k": 0}).status_code
            extra = client.post("/search/run", json={"query": "heart", "filter": {}}).status_code
            deploy = client.post("/deploy_files", json={"name": "x", "files": {"pipeline_wrapper.py": "import os"}})
            paths = sorted(client.get("/openapi.json").json()["paths"])
        print(json.dumps({"pipelines": status["pipelines"], "one": one, "run": run.status_code,
                          "result": run.json().get("result"), "bad": bad, "extra": extra, "deploy": deploy.status_code,
                          "paths": paths, "torch": "torch" in sys.modules}))
        """
    out = _child(code, env, tmp_path)
    assert out["pipelines"] == ["search"]
    assert out["one"] == 200
    assert out["run"] == 200, out
    assert len(out["result"]) == 2
    assert out["result"][0]["score"] >= out["result"][1]["score"]
    assert out["bad"] == 422  # top_k outside 1..100
    assert out["extra"] == 422  # an unknown field
    assert out["deploy"] in (404, 405)  # no code-upload routes in the image's mode
    assert "/search/run" in out["paths"]
    assert not any(path.startswith(("/deploy", "/undeploy")) for path in out["paths"])
    assert out["torch"] is False
