"""Azure driver: Entra ID groups through Microsoft Graph, Azure RBAC role assignments through ARM
(see :mod:`platforms.azure.driver`)."""

from platforms.azure.driver import AzureDriver
from platforms.azure.names import assignment_name, mail_nickname, odata_string
from platforms.azure.options import AzureOptions

__all__ = ["AzureDriver", "AzureOptions", "assignment_name", "mail_nickname", "odata_string"]
