"""Models: losses, necks, norm layers and heads (each registered on import)."""
from . import heads, losses, necks, norms  # noqa: F401
from . import pose_estimators  # noqa: F401
