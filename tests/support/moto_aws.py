"""A real moto server over HTTP for AWS IAM Identity Center tests and demos.

    with MotoAws() as aws:
        user_id = aws.create_user("jdoe")
        ps_arn = aws.create_permission_set("admin")
        options = aws.driver_options()      # the aws: block for AwsDriver / replicator.yaml
        ...
        assert aws.members(group_id) == [user_id]

Read-back helpers use plain boto3 (never the driver) and return lists, so duplicates that moto's
leniency would store (a membership or an account assignment created twice) stay visible.
"""

from __future__ import annotations

import logging
import threading
import urllib.request
from typing import Any, cast

from tests.support.local_server import StartStop

REGION = "eu-central-1"
ACCESS_KEY_ID = "testing"
SECRET_ACCESS_KEY = "testing"


class MotoAws(StartStop):
    """One moto server on 127.0.0.1 (a free port), reachable at ``url``."""

    region = REGION

    def __init__(self) -> None:
        self._server: Any = None
        self._url: str | None = None
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._instance_arn: str | None = None
        self._identity_store_id: str | None = None

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> MotoAws:
        """Start the server (idempotent) and discover its Identity Center instance."""
        if self._server is not None:
            return self
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        self._server = server
        self._url = f"http://{host}:{port}"
        self._discover()
        return self

    def stop(self) -> None:
        """Stop the server (idempotent)."""
        server, self._server = self._server, None
        for client in self._clients.values():
            client.close()
        self._clients.clear()
        if server is not None:
            server.stop()

    def reset(self) -> None:
        """Forget everything (POST /moto-api/reset); the new instance has new ids."""
        request = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
        self._discover()

    # --- connection facts -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``: the endpoint_url for boto3 and the driver."""
        if self._url is None:
            raise RuntimeError("MotoAws is not started")
        return self._url

    @property
    def instance_arn(self) -> str:
        if self._instance_arn is None:
            raise RuntimeError("MotoAws is not started")
        return self._instance_arn

    @property
    def identity_store_id(self) -> str:
        if self._identity_store_id is None:
            raise RuntimeError("MotoAws is not started")
        return self._identity_store_id

    def driver_options(self, **overrides: Any) -> dict[str, Any]:
        """The ``aws:`` config block (camelCase) that points a driver at this server."""
        options: dict[str, Any] = {
            "region": REGION,
            "identityStoreId": self.identity_store_id,
            "instanceArn": self.instance_arn,
            "endpointUrl": self.url,
        }
        options.update(overrides)
        return options

    def client(self, service: str) -> Any:
        """A plain boto3 client for ``service`` on this server (dummy credentials, no retries)."""
        with self._lock:
            if service not in self._clients:
                import boto3
                from botocore.config import Config

                session = boto3.Session(
                    aws_access_key_id=ACCESS_KEY_ID,
                    aws_secret_access_key=SECRET_ACCESS_KEY,
                    region_name=REGION,
                )
                self._clients[service] = cast(Any, session).client(
                    service,
                    endpoint_url=self.url,
                    config=Config(retries={"max_attempts": 1}),
                )
            return self._clients[service]

    def _discover(self) -> None:
        instances = self.client("sso-admin").list_instances()["Instances"]
        if not instances:
            raise RuntimeError("moto has no IAM Identity Center instance")
        self._instance_arn = instances[0]["InstanceArn"]
        self._identity_store_id = instances[0]["IdentityStoreId"]

    # --- seeding --------------------------------------------------------------------------------

    def create_user(self, user_name: str, display_name: str | None = None) -> str:
        """A user in the identity store; returns its UserId."""
        display = display_name or user_name
        given, _, family = display.partition(" ")
        response = self.client("identitystore").create_user(
            IdentityStoreId=self.identity_store_id,
            UserName=user_name,
            DisplayName=display,
            Name={"GivenName": given or user_name, "FamilyName": family or user_name},
        )
        return str(response["UserId"])

    def create_permission_set(self, name: str) -> str:
        """A permission set; returns its ARN."""
        response = self.client("sso-admin").create_permission_set(InstanceArn=self.instance_arn, Name=name)
        return str(response["PermissionSet"]["PermissionSetArn"])

    def create_group(self, display_name: str, description: str | None = None) -> str:
        """A group made by someone else (no marker unless ``description`` has it); returns its id."""
        params: dict[str, Any] = {"IdentityStoreId": self.identity_store_id, "DisplayName": display_name}
        if description is not None:
            params["Description"] = description
        return str(self.client("identitystore").create_group(**params)["GroupId"])

    def add_member(self, group_id: str, user_id: str) -> str:
        """A membership made by someone else (no check: moto stores duplicates); returns its id."""
        response = self.client("identitystore").create_group_membership(
            IdentityStoreId=self.identity_store_id, GroupId=group_id, MemberId={"UserId": user_id}
        )
        return str(response["MembershipId"])

    def assign(self, account_id: str, permission_set_arn: str, group_id: str) -> None:
        """An account assignment made by someone else (no check: moto stores duplicates)."""
        self.client("sso-admin").create_account_assignment(
            InstanceArn=self.instance_arn,
            TargetId=account_id,
            TargetType="AWS_ACCOUNT",
            PermissionSetArn=permission_set_arn,
            PrincipalType="GROUP",
            PrincipalId=group_id,
        )

    # --- read-back (plain boto3 paginators) -----------------------------------------------------

    def _groups(self) -> list[dict[str, Any]]:
        paginator = self.client("identitystore").get_paginator("list_groups")
        return [
            g for page in paginator.paginate(IdentityStoreId=self.identity_store_id) for g in page["Groups"]
        ]

    def groups(self) -> dict[str, str]:
        """DisplayName -> GroupId of every group."""
        return {g["DisplayName"]: g["GroupId"] for g in self._groups()}

    def group_descriptions(self) -> dict[str, str | None]:
        """DisplayName -> Description (None when the group has none)."""
        return {g["DisplayName"]: g.get("Description") for g in self._groups()}

    def group_count(self, display_name: str) -> int:
        """How many groups carry this DisplayName (moto refuses duplicates, this proves it)."""
        return sum(1 for g in self._groups() if g["DisplayName"] == display_name)

    def members(self, group_id: str) -> list[str]:
        """UserIds of the group's memberships, one entry per membership (duplicates visible)."""
        paginator = self.client("identitystore").get_paginator("list_group_memberships")
        return [
            m["MemberId"]["UserId"]
            for page in paginator.paginate(IdentityStoreId=self.identity_store_id, GroupId=group_id)
            for m in page["GroupMemberships"]
        ]

    def assignments(self, account_id: str, permission_set_arn: str) -> list[tuple[str, str]]:
        """(PrincipalType, PrincipalId) of each assignment row of the permission set on the account."""
        paginator = self.client("sso-admin").get_paginator("list_account_assignments")
        return [
            (a["PrincipalType"], a["PrincipalId"])
            for page in paginator.paginate(
                InstanceArn=self.instance_arn, AccountId=account_id, PermissionSetArn=permission_set_arn
            )
            for a in page["AccountAssignments"]
        ]
