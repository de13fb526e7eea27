"""The security settings of the pods DuoGen creates on a cluster itself (PyTorchJobs; the InferenceService is
the chart's), the same as the chart's and the manifests' containers: the restricted Pod Security Standard."""

from __future__ import annotations

from kubernetes import client as k8s


def container_security() -> k8s.V1SecurityContext:
    """The restricted Pod Security Standard, as the chart's containers have it: the image's non-root user,
    no escalation, no capabilities, a read-only root (writable paths are volumes)."""
    return k8s.V1SecurityContext(
        allow_privilege_escalation=False,
        run_as_non_root=True,
        read_only_root_filesystem=True,
        capabilities=k8s.V1Capabilities(drop=["ALL"]),
        seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
    )


def pod_security() -> k8s.V1PodSecurityContext:
    return k8s.V1PodSecurityContext(
        run_as_non_root=True, seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault")
    )
