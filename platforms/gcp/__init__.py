"""Google Cloud driver: Cloud Identity groups, IAM policy bindings on projects (see
:mod:`platforms.gcp.driver`)."""

from platforms.gcp.driver import GcpDriver
from platforms.gcp.options import GcpOptions
from platforms.gcp.policy import policy_with

__all__ = ["GcpDriver", "GcpOptions", "policy_with"]
