"""Linear learning-rate warm-up (``lr_warmup_epochs``), for any RecBole trainer.

RecBole's trainer keeps the learning rate constant. ABXI (and many transformer recipes) start at a
small rate and raise it linearly over the first epoch: without it, ABXI's published settings (AdamW
at 1e-4 with weight decay 5) move slowly in their first epochs. The warm-up hooks the optimizer's
step, so it works with every trainer, and it continues where it stopped when a run is resumed.
"""


class LinearWarmup:
    """Before each optimizer step: lr = base lr x min(1, step / warm-up steps), step counted from 1."""

    def __init__(self, trainer, epochs, steps_per_epoch):
        self.trainer = trainer
        self.steps_per_epoch = steps_per_epoch
        self.total = max(1, round(epochs * steps_per_epoch))
        self.base = [group["lr"] for group in trainer.optimizer.param_groups]
        self.done = None  # optimizer steps taken so far; known at the first step (after a resume)
        trainer.optimizer.register_step_pre_hook(self)

    def __call__(self, optimizer, args, kwargs):
        if self.done is None:  # a resumed trainer starts at start_epoch: the schedule continues from there
            self.done = self.trainer.start_epoch * self.steps_per_epoch
        scale = min(1.0, (self.done + 1) / self.total)
        for group, base in zip(optimizer.param_groups, self.base):
            group["lr"] = base * scale
        self.done += 1
