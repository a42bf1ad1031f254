"""A frozen VGG19 feature extractor (torchvision's layout) that never downloads in the middle of training.

Weights are looked for, in order: an explicit path; torchvision's cache
(``$TORCH_HOME/hub/checkpoints/vgg19-dcbb9e9d.pth``, by default under ``~/.cache/torch``);
``experiments/pretrained_models/vgg19-dcbb9e9d.pth``. When none exists, :func:`find_vgg19_weights`
makes one short attempt through torchvision's own download (at construction time, never later) and
otherwise raises an error listing every path it looked at.
"""
from __future__ import annotations

import logging
import os
import socket
from collections import OrderedDict
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import torch
from torch import nn

from drcnet.engine.checkpoint import fit_problems, state_dict_fit

__all__ = ['VGG19_FILENAME', 'VGG19_LAYERS', 'VGG19_URL', 'VGGFeatureExtractor', 'VGGWeightsNotFoundError',
           'build_vgg19_features', 'candidate_vgg19_paths', 'find_vgg19_weights', 'load_vgg19_features']

logger = logging.getLogger('basicsr')

VGG19_FILENAME = 'vgg19-dcbb9e9d.pth'
VGG19_URL = 'https://download.pytorch.org/models/vgg19-dcbb9e9d.pth'  # torchvision's VGG19_Weights.IMAGENET1K_V1
DOWNLOAD_TIMEOUT = 15.0  # seconds per blocking socket operation of the one download attempt

# torchvision's vgg19 configuration 'E': output channels of each 3x3 conv, 'M' for a 2x2 max-pool.
_VGG19_CFG = (64, 64, 'M', 128, 128, 'M', 256, 256, 256, 256, 'M', 512, 512, 512, 512, 'M',
              512, 512, 512, 512, 'M')
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def _layer_names() -> 'OrderedDict[str, int]':
    """Layer name (conv1_1, relu1_1, ..., pool5) -> index in torchvision's ``vgg19().features``."""
    names: 'OrderedDict[str, int]' = OrderedDict()
    index, block, conv = 0, 1, 1
    for item in _VGG19_CFG:
        if item == 'M':
            names[f'pool{block}'] = index
            index, block, conv = index + 1, block + 1, 1
        else:
            names[f'conv{block}_{conv}'] = index
            names[f'relu{block}_{conv}'] = index + 1
            index, conv = index + 2, conv + 1
    return names


VGG19_LAYERS: 'OrderedDict[str, int]' = _layer_names()


class VGGWeightsNotFoundError(FileNotFoundError):
    """No VGG19 weights file was found and the download attempt failed."""


def _check_layers(layers: Sequence[str], where: str = 'layers') -> List[str]:
    if isinstance(layers, str) or not isinstance(layers, Sequence) or len(layers) == 0:
        raise ValueError(f'{where}: expected a non-empty list of VGG19 layer names, got {layers!r}')
    for name in layers:
        if name not in VGG19_LAYERS:
            raise ValueError(f'{where}: {name!r} is not a VGG19 layer; valid names: {", ".join(VGG19_LAYERS)}')
    return list(layers)


def build_vgg19_features(last_index: Optional[int] = None) -> nn.Sequential:
    """torchvision's ``vgg19().features`` truncated after index ``last_index`` (None: all), weights uninitialised."""
    if last_index is None:
        last_index = max(VGG19_LAYERS.values())
    layers: List[nn.Module] = []
    in_ch = 3
    # Built on the meta device: no time or global RNG is spent on an initialisation that is overwritten.
    with torch.device('meta'):
        for item in _VGG19_CFG:
            if item == 'M':
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(in_ch, item, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                in_ch = item
            if len(layers) > last_index:
                break
        model = nn.Sequential(*layers[:last_index + 1])
    return model.to_empty(device='cpu')


def candidate_vgg19_paths(explicit: Optional[Union[str, os.PathLike]] = None) -> List[Path]:
    """Every path :func:`find_vgg19_weights` looks at, in order (the explicit one first, when given)."""
    paths: List[Path] = []
    if explicit is not None:
        paths.append(Path(explicit).expanduser())
    paths.append(Path(torch.hub.get_dir()) / 'checkpoints' / VGG19_FILENAME)
    paths.append(Path('experiments') / 'pretrained_models' / VGG19_FILENAME)
    return paths


def _download_vgg19(timeout: float = DOWNLOAD_TIMEOUT) -> Path:
    """One attempt through torchvision's download into torch's hub cache; returns the file's path."""
    target_dir = Path(torch.hub.get_dir()) / 'checkpoints'
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)  # urllib has no per-call timeout here; an offline machine must not hang
    try:
        torch.hub.load_state_dict_from_url(VGG19_URL, model_dir=str(target_dir), map_location='cpu',
                                           progress=False, check_hash=True, weights_only=True)
    finally:
        socket.setdefaulttimeout(previous)
    return target_dir / VGG19_FILENAME


