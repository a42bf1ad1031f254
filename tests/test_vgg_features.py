"""Frozen VGG19 extractor: torchvision layout, strict loading, the weights search and its offline error."""
from __future__ import annotations

import logging
import urllib.error

import pytest
import torch
from torchvision.models.vgg import cfgs, make_layers

from conftest import photo_tensor
from drcnet.losses import IntraCRLoss, vgg_features
from drcnet.losses.vgg_features import (VGG19_FILENAME, VGG19_LAYERS, VGGFeatureExtractor, VGGWeightsNotFoundError,
                                        build_vgg19_features, find_vgg19_weights)
from drcnet.registry import LOSS_REGISTRY, build
from tolerance import assert_same_up_to_rounding, network_terms


def torchvision_features(seed: int = 3) -> torch.nn.Sequential:
    """torchvision's own vgg19 ``features`` module with random weights."""
    torch.manual_seed(seed)
    return make_layers(cfgs['E']).eval()


def save_torchvision_state(features: torch.nn.Module, path, drop=(), extra=True):
    state = {f'features.{k}': v for k, v in features.state_dict().items() if f'features.{k}' not in drop}
    if extra:  # a full torchvision state dict also has the classifier; it must be ignored
        state['classifier.6.bias'] = torch.zeros(10)
    torch.save(state, path)


@pytest.fixture
def no_weights_anywhere(tmp_path, monkeypatch):
    """An empty torch cache and working directory; a download attempt that fails as it does offline."""
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    monkeypatch.chdir(tmp_path)
    attempts = []

    def offline(*args, **kwargs):
        attempts.append(1)
        raise urllib.error.URLError('[Errno -2] Name or service not known')

    monkeypatch.setattr(vgg_features, '_download_vgg19', offline)
    return attempts


def test_layout_is_torchvision_vgg19():
    ours, ref = build_vgg19_features(), torchvision_features()
    assert len(ours) == len(ref) == 37
    for a, b in zip(ours, ref):
        assert type(a) is type(b)
        if isinstance(a, torch.nn.Conv2d):
            assert a.weight.shape == b.weight.shape and a.padding == b.padding
    assert (VGG19_LAYERS['relu1_1'], VGG19_LAYERS['relu2_1'], VGG19_LAYERS['relu3_1'], VGG19_LAYERS['pool5']) \
        == (1, 6, 11, 36)
    assert isinstance(ref[VGG19_LAYERS['relu3_1']], torch.nn.ReLU)


def test_state_dict_file_loads_strictly_and_matches_its_module(tmp_path):
    ref = torchvision_features()
    path = tmp_path / 'vgg.pth'
    save_torchvision_state(ref, path)
    ext = VGGFeatureExtractor(layers=('relu1_1', 'relu2_1', 'relu3_1'), weights=path)
    assert len(ext.features) == 12 and ext.weights_source == str(path)
    x = photo_tensor('astronaut')[..., 200:248:2, 200:252:2]
    with torch.no_grad():
        got = ext(x)
        # equal up to rounding: on the CPU the extractor convolves channels-last maps, summing each convolution
        # of the chain (27 terms for conv1_1, up to 1152 for conv3_1) in another order
        for name, end in (('relu1_1', 2), ('relu2_1', 7), ('relu3_1', 12)):
            assert_same_up_to_rounding(got[name], ref[:end](x), network_terms(ref[:end], 0), name)
    # the same file through the loss option
    loss = build(LOSS_REGISTRY, {'type': 'IntraCRLoss', 'vgg_weights': str(path)})
    for a, b in zip(loss.vgg.features.parameters(), ref[:12].parameters()):
        assert torch.equal(a, b)


def test_conv_output_is_not_overwritten_by_inplace_relu(tmp_path):
    ref = torchvision_features()
    path = tmp_path / 'vgg.pth'
    save_torchvision_state(ref, path)
    ext = VGGFeatureExtractor(layers=('conv1_2', 'relu1_2'), weights=path)
    x = photo_tensor('coffee')[..., :24, :30]
    with torch.no_grad():
        got = ext(x)
        assert_same_up_to_rounding(got['conv1_2'], ref[:3](x), network_terms(ref[:3], 0))
        assert (got['conv1_2'] < 0).any() and torch.equal(got['relu1_2'], got['conv1_2'].clamp(min=0))


def test_input_norm_uses_imagenet_statistics(tmp_path):
    ref = torchvision_features()
    path = tmp_path / 'vgg.pth'
    save_torchvision_state(ref, path)
    ext = VGGFeatureExtractor(layers=('relu1_1',), weights=path, use_input_norm=True)
    x = photo_tensor('chelsea')[..., :20, :22]
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        # the normalisation (two operations) then a 3x3 convolution of 3 channels
        assert_same_up_to_rounding(ext(x)['relu1_1'], ref[:2]((x - mean) / std), 2 + 27)


