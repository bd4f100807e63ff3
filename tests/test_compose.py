"""The container deployment: docker-compose.yml, Dockerfile and .env.example agree.

Plain file checks (PyYAML and the standard library), so no Docker is needed. Each
check is a function over the parsed files; `test_check_rejects_broken_copy` feeds
every check a copy broken in the way it guards against, so none of them can pass
vacuously.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("postgres", "redis", "migrate", "api", "worker")
APP_SERVICES = ("migrate", "api", "worker")

# $$ (an escaped dollar), ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, $NAME
_VAR = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


@dataclass(frozen=True)
class Deployment:
    compose: dict[str, Any]  # docker-compose.yml with YAML merge keys applied, not interpolated
    dockerfile: str
    env_example: dict[str, str]
    pyproject: dict[str, Any]


def parse_env_file(text: str) -> dict[str, str]:
    values = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        assert sep, f".env.example: not NAME=value: {raw!r}"
        values[name.removeprefix("export ").strip()] = value.strip().strip("'\"")
    return values


def load() -> Deployment:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return Deployment(
        # The JSON round trip unshares anchored mappings so a test can break one service.
        compose=json.loads(json.dumps(compose)),
        dockerfile=(ROOT / "Dockerfile").read_text(),
        env_example=parse_env_file((ROOT / ".env.example").read_text()),
        pyproject=tomllib.loads((ROOT / "pyproject.toml").read_text()),
    )


# --- compose helpers -----------------------------------------------------------------


def _strings(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for value in node.values() for s in _strings(value)]
    if isinstance(node, list):
        return [s for item in node for s in _strings(item)]
    return []


def variables_read(compose: dict[str, Any]) -> set[str]:
    found = set()
    for text in _strings(compose):
        for match in _VAR.finditer(text):
            name = match["braced"] or match["bare"]
            if name:
                found.add(name)
    return found


def interpolate(node: Any, env: dict[str, str]) -> Any:
    """Resolve ${...} the way `docker compose` does, with `env` as the .env file."""

    def one(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["bare"]
        value, op, arg = env.get(name), match["op"] or "", match["arg"]
        # With a colon, empty counts as unset; without one, only unset does.
        missing = not value if op.startswith(":") else value is None
        if op.endswith("?") and missing:
            raise AssertionError(f"compose requires {name}: {arg}")
        if op.endswith("-") and missing:
            return arg
        if op.endswith("+"):
            return "" if missing else arg
        return value or ""

    if isinstance(node, str):
        return _VAR.sub(one, node)
    if isinstance(node, dict):
        return {key: interpolate(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate(item, env) for item in node]
    return node


def resolved(d: Deployment) -> dict[str, Any]:
    """The compose file as a user who ran `cp .env.example .env` gets it."""
    return interpolate(d.compose, d.env_example)


def service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    services = compose.get("services") or {}
    assert name in services, f"docker-compose.yml has no service {name!r}"
    return services[name]


def environment(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def command(svc: dict[str, Any]) -> list[str]:
    cmd = svc.get("command")
    return shlex.split(cmd) if isinstance(cmd, str) else list(cmd or [])


def depends_on(svc: dict[str, Any]) -> dict[str, str]:
    deps = svc.get("depends_on") or {}
    if isinstance(deps, list):  # the short form means service_started
        return dict.fromkeys(deps, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def healthcheck_test(svc: dict[str, Any]) -> str:
    check = svc.get("healthcheck") or {}
    test = check.get("test")
    if check.get("disable") or not test or test in ("NONE", ["NONE"]):
        return ""
    return test if isinstance(test, str) else " ".join(test)


# --- Dockerfile helpers --------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\[ \t]*\n", " ", "\n".join(lines))
    instructions = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, args = line.strip().partition(" ")
            instructions.append((keyword.upper(), args.strip()))
    return instructions


def final_stage(text: str) -> list[tuple[str, str]]:
    instructions = dockerfile_instructions(text)
    starts = [i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM"]
    assert starts, "Dockerfile has no FROM"
    return instructions[starts[-1] :]


def last(stage: list[tuple[str, str]], keyword: str) -> str | None:
    found = [args for kw, args in stage if kw == keyword]
    return found[-1] if found else None


def env_instructions(stage: list[tuple[str, str]]) -> dict[str, str]:
    values = {}
    for keyword, args in stage:
        if keyword == "ENV":
            for word in shlex.split(args):
                name, _, value = word.partition("=")
                values[name] = value
    return values


# --- the checks ------------------------------------------------------------------------


def check_services_exist(d: Deployment) -> None:
    missing = set(SERVICES) - set(d.compose.get("services") or {})
    assert not missing, f"docker-compose.yml lacks services {sorted(missing)}"


def check_healthchecks(d: Deployment) -> None:
    compose = resolved(d)
    expected = {"postgres": "pg_isready", "redis": "ping", "api": "/api/v1/health"}
    for name, needle in expected.items():
        test = healthcheck_test(service(compose, name))
        assert needle in test, f"{name}: healthcheck should run {needle!r}, has {test!r}"


def check_postgres_named_volume(d: Deployment) -> None:
    pg = service(d.compose, "postgres")
    declared = set(d.compose.get("volumes") or {})
    mounts = [m if isinstance(m, str) else f"{m['source']}:{m['target']}" for m in pg["volumes"]]
    sources = {m.split(":")[0] for m in mounts if m.split(":")[1] == "/var/lib/postgresql/data"}
    assert sources, "postgres: nothing mounted at /var/lib/postgresql/data"
    assert sources <= declared, f"postgres data {sources} is not a top-level named volume"


def check_migrate(d: Deployment) -> None:
    migrate = service(d.compose, "migrate")
    assert command(migrate) == ["tracer", "db", "upgrade"], f"migrate runs {command(migrate)}"
    assert str(migrate.get("restart")) == "no", "migrate is one-shot: restart: 'no'"
    deps = depends_on(migrate)
    assert deps.get("postgres") == "service_healthy", f"migrate must wait for postgres: {deps}"


def check_app_waits(d: Deployment) -> None:
    wanted = {
        "postgres": "service_healthy",
        "redis": "service_healthy",
        "migrate": "service_completed_successfully",
    }
    for name in ("api", "worker"):
        deps = depends_on(service(d.compose, name))
        for dep, condition in wanted.items():
            assert deps.get(dep) == condition, f"{name} depends_on {dep}: want {condition}"


def check_app_urls(d: Deployment) -> None:
    compose = resolved(d)
    pg_env = environment(service(compose, "postgres"))
    for name in APP_SERVICES:
        env = environment(service(compose, name))
        db, redis = urlsplit(env.get("DATABASE_URL", "")), urlsplit(env.get("REDIS_URL", ""))
        assert db.scheme.startswith("postgresql"), f"{name}: DATABASE_URL {db.geturl()!r}"
        assert db.hostname == "postgres", f"{name}: DATABASE_URL host {db.hostname!r}"
        assert (db.username, db.password, db.path.lstrip("/")) == (
            pg_env.get("POSTGRES_USER"),
            pg_env.get("POSTGRES_PASSWORD"),
            pg_env.get("POSTGRES_DB"),
        ), f"{name}: DATABASE_URL credentials differ from the postgres service's"
        assert redis.scheme == "redis", f"{name}: REDIS_URL {redis.geturl()!r}"
        assert redis.hostname == "redis", f"{name}: REDIS_URL host {redis.hostname!r}"


def check_data_mounted(d: Deployment) -> None:
    compose = resolved(d)
    for name in ("api", "worker"):
        svc = service(compose, name)
        roots = environment(svc).get("TRACER_DATA_ROOTS", "")
        assert roots, f"{name}: TRACER_DATA_ROOTS unset"
        read_only = {m.split(":")[1] for m in svc.get("volumes") or [] if m.endswith(":ro")}
        for root in roots.split(":"):
            assert root in read_only, f"{name}: data root {root} is not mounted read-only"


def check_worker_scalable(d: Deployment) -> None:
    worker = service(d.compose, "worker")
    assert not worker.get("ports"), "worker publishes ports, so it cannot be scaled"
    assert "container_name" not in worker, "worker has a container_name, so it cannot be scaled"


def check_commands(d: Deployment) -> None:
    image_cmd = json.loads(last(final_stage(d.dockerfile), "CMD") or "[]")
    api = command(service(d.compose, "api")) or image_cmd
    assert api[:2] == ["tracer", "serve"], f"api command {api}"
    worker = command(service(d.compose, "worker"))
    assert worker == ["tracer", "worker"], f"worker command {worker}"


def check_env_documented(d: Deployment) -> None:
    read = variables_read(d.compose)
    undocumented = read - set(d.env_example)
    assert not undocumented, f".env.example does not document {sorted(undocumented)}"
    stale = set(d.env_example) - read
    assert not stale, f".env.example documents {sorted(stale)}, which compose never reads"


def check_env_example_placeholders(d: Deployment) -> None:
    pairs = [p.partition(":") for p in d.env_example.get("TRACER_API_TOKENS", "").split(",")]
    assert {scope for scope, _, _ in pairs} == {"read", "ingest"}, pairs
    for scope, _, token in pairs:
        assert "change-me" in token, f"{scope} token in .env.example must be a placeholder"


def check_dockerfile_runtime(d: Deployment) -> None:
    stage = final_stage(d.dockerfile)
    args = {
        kw_args.split("=")[0]: kw_args.partition("=")[2]
        for kw, kw_args in dockerfile_instructions(d.dockerfile)
        if kw == "ARG"
    }
    base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m[1], ""), stage[0][1].split()[0])
    assert base == "python:3.11-slim", f"runtime stage is FROM {base}"
    user = (last(stage, "USER") or "root").split(":")[0]
    assert user not in ("root", "0"), "the image must run as a non-root USER"
    env = env_instructions(stage)
    for name in ("PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"):
        assert env.get(name) == "1", f"Dockerfile runtime stage: ENV {name}=1"
    assert "8000" in (last(stage, "EXPOSE") or "").split(), "EXPOSE 8000"
    runs = [a for kw, a in dockerfile_instructions(d.dockerfile) if kw == "RUN"]
    assert any("[server]" in run for run in runs), "install the project with the server extra"


def check_dockerfile_healthcheck(d: Deployment) -> None:
    check = last(final_stage(d.dockerfile), "HEALTHCHECK") or "NONE"
    assert not check.upper().startswith("NONE"), "the image needs a HEALTHCHECK"
    assert "/api/v1/health" in check, check
    assert not re.search(r"\b(curl|wget)\b", check), "slim images have no curl or wget"


def check_dockerfile_cmd(d: Deployment) -> None:
    cmd = last(final_stage(d.dockerfile), "CMD") or ""
    assert cmd.startswith("["), "CMD in exec (JSON) form, so signals reach the process"
    assert json.loads(cmd)[:2] == ["tracer", "serve"], cmd


def check_dockerfile_copies_packages(d: Deployment) -> None:
    copied = {
        Path(src).name
        for kw, args in dockerfile_instructions(d.dockerfile)
        if kw == "COPY" and "--from" not in args
        for src in args.split()[:-1]
    }
    include = d.pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    needed = {"pyproject.toml", "README.md"} | {p.rstrip("*") for p in include}
    assert needed <= copied, f"Dockerfile does not COPY {sorted(needed - copied)}"


CHECKS = [
    check_services_exist,
    check_healthchecks,
    check_postgres_named_volume,
    check_migrate,
    check_app_waits,
    check_app_urls,
    check_data_mounted,
    check_worker_scalable,
    check_commands,
    check_env_documented,
    check_env_example_placeholders,
    check_dockerfile_runtime,
    check_dockerfile_healthcheck,
    check_dockerfile_cmd,
    check_dockerfile_copies_packages,
]


@pytest.fixture(scope="module")
def deployment() -> Deployment:
    return load()


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_deployment(deployment: Deployment, check: Callable[[Deployment], None]) -> None:
    check(deployment)


# --- every check fails on a copy broken the way it guards against ------------------------


def _edit(path: str, mutate: Callable[[Any], None]) -> Callable[[Deployment], Deployment]:
    """Break compose at a /-separated path of keys, leaving the real files alone."""

    def broken(d: Deployment) -> Deployment:
        compose = copy.deepcopy(d.compose)
        node = compose
        for key in path.split("/"):
            node = node[key]
        mutate(node)
        return replace(d, compose=compose)

    return broken


def _dockerfile(old: str, new: str) -> Callable[[Deployment], Deployment]:
    def broken(d: Deployment) -> Deployment:
        text, count = re.subn(old, new, d.dockerfile, flags=re.M)
        if not count:
            raise LookupError(f"Dockerfile has no {old!r} to break")
        return replace(d, dockerfile=text)

    return broken


def _env_example(mutate: Callable[[dict[str, str]], None]) -> Callable[[Deployment], Deployment]:
    def broken(d: Deployment) -> Deployment:
        env = dict(d.env_example)
        mutate(env)
        return replace(d, env_example=env)

    return broken


BROKEN = [
    (check_services_exist, _edit("services", lambda s: s.pop("worker"))),
    (check_healthchecks, _edit("services/redis", lambda s: s.pop("healthcheck"))),
    (check_healthchecks, _edit("services/api", lambda s: s.update(healthcheck={"disable": True}))),
    (check_postgres_named_volume, _edit("volumes", lambda v: v.pop("pgdata"))),
    (check_postgres_named_volume, _edit("services/postgres", lambda s: s.update(volumes=[]))),
    (check_migrate, _edit("services/migrate", lambda s: s.update(command="tracer serve"))),
    (check_migrate, _edit("services/migrate", lambda s: s.update(restart="always"))),
    (check_app_waits, _edit("services/api/depends_on", lambda d: d.pop("migrate"))),
    (
        check_app_waits,
        _edit("services/worker/depends_on/redis", lambda d: d.update(condition="service_started")),
    ),
    (
        check_app_urls,
        _edit(
            "services/worker/environment",
            lambda e: e.update(REDIS_URL="redis://localhost:6379/0"),
        ),
    ),
    (check_app_urls, _edit("services/migrate/environment", lambda e: e.pop("DATABASE_URL"))),
    (check_app_urls, _edit("services/postgres/environment", lambda e: e.update(POSTGRES_DB="x"))),
    (check_data_mounted, _edit("services/worker", lambda s: s.update(volumes=[]))),
    (check_worker_scalable, _edit("services/worker", lambda s: s.update(ports=["8001:8000"]))),
    (check_worker_scalable, _edit("services/worker", lambda s: s.update(container_name="w"))),
    (check_commands, _edit("services/worker", lambda s: s.update(command="rq worker ingest"))),
    (check_commands, _edit("services/api", lambda s: s.update(command="gunicorn api:app"))),
    (check_env_documented, _env_example(lambda e: e.pop("TRACER_PORT"))),
    (check_env_documented, _env_example(lambda e: e.update(UNUSED_SETTING="1"))),
    (
        check_env_example_placeholders,
        _env_example(lambda e: e.update(TRACER_API_TOKENS="read:s3cr3t,ingest:s3cr3t")),
    ),
    (check_dockerfile_runtime, _dockerfile(r"^USER tracer$", "USER root")),
    (check_dockerfile_runtime, _dockerfile(r"^USER tracer$", "")),
    (check_dockerfile_runtime, _dockerfile(r"PYTHONUNBUFFERED=1", "PYTHONUNBUFFERED=0")),
    (check_dockerfile_runtime, _dockerfile(r"python:3\.11-slim", "python:3.11")),
    (check_dockerfile_runtime, _dockerfile(r"\[server\]", "")),
    (check_dockerfile_healthcheck, _dockerfile(r"^HEALTHCHECK ", "# HEALTHCHECK ")),
    (
        check_dockerfile_healthcheck,
        _dockerfile(
            r'"python", "-c", .*\]$', '"curl", "-f", "http://127.0.0.1:8000/api/v1/health"]'
        ),
    ),
    (check_dockerfile_cmd, _dockerfile(r'^CMD \["tracer", ', 'CMD ["gunicorn", ')),
    (check_dockerfile_copies_packages, _dockerfile(r"^COPY workers .*$", "")),
]


@pytest.mark.parametrize(
    ("check", "break_it"),
    BROKEN,
    ids=[f"{check.__name__}-{i}" for i, (check, _) in enumerate(BROKEN)],
)
def test_check_rejects_broken_copy(
    deployment: Deployment,
    check: Callable[[Deployment], None],
    break_it: Callable[[Deployment], Deployment],
) -> None:
    check(deployment)  # holds for the real files...
    broken = break_it(deployment)  # (outside raises(): a mutation that misses must error)
    with pytest.raises(AssertionError):
        check(broken)  # ...and fails for the broken copy


def test_every_check_is_shown_to_fail() -> None:
    assert {check for check, _ in BROKEN} == set(CHECKS)


def test_interpolation_follows_compose() -> None:
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("${SET:-d}|${EMPTY:-d}|${UNSET:-d}|${EMPTY-d}|$$SET|$SET", env) == (
        "x|d|d||$SET|x"
    )
    with pytest.raises(AssertionError, match="compose requires UNSET"):
        interpolate("${UNSET:?set it}", env)
    assert variables_read({"a": ["${A:-1} $$NOT_READ $B", {"c": "${C:?x}"}]}) == {"A", "B", "C"}