def find_vgg19_weights(explicit: Optional[Union[str, os.PathLike]] = None, download: bool = True) -> Path:
    """The VGG19 weights file to use; raises :class:`VGGWeightsNotFoundError` naming every path looked at.

    An explicit path must exist (no fall-back to another file). Otherwise the cache and
    ``experiments/pretrained_models`` are searched, then one download is attempted when ``download``.
    """
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise VGGWeightsNotFoundError(f'vgg_weights: {str(path)!r} does not exist or is not a file')
        return path
    looked = candidate_vgg19_paths()
    for path in looked:
        if path.is_file():
            return path
    reason = 'download not attempted'
    if download:
        logger.info('VGG19 weights not found locally; trying torchvision download of %s', VGG19_URL)
        try:
            path = _download_vgg19()
            if path.is_file():
                return path
            reason = f'download finished but {path} is missing'
        except Exception as exc:  # any network / hash / file error: report it with the paths below
            reason = f'download of {VGG19_URL} failed: {type(exc).__name__}: {exc}'
    listing = '\n'.join(f'  - {p.absolute()}' for p in looked)
    raise VGGWeightsNotFoundError(
        f'VGG19 weights {VGG19_FILENAME} not found ({reason}). Looked at:\n{listing}\n'
        f'Download {VGG19_URL} on a machine with internet access and put it at one of the paths above '
        f'(e.g. experiments/pretrained_models/{VGG19_FILENAME}), or pass its location as '
        f'`vgg_weights: /path/to/{VGG19_FILENAME}` in the loss options.')


def load_vgg19_features(path: Union[str, os.PathLike], last_index: int) -> nn.Sequential:
    """VGG19 features up to ``last_index`` loaded strictly from a torchvision state dict file."""
    path = Path(path)
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:
        raise ValueError(f'vgg_weights: cannot read {str(path)!r} as a PyTorch state dict '
                         f'({type(exc).__name__}: {exc})') from exc
    if isinstance(state, dict) and 'state_dict' in state and isinstance(state['state_dict'], dict):
        state = state['state_dict']
    if not isinstance(state, dict):
        raise ValueError(f'vgg_weights: {str(path)!r} holds a {type(state).__name__}, not a state dict')
    # torchvision's full model uses ``features.N.*``; a saved ``vgg.features`` module uses ``N.*``.
    prefix = 'features.' if any(str(k).startswith('features.') for k in state) else ''
    features = build_vgg19_features(last_index)
    fit = state_dict_fit(features.state_dict(), state, prefix)
    problems = fit_problems(fit, unexpected=False)  # a full VGG19 file also holds the layers we do not use
    if problems:
        raise ValueError(f'vgg_weights: {str(path)!r} is not a VGG19 state dict with torchvision key names '
                         f'({"; ".join(problems)})')
    features.load_state_dict(fit['usable'], strict=True)
    return features


def _random_vgg19_features(last_index: int, seed: int = 0) -> nn.Sequential:
    """Kaiming-initialised features (as torchvision initialises VGG) from a private, seeded generator."""
    features = build_vgg19_features(last_index)
    generator = torch.Generator().manual_seed(seed)
    for module in features:
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode='fan_out', nonlinearity='relu', generator=generator)
            nn.init.zeros_(module.bias)
    return features


class VGGFeatureExtractor(nn.Module):
    """Frozen VGG19 (eval mode, no gradients to its weights) returning the requested ReLU/conv outputs.

    ``weights``: None (search, see :func:`find_vgg19_weights`), a path, or ``'random'`` (tests only).
    Inputs are RGB in [0, 1]; ``use_input_norm`` applies ImageNet's mean and std first.
    """

    def __init__(self, layers: Sequence[str] = ('relu1_1', 'relu2_1', 'relu3_1'),
                 weights: Optional[Union[str, os.PathLike]] = None, use_input_norm: bool = False):
        super().__init__()
        self.layers = _check_layers(layers)
        self.use_input_norm = bool(use_input_norm)
        # Only as deep as the deepest requested layer: nothing beyond it is ever computed.
        self.last_index = max(VGG19_LAYERS[name] for name in self.layers)
        self._index_to_names: Dict[int, List[str]] = {}
        for name in self.layers:
            self._index_to_names.setdefault(VGG19_LAYERS[name], []).append(name)
        if isinstance(weights, str) and weights == 'random':
            logger.warning('VGGFeatureExtractor: weights="random": features are NOT ImageNet VGG19 '
                           '(allowed for tests only; the contrastive loss is meaningless for training)')
            self.weights_source = 'random'
            self.features = _random_vgg19_features(self.last_index)
        else:
            path = find_vgg19_weights(weights)
            self.weights_source = str(path)
            self.features = load_vgg19_features(path, self.last_index)
        # An in-place ReLU would overwrite a conv output that is returned (e.g. conv1_1 requested).
        for index in self._index_to_names:
            if index + 1 < len(self.features) and isinstance(self.features[index + 1], nn.ReLU):
                self.features[index + 1].inplace = False
        self.features.requires_grad_(False)
        self.register_buffer('mean', torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer('std', torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        super().train(False)

    def train(self, mode: bool = True) -> 'VGGFeatureExtractor':
        """Always stays in eval mode (frozen)."""
        return super().train(False)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """x (B, 3, H, W) in [0, 1] -> {layer name: (B, C_l, H_l, W_l)}."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f'VGGFeatureExtractor: expected (B, 3, H, W) RGB input, got shape {tuple(x.shape)}')
        if self.use_input_norm:
            x = (x - self.mean) / self.std
        if x.device.type == 'cpu':
            # oneDNN convolves NHWC maps directly; NCHW ones are reordered around every convolution
            x = x.contiguous(memory_format=torch.channels_last)
        out: Dict[str, torch.Tensor] = {}
        for index, module in enumerate(self.features):
            x = module(x)
            for name in self._index_to_names.get(index, ()):
                out[name] = x
        return out

    def extra_repr(self) -> str:
        return f'layers={self.layers}, use_input_norm={self.use_input_norm}, weights={self.weights_source!r}'
