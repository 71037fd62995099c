"""Cloud Foundry (Cloud Controller v3) driver (see :mod:`platforms.cloudfoundry.driver`)."""

from platforms.cloudfoundry.driver import SPACE_ROLE_TYPES, CloudFoundryDriver
from platforms.cloudfoundry.options import CloudFoundryOptions

__all__ = ["SPACE_ROLE_TYPES", "CloudFoundryDriver", "CloudFoundryOptions"]
