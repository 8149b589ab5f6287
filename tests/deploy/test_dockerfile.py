"""The Dockerfile, checked without a Docker engine: it parses, builds wheels for the compiled
dependencies, runs as uid 10001 with an exec-form `herald` entrypoint, exposes the three ports, and
its build context (.dockerignore) holds exactly what the wheel needs — proved by building the
wheel from a copy of that context."""

from __future__ import annotations

import fnmatch
import json
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .chart import REPO

INSTRUCTIONS = {
    "FROM",
    "RUN",
    "CMD",
    "LABEL",
    "EXPOSE",
    "ENV",
    "ADD",
    "COPY",
    "ENTRYPOINT",
    "VOLUME",
    "USER",
    "WORKDIR",
    "ARG",
    "ONBUILD",
    "STOPSIGNAL",
    "HEALTHCHECK",
    "SHELL",
}
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


@dataclass
class Instruction:
    line: int
    cmd: str
    args: str

    @property
    def words(self) -> list[str]:
        return shlex.split(self.args)

    @property
    def exec_form(self) -> list[str] | None:
        try:
            value = json.loads(self.args)
        except ValueError:
            return None
        return value if isinstance(value, list) and all(isinstance(v, str) for v in value) else None


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined; comments and parser directives dropped."""
    out: list[Instruction] = []
    pending, start = "", 0
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if not pending:
            start = n
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = pending + line
        pending = ""
        cmd, _, args = full.partition(" ")
        assert cmd.upper() in INSTRUCTIONS, f"Dockerfile:{start}: unknown instruction {cmd!r}"
        assert cmd == cmd.upper(), f"Dockerfile:{start}: write instructions in upper case"
        out.append(Instruction(start, cmd, args.strip()))
    assert not pending, "Dockerfile ends inside a continued line"
    return out


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    out: list[list[Instruction]] = []
    for ins in instructions:
        if ins.cmd == "FROM":
            out.append([])
        if out:
            out[-1].append(ins)
    return out


def dockerignore_includes(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes; a directory match covers its files."""
    included = True
    for pat in patterns:
        negate = pat.startswith("!")
        pat = pat[1:] if negate else pat
        pat = pat.rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if pat.startswith("**/"):
            hit = any(fnmatch.fnmatch(part, pat[3:]) for part in parts)
        else:
            hit = any(fnmatch.fnmatch(prefix, pat) for prefix in prefixes)
        if hit:
            included = negate
    return included


DOCKERFILE = parse_dockerfile((REPO / "Dockerfile").read_text())
IGNORE = [
    line.strip()
    for line in (REPO / ".dockerignore").read_text().splitlines()
    if line.strip() and not line.strip().startswith("#")
]


def _args() -> dict[str, str]:
    return dict(ins.args.split("=", 1) for ins in DOCKERFILE if ins.cmd == "ARG" and "=" in ins.args)


def test_dockerfile_is_multi_stage_on_python_311_slim() -> None:
    froms = [ins.words for ins in DOCKERFILE if ins.cmd == "FROM"]
    args = _args()
    images = [args.get(w[0][2:-1], w[0]) if w[0].startswith("${") else w[0] for w in froms]
    assert len(froms) >= 2, froms
    assert set(images) == {"python:3.11-slim"}, images
    assert froms[0][-2:] == ["AS", "build"] and froms[-1][-2:] == ["AS", "runtime"], froms


def test_runtime_stage_runs_as_non_root_uid_10001() -> None:
    final = stages(DOCKERFILE)[-1]
    users = [ins for ins in final if ins.cmd == "USER"]
    assert users and users[-1].args.split(":")[0] == "10001", users
    assert all(ins.line < users[-1].line for ins in final if ins.cmd == "RUN"), "RUN after USER runs as root"
    run = " ".join(ins.args for ins in final if ins.cmd == "RUN")
    assert "useradd" in run and "--uid 10001" in run, "the uid needs a passwd entry"


def test_entrypoint_is_the_herald_console_script_in_exec_form() -> None:
    (entry,) = [ins for ins in DOCKERFILE if ins.cmd == "ENTRYPOINT"]
    argv = entry.exec_form
    assert argv is not None, "ENTRYPOINT must be exec form (signals reach the process)"
    assert argv[-1] == "herald" and "herald" in PYPROJECT["project"]["scripts"], argv
    if "tini" in argv[0]:
        assert argv[1] == "--"
        run = " ".join(ins.args for ins in stages(DOCKERFILE)[-1] if ins.cmd == "RUN")
        assert "tini" in run, "tini is used but not installed in the runtime stage"
    (cmd,) = [ins for ins in DOCKERFILE if ins.cmd == "CMD"]
    assert cmd.exec_form == ["node"]


