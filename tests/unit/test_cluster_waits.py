"""Waits fail early, with the image and the kubelet's event, when a pod cannot start.

Reasons from kubernetes v1.32 ``pkg/kubelet/images/types.go`` (``ErrImagePull``,
``ImagePullBackOff``, ``InvalidImageName``) and ``pkg/kubelet/container/sync_result.go``
(``CrashLoopBackOff``); the kubelet reports them in ``status.containerStatuses[].state.waiting``
and records a ``Failed`` Warning event on the pod with the runtime's message.
"""

from __future__ import annotations

from typing import Any

import pytest
from _fake_kube import FakeKube

from pytest_abtraffic._cluster._kube import PodFailureWatch, Readiness, wait_until
from pytest_abtraffic._cluster._plan import Step, StepExecutor
from pytest_abtraffic._errors import NotReadyError

IMAGE = "registry.example/ai-model:0.1.0"
PULL_MESSAGE = (f'Failed to pull image "{IMAGE}": rpc error: code = NotFound desc = failed to pull and unpack image '
                f'"{IMAGE}": not found')


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += s


def pod(reason: str, message: str = "", *, name: str = "ai-model-v1-abc", labels: dict[str, str] | None = None
        ) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "abt", "labels": labels or {"app": "ai-model", "version": "v1"}},
            "spec": {"containers": [{"name": "model", "image": IMAGE}]},
            "status": {"phase": "Pending", "containerStatuses": [
                {"name": "model", "image": IMAGE, "ready": False, "restartCount": 0,
                 "state": {"waiting": {"reason": reason, "message": message}}}]}}


def event(pod_name: str, message: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Event", "metadata": {"name": f"{pod_name}.1", "namespace": "abt"},
            "involvedObject": {"kind": "Pod", "name": pod_name}, "type": "Warning", "reason": "Failed",
            "message": message, "lastTimestamp": "2026-01-01T00:00:05Z"}


def never_ready() -> Readiness:
    return Readiness(False, "Deployment ai-model-v1: 0/1 available")


@pytest.mark.parametrize("reason", ["ErrImagePull", "ImagePullBackOff", "CrashLoopBackOff"])
def test_stuck_pod_fails_the_wait_within_30s_naming_image_and_event(reason: str) -> None:
    fake = FakeKube([pod(reason, "Back-off pulling image"), event("ai-model-v1-abc", PULL_MESSAGE)], auto_ready=False)
    clock = Clock()
    with pytest.raises(NotReadyError) as info:
        wait_until(never_ready, what="Deployment/ai-model-v1", timeout_s=300, api=fake, namespace="abt",
                   clock=clock, sleep=clock.sleep, watch=PodFailureWatch(fake, "abt", "app=ai-model,version=v1"))
    assert clock.now < 30
    text = str(info.value)
    assert IMAGE in text and reason in text and PULL_MESSAGE in text


def test_invalid_image_name_fails_at_once() -> None:
    fake = FakeKube([pod("InvalidImageName", 'Failed to apply default image tag "Bad:Name"')], auto_ready=False)
    clock = Clock()
    with pytest.raises(NotReadyError, match="InvalidImageName"):
        wait_until(never_ready, what="x", timeout_s=300, api=fake, namespace="abt", clock=clock, sleep=clock.sleep,
                   watch=PodFailureWatch(fake, "abt", "app=ai-model"))
    assert clock.now == 0


def test_a_pull_that_recovers_does_not_fail() -> None:
    """One ErrImagePull that clears (a registry hiccup) is not a failure; the timer restarts."""
    fake = FakeKube([pod("ErrImagePull")], auto_ready=False)
    watch = PodFailureWatch(fake, "abt", "app=ai-model")
    watch(0.0)
    watch(10.0)
    fake.put(pod("ContainerCreating"))
    watch(14.0)
    fake.put(pod("ErrImagePull"))
    watch(20.0)
    watch(34.0)  # 14 s since it came back: still inside the grace
    with pytest.raises(NotReadyError):
        watch(35.0)


def test_pull_and_backoff_alternating_count_as_one_problem() -> None:
    fake = FakeKube([pod("ErrImagePull")], auto_ready=False)
    watch = PodFailureWatch(fake, "abt", "app=ai-model")
    watch(0.0)
    fake.put(pod("ImagePullBackOff"))
    watch(8.0)
    fake.put(pod("ErrImagePull"))
    with pytest.raises(NotReadyError, match="ErrImagePull for 16s"):
        watch(16.0)


def test_executor_load_wait_watches_its_pod() -> None:
    fake = FakeKube([pod("ImagePullBackOff", labels={"job-name": "abtraffic-load-1"}, name="abtraffic-load-1-x"),
                     event("abtraffic-load-1-x", PULL_MESSAGE)], auto_ready=False)
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "abtraffic-load-1", "namespace": "abt"},
           "status": {"active": 1}}
    fake.put(job)
    step = Step("wait", "load", "load", objects=(job,), namespace="abt", wait_for="load-exit", timeout_s=300)
    clock = Clock()
    import pytest_abtraffic._cluster._kube as kube

    orig = kube.wait_until

    def fake_clock_wait(*a: Any, **kw: Any) -> Any:
        return orig(*a, **{**kw, "clock": clock, "sleep": clock.sleep})

    with pytest.MonkeyPatch.context() as mp:
        import pytest_abtraffic._cluster._plan as plan_mod

        mp.setattr(plan_mod, "wait_until", fake_clock_wait)
        with pytest.raises(NotReadyError, match=r"registry\.example/ai-model"):
            StepExecutor(api_factory=lambda: fake).run_step(step)
    assert clock.now < 30
