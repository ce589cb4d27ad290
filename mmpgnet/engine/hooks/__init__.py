"""mmpgnet hooks."""
from . import cbn_hook  # noqa: F401