def test_exposes_the_node_router_and_control_ports() -> None:
    exposed = {int(p.split("/")[0]) for ins in DOCKERFILE if ins.cmd == "EXPOSE" for p in ins.words}
    assert exposed == {8000, 8001, 8002}
    import dataclasses
    import inspect

    from herald import cli
    from herald.core.config import NodeConfig

    # The defaults the image relies on: node 8000 (NodeConfig), router 8001 and control 8002 (cli).
    assert {f.name: f.default for f in dataclasses.fields(NodeConfig)}["port"] == 8000
    source = inspect.getsource(cli.main)
    assert "8001" in source and "8002" in source, "router/control default ports moved: update EXPOSE and the chart"


def test_compiled_dependencies_come_as_wheels() -> None:
    """uvloop, orjson and hiredis are built into wheels in the build stage, binary only."""
    build = stages(DOCKERFILE)[0]
    run = " ".join(ins.args for ins in build if ins.cmd == "RUN")
    assert "pip wheel" in run
    only_binary = next(w for w in shlex.split(run) if w.startswith("--only-binary="))
    assert {"uvloop", "orjson", "hiredis"} <= set(only_binary.split("=", 1)[1].split(","))
    deps = " ".join(PYPROJECT["project"]["dependencies"])
    for name in ("uvloop", "orjson", "hiredis"):
        assert name in deps, f"{name} is no longer a dependency: update the Dockerfile"
    final = stages(DOCKERFILE)[-1]
    copies = [ins.words for ins in final if ins.cmd == "COPY"]
    assert copies == [["--from=build", "/opt/venv", "/opt/venv"]], "the runtime stage copies only the virtualenv"


def test_build_context_holds_what_the_wheel_needs_and_nothing_else() -> None:
    build = stages(DOCKERFILE)[0]
    sources = [w for ins in build if ins.cmd == "COPY" for w in ins.words[:-1] if not w.startswith("--")]
    for src in sources:
        assert (REPO / src).exists(), f"COPY {src}: no such file"
        assert dockerignore_includes(src.rstrip("/"), IGNORE), f"COPY {src}: excluded by .dockerignore"
    package_dirs = set(PYPROJECT["tool"]["setuptools"]["package-dir"].values())
    assert package_dirs <= {s.rstrip("/") for s in sources}, package_dirs - set(sources)
    readme = PYPROJECT["project"].get("readme")
    assert readme in sources and "pyproject.toml" in sources
    for excluded in (
        "tests/e2e/server.py",
        ".git/HEAD",
        "helm/herald/Chart.yaml",
        "k8s/node.yaml",
        "node/__pycache__/app.cpython-311.pyc",
        ".hypothesis/x",
        "loadtest/bench/compare.sh",
        "Dockerfile",
    ):
        assert not dockerignore_includes(excluded, IGNORE), f"{excluded} would be sent to the builder"
    assert dockerignore_includes("core/engine/redis/lua/publish_append.lua", IGNORE)
    assert dockerignore_includes("node/static/client.js", IGNORE)


def test_the_wheel_builds_from_the_build_context(tmp_path: Path) -> None:
    """Copy exactly the files the Dockerfile's COPY lines and .dockerignore let through, build the
    wheel from them (offline, no dependencies), and find the package data and the console script."""
    ctx = tmp_path / "ctx"
    build = stages(DOCKERFILE)[0]
    sources = [w.rstrip("/") for ins in build if ins.cmd == "COPY" for w in ins.words[:-1] if not w.startswith("--")]
    for src in sources:
        root = REPO / src
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        for f in files:
            rel = f.relative_to(REPO).as_posix()
            if dockerignore_includes(rel, IGNORE):
                (ctx / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, ctx / rel)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-w",
            str(tmp_path / "wheels"),
            str(ctx),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    (wheel,) = (tmp_path / "wheels").glob("herald-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "herald/cli.py",
        "herald/node/static/client.js",
        "herald/core/engine/redis/lua/publish_append.lua",
        "herald/router/service.py",
        "herald/node/drain.py",
    ):
        assert needed in names, f"{needed} missing from the wheel built from the Docker context"
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "herald = herald.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
    assert not any(n.startswith(("tests/", "herald/tests/")) for n in names)
