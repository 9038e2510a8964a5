"""``abtraffic``: render, lint, plan and verify A/B splits from the command line.

Exit codes: 0 success, 1 the split/fallback does not hold or lint found problems, 2 bad input or a
missing prerequisite, 3 the run could not be completed (backend or load generator failure).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

from ._errors import AbTrafficAssertionError, AbTrafficError, PrerequisiteError, SpecError, UsageError
from ._from_manifests import ManifestLintError
from ._spec import BACKENDS, ROUTE_API_VERSIONS, SPLIT_APIS, ExperimentSpec, load_spec, parse_weight_option

if TYPE_CHECKING:
    from ._backend import Backend
    from ._runner import VerifySettings

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_ERROR = 0, 1, 2, 3


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)  # `--split` must not silently mean `--split-api`
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> Any:  # argparse's own usage errors also exit 2, with our prefix
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"abtraffic: error: {message}\n")


def _fraction(option: str, low: float, high: float) -> Any:
    def parse(text: str) -> float:
        try:
            value = float(text.rstrip("%")) / (100 if text.endswith("%") else 1)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{option}: expected a number, got {text!r}") from None
        if not low < value < high:
            raise argparse.ArgumentTypeError(f"{option}: must be between {low:g} and {high:g}, got {text!r}")
        return value

    return parse


def _positive_int(option: str) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text.replace("_", "").replace(",", ""))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{option}: expected a whole number, got {text!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{option}: must be at least 1, got {text!r}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="abtraffic", description=__doc__.splitlines()[0] if __doc__ else None)
    from ._version import __version__

    parser.add_argument("--version", action="version", version=f"pytest-abtraffic {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def spec_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("spec", nargs="?", help="experiment spec YAML (default: the built-in ai-model experiment)")
        p.add_argument("--split-api", choices=SPLIT_APIS, help="override the spec's split API")
        p.add_argument("--route-group", choices=tuple(ROUTE_API_VERSIONS), help="HTTPRoute API group")
        p.add_argument("--weights", help="deployed weights, e.g. v1=90,v2=10")
        p.add_argument("--workers", type=_positive_int("--workers"),
                       help="load worker processes (Locust distributed mode; local: --processes N)")

    render = sub.add_parser("render", help="print the Kubernetes manifests of an experiment (YAML)")
    spec_args(render)
    render.add_argument("--namespace", help="namespace to render into")
    render.add_argument("--validate", action="store_true", help="validate against Kubernetes and CRD schemas")

    lint = sub.add_parser("lint", help="find split problems in Kubernetes YAML or a Pulumi program")
    lint.add_argument("paths", nargs="*", help="YAML files or directories ('-' for standard input)")
    lint.add_argument("--pulumi", metavar="PROGRAM", help="a Pulumi Python program (run under Pulumi mocks)")
    lint.add_argument("--fix", action="store_true",
                      help="print the objects with the mechanical mends (apex Service, linkerd.io/inject, Pulumi "
                      "metadata.name) as YAML; what needs a decision is left and reported")

    plan = sub.add_parser("plan", help="print the ordered steps a cluster backend would run, without running them")
    spec_args(plan)
    plan.add_argument("--backend", choices=("kind", "existing"), required=True)
    plan.add_argument("--context", help="kubeconfig context (existing backend)")
    plan.add_argument("--linkerd-version", default="edge-25.4.4")
    plan.add_argument("--keep-cluster", action="store_true")
    plan.add_argument("--manifests", nargs="+", metavar="PATH",
                      help="plan the experiment these objects declare (YAML files, directories, '-' for stdin)")
    plan.add_argument("--pulumi", metavar="PROGRAM", help="plan the experiment a Pulumi Python program declares")
    plan.add_argument("--target", metavar="NAMESPACE/SERVICE", help="existing backend: plan the read-only "
                      "verification of the live split whose apex is this Service")

    def image_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--load-image", help="the load Job's image (default: the official Locust image, pinned)")
        p.add_argument("--model-image", help="existing backend: the reference model image as pushed to your registry")

    image_args(plan)

    size = sub.add_parser("sample-size", help="requests needed to verify a split")
    size.add_argument("--weight", type=_fraction("--weight", 0, 1), required=True,
                      help="configured share of the smallest variant, e.g. 0.1 or 10%%")
    group = size.add_mutually_exclusive_group(required=True)
    group.add_argument("--tolerance", type=_fraction("--tolerance", 0, 1), help="equivalence margin, e.g. 0.02")
    group.add_argument("--detect", type=_fraction("--detect", 0, 1), help="actual share to detect, e.g. 0.12")
    size.add_argument("--alpha", type=_fraction("--alpha", 0, 0.5), default=0.001)
    size.add_argument("--power", type=_fraction("--power", 0.5, 1), default=0.99)

    verify = sub.add_parser("verify", help="deploy, drive load and assert the split (and fallback)")
    spec_args(verify)
    verify.add_argument("--backend", choices=BACKENDS, default="local")
    verify.add_argument("--expect", help="asserted split, e.g. v1=90,v2=10 (default: the deployed weights)")
    verify.add_argument("--requests", type=_positive_int("--requests"),
                        help="request budget (default: planned by the statistics engine)")
    verify.add_argument("--users", type=_positive_int("--users"), help="concurrent Locust users")
    verify.add_argument("--target-rps", type=_positive_int("--target-rps"),
                        help="user sizing for slow models: start at --users and ramp toward this rate while "
                        "latency and errors stay flat (spec load.target_rps; docs/slow-models.md)")
    verify.add_argument("--tolerance", type=_fraction("--tolerance", 0, 1), default=0.02)
    verify.add_argument("--confidence", type=_fraction("--confidence", 0.5, 1), default=0.999)
    verify.add_argument("--no-early-stop", action="store_true",
                        help="always spend the whole request budget, and run fault scenarios on their fixed "
                        "timeline (by default each phase ends once decided)")
    verify.add_argument("--slo", help="per-version SLOs judged at --confidence, e.g. 'p99_ms<=250,error_rate<=0.01' "
                        "(p50_ms, p90_ms, p95_ms, p99_ms, error_rate); default: the spec's slo")
    verify.add_argument("--compare", help="candidate vs baseline, e.g. 'baseline=v1,latency_p95_ratio<=1.10,"
                        "error_rate_delta<=0.005,disagreement<=0.05'; default: the spec's compare")
    verify.add_argument("--prediction-field", help="JSON pointer to each response's prediction, for "
                        "disagreement<= ('*' = every array element); default: the spec's load.prediction_field, "
                        "else /predictions/*/label (the reference server)")
    verify.add_argument("--fallback", action="append", default=[], metavar="SCENARIO",
                        help="fault scenario to run after the split check: kill, kill-one, scale-zero, errors, "
                        "slow, unready (optionally NAME:VARIANT, e.g. kill:v2); repeatable")
    verify.add_argument("--report-dir", help="write JSON and HTML reports here")
    verify.add_argument("--context", help="kubeconfig context (existing backend)")
    verify.add_argument("--kubeconfig", help="kubeconfig file (existing backend)")
    verify.add_argument("--keep-cluster", action="store_true")
    image_args(verify)
    verify.add_argument("--allow-chaos", action="store_true", help="existing backend: allow fault scenarios")
    verify.add_argument("--seed", type=_positive_int("--seed"),
                        help="local backend: seed the proxy's weighted random choice (reproducible runs)")
    verify.add_argument("--quiet", "-q", action="store_true", help="no live progress")
    verify.add_argument("--manifests", nargs="+", metavar="PATH",
                        help="verify the experiment these objects declare (YAML files, directories, '-' for stdin); "
                        "SPEC then gives only version_header, load, failure_policy, scenarios, local_commands")
    verify.add_argument("--pulumi", metavar="PROGRAM",
                        help="verify the experiment a Pulumi Python program declares (run under Pulumi mocks)")
    verify.add_argument("--target", metavar="NAMESPACE/SERVICE",
                        help="existing backend: verify the live split whose apex is this Service, read-only (only "
                        "the kit's own namespace is written; chaos needs --allow-chaos and is restored)")
    return parser


def _spec_from_args(args: argparse.Namespace) -> ExperimentSpec:
    spec = load_spec(args.spec)
    if getattr(args, "split_api", None):
        spec = spec.replace(split_api=args.split_api)
    if getattr(args, "route_group", None):
        spec = spec.replace(route_group=args.route_group)
    if getattr(args, "weights", None):
        spec = spec.with_weights(parse_weight_option(args.weights, "--weights"))
    if getattr(args, "workers", None):
        spec = spec.replace(load=dataclasses.replace(spec.load, workers=args.workers))
    if getattr(args, "prediction_field", None) is not None:
        from ._pointer import check_pointer

        field = check_pointer(args.prediction_field, "--prediction-field")
        spec = spec.replace(load=dataclasses.replace(spec.load, prediction_field=field))
    if getattr(args, "target_rps", None):
        spec = spec.replace(load=dataclasses.replace(spec.load, target_rps=float(args.target_rps)))
    return spec


def _cmd_render(args: argparse.Namespace) -> int:
    from ._manifests import dump_yaml, render_experiment, validate_objects

    spec = _spec_from_args(args)
    objects = render_experiment(spec, namespace=args.namespace)
    if args.validate:
        problems = validate_objects(objects)
        if problems:
            for problem in problems:
                print(f"invalid: {problem}", file=sys.stderr)
            return EXIT_FAILED
    sys.stdout.write(dump_yaml(objects))
    return EXIT_OK


def _cmd_lint(args: argparse.Namespace) -> int:
    from ._lint import lint_paths

    if not args.paths and not args.pulumi:
        raise UsageError("lint: give at least one YAML path or --pulumi PROGRAM")
    if args.fix:
        from ._manifest_cli import lint_fix

        return lint_fix(args)
    if any(str(p) == "-" for p in args.paths):  # `helm template ... | abtraffic lint -`
        from ._from_manifests import lint_source_objects, read_manifests

        findings = lint_source_objects(read_manifests(args.paths))
    else:
        findings = list(lint_paths(args.paths)) if args.paths else []
    if args.pulumi:
        from ._pulumi_lint import lint_pulumi_program

        findings.extend(lint_pulumi_program(args.pulumi))
    for finding in findings:
        print(finding)
    if findings:
        print(f"{len(findings)} problem(s) found", file=sys.stderr)
        return EXIT_FAILED
    print("no problems found", file=sys.stderr)
    return EXIT_OK


def _cmd_plan(args: argparse.Namespace) -> int:
    from ._cluster import ClusterSettings, format_plan, plan
    from ._cluster._settings import LOAD_IMAGE

    if args.target:
        from ._target_cli import plan_target

        return plan_target(args)
    if args.manifests or args.pulumi:
        from ._manifest_cli import manifest_spec

        spec: ExperimentSpec = manifest_spec(args)
    else:
        spec = _spec_from_args(args)
    if args.backend == "existing" and not args.context:
        raise UsageError("plan --backend existing needs --context")
    settings = ClusterSettings(context=args.context, linkerd_version=args.linkerd_version, keep=args.keep_cluster,
                               model_image=args.model_image, load_image=args.load_image or LOAD_IMAGE)
    print(format_plan(plan(args.backend, spec, settings)))
    return EXIT_OK


def _cmd_sample_size(args: argparse.Namespace) -> int:
    from ._stats import plan_sample_size

    n = plan_sample_size(args.weight, p1=args.detect, tolerance=args.tolerance, alpha=args.alpha, power=args.power)
    what = f"tolerance +-{args.tolerance:.3g}" if args.tolerance else f"a true share of {args.detect:.3g}"
    print(f"{n} requests to verify a share of {args.weight:.3g} with {what} "
          f"(alpha={args.alpha:g}, power={args.power:g})")
    return EXIT_OK


def _install_sigterm() -> None:
    # SIGTERM should tear down like Ctrl-C: turn it into KeyboardInterrupt in the main thread.
    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, handler)


def _cmd_verify(args: argparse.Namespace) -> int:
    from ._runner import VerifySettings, run_scenario, verify_split
    from ._stats import normalize_weights
    from .plugin import AbTrafficConfig, make_backend

    if args.target:
        from ._target_cli import verify_target

        _install_sigterm()  # Ctrl-C and SIGTERM unwind through teardown, which restores the target
        return verify_target(args)
    if args.manifests or args.pulumi:
        from ._manifest_cli import manifest_spec

        spec: ExperimentSpec = manifest_spec(args)
    else:
        spec = _spec_from_args(args)
    spec.check_backend(args.backend)
    expected = None
    if args.expect:
        raw = parse_weight_option(args.expect, "--expect")
        unknown = set(raw) - set(spec.variant_names)
        if unknown:
            raise SpecError("--expect", f"unknown variant(s) {sorted(unknown)}; known: {list(spec.variant_names)}")
        try:
            expected = normalize_weights({k: float(v) for k, v in raw.items()})
        except ValueError as exc:
            raise SpecError("--expect", str(exc)) from None
    if args.backend == "existing" and not args.context:
        raise UsageError("verify --backend existing needs --context")
    if args.backend != "existing" and (args.context or args.kubeconfig):
        raise UsageError("--context/--kubeconfig apply only to --backend existing")
    if args.backend == "existing" and args.fallback and not args.allow_chaos:
        raise UsageError("--fallback on an existing cluster kills and scales pods; add --allow-chaos to allow it")
    from ._chaos import parse_scenario

    scenarios = [parse_scenario(text, spec, field="--fallback") for text in args.fallback]
    if not scenarios and spec.scenarios:
        from ._chaos import scenario_from_spec

        from_spec = scenario_from_spec(spec)
        scenarios = [from_spec] if from_spec is not None else []
    from ._compare import parse_compare
    from ._slo import parse_slo

    settings = VerifySettings(tolerance=args.tolerance, confidence=args.confidence, requests=args.requests,
                              early_stop=not args.no_early_stop, users=args.users,
                              slo=parse_slo(args.slo, "--slo"), compare=parse_compare(args.compare, "--compare"))
    if settings.compare is not None and settings.compare.baseline not in spec.variant_names:
        raise SpecError("--compare", f"unknown baseline {settings.compare.baseline!r}; "
                        f"known: {', '.join(spec.variant_names)}")
    from ._load import LoadPlan

    # The load plan as the run will build it (e.g. --users above load.max_users): refused before any side effect.
    LoadPlan.from_spec(spec, **({"users": settings.users} if settings.users is not None else {}))
    cfg = AbTrafficConfig(backend=args.backend, kubeconfig=args.kubeconfig, context=args.context,
                          keep_cluster=args.keep_cluster, report_dir=args.report_dir, allow_chaos=args.allow_chaos,
                          seed=args.seed, load_image=args.load_image, model_image=args.model_image)
    progress = None if args.quiet else _stderr_progress()
    _install_sigterm()
    from ._report._console import print_results
    from ._result import ExperimentResult

    backend = make_backend(cfg, spec)
    results: list[ExperimentResult] = []
    try:
        _prestart_load(backend, spec, settings)
        deployment = backend.deploy(spec)
        _say(f"deployed {spec.model} ({', '.join(f'{v.name}={v.weight}' for v in spec.variants)}, "
             f"{spec.split_api}) on {backend.name}; target {deployment.target_url()}")
        from ._mainjob import can_share_one_run, run_split_then_scenario

        if scenarios and can_share_one_run(deployment, scenarios[0], settings):
            # The main job: one load run, the split phase serving as the scenario's baseline.
            first, *rest = scenarios
            _say(f"split, then fault scenario {first.name} in the same load run: "
                 f"{', '.join(f'{s.action} {s.variant}' for s in first.steps)}")
            results.extend(run_split_then_scenario(deployment, first, expected=expected, settings=settings,
                                                   progress=progress))
        else:
            rest = scenarios
            results.append(verify_split(deployment, expected=expected, settings=settings, name="split",
                                        progress=progress))
        for scenario in rest:
            _say(f"fault scenario {scenario.name}: {', '.join(f'{s.action} {s.variant}' for s in scenario.steps)}")
            results.append(run_scenario(deployment, scenario, settings=settings, progress=progress))
    except BaseException:
        backend.close()
        raise
    # Reports are written while the backend tears down (which mostly waits for processes to exit).
    closing = _Closing(backend)
    try:
        if progress is not None:
            sys.stderr.write("\n")
        ok = print_results(results, args.report_dir)
    finally:
        closing.join()
    return EXIT_OK if ok else EXIT_FAILED


class _Closing:
    """``backend.close()`` in a thread; ``join()`` waits for it and raises what it raised."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="abtraffic-teardown")
        self._thread.start()

    def _run(self) -> None:
        try:
            self._backend.close()
        except BaseException as exc:  # re-raised in the caller's thread by join()
            self._error = exc

    def join(self) -> None:
        self._thread.join()
        if self._error is not None:
            raise self._error


