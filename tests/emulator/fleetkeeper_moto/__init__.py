"""fleetkeeper's patch layer over the moto server: each module fills a gap of
moto 5.2.5 that fleetkeeper needs, or makes the emulator as slow and strict
as AWS where fleetkeeper's correctness depends on it (see the README, "The
emulator"). Every timed behaviour reads :mod:`fleetkeeper_moto.clock`."""

from . import accounts, autoscaling, dynamodb, readiness, s3, sqs, ssm


def apply() -> list[str]:
    """Installs every patch into moto's models; returns their descriptions."""
    # readiness after ssm: both wrap Instance.start.
    return accounts.apply() + autoscaling.apply() + ssm.apply() + s3.apply() + dynamodb.apply() + sqs.apply() + readiness.apply()
