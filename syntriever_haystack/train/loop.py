"""The training loop shared by the retriever and reranker trainers: a clean torch loop with checkpoints.

What it takes care of:

- AdamW with decoupled weight decay (no decay on biases and LayerNorm), linear warm-up then linear decay;
- bf16 autocast on CPU (AMX) or CUDA, gradient accumulation, gradient clipping;
- deterministic batches per ``seed + epoch`` (the task builds them), so a resumed run continues with the very
  batch it would have trained on next;
- atomic checkpoints (``checkpoints/step-N``: weights, optimizer, scheduler, RNG, position, history) every
  ``checkpoint_steps`` and at each epoch end; on start, the newest checkpoint of the same configuration is
  resumed — a run killed with SIGKILL loses at most ``checkpoint_steps`` steps;
- dev evaluation (step 0, each ``eval_steps`` and each epoch end) and a progress bar with the running loss;
- ``history.json`` (losses per step, dev metrics) for the training curve and the model card.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from syntriever_haystack.errors import SyntrieverError
from syntriever_haystack.train.distributed import all_reduce_gradients, is_main_process, rank_world

__all__ = ["LoopSettings", "TrainingError", "TrainingLoop", "TrainingTask", "load_checkpoint_state", "run_fingerprint"]


class TrainingError(SyntrieverError, RuntimeError):
    """Training cannot start or continue; the message names the cause and the fix."""


class TrainingTask(Protocol):
    """What a trainer plugs into :class:`TrainingLoop`."""

    model: torch.nn.Module

    def batches(self, epoch: int) -> Sequence[Any]:
        """The epoch's batches, deterministic for ``epoch``."""

    def train_step(self, batch: Any) -> dict[str, float]:
        """Forward + backward for one batch (gradients accumulate); returns ``{"loss": ..., other terms}``."""

    def evaluate(self) -> dict[str, float]:
        """Dev metrics of the current model (may be empty)."""


@dataclass
class LoopSettings:
    """Optimisation and bookkeeping settings of one run."""

    epochs: float = 1.0
    learning_rate: float = 2e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    gradient_accumulation_steps: int = 1
    max_grad_norm: float | None = 1.0
    bf16: bool = True
    checkpoint_steps: int = 50
    keep_checkpoints: int = 2
    eval_steps: int | None = None
    eval_at_start: bool = True
    seed: int = 42
    progress: bool = True
    max_steps: int | None = None  # stop early (tests, smoke runs); the schedule still spans the full run
    extra: dict[str, Any] = field(default_factory=dict)