def _prestart_load(backend: Backend, spec: ExperimentSpec, settings: VerifySettings) -> None:
    """On the local backend, start Locust while the model servers start (each takes about as long);
    the first load run, which launches the same way, takes it over. Elsewhere load runs in pods."""
    from ._local import LocalBackend

    if isinstance(backend, LocalBackend):
        from ._runner import split_launch_plan

        backend.prestart_load(split_launch_plan(spec, settings))


def _say(text: str) -> None:
    print(f"abtraffic: {text}", file=sys.stderr, flush=True)


def _stderr_progress() -> Any:
    tty = sys.stderr.isatty()

    def write(line: str) -> None:
        if tty:
            sys.stderr.write("\r\x1b[2K" + line)
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    return write


_COMMANDS = {"render": _cmd_render, "lint": _cmd_lint, "plan": _cmd_plan, "sample-size": _cmd_sample_size,
             "verify": _cmd_verify}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    try:
        return _COMMANDS[args.command](args)
    except ManifestLintError as exc:  # lint gates verify: findings printed as `lint` prints them
        from ._manifest_cli import print_findings

        print_findings(exc.findings)
        print("abtraffic: nothing was started; fix the objects (`abtraffic lint --fix` prints the mechanical "
              "mends)", file=sys.stderr)
        return EXIT_FAILED
    except (SpecError, UsageError) as exc:
        print(f"abtraffic: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except PrerequisiteError as exc:
        print(f"abtraffic: missing prerequisite: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except AbTrafficAssertionError as exc:
        print(str(exc))
        return EXIT_FAILED
    except AbTrafficError as exc:
        print(f"abtraffic: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("abtraffic: interrupted; everything started was torn down", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `abtraffic render | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
