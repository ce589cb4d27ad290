"""Models: losses, necks, heads, norm layers and pose estimators (each registered on import)."""
from . import heads, losses, necks, norms, pose_estimators  # noqa: F401
