"""Datasets and loaders; every ``*_dataset.py`` module registers into DATASET_REGISTRY on import."""
from drcnet.registry import import_modules

import_modules(__name__, '_dataset')
