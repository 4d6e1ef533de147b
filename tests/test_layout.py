"""api/ and worker/ never import each other; both use models/."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def imported_packages(package: str) -> set[str]:
    found = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [("api", "worker"), ("worker", "api"), ("models", "api"), ("models", "worker")],
)
def test_no_cross_imports(package, forbidden):
    assert forbidden not in imported_packages(package)


def test_worker_modules_stay_small_enough_to_read():
    """The turn runner is split by concern (claiming, orchestrator, agent_loop, recording)."""
    sizes = {
        str(path.relative_to(ROOT)): len(path.read_text().splitlines())
        for folder in ("worker", "worker/tools")
        for path in (ROOT / folder).glob("*.py")
    }
    assert {name: n for name, n in sizes.items() if n > 420} == {}
