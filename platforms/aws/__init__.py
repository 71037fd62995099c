"""AWS IAM Identity Center driver (see :mod:`platforms.aws.driver`)."""

from platforms.aws.driver import AwsDriver
from platforms.aws.options import AwsOptions

__all__ = ["AwsDriver", "AwsOptions"]
