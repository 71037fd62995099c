"""The ``aws:`` block of a platform in the config file."""

from __future__ import annotations

import pydantic

from platforms.options import Options


class AwsOptions(Options):
    """The ``aws:`` block of a platform in the config file."""

    region: str = pydantic.Field(min_length=1)
    """The region of the IAM Identity Center instance, e.g. ``eu-central-1``."""
    identity_store_id: str = pydantic.Field(min_length=1)
    """The identity store of the instance, e.g. ``d-1234567890``."""
    instance_arn: str = pydantic.Field(min_length=1)
    """The Identity Center instance, e.g. ``arn:aws:sso:::instance/ssoins-1234567890abcdef``."""
    assume_role_arn: str | None = None
    """A role to assume (with the credentials of the standard AWS chain) before every call; null
    uses the chain's credentials directly."""
    endpoint_url: str | None = None
    """Send every call to this endpoint instead of AWS (an emulator such as moto)."""
    max_attempts: int = pydantic.Field(default=3, ge=1)
    """Attempts per call in botocore's standard retry mode (1 = no retry). 3 is the standard
    mode's own default (boto3 guide "Retries": standard mode, "a default value of 3 for maximum
    attempts"): a tenant whose calls keep failing is retried by the daemon's backoff, not by
    repeating each call five times."""
    poll_interval: float = pydantic.Field(default=1.0, gt=0)
    """Seconds between two reads of an account assignment's creation or deletion status."""
    poll_timeout: float = pydantic.Field(default=120.0, gt=0)
    """Seconds to wait for an account assignment to finish before giving up (retryable)."""
    group_scan_threshold: int = pydantic.Field(default=20, ge=0)
    """A run whose observations name at least this many groups reads every group of the identity
    store first (``ListGroups``, 100 a page) instead of one ``DescribeGroup``/``GetGroupId`` per
    group; the scan stops (and observe reads group by group) once it has cost half as many calls as
    it would save. 0 = never scan."""

    @property
    def quota_owner(self) -> str:
        """The Identity Center instance (region and instance ARN). Its API quotas are quotas of
        the AWS account the instance lives in, per region ("service quotas ... are the maximum
        number of service resources or operations for your AWS account", docs.aws.amazon.com
        general/latest/gr/sso.html; raised only from the management or delegated administrator
        account, singlesignon/latest/userguide/limits.html); an instance belongs to one account
        and one region, so every platform entry naming it draws on one quota."""
        return f"aws:{self.region}:{self.instance_arn}"
