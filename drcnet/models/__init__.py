"""Model types; every ``*_model.py`` module registers into MODEL_REGISTRY on import."""
from drcnet.registry import import_modules

import_modules(__name__, '_model')
