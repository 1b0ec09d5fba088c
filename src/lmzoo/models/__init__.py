"""Every architecture module; importing this package registers them all."""
from lmzoo.models import complexity, transformer  # noqa: F401
