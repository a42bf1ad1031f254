"""Network architectures; every ``*_arch.py`` module registers into ARCH_REGISTRY on import."""
from drcnet.registry import import_modules

import_modules(__name__, '_arch')
