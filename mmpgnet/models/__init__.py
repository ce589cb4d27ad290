"""Models: losses, necks, norm layers and pose estimators (each registered on import)."""
from . import losses, necks, norms, pose_estimators  # noqa: F401