def test_bad_files_name_the_file_and_keys(tmp_path):
    ref = torchvision_features()
    missing = tmp_path / 'missing_key.pth'
    save_torchvision_state(ref, missing, drop=('features.5.weight',))
    # the same wording as a network checkpoint that does not fit (one strict-load helper for both)
    with pytest.raises(ValueError, match=r'missing_key\.pth.*1 missing from the file: features\.5\.weight'):
        VGGFeatureExtractor(weights=missing)
    # a key the truncated network does not need may be absent
    VGGFeatureExtractor(layers=('relu1_1',), weights=missing)
    wrong = tmp_path / 'wrong_shape.pth'
    state = {f'features.{k}': v for k, v in ref.state_dict().items()}
    state['features.0.weight'] = torch.zeros(64, 1, 3, 3)
    torch.save(state, wrong)
    with pytest.raises(ValueError, match=r'wrong_shape\.pth.*1 with another shape: features\.0\.weight file '
                                         r'\(64, 1, 3, 3\) vs network \(64, 3, 3, 3\)'):
        VGGFeatureExtractor(weights=wrong)
    garbage = tmp_path / 'garbage.pth'
    garbage.write_bytes(b'not a checkpoint')
    with pytest.raises(ValueError, match=r'garbage\.pth'):
        VGGFeatureExtractor(weights=garbage)
    with pytest.raises(VGGWeightsNotFoundError, match=r'nowhere\.pth'):
        VGGFeatureExtractor(weights=tmp_path / 'nowhere.pth')


def test_search_order_cache_then_experiments(tmp_path, no_weights_anywhere):
    exp = tmp_path / 'experiments' / 'pretrained_models' / VGG19_FILENAME
    exp.parent.mkdir(parents=True)
    save_torchvision_state(torchvision_features(1), exp)
    assert find_vgg19_weights().resolve() == exp.resolve()
    cache = tmp_path / 'torch_home' / 'hub' / 'checkpoints' / VGG19_FILENAME
    cache.parent.mkdir(parents=True)
    save_torchvision_state(torchvision_features(2), cache)
    assert find_vgg19_weights() == cache
    ext = VGGFeatureExtractor(layers=('relu1_1',))
    assert ext.weights_source == str(cache)
    explicit = tmp_path / 'mine.pth'
    save_torchvision_state(torchvision_features(4), explicit)
    assert find_vgg19_weights(explicit) == explicit
    assert no_weights_anywhere == []  # files were found: no download attempt


def test_missing_weights_offline_lists_every_path(tmp_path, no_weights_anywhere):
    cache = tmp_path / 'torch_home' / 'hub' / 'checkpoints' / VGG19_FILENAME
    exp = tmp_path / 'experiments' / 'pretrained_models' / VGG19_FILENAME
    with pytest.raises(VGGWeightsNotFoundError) as info:
        build(LOSS_REGISTRY, {'type': 'IntraCRLoss'}, where='train.contrastive_opt')
    message = str(info.value)
    assert str(cache) in message and str(exp) in message
    assert 'Name or service not known' in message and 'vgg_weights:' in message
    assert no_weights_anywhere == [1]  # exactly one download attempt, at construction
    with pytest.raises(VGGWeightsNotFoundError, match='download not attempted'):
        find_vgg19_weights(download=False)
    assert no_weights_anywhere == [1]


def test_frozen_and_always_eval():
    ext = VGGFeatureExtractor(weights='random')
    assert all(not p.requires_grad for p in ext.parameters())
    ext.train()
    assert not ext.training and not any(m.training for m in ext.modules())
    with pytest.raises(ValueError, match="'relu6_1' is not a VGG19 layer; valid names: conv1_1, relu1_1"):
        VGGFeatureExtractor(layers=('relu6_1',), weights='random')
    with pytest.raises(ValueError, match=r'expected \(B, 3, H, W\)'):
        ext(torch.zeros(1, 1, 8, 8))


def test_random_weights_warn_and_leave_global_rng_alone():
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    log = logging.getLogger('basicsr')
    log.addHandler(handler)
    try:
        state = torch.random.get_rng_state()
        a = IntraCRLoss(vgg_weights='random')
        assert torch.equal(state, torch.random.get_rng_state())
    finally:
        log.removeHandler(handler)
    assert any(r.levelno == logging.WARNING and 'random' in r.getMessage() for r in records)
    b = VGGFeatureExtractor(weights='random')
    assert torch.equal(a.vgg.features[0].weight, b.features[0].weight)  # seeded: reproducible
    assert a.vgg.features[0].weight.std() > 0
