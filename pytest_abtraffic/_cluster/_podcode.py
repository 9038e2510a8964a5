"""What the meshed load pod runs, with no image of the kit's own.

The load Job runs on the official Locust image, pinned to the Locust version this kit is tested
with (``LOCUST_IMAGE``; overridable with ``ClusterSettings.load_image``). The kit's code reaches
the pod through the Job's ConfigMap: the job entry, the in-cluster entry, the driver and the
locustfile, laid out as a package under ``CODE_DIR`` with ``PYTHONPATH`` pointing at it. The
shipped modules import only the standard library, Locust/gevent (inside the Locust subprocess)
and each other: ``check_pod_imports`` proves that, and a unit test runs it on every change.

The package ``__init__`` files are replaced by empty ones in the pod: the real ones import the
whole kit (httpx, kubernetes, yaml), which the Locust image does not carry.

Image facts: Locust's docs ("Running in Docker") document ``locustio/locust`` with the locustfile
mounted; the image's entry point is ``locust``, replaced here by the pod's ``command``. No digest
is pinned: none could be read from a trustworthy source where this was written; a user who wants
one passes ``load_image="locustio/locust:2.47.0@sha256:..."``.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

#: The Locust release the kit's load code is tested with (the development environment's Locust);
#: it satisfies the ``locust`` requirement in pyproject.toml (a unit test checks that).
LOCUST_VERSION = "2.47.0"
LOCUST_IMAGE = f"locustio/locust:{LOCUST_VERSION}"
CODE_DIR = "code"  # below the ConfigMap mount
_PACKAGE = Path(__file__).resolve().parent.parent
#: Modules of the kit that run in the load pod (paths relative to the ``pytest_abtraffic`` package).
POD_MODULES: tuple[str, ...] = (
    "_errors.py",
    "_pointer.py",
    "_proc.py",
    "_stats/__init__.py",
    "_stats/_common.py",
    "_stats/_distributions.py",
    "_stats/_fixed.py",
    "_stats/_planning.py",
    "_stats/_sequential.py",
    "_stats/_units.py",
    "_load/_driver.py",
    "_load/_plan.py",
    "_load/_protocol.py",
    "_load/_recordsfile.py",
    "_load/_results.py",
    "_load/_sizing.py",
    "_load/incluster.py",
    "_load/locustfile.py",
    "_load/locust_support.py",
    "_cluster/_jobentry.py",
)
_STUB_PACKAGES: tuple[str, ...] = ("__init__.py", "_load/__init__.py", "_cluster/__init__.py")
_STUB = '"""Load-pod stub of pytest-abtraffic (the real package is not installed in the pod)."""\n'
#: Third-party modules the pod may import: the Locust image provides them.
POD_THIRD_PARTY = frozenset({"locust", "gevent"})


def _key(relative: str) -> str:
    # ConfigMap keys allow [-._a-zA-Z0-9]: flatten the path.
    return "code." + relative.replace("/", ".")


def pod_code() -> dict[str, tuple[str, str]]:
    """ConfigMap key -> (path below the mount, file text) of everything the pod imports."""
    out: dict[str, tuple[str, str]] = {}
    for rel in _STUB_PACKAGES:
        out[_key("pkg." + rel)] = (f"{CODE_DIR}/pytest_abtraffic/{rel}", _STUB)
    for rel in POD_MODULES:
        text = (_PACKAGE / rel).read_text(encoding="utf-8")
        out[_key(rel)] = (f"{CODE_DIR}/pytest_abtraffic/{rel}", text)
    return out


def _module_name(rel: str) -> str:
    """``_stats/_fixed.py`` -> ``pytest_abtraffic._stats._fixed``; a package's ``__init__.py`` is the package."""
    name = "pytest_abtraffic." + rel[:-3].replace("/", ".")
    return name.removesuffix(".__init__")


def _imports(text: str, module: str, *, is_package: bool = False) -> set[str]:
    """Absolute names of the modules ``text`` (the source of ``module``) imports at run time."""
    tree = ast.parse(text)
    found: set[str] = set()
    package = module if is_package else module.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            node.body = []  # never imported at run time
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = str(node.module)
            found.add(name)
            if node.level and not node.module:
                found.update(f"{name}.{alias.name}" for alias in node.names)
    return found


def check_pod_imports() -> list[str]:
    """Imports of the shipped modules that the pod could not satisfy (empty when all is well)."""
    shipped = {_module_name(rel) for rel in POD_MODULES}
    shipped |= {"pytest_abtraffic", "pytest_abtraffic._load", "pytest_abtraffic._cluster"}
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    problems: list[str] = []
    for rel in POD_MODULES:
        module = _module_name(rel)
        text = (_PACKAGE / rel).read_text(encoding="utf-8")
        for name in sorted(_imports(text, module, is_package=rel.endswith("__init__.py"))):
            top = name.split(".")[0]
            if name in shipped or top in stdlib or top in POD_THIRD_PARTY:
                continue
            problems.append(f"{rel} imports {name}, which the load pod does not have")
    return problems


__all__ = ["CODE_DIR", "LOCUST_IMAGE", "LOCUST_VERSION", "POD_MODULES", "check_pod_imports", "pod_code"]
