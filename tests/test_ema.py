import pytest
import torch

from drcnet.engine.ema import EMA


def test_ema_follows_its_formula_and_stays_frozen():
    net = torch.nn.Linear(3, 2)
    ema = EMA(net, 0.9)
    start = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    ema.update(net)
    for k, v in ema.module.state_dict().items():
        torch.testing.assert_close(v, 0.9 * start[k] + 0.1 * (start[k] + 1.0))
    assert not any(p.requires_grad for p in ema.module.parameters())


@pytest.mark.parametrize('decay', [0.0, 1.0, -0.5])
def test_ema_decay_outside_the_open_interval_is_named(decay):
    with pytest.raises(ValueError, match='ema_decay'):
        EMA(torch.nn.Linear(1, 1), decay)
