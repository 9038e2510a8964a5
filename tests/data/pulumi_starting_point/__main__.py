"""The A/B setup as users typically write it with Pulumi, before pytest-abtraffic.

Deliberately broken in the ways the linter must catch (do not "fix" this file; the tests rely on it):
- the Services get no ``metadata.name``, so Pulumi auto-names them (``ai-model-service-v1-<suffix>``)
  while the TrafficSplit refers to ``ai-model-service-v1`` / ``-v2``;
- the apex Service ``ai-model-service`` is never created;
- nothing is meshed (no ``linkerd.io/inject: enabled`` on the pods or their namespace).
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
                metadata=k8s.meta.v1.ObjectMetaArgs(labels=labels),
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
        # No name= here: Pulumi appends a random suffix to the resource name.
        metadata=k8s.meta.v1.ObjectMetaArgs(labels=labels),
        spec=k8s.core.v1.ServiceSpecArgs(
            selector=labels,
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
            {"service": "ai-model-service-v1", "weight": "500m"},
            {"service": "ai-model-service-v2", "weight": "500m"},
        ],
    },
)
