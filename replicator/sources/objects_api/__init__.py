"""The meshObject API of the daemon (``/api/meshobjects``): the routes (``api``), reading and
answering requests (``http``) and the shapes of its answers (``models``, from which the OpenAPI
document is generated)."""

from replicator.sources.objects_api.api import routes

__all__ = ["routes"]