def run_fingerprint(config: Any, examples: Sequence[Any]) -> str:
    """Identity of a run: its configuration (minus output folder, overwrite, progress and max_steps, which may
    change between a run and its resumption) and its training examples (dataclasses)."""
    import dataclasses
    import hashlib

    fields = {k: v for k, v in dataclasses.asdict(config).items() if k not in {"overwrite", "output", "settings"}}
    fields["loop"] = {
        k: v for k, v in dataclasses.asdict(config.settings).items() if k not in {"progress", "max_steps"}
    }
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode())
    for example in examples:
        digest.update(json.dumps(dataclasses.asdict(example), sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def load_checkpoint_state(path: Path) -> dict[str, Any]:
    """A checkpoint's ``state.pt``, read with ``weights_only=True``: tensors and plain containers only.

    A checkpoint is a data file: loading it must never run code, so a pickle that needs anything else (a crafted
    file, or a checkpoint written by another program) is refused, before any of its objects is built.
    """
    import pickle

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise TrainingError(
            f"Refusing to resume from {path}: it is not a checkpoint this trainer wrote (loading it would need "
            f"more than tensors and plain values: {first_line}). Delete {path.parent}, use another --out folder, "
            "or --overwrite to start over."
        ) from None
    if not isinstance(state, dict) or "fingerprint" not in state:
        raise TrainingError(
            f"Refusing to resume from {path}: not a training checkpoint. Delete {path.parent}, use another --out "
            "folder, or --overwrite to start over."
        )
    return state


def _autocast(enabled: bool) -> Any:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=enabled)


def bf16_supported() -> bool:
    """True when bf16 autocast is worth using: CUDA with bf16, or a CPU with AMX/AVX512-BF16."""
    if torch.cuda.is_available():
        return bool(torch.cuda.is_bf16_supported())
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


class TrainingLoop:
    """Run a :class:`TrainingTask` with checkpoints and resume.

    :param task: The trainer's task (model, batches, step, evaluation).
    :param settings: Optimisation settings.
    :param output: Run folder (``checkpoints/``, ``history.json``).
    :param fingerprint: Identity of the run's configuration and data; a checkpoint of another fingerprint is not
        resumed (the error says to pick another output folder or pass ``overwrite``).
    :param overwrite: Delete existing checkpoints instead of resuming.
    :param on_log: Called with each logged step (tests, custom logging).
    """

    def __init__(
        self,
        task: TrainingTask,
        settings: LoopSettings,
        output: str | Path,
        *,
        fingerprint: str,
        overwrite: bool = False,
        on_log: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.task = task
        self.settings = settings
        self.output = Path(output)
        self.fingerprint = fingerprint
        self.overwrite = overwrite
        self.on_log = on_log
        self.history: dict[str, Any] = {"steps": [], "evals": [], "resumed_from": [], "seconds": 0.0}

    # ---------------------------------------------------------------------------------------------- set-up
    def _optimizer(self) -> torch.optim.Optimizer:
        decay: list[torch.nn.Parameter] = []
        no_decay: list[torch.nn.Parameter] = []
        for name, param in self.task.model.named_parameters():
            if not param.requires_grad:
                continue
            (no_decay if param.ndim < 2 or "LayerNorm" in name or "norm" in name.lower() else decay).append(param)
        groups = [
            {"params": decay, "weight_decay": self.settings.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        return torch.optim.AdamW(groups, lr=self.settings.learning_rate)

    def _epoch_batches(self, epoch: int) -> Sequence[Any]:
        batches = self.task.batches(epoch)
        rank, world = rank_world()
        if world > 1:  # every process takes the same number of batches, or the gradient all-reduce would hang
            batches = list(batches)[: len(batches) // world * world][rank::world]
        return batches

    def _total_steps(self) -> tuple[int, int]:
        per_epoch = math.ceil(len(self._epoch_batches(0)) / self.settings.gradient_accumulation_steps)
        total = max(1, math.ceil(per_epoch * self.settings.epochs))
        return per_epoch, total

    @property
    def checkpoint_dir(self) -> Path:
        return self.output / "checkpoints"

    def _checkpoints(self) -> list[Path]:
        if not self.checkpoint_dir.is_dir():
            return []
        found = [p for p in self.checkpoint_dir.glob("step-*") if (p / "state.pt").is_file()]
        return sorted(found, key=lambda p: int(p.name.split("-")[1]))

    def _remove_partial_checkpoints(self) -> None:
        """Delete half-written checkpoint folders left by a process killed while saving."""
        if not is_main_process() or not self.checkpoint_dir.is_dir():
            return
        for partial in self.checkpoint_dir.glob(".tmp-*"):
            shutil.rmtree(partial, ignore_errors=True)

    def _save_checkpoint(self, state: dict[str, Any]) -> Path | None:
        if not is_main_process():
            return None
        target = self.checkpoint_dir / f"step-{state['step']:07d}"
        tmp = self.checkpoint_dir / f".tmp-{state['step']:07d}-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        torch.save(state, tmp / "state.pt")
        with (tmp / "state.pt").open("rb") as handle:
            os.fsync(handle.fileno())
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)  # atomic: a checkpoint folder either has a complete state.pt or does not exist
        for old in self._checkpoints()[: -self.settings.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
        return target

    # ---------------------------------------------------------------------------------------------- the loop
    def run(self) -> dict[str, Any]:
        """Train to the end (or ``max_steps``) and return the history."""
        s = self.settings
        torch.manual_seed(s.seed)
        model = self.task.model
        optimizer = self._optimizer()
        per_epoch, total = self._total_steps()
        warmup = int(total * s.warmup_ratio)

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / max(1, warmup)
            return max(0.0, (total - step) / max(1, total - warmup))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        step, epoch, batch_index = 0, 0, 0
        if self.overwrite and self.checkpoint_dir.exists():
            shutil.rmtree(self.checkpoint_dir)
        self._remove_partial_checkpoints()
        checkpoints = self._checkpoints()
        if checkpoints:
            state = load_checkpoint_state(checkpoints[-1] / "state.pt")
            if state.get("fingerprint") != self.fingerprint:
                raise TrainingError(
                    f"{self.output} holds checkpoints of a different configuration or data "
                    f"({checkpoints[-1].name}). Use another --out folder, or --overwrite to start over."
                )
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["rng"])
            step, epoch, batch_index = state["step"], state["epoch"], state["batch_index"]
            history = state["history"]
            self.history = json.loads(history) if isinstance(history, str) else history
            self.history["resumed_from"].append(step)
        elif s.eval_at_start:
            self._evaluate(step, epoch)

        from tqdm.auto import tqdm

        stop_at = total if s.max_steps is None else min(total, s.max_steps)
        bar = tqdm(
            total=stop_at, initial=step, desc="training", unit="step", disable=not (s.progress and is_main_process())
        )
        started = time.perf_counter()
        seconds_before = float(self.history.get("seconds", 0.0))
        use_bf16 = s.bf16
        last_save = step

        def checkpoint() -> None:
            nonlocal last_save
            self.history["seconds"] = seconds_before + time.perf_counter() - started
            self._save_checkpoint(
                {
                    "fingerprint": self.fingerprint,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "rng": torch.get_rng_state(),
                    "step": step,
                    "epoch": epoch,
                    "batch_index": batch_index,
                    # JSON text, so that loading needs no pickled Python objects (numpy scalars, ...)
                    "history": json.dumps(self.history),
                }
            )
            last_save = step

        while step < stop_at:
            batches = self._epoch_batches(epoch)
            model.train()
            terms_sum: dict[str, float] = {}
            micro = 0
            while batch_index < len(batches) and step < stop_at:
                with _autocast(use_bf16):
                    terms = self.task.train_step(batches[batch_index])
                batch_index += 1
                micro += 1
                for key, value in terms.items():
                    terms_sum[key] = terms_sum.get(key, 0.0) + value
                if micro < s.gradient_accumulation_steps and batch_index < len(batches):
                    continue
                if micro > 1:
                    for p in model.parameters():
                        if p.grad is not None:
                            p.grad /= micro
                all_reduce_gradients(model)
                if s.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), s.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                logged = {k: v / micro for k, v in terms_sum.items()}
                logged.update(step=step, epoch=epoch, lr=float(scheduler.get_last_lr()[0]))
                self.history["steps"].append(logged)
                if self.on_log:
                    self.on_log(logged)
                terms_sum, micro = {}, 0
                bar.update(1)
                bar.set_postfix(loss=f"{logged.get('loss', float('nan')):.4f}", epoch=epoch)
                if s.eval_steps and step % s.eval_steps == 0:
                    self._evaluate(step, epoch)
                if step - last_save >= s.checkpoint_steps:
                    checkpoint()
            if batch_index >= len(batches):
                self._evaluate(step, epoch + 1)
                epoch, batch_index = epoch + 1, 0
                checkpoint()
        bar.close()
        if last_save != step:
            checkpoint()
        self.history["seconds"] = seconds_before + time.perf_counter() - started
        self.history["total_steps"] = total
        self.history["steps_per_epoch"] = per_epoch
        if is_main_process():
            self.output.mkdir(parents=True, exist_ok=True)
            (self.output / "history.json").write_text(json.dumps(self.history, indent=1))
        return self.history

    def _evaluate(self, step: int, epoch: int) -> None:
        was_training = self.task.model.training
        self.task.model.eval()
        with torch.no_grad(), _autocast(self.settings.bf16):
            metrics = self.task.evaluate()
        self.task.model.train(was_training)
        if metrics:
            self.history["evals"].append({"step": step, "epoch": epoch, **metrics})
            if self.settings.progress:
                shown = ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())
                print(f"[dev] step {step} epoch {epoch}: {shown}", flush=True)
