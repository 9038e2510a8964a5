"""``abtraffic verify --backend existing --target NS/SVC`` and ``abtraffic plan ... --target``: a live split,
judged read-only (see ``_cluster/_target``)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from ._errors import SpecError, UsageError

EXIT_OK, EXIT_FAILED = 0, 1


def _check_args(args: argparse.Namespace) -> None:
    if args.backend != "existing":
        raise UsageError("--target reads a live split on a cluster: it needs --backend existing --context CTX")
    if not args.context:
        raise UsageError("--target needs --context (the kubeconfig context of the cluster)")
    for option in ("--manifests", "--pulumi", "--weights", "--split-api", "--route-group"):
        if getattr(args, option[2:].replace("-", "_"), None):
            raise UsageError(f"{option} cannot be combined with --target: the live objects declare the split")


def plan_target(args: argparse.Namespace) -> int:
    from ._cluster import ClusterSettings, format_plan
    from ._cluster._target import target_plan

    _check_args(args)
    settings = ClusterSettings(context=args.context, linkerd_version=args.linkerd_version)
    print(format_plan(target_plan(settings, args.target, "abt-<model>-<run>-1")))
    return EXIT_OK


def verify_target(args: argparse.Namespace) -> int:
    from ._cluster._target import parse_target, read_target
    from ._from_manifests import load_manifest_settings
    from ._report._console import print_results
    from ._runner import VerifySettings, run_scenario, verify_split
    from ._stats import normalize_weights
    from .plugin import AbTrafficConfig, make_backend

    _check_args(args)
    parse_target(args.target)
    if args.fallback and not args.allow_chaos:
        raise UsageError("--fallback changes the live target; add --allow-chaos to allow its reversible steps "
                         "(scale, weights), which are restored and read back")
    base = load_manifest_settings(args.spec).base
    settings = VerifySettings(tolerance=args.tolerance, confidence=args.confidence, requests=args.requests,
                              early_stop=not args.no_early_stop, users=args.users)
    cfg = AbTrafficConfig(backend="existing", kubeconfig=args.kubeconfig, context=args.context,
                          report_dir=args.report_dir, allow_chaos=args.allow_chaos)
    backend: Any = make_backend(cfg, None)
    results = []
    try:
        spec = read_target(backend.api, args.target)
        spec = dataclasses.replace(spec, version_header=base.version_header, load=base.load)
        expected = None
        if args.expect:
            from ._spec import parse_weight_option

            raw = parse_weight_option(args.expect, "--expect")
            unknown = set(raw) - set(spec.variant_names)
            if unknown:
                raise SpecError("--expect", f"unknown variant(s) {sorted(unknown)}; the live split has "
                                f"{list(spec.variant_names)}")
            expected = normalize_weights({k: float(v) for k, v in raw.items()})
        from ._chaos import parse_scenario

        scenarios = [parse_scenario(text, spec, field="--fallback") for text in args.fallback]
        _say(f"live split {spec.split_kind}/{spec.split_name} in {spec.target_namespace}: "
             + ", ".join(f"{v.name}={v.weight} ({spec.service_name(v.name)})" for v in spec.variants))
        for note in spec.route_notes:
            _say(str(note))
        deployment = backend.deploy(spec)
        _say(f"load from the kit's namespace {deployment.namespace}, aimed at {deployment.target_url()}")
        results.append(verify_split(deployment, expected=expected, settings=settings, name="live-split",
                                    progress=None if args.quiet else _progress()))
        for scenario in scenarios:
            results.append(run_scenario(deployment, scenario, settings=settings))
    finally:
        backend.close()
    return EXIT_OK if print_results(results, args.report_dir, announce_reports=False) else EXIT_FAILED


def _say(text: str) -> None:
    print(f"abtraffic: {text}", file=sys.stderr, flush=True)


def _progress() -> Any:
    def write(line: str) -> None:
        sys.stderr.write(line + "\n")

    return write


__all__ = ["plan_target", "verify_target"]
