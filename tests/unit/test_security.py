"""Security rules that hold for the whole package, checked by reading its source.

The kubeconfig rule (never write ~/.kube/config) is tested in tests/unit/test_cluster_plan.py
(test_kind_backend_never_writes_the_users_kubeconfig) and the admin endpoint's loopback default in
tests/integration/test_model_server.py (test_admin_binds_loopback_only).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "pytest_abtraffic"
FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


def _python_files() -> list[Path]:
    return sorted(p for root in (PACKAGE, FIXTURES) for p in root.rglob("*.py") if "_bundled" not in p.parts)


def test_no_shell_true_anywhere() -> None:
    offenders = []
    for path in _python_files():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.keyword) and node.arg == "shell":
                value = node.value
                if not (isinstance(value, ast.Constant) and value.value is False):
                    offenders.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
            if isinstance(node, ast.Attribute) and node.attr in {"system", "popen"} and \
                    isinstance(node.value, ast.Name) and node.value.id == "os":
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} os.{node.attr}")
    assert not offenders, f"shell use found: {offenders}"
    assert len(_python_files()) > 20  # the scan really looked at the package
