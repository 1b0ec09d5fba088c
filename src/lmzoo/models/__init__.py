"""Every architecture module; importing this package registers them all."""
from lmzoo.models import complexity, spectral_llm, spike_transformer, spike_walze, transformer  # noqa: F401
