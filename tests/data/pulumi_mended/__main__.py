"""The Pulumi starting point (../pulumi_starting_point/__main__.py) mended, with a 70/30 split.

What changed: every resource sets ``metadata.name`` (so the TrafficSplit's names exist), the apex
Service ``ai-model-service`` is created, and the pods carry ``linkerd.io/inject: enabled``.
"""

import pulumi_kubernetes as k8s

for version in ("v1", "v2"):
    labels = {"app": "ai-model", "version": version}
    k8s.apps.v1.Deployment(
        f"ai-model-{version}",
        metadata=k8s.meta.v1.ObjectMetaArgs(name=f"ai-model-{version}", labels=labels),
        spec=k8s.apps.v1.DeploymentSpecArgs(
            replicas=1,
            selector=k8s.meta.v1.LabelSelectorArgs(match_labels=labels),
            template=k8s.core.v1.PodTemplateSpecArgs(
                metadata=k8s.meta.v1.ObjectMetaArgs(labels=labels, annotations={"linkerd.io/inject": "enabled"}),
                spec=k8s.core.v1.PodSpecArgs(
                    containers=[
                        k8s.core.v1.ContainerArgs(
                            name="model",
                            image=f"my_model_{version}:latest",
                            ports=[k8s.core.v1.ContainerPortArgs(container_port=8080)],
                        )
                    ]
                ),
            ),
        ),
    )
    k8s.core.v1.Service(
        f"ai-model-service-{version}",
        metadata=k8s.meta.v1.ObjectMetaArgs(name=f"ai-model-service-{version}", labels=labels),
        spec=k8s.core.v1.ServiceSpecArgs(
            selector=labels,
            ports=[k8s.core.v1.ServicePortArgs(port=80, target_port=8080)],
        ),
    )

k8s.core.v1.Service(
    "ai-model-service",
    metadata=k8s.meta.v1.ObjectMetaArgs(name="ai-model-service", labels={"app": "ai-model"}),
    spec=k8s.core.v1.ServiceSpecArgs(
        type="ClusterIP",
        selector={"app": "ai-model"},
        ports=[k8s.core.v1.ServicePortArgs(port=80, target_port=8080)],
    ),
)

k8s.apiextensions.CustomResource(
    "ai-model-split",
    api_version="split.smi-spec.io/v1alpha1",
    kind="TrafficSplit",
    metadata=k8s.meta.v1.ObjectMetaArgs(name="ai-model-split"),
    spec={
        "service": "ai-model-service",
        "backends": [
            {"service": "ai-model-service-v1", "weight": "700m"},
            {"service": "ai-model-service-v2", "weight": "300m"},
        ],
    },
)
