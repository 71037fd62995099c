"""Google credentials of the GCP driver, per API, from the ``gcp:`` block (google-auth is imported
lazily)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from platforms.contract import PlatformConfigError
from platforms.options import SecretRef

if TYPE_CHECKING:
    from platforms.gcp.options import GcpOptions

SCOPES: dict[str, tuple[str, ...]] = {
    "cloudidentity": ("https://www.googleapis.com/auth/cloud-identity.groups",),
    "admin": ("https://www.googleapis.com/auth/admin.directory.user.readonly",),
    "cloudresourcemanager": ("https://www.googleapis.com/auth/cloud-platform",),
}


def load_credentials(identifier: str, opts: GcpOptions) -> dict[str, Any]:
    """Credentials per API (the Admin SDK may impersonate ``adminSubject``)."""
    import google.auth
    import google.auth.exceptions
    from google.auth.credentials import AnonymousCredentials

    if opts.anonymous:
        anon = AnonymousCredentials()  # type: ignore[no-untyped-call]
        return {api: anon for api in SCOPES}
    scopes = sorted({s for group in SCOPES.values() for s in group})
    source = opts.credentials_file
    try:
        if source is None:
            creds, _ = google.auth.default(scopes=scopes)
        else:
            if isinstance(source, SecretRef):
                text = source.resolve()
                where = f"{source.env or source.file}"
            else:
                where = source
                try:
                    text = Path(source).read_text()
                except OSError as exc:
                    raise PlatformConfigError(
                        f"{identifier}: cannot read credentialsFile {source}: {exc.strerror or exc}"
                    ) from None
            try:
                info = json.loads(text)
            except ValueError:
                raise PlatformConfigError(f"{identifier}: credentials in {where} are not JSON") from None
            if not isinstance(info, dict):
                raise PlatformConfigError(f"{identifier}: credentials in {where} are not an object")
            try:
                creds = _credentials_from_info(info, scopes, where)
            except (ValueError, KeyError) as exc:  # the text could quote the key: name only the kind
                raise PlatformConfigError(
                    f"{identifier}: credentials in {where} are not usable ({type(exc).__name__})"
                ) from None
    except ValueError as exc:  # SecretRef.resolve names where the secret is, never its value
        raise PlatformConfigError(f"{identifier}: credentialsFile: {exc}") from None
    except google.auth.exceptions.DefaultCredentialsError as exc:
        raise PlatformConfigError(f"{identifier}: no usable Google credentials: {exc}") from None
    admin = creds
    if opts.admin_subject:
        if not hasattr(creds, "with_subject"):
            raise PlatformConfigError(
                f"{identifier}: adminSubject needs service account credentials (domain-wide delegation)"
            )
        admin = creds.with_subject(opts.admin_subject)
    return {"cloudidentity": creds, "admin": admin, "cloudresourcemanager": creds}


def _credentials_from_info(info: dict[str, Any], scopes: Sequence[str], where: str) -> Any:
    """google-auth credentials of the kinds a deployment uses, each by its own loader (the generic
    loader would accept any kind a file names)."""
    kind = info.get("type")
    if kind == "service_account":
        from google.oauth2 import service_account

        return service_account.Credentials.from_service_account_info(info, scopes=scopes)  # type: ignore[no-untyped-call]
    if kind == "external_account":  # workload identity federation
        source = info.get("credential_source") or {}
        if "executable" in source:
            from google.auth import pluggable

            return pluggable.Credentials.from_info(info, scopes=scopes)  # type: ignore[no-untyped-call]
        if str(source.get("environment_id", "")).startswith("aws"):
            from google.auth import aws

            return aws.Credentials.from_info(info, scopes=scopes)  # type: ignore[no-untyped-call]
        from google.auth import identity_pool

        return identity_pool.Credentials.from_info(info, scopes=scopes)  # type: ignore[no-untyped-call]
    if kind == "authorized_user":
        from google.oauth2 import credentials

        return credentials.Credentials.from_authorized_user_info(info, scopes=scopes)  # type: ignore[no-untyped-call]
    raise PlatformConfigError(
        f"credentials in {where}: type {kind!r} is not one of service_account, external_account, "
        "authorized_user"
    )
