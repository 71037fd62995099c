"""Kubernetes and OpenShift drivers (see :mod:`platforms.kubernetes.driver` and
:mod:`platforms.kubernetes.openshift`)."""

from platforms.kubernetes.driver import KubernetesDriver
from platforms.kubernetes.objects import GROUP_ANNOTATION, MANAGED_BY_LABEL, TENANT_ANNOTATION
from platforms.kubernetes.openshift import OpenShiftDriver
from platforms.kubernetes.options import KubernetesOptions

__all__ = [
    "GROUP_ANNOTATION",
    "MANAGED_BY_LABEL",
    "TENANT_ANNOTATION",
    "KubernetesDriver",
    "KubernetesOptions",
    "OpenShiftDriver",
]
