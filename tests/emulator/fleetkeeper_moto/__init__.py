"""fleetkeeper's patch layer over the moto server: each module fills a gap of
moto 5.2.5 that fleetkeeper needs (see the README, "The emulator")."""

from . import autoscaling, dynamodb, ssm


def apply() -> list[str]:
    """Installs every patch into moto's models; returns their descriptions."""
    return autoscaling.apply() + ssm.apply() + dynamodb.apply()
