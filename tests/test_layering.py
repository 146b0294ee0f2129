"""The one-way imports of DESIGN.md: each package imports only the packages it may."""

import ast

import pytest

from tests.paths import REPO_ROOT

ALLOWED = {
    "common": {"common"},
    "edge_export": {"common", "edge_export"},
    "client": {"common", "edge_export", "client"},
    "server": {"common", "server"},
}
OURS = {"common", "edge_export", "client", "server", "simulations"}


def imported_packages(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0]


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_a_package_imports_only_what_the_design_allows(package):
    offending = {
        f"{path.relative_to(REPO_ROOT)} imports {name}"
        for path in (REPO_ROOT / package).rglob("*.py")
        for name in imported_packages(path)
        if name in OURS and name not in ALLOWED[package]
    }
    assert not offending, sorted(offending)
