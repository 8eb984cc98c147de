"""lr_warmup_epochs: the learning rate rises linearly over the warm-up steps, then stays; a resumed run continues."""

from types import SimpleNamespace

import torch

from recbole_tema.warmup import LinearWarmup


def _trainer(start_epoch=0, lr=0.01):
    weight = torch.nn.Parameter(torch.zeros(2))
    return SimpleNamespace(optimizer=torch.optim.SGD([weight], lr=lr), start_epoch=start_epoch), weight


def _lrs_of_steps(trainer, weight, steps):
    seen = []
    for _ in range(steps):
        weight.grad = torch.ones(2)
        trainer.optimizer.step()
        seen.append(trainer.optimizer.param_groups[0]["lr"])
    return seen


def test_learning_rate_rises_linearly_then_stays():
    trainer, weight = _trainer()
    LinearWarmup(trainer, epochs=1, steps_per_epoch=4)
    assert _lrs_of_steps(trainer, weight, 6) == [0.0025, 0.005, 0.0075, 0.01, 0.01, 0.01]
    # The update used the warmed-up rate: 0.01 x (1/4 + 2/4 + 3/4 + 1 + 1 + 1) per coordinate.
    assert torch.allclose(weight.detach(), torch.full((2,), -0.045))


def test_a_resumed_run_continues_the_schedule():
    trainer, weight = _trainer(start_epoch=1)  # resumed after its first of two warm-up epochs
    LinearWarmup(trainer, epochs=2, steps_per_epoch=2)
    assert _lrs_of_steps(trainer, weight, 3) == [0.0075, 0.01, 0.01]
