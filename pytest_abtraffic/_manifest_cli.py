"""The command-line side of manifests: ``verify --manifests/--pulumi`` and ``lint --fix``.

Kept apart from ``_cli`` so the commands' parsers stay in one place and this logic in another.
"""

from __future__ import annotations

import argparse
import sys

from ._errors import UsageError
from ._from_manifests import (
    ManifestExperiment,
    ManifestLintError,
    SourceObject,
    check_local_commands,
    derive_experiment,
    dump_objects,
    lint_source_objects,
    load_manifest_settings,
    read_manifests,
    read_pulumi,
)
from ._lint import Finding

LINT_FAILED = 1


def print_findings(findings: list[Finding]) -> None:
    """As ``abtraffic lint`` prints them: one per line on stdout, the count on stderr."""
    for finding in findings:
        print(finding)
    print(f"{len(findings)} problem(s) found", file=sys.stderr)


def _objects(args: argparse.Namespace) -> tuple[list[SourceObject], list[Finding], dict[int, str]]:
    objects: list[SourceObject] = []
    findings: list[Finding] = []
    intended: dict[int, str] = {}
    if getattr(args, "manifests", None):
        objects = read_manifests(args.manifests)
        findings = lint_source_objects(objects)
    if getattr(args, "pulumi", None):
        pulumi = read_pulumi(args.pulumi)
        intended = {len(objects) + i: name for i, name in pulumi.intended_names.items()}
        objects = [*objects, *pulumi.objects]
        findings = [*findings, *pulumi.findings]
    return objects, findings, intended


def manifest_spec(args: argparse.Namespace) -> ManifestExperiment:
    """The experiment ``verify --manifests/--pulumi`` runs; lint findings raise ManifestLintError
    before anything is started."""
    for option, value in (("--split-api", args.split_api), ("--route-group", args.route_group),
                          ("--weights", args.weights)):
        if value:
            raise UsageError(f"{option} cannot be combined with --manifests/--pulumi: the objects declare the split "
                             "and its weights (use --expect to assert other shares)")
    settings = load_manifest_settings(args.spec)
    objects, findings, _ = _objects(args)
    if findings:
        raise ManifestLintError(findings)
    spec = derive_experiment(objects, settings.base, local_commands=settings.local_commands)
    if args.backend == "local":
        check_local_commands(spec)
    return spec


def lint_fix(args: argparse.Namespace) -> int:
    """Print the objects with the mechanical mends; the findings that remain go to stderr (exit 1)."""
    from ._lint import sorted_findings
    from ._mend import mend_objects

    namespace = argparse.Namespace(manifests=args.paths, pulumi=args.pulumi)
    objects, _, intended = _objects(namespace)
    mended = mend_objects([o.obj for o in objects], intended)
    sys.stdout.write(dump_objects(mended))
    from ._lint import analyse

    remaining = sorted_findings(analyse([("<mended>", m) for m in mended]).findings)
    if remaining:
        for finding in remaining:
            print(f"not mended: {finding}", file=sys.stderr)
        print(f"{len(remaining)} problem(s) left that need a decision", file=sys.stderr)
        return LINT_FAILED
    print("mended: no problems left", file=sys.stderr)
    return 0


__all__ = ["lint_fix", "manifest_spec", "print_findings"]
