"""The pytest side of manifests: ``--abtraffic-manifests`` / ini ``abtraffic_manifests`` and
``@pytest.mark.abtraffic(manifests=...)``.

Paths of the option are relative to the invocation directory, of the ini key to the ini file's
directory, of the marker to the test file's directory (a model repository keeps ``k8s/`` next to its
tests). A SPEC file given with ``--abtraffic-spec`` may carry ``local_commands``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import yaml

from ._from_manifests import (
    LOCAL_COMMANDS_KEY,
    ManifestExperiment,
    ManifestSettings,
    check_local_commands,
    load_manifest_settings,
    spec_from_manifests,
)


def is_manifest_spec_file(path: str | None) -> bool:
    """A SPEC file written for manifests (it has ``local_commands``), which ``load_spec`` would refuse."""
    if not path:
        return False
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and LOCAL_COMMANDS_KEY in data


def split_paths(value: object) -> tuple[str, ...]:
    """Marker/option value: a path, or a list of paths; a string may hold several separated by spaces."""
    if value is None or value == "":
        return ()
    if isinstance(value, str | Path):
        return tuple(str(value).split()) if isinstance(value, str) else (str(value),)
    if isinstance(value, Sequence):
        return tuple(str(v) for v in value)
    raise TypeError(f"manifests must be a path or a list of paths, got {value!r}")


def resolve(paths: Sequence[str], base: Path) -> list[str]:
    return [p if p == "-" or Path(p).is_absolute() else str(base / p) for p in paths]


def manifest_experiment(paths: Sequence[str], settings: ManifestSettings, backend: str) -> ManifestExperiment:
    """Lint, derive and (for the local backend) check the local commands. Raises ManifestLintError/SpecError."""
    spec = spec_from_manifests(list(paths), settings.base, local_commands=settings.local_commands)
    if backend == "local":
        check_local_commands(spec)
    return spec


def settings_for(spec_path: str | None) -> ManifestSettings:
    return load_manifest_settings(spec_path)


__all__ = ["is_manifest_spec_file", "manifest_experiment", "resolve", "settings_for", "split_paths"]
