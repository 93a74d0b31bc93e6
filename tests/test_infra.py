"""infra/ checked by what runs here: no Docker daemon or compose plugin exists on these
machines, so the compose file is validated against the Compose Specification's JSON schema
and the Dockerfile and .dockerignore are read for what they must hold. The
same services run natively in the tests (SeaweedFS, `prefect server start`, a worker, Ray)."""

from __future__ import annotations

import fnmatch
import json
import re

import jsonschema
import pytest
import yaml

from tests.helpers import REPO

INFRA = REPO / "infra"
COMPOSE = yaml.safe_load((INFRA / "compose.yaml").read_text())
DOCKERFILE = (INFRA / "Dockerfile").read_text()


def test_compose_file_follows_the_compose_specification() -> None:
    schema = json.loads((REPO / "tests" / "data" / "compose-spec.json").read_text())
    validator = jsonschema.Draft7Validator(schema)
    validator.validate(COMPOSE)  # raises with the offending path
    broken = {**COMPOSE, "services": {**COMPOSE["services"], "minio": {"image": 9, "ports": 1}}}
    assert not validator.is_valid(broken)  # the schema does catch a wrong service


def test_compose_has_every_service_the_issue_names() -> None:
    services = COMPOSE["services"]
    assert {"minio", "buckets", "postgres", "prefect-server", "deployment", "worker",
            "ray-head", "ray-worker"} <= set(services)  # fmt: skip
    assert (
        "postgresql+asyncpg://"
        in services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    )
    assert services["worker"]["command"][:4] == ["prefect", "worker", "start", "--pool"]
    assert "--head" in services["ray-head"]["command"]
    assert "mc mb" in services["buckets"]["command"][0]


def test_compose_references_resolve() -> None:
    """depends_on names defined services; every ${VAR} has a line in .env.example; the build
    context and Dockerfile exist."""
    services = COMPOSE["services"]
    for name, svc in services.items():
        assert set(svc.get("depends_on") or {}) <= set(services), name
    text = (INFRA / "compose.yaml").read_text()
    used = set(re.findall(r"(?<!\$)\$\{([A-Z_][A-Z0-9_]*)", text))
    example = (INFRA / ".env.example").read_text()
    defined = set(re.findall(r"^([A-Z_][A-Z0-9_]*)=", example, re.M))
    assert used <= defined, f"not in .env.example: {sorted(used - defined)}"
    build = services["worker"]["build"]
    assert (INFRA / build["context"] / build["dockerfile"]).resolve() == INFRA / "Dockerfile"


def test_dockerfile_is_cpu_by_default_cuda_by_argument_and_not_root() -> None:
    assert re.search(r"^ARG BASE=python:3\.\d+-slim$", DOCKERFILE, re.M)
    assert re.search(r"^FROM \$\{BASE\}$", DOCKERFILE, re.M)
    assert "whl/cpu" in DOCKERFILE and "nvidia/cuda" in DOCKERFILE  # default, and the how-to
    users = re.findall(r"^USER (\S+)$", DOCKERFILE, re.M)
    assert users and users[-1] not in ("root", "0")
    last_run = max(m.start() for m in re.finditer(r"^RUN ", DOCKERFILE, re.M))
    assert DOCKERFILE.rindex("\nUSER ") > last_run  # nothing runs as root after the switch


def _ignored(path: str, patterns: list[str]) -> bool:
    for pat in patterns:
        pat = pat.rstrip("/")
        if fnmatch.fnmatch(path, pat) or fnmatch.fnmatch(path, pat.removeprefix("**/")):
            return True
        if path.startswith(pat + "/"):
            return True
    return False


@pytest.mark.parametrize("source", ["pyproject.toml", "README.md", "ensgan"])
def test_what_the_image_copies_is_there_and_not_ignored(source: str) -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied = re.findall(r"^COPY (.+) \S+$", DOCKERFILE, re.M)
    assert any(source in c.split() for c in copied)
    assert (REPO / source).exists() and not _ignored(source, patterns)
    for secret_or_output in (".env", "infra/.env", "models", "store", ".venv", "data/prepared"):
        assert _ignored(secret_or_output, patterns), secret_or_output


def test_the_image_installs_the_ray_extra_the_package_declares() -> None:
    import tomllib

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert '".[ray]"' in DOCKERFILE and any(d.startswith("ray") for d in extras["ray"])
