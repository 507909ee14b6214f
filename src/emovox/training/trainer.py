"""Train one classifier on one fold: weighted cross-entropy, early stopping on validation UA,
checkpoints every epoch (and every ``checkpoint_every_steps`` optimizer steps) so a killed run
resumes exactly where it was.

Why these choices: the IEMOCAP paper trains with AdamW (lr 1e-5, batch 12), class-weighted
cross-entropy (inverse frequency, so UA is not sacrificed to the majority class) and stops
after 3 epochs without validation-UA gain (20 at most). Resuming restores model, optimizer,
scheduler, RNG and early-stopping state at the last checkpoint, and batch order is a pure
function of (seed, epoch), so an interrupted run ends with the same numbers as one that was not.
A step checkpoint (mid-epoch) also records how many of the epoch's batches were done and the
epoch's running loss, and the resumed run skips those batches of the same order. (Augmentation
must therefore draw from the checkpointed RNGs, or be a function of epoch and example, never
from a generator advanced batch by batch since ``set_epoch``.)

The fit loop is this module's one job: what a checkpoint holds and how a run resumes from it is
``training.checkpoint.Checkpointer``'s; how many threads a step uses is ``emovox.accel``'s.
"""

from __future__ import annotations

import functools
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from emovox.accel import fast_compute
from emovox.config import TrainConfig
from emovox.data.batching import length_grouped_batches, plain_batches
from emovox.data.examples import Example
from emovox.errors import EmovoxError
from emovox.evaluation.metrics import compute_metrics
from emovox.training import distributed
from emovox.training.checkpoint import Checkpointer
from emovox.training.tracking import Tracker

Collate = Callable[[list[Example]], dict]


def inverse_frequency_weights(targets: Sequence[int], num_classes: int, *, allow_absent: bool = False) -> torch.Tensor:
    """``n / (C * n_c)`` per class (scikit-learn's "balanced"); a class absent from training is an
    error unless ``allow_absent`` (its weight is then 0: it is never a target anyway)."""
    counts = np.bincount(np.asarray(targets, dtype=np.int64), minlength=num_classes)
    if allow_absent:
        present = counts > 0
        weights = np.zeros(num_classes, dtype=np.float64)
        weights[present] = len(targets) / (int(present.sum()) * counts[present])
        return torch.tensor(weights, dtype=torch.float32)
    if (counts == 0).any():
        raise EmovoxError(
            f"classes {np.flatnonzero(counts == 0).tolist()} have no training examples in this fold; "
            "drop them from the label set or use a protocol that keeps every class in training"
        )
    return torch.tensor(len(targets) / (num_classes * counts), dtype=torch.float32)


@dataclass
class FitResult:
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_valid_ua: float = -1.0  # validation UA of the chosen epoch (what reports print)
    best_valid_score: float = float("-inf")  # the train.select_on metric that chose it
    stopped_early: bool = False
    resumed_from_epoch: int = 0
    resumed_from_step: int = 0  # optimizer steps done before this process (0: trained from scratch)
    choices: dict = field(default_factory=dict)  # what was chosen on validation besides the epoch
    start_valid: dict | None = None  # validation scores of the model before training (start_is_candidate: epoch 0)
    calibration: dict = field(default_factory=dict)


