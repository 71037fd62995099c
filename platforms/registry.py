"""Which driver serves which platform type: the only place that loads a driver. Adding a platform
is one entry here plus its package.

Drivers import their SDK lazily, so importing one here is cheap.
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
    "aws": DriverSpec("aws", "platforms.aws.driver", "AwsDriver"),
    "azure": DriverSpec("azure", "platforms.azure.driver", "AzureDriver"),
    "cloudfoundry": DriverSpec("cloudfoundry", "platforms.cloudfoundry.driver", "CloudFoundryDriver"),
    "gcp": DriverSpec("gcp", "platforms.gcp.driver", "GcpDriver"),
    "kubernetes": DriverSpec("kubernetes", "platforms.kubernetes.driver", "KubernetesDriver"),
    "openshift": DriverSpec("openshift", "platforms.kubernetes.openshift", "OpenShiftDriver"),
    "openstack": DriverSpec("openstack", "platforms.openstack.driver", "OpenstackDriver"),
}


def driver_class(platform_type: str) -> type[Driver] | None:
    """The driver class for a platform type, or None when this version has no driver for it."""
    spec = DRIVERS.get(platform_type)
    return spec.load() if spec else None
