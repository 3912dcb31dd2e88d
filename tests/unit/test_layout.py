"""The house rules of agent/: imports point down the data path, rooms stay small.

Each package's docstring says what it may import; this test holds them to it.
``ops`` is the floor; ``spool`` and ``pipeline`` stand on it; ``input`` writes
to the spool; ``output`` ships what the pipeline encoded; ``tools`` and the top
(``app``, ``cli``, ``config``, wiring and reload) may use everything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support import REPO

AGENT = REPO / "agent"

MAY_IMPORT = {
    "ops": {"ops"},
    "spool": {"ops", "spool"},
    "pipeline": {"pipeline"},
    "input": {"ops", "spool", "input"},
    "output": {"ops", "pipeline", "output"},
}
MAX_MODULE_LINES = 450


def room_of(path: Path) -> str:
    parts = path.relative_to(AGENT).parts
    return parts[0] if len(parts) > 1 else "top"


def agent_imports(path: Path) -> set[str]:
    """The rooms of agent/ a module imports (``top`` for agent/*.py itself)."""
    tree = ast.parse(path.read_text())
    package = path.relative_to(AGENT.parent).with_suffix("").parts[:-1]
    rooms = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[: len(package) - (node.level - 1)])
                target = base + (node.module.split(".") if node.module else [])
                names = [target + [alias.name] for alias in node.names] if not node.module else [target]
            elif node.module and node.module.split(".")[0] == "agent":
                names = [node.module.split(".") + [alias.name] for alias in node.names] if node.module == "agent" else [node.module.split(".")]
            else:
                continue
        elif isinstance(node, ast.Import):
            names = [alias.name.split(".") for alias in node.names if alias.name.split(".")[0] == "agent"]
        else:
            continue
        for name in names:
            if len(name) >= 2 and (AGENT / name[1]).is_dir():
                rooms.add(name[1])
            elif len(name) >= 2 and name[1] != "__version__":
                rooms.add("top")
    return rooms


MODULES = sorted(p for p in AGENT.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(AGENT)))
def test_imports_point_down(path: Path) -> None:
    room = room_of(path)
    if room not in MAY_IMPORT:
        return  # tools and the top may import everything
    upward = agent_imports(path) - MAY_IMPORT[room]
    assert not upward, f"agent/{path.relative_to(AGENT)} ({room}) imports {sorted(upward)}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(AGENT)))
def test_modules_stay_small(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"agent/{path.relative_to(AGENT)} has {lines} lines"


def test_every_room_says_what_it_is_for_and_may_import() -> None:
    for init in sorted(AGENT.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert "May import" in doc, f"{init.relative_to(AGENT)}: the docstring must say what the room may import"


def test_the_pure_cores_import_no_asyncio() -> None:
    pure = [*AGENT.glob("pipeline/**/*.py"), AGENT / "input/framing.py", AGENT / "output/http/wire.py",
            AGENT / "output/errors.py", AGENT / "output/backoff.py", AGENT / "ops/wakeups.py", AGENT / "spool/scan.py",
            AGENT / "spool/format.py", AGENT / "ops/httphead.py"]
    for path in pure:
        tree = ast.parse(path.read_text())
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        assert "asyncio" not in imported, f"{path.relative_to(AGENT)} imports asyncio"
