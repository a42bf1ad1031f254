"""Make ``basicsr`` 1.4.2 importable on torchvision >= 0.17.

basicsr imports ``torchvision.transforms.functional_tensor``, which torchvision renamed to
``_functional_tensor``. Registering the old name before any basicsr import is the whole fix.
"""
import importlib
import sys

_OLD = 'torchvision.transforms.functional_tensor'
if _OLD not in sys.modules:
    try:
        importlib.import_module(_OLD)
    except ImportError:
        sys.modules[_OLD] = importlib.import_module('torchvision.transforms._functional_tensor')
