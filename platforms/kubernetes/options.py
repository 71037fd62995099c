"""The ``kubernetes:`` (or ``openshift:``) block of a platform in the config file."""

from __future__ import annotations

from typing import Literal

import pydantic

from platforms.options import Options, SecretRef


class KubernetesOptions(Options):
    """The ``kubernetes:`` (or ``openshift:``) block of a platform in the config file. With neither
    ``kubeconfig`` nor ``server`` the driver uses the in-cluster service account."""

    kubeconfig: str | None = None
    """Path of a kubeconfig file to connect with."""
    context: str | None = None
    """The kubeconfig context to use (null: its current context)."""
    server: str | None = None
    """The API server URL, e.g. ``https://api.example.com:6443`` (instead of a kubeconfig)."""
    token: SecretRef | None = None
    """Bearer token for ``server``: ``{env: NAME}`` or ``{file: PATH}``."""
    ca_file: str | None = None
    """CA certificate (PEM) that signed the API server's certificate (null: the system's CAs)."""
    insecure_skip_tls_verify: bool = False
    """Do not verify the API server's certificate (tests only)."""
    subjects: Literal["user", "group"] = "user"
    """``user``: every member is a ``User`` subject of the RoleBindings; ``group``: each RoleBinding
    has the one subject ``Group <group name>`` and group membership is the authenticator's (OIDC)
    business (members are kept in the anchor for reporting). OpenShift always binds its Group."""
    create_namespaces: bool = False
    """Create a tenant's namespace (project) when it does not exist. Namespaces are never deleted."""
    request_timeout: float = pydantic.Field(default=30.0, gt=0)
    """Seconds one API request may take."""

    @pydantic.model_validator(mode="after")
    def _consistent(self) -> KubernetesOptions:
        if self.server is None and self.token is not None:
            raise ValueError("token needs server")
        if self.server is not None and self.kubeconfig is not None:
            raise ValueError("give either kubeconfig (+ context) or server (+ token, caFile), not both")
        if self.context is not None and self.kubeconfig is None:
            raise ValueError("context needs kubeconfig")
        return self

    @property
    def quota_owner(self) -> str:
        """The API server. Its API Priority and Fairness divides each server's concurrency between
        priority levels and flows (kubernetes.io/docs/concepts/cluster-administration/flow-control):
        what is limited is what one API server accepts, whatever entry sends it. The server is
        ``server``, or the kubeconfig context (its cluster's server is read when the driver
        connects), or the in-cluster service account's own API server."""
        if self.server is not None:
            return f"kubernetes:{self.server.rstrip('/')}"
        if self.kubeconfig is not None:
            return f"kubernetes:kubeconfig:{self.kubeconfig}#{self.context or ''}"
        return "kubernetes:in-cluster"
