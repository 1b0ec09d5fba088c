"""Every architecture module; importing this package registers them all."""
from lmzoo.models import complexity, efficia, spectral_llm, spike_transformer, spike_walze, transformer  # noqa: F401
