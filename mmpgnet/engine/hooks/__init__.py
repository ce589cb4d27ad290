"""mmpgnet hooks."""
from . import cbn_hook  # noqa: F401
from . import pipeline_guidance_hook  # noqa: F401
from . import channels_last_hook  # noqa: F401
