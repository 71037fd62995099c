"""Which driver serves which platform type. Adding a platform is one entry here plus its module.

Driver modules import their SDK lazily, so importing one here is cheap.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from platforms.contract import PLATFORM_TYPES as PLATFORM_TYPES  # re-exported: defined with the contract
from platforms.contract import Driver


@dataclass(frozen=True)
class DriverSpec:
    type_name: str
    module: str
    cls: str

    def load(self) -> type[Driver]:
        driver: type[Driver] = getattr(importlib.import_module(self.module), self.cls)
        return driver


DRIVERS: dict[str, DriverSpec] = {
    "aws": DriverSpec("aws", "platforms.aws", "AwsDriver"),
    "azure": DriverSpec("azure", "platforms.azure", "AzureDriver"),
    "cloudfoundry": DriverSpec("cloudfoundry", "platforms.cloudfoundry", "CloudFoundryDriver"),
    "gcp": DriverSpec("gcp", "platforms.gcp", "GcpDriver"),
    "kubernetes": DriverSpec("kubernetes", "platforms.kubernetes", "KubernetesDriver"),
    "openshift": DriverSpec("openshift", "platforms.kubernetes", "OpenShiftDriver"),
    "openstack": DriverSpec("openstack", "platforms.openstack", "OpenstackDriver"),
}


def driver_class(platform_type: str) -> type[Driver] | None:
    """The driver class for a platform type, or None when this version has no driver for it."""
    spec = DRIVERS.get(platform_type)
    return spec.load() if spec else None