def _fast_compute(method):
    """Run a Trainer method under ``emovox.accel.fast_compute`` (the thread policy and oneDNN linears)."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with fast_compute(self.model, self.cfg.threads):
            return method(self, *args, **kwargs)

    return wrapper


class Trainer:
    """Fits one model; ``run_dir`` (optional) holds the checkpoints that make it resumable.

    ``model`` is a ``ModelKind`` (its own collate, loss and parameter groups; ``collate`` None) or
    any module returning logits, with a ``collate`` function (then plain cross-entropy, one group).
    """

    def __init__(
        self,
        model: nn.Module,
        collate: Collate | None,
        cfg: TrainConfig,
        num_classes: int,
        *,
        run_dir: Path | None = None,
        progress: bool = True,
        description: str = "train",
        device: str | None = None,
        allow_absent_classes: bool = False,
        tracker: Tracker | None = None,
    ):
        self.model = model
        self.tracker = tracker if tracker is not None else Tracker()
        self.allow_absent_classes = allow_absent_classes
        if collate is None:
            self.collate = model.collate
            self.train_collate = functools.partial(model.collate, augment=True)
        else:
            self.collate = self.train_collate = collate
        self.cfg = cfg
        self.num_classes = num_classes
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.checkpoints = Checkpointer(self.run_dir, keep=cfg.keep_checkpoints)
        self.progress = progress and distributed.is_main()  # several processes: one progress bar
        self.description = description
        self.device = torch.device(device or distributed.default_device())
        self.model.to(self.device)

    # -- batching --------------------------------------------------------------------------
    def _batches(self, examples: Sequence[Example], batch_size: int, *, shuffle: bool, epoch: int = 0) -> list[list[int]]:
        seed = self.cfg.seed * 100_003 + epoch
        if self.cfg.length_grouping:
            return length_grouped_batches([e.length for e in examples], batch_size, shuffle=shuffle, seed=seed)
        return plain_batches(len(examples), batch_size, shuffle=shuffle, seed=seed)

    def _to_device(self, inputs: dict) -> dict:
        return {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in inputs.items()}

    def _autocast(self):
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
        return torch.autocast("cpu", enabled=False)

    # -- prediction --------------------------------------------------------------------------
    @_fast_compute
    def predict_logits(self, examples: Sequence[Example], batch_size: int | None = None) -> np.ndarray:
        """Logits in the order of ``examples`` (batches are length-sorted internally)."""
        self.model.eval()
        if hasattr(self.model, "observe"):  # a ModelKind: statistics of the clips it is about to classify
            examples = self.model.observe(list(examples))
        out = np.zeros((len(examples), self.num_classes), dtype=np.float32)
        mine = distributed.predict_share(self._batches(examples, batch_size or self.cfg.batch_size, shuffle=False))
        with torch.inference_mode(), self._autocast():
            for b in mine:
                logits = self.model(self._to_device(self.collate([examples[i] for i in b])))
                out[b] = logits.float().cpu().numpy()
        return distributed.gather_rows(out, mine, [e.id for e in examples])

    def predict_proba(self, examples: Sequence[Example]) -> np.ndarray:
        logits = self.predict_logits(examples)
        return torch.softmax(torch.from_numpy(logits), dim=-1).numpy()

    def _param_groups(self) -> list[dict]:
        """Pretrained parameters at ``lr``; the freshly initialised parts at ``head_lr`` when set
        (a new linear layer needs a far larger step than pretrained weights). The model kind says which is which."""
        if hasattr(self.model, "param_groups"):
            groups = self.model.param_groups(self.cfg.lr, self.cfg.head_lr)
        else:
            groups = [{"params": [p for p in self.model.parameters() if p.requires_grad]}]
        if not groups:
            raise EmovoxError(f"{self.description}: nothing to train (every parameter is frozen)")
        return groups

    def _loss(self, inputs: dict, targets: torch.Tensor, weight: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if hasattr(self.model, "loss"):
            return self.model.loss(inputs, targets, weight)
        logits = self.model(inputs)
        return nn.functional.cross_entropy(logits.float(), targets, weight=weight), logits

    # -- training ------------------------------------------------------------------------------
    @_fast_compute
    def fit(self, train: Sequence[Example], valid: Sequence[Example], *, start_is_candidate: bool = False) -> FitResult:
        """Train, choosing the epoch on ``valid``. ``start_is_candidate``: the model as it comes in
        (a head already fitted in closed form: linear probing, then fine-tuning) is "epoch 0" and is
        kept when no trained epoch scores better on validation, so fine-tuning can only replace it
        by doing better there."""
        if not train:
            raise EmovoxError("no training examples in this fold")
        cfg = self.cfg
        # transformers' SpecAugment (wav2vec2 family) draws its masks from numpy's global RNG
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)
        targets = [e.target for e in train]
        weights = (
            inverse_frequency_weights(targets, self.num_classes, allow_absent=self.allow_absent_classes)
            if cfg.class_weights == "inverse"
            else None
        )
        weights = weights.to(self.device) if weights is not None else None
        loss_fn = nn.CrossEntropyLoss(weight=weights)
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(self._param_groups(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self._schedule(train))

        result = FitResult()
        start_epoch, bad_epochs, global_step, partial = 1, 0, 0, None
        resumed = self.checkpoints.resume(self.model, optimizer, scheduler)
        if resumed is not None:
            result.history = resumed["history"]
            result.best_epoch, result.best_valid_ua = resumed["best_epoch"], resumed["best_valid_ua"]
            result.best_valid_score = resumed.get("best_valid_score", resumed["best_valid_ua"])
            result.start_valid = resumed.get("start_valid")
            bad_epochs = resumed["bad_epochs"]
            start_epoch = resumed["epoch"] + 1
            result.resumed_from_epoch = resumed["epoch"]
            global_step = result.resumed_from_step = int(resumed.get("global_step", 0))
            partial = resumed.get("in_epoch")  # a step checkpoint: the unfinished epoch's progress
            if resumed.get("finished"):
                result.stopped_early = resumed.get("stopped_early", False)
                self.tracker.resume(global_step)
                self.checkpoints.load_best(self.model)
                return result
        self.tracker.resume(global_step)

        from emovox.progress import progress_bar

        valid_targets = [e.target for e in valid]
        if start_is_candidate and valid and resumed is None:
            result.start_valid = self._valid_scores(valid, valid_targets, loss_fn)
            result.best_valid_score, result.best_valid_ua = result.start_valid["score"], result.start_valid["ua"]
            self.checkpoints.save_best(self.model)  # epoch 0
        finished_early = False
        # one bar over epochs (a frozen head's epoch takes milliseconds), batches nested below it
        epochs = progress_bar(
            total=cfg.max_epochs, initial=start_epoch - 1, desc=self.description, unit="epoch", disable=not self.progress
        )
        train_loss = distributed.training_loss(self.model, self._loss)  # self._loss itself in one process
        for epoch in range(start_epoch, cfg.max_epochs + 1):
            t0 = time.time()
            self.model.train()
            if hasattr(self.model, "set_epoch"):
                self.model.set_epoch(epoch)
            batches = self._batches(train, cfg.batch_size, shuffle=True, epoch=epoch)
            if cfg.max_steps_per_epoch:
                batches = batches[: cfg.max_steps_per_epoch * cfg.grad_accum * distributed.world()]
            steps = distributed.share(batches)  # this process's batches (all of them in one process)
            first, total, count, step_losses, earlier_seconds = 0, 0.0, 0, [], 0.0
            if partial is not None:  # skip the batches the interrupted process had trained on
                first, total, count = partial["batches_done"], partial["total"], partial["count"]
                step_losses, earlier_seconds = list(partial["step_loss"]), partial["seconds"]
                partial = None
            step_total, step_count = 0.0, 0
            optimizer.zero_grad(set_to_none=True)
            bar = progress_bar(
                total=len(steps), initial=first, desc=f"{self.description} epoch {epoch}", unit="batch",
                disable=not self.progress, leave=False,
            )
            for step, (b, counts) in enumerate(steps[first:], first + 1):
                batch = [train[i] for i in b]
                targets = torch.tensor([e.target for e in batch], device=self.device)
                with self._autocast():
                    loss, _ = train_loss(self._to_device(self.train_collate(batch)), targets, weights)
                if not torch.isfinite(loss):
                    raise EmovoxError(f"{self.description}: loss became {loss.item()} at epoch {epoch}; lower train.lr")
                ((loss if counts else loss * 0.0) / cfg.grad_accum).backward()
                if counts:  # a zero-weighted stand-in batch (several processes, uneven shares) is not counted
                    batch_loss = loss.item() * len(b)
                    total, count = total + batch_loss, count + len(b)
                    step_total, step_count = step_total + batch_loss, step_count + len(b)
                bar.update(1)
                if count:
                    bar.set_postfix(loss=f"{total / count:.4f}")
                if step % cfg.grad_accum == 0 or step == len(steps):
                    torch.nn.utils.clip_grad_norm_(params, 1.0)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    global_step += 1
                    if step_count:
                        step_losses.append(step_total / step_count)
                        self.tracker.log_step(global_step, step_losses[-1], _learning_rates(optimizer))
                    step_total, step_count = 0.0, 0
                    every = cfg.checkpoint_every_steps
                    if (
                        self.run_dir is not None and every and global_step % every == 0 and step < len(steps)
                        and distributed.is_main()
                    ):  # fmt: skip
                        self.tracker.flush()
                        progress = {"epoch": epoch, "batches_done": step, "total": total, "count": count}
                        progress.update(step_loss=step_losses, seconds=earlier_seconds + time.time() - t0)
                        state = {"epoch": epoch - 1, "global_step": global_step, "history": result.history, "in_epoch": progress}
                        state.update(best_epoch=result.best_epoch, best_valid_ua=result.best_valid_ua, bad_epochs=bad_epochs)
                        state.update(best_valid_score=result.best_valid_score, start_valid=result.start_valid)
                        self.checkpoints.save(self.model, optimizer, scheduler, dict(state, finished=False, stopped_early=False))
            bar.close()
            total, count = distributed.sum_across([total, count])

            if valid:
                v = self._valid_scores(valid, valid_targets, loss_fn)
                vl, v_ua, v_wa, v_f1, v_wf1, score = v["loss"], v["ua"], v["wa"], v["macro_f1"], v["weighted_f1"], v["score"]
            else:
                # no validation: the lowest training loss wins
                vl, v_ua, v_wa, v_f1, v_wf1 = float("nan"), -(total / max(count, 1)), float("nan"), float("nan"), float("nan")
                score = v_ua
            record = {
                "epoch": epoch,
                "train_loss": total / max(count, 1),
                "valid_loss": vl,
                "valid_ua": v_ua if valid else None,
                "valid_wa": v_wa if valid else None,
                "valid_macro_f1": v_f1 if valid else None,
                "valid_weighted_f1": v_wf1 if valid else None,
                "lr": _learning_rates(optimizer),
                "steps": global_step,
                "step_loss": step_losses,
                "seconds": round(earlier_seconds + time.time() - t0, 3),
            }
            result.history.append(record)
            self.tracker.log_epoch(global_step, record)
            if score > result.best_valid_score:
                result.best_valid_score, result.best_valid_ua, result.best_epoch, bad_epochs = score, v_ua, epoch, 0
                self.checkpoints.save_best(self.model)
            else:
                bad_epochs += 1
            finished_early = bad_epochs >= cfg.patience
            done = finished_early or epoch == cfg.max_epochs
            self.tracker.flush()
            if self.run_dir is not None and distributed.is_main():
                self.checkpoints.save(
                    self.model,
                    optimizer,
                    scheduler,
                    {
                        "epoch": epoch,
                        "global_step": global_step,
                        "history": result.history,
                        "best_epoch": result.best_epoch,
                        "best_valid_ua": result.best_valid_ua,
                        "best_valid_score": result.best_valid_score,
                        "start_valid": result.start_valid,
                        "bad_epochs": bad_epochs,
                        "finished": done,
                        "stopped_early": finished_early,
                    },
                )
            epochs.update(1)
            epochs.set_postfix(
                loss=f"{record['train_loss']:.4f}", valid_ua=f"{v_ua:.4f}" if valid else "-", best=result.best_epoch
            )
            distributed.barrier()
            if finished_early:
                break
        epochs.close()
        result.stopped_early = finished_early
        self.checkpoints.load_best(self.model)
        return result

    def _schedule(self, train: Sequence[Example]):
        """The learning-rate multiplier per optimizer step. The linear schedule needs the run's
        total step count up front: the batch count does not change between epochs (only their
        order does), so epoch 1's plan gives it."""
        cfg = self.cfg
        if cfg.lr_schedule == "constant":
            return lambda step: 1.0
        batches = len(self._batches(train, cfg.batch_size, shuffle=True, epoch=1))
        if cfg.max_steps_per_epoch:
            batches = min(batches, cfg.max_steps_per_epoch * cfg.grad_accum * distributed.world())
        steps = math.ceil(batches / distributed.world())  # this process's batches
        per_epoch = math.ceil(steps / cfg.grad_accum)  # optimizer steps
        return linear_schedule(max(1, per_epoch * cfg.max_epochs), cfg.warmup_ratio)

    def _valid_scores(self, valid: Sequence[Example], targets: list[int], loss_fn) -> dict:
        """Validation loss and metrics of the model as it is, and the ``select_on`` one as ``score``."""
        logits = self.predict_logits(valid)
        loss = loss_fn(torch.from_numpy(logits).to(self.device), torch.tensor(targets, device=self.device)).item()
        m = compute_metrics(targets, logits.argmax(1).tolist(), [str(i) for i in range(self.num_classes)])
        out = {"loss": loss, "ua": float(m.ua), "wa": float(m.wa), "macro_f1": float(m.macro_f1),
               "weighted_f1": float(m.weighted_f1)}
        return {**out, "score": out[self.cfg.select_on]}

def _learning_rates(optimizer) -> dict[str, float]:
    """Each parameter group's current learning rate, by the group's ``name`` (its index when unnamed)."""
    return {str(g.get("name", i)): float(g["lr"]) for i, g in enumerate(optimizer.param_groups)}


def linear_schedule(total_steps: int, warmup_ratio: float = 0.0):
    """Linear warm-up to the full rate over ``warmup_ratio`` of ``total_steps``, then linear decay
    to zero at the last step (transformers' ``get_linear_schedule_with_warmup``; a LambdaLR
    multiplier so the optimizer's resume state stays plain)."""
    warmup = int(round(total_steps * warmup_ratio))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return factor
