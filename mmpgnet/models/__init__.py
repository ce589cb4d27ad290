"""Models: losses, necks, norm layers and heads (each registered on import)."""
from . import heads, losses, necks, norms  # noqa: F401
