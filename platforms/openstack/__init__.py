"""OpenStack (Keystone v3) driver (see :mod:`platforms.openstack.driver`)."""

from platforms.openstack.driver import OpenstackDriver
from platforms.openstack.options import OpenstackOptions

__all__ = ["OpenstackDriver", "OpenstackOptions"]
