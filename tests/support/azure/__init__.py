"""The Graph and ARM halves of the local Azure server (:mod:`tests.support.azure_server`): one module
per API, mixed into :class:`~tests.support.azure_server.AzureServer`."""
