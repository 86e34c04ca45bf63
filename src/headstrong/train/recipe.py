"""One training recipe for baseline and text-guided models.

Only the head differs between the two: the optimiser (SGD with Nesterov momentum, no weight
decay on 1-D parameters such as biases, norms and the logit scale), the per-step cosine
schedule, the augmentation (random crop and flip) and the epochs are the same, so accuracy and
resilience differences come from the head alone.

Every epoch ends with an atomic checkpoint; calling ``train`` again with the same ``out_dir``
resumes after the last completed epoch. Each epoch draws its shuffling and augmentation from a
generator seeded by (seed, epoch), so a resumed run ends with the same weights as an
uninterrupted one.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn
from torch.utils.data import DataLoader

from headstrong._checks import check_bool, check_int, check_number, check_text
from headstrong._device import resolve_device, set_threads
from headstrong._lock import hold_folder
from headstrong.campaign.progress import PlainProgress, is_terminal
from headstrong.data import DatasetInfo, dataset_info, load_dataset
from headstrong.textguided.models import (
    CLIP_MAX_LOGIT_SCALE,
    INITS,
    TextGuidedClassifier,
    build_baseline,
)
from headstrong.textguided.encoders import check_encoder
from headstrong.train.checkpoints import model_from_payload, read_checkpoint, save_checkpoint

__all__ = ["TrainConfig", "TrainResult", "train", "build_model", "class_embeddings_for", "evaluate"]

HEADS = ("baseline", "text")
CHECKPOINT_NAME = "model.pt"
# Settings that may change between a run and its resumption: they do not change the recipe.
RUNTIME_FIELDS = ("device", "amp", "channels_last", "num_workers", "data_root", "threads")


@dataclass
class TrainConfig:
    """Everything that defines a training run; stored in every checkpoint."""

    dataset: str = "fashion-mnist"
    backbone: str = "resnet8-w16"
    head: str = "text"  # baseline | text
    init: str = "text"  # text | name | random | random-linear (text head only)
    encoder: str = "minilm"
    descriptions: Optional[str] = None  # shipped set name or JSON path; default: the data set's
    embeddings: Optional[str] = None  # a file written by `headstrong embed` (skips the encoder)
    embed_dim: Optional[int] = None  # text width for the random inits; default: the encoder's
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    warmup_epochs: float = 0.0
    augment: bool = True
    image_size: Optional[int] = None
    small_input: bool = False
    freeze_head: bool = False
    max_logit_scale: Optional[float] = CLIP_MAX_LOGIT_SCALE
    seed: int = 0
    limit_train: Optional[int] = None
    limit_test: Optional[int] = None
    device: str = "auto"
    amp: bool = True  # on CUDA only
    channels_last: bool = True  # on CUDA only
    num_workers: int = 0
    data_root: Optional[str] = None
    threads: Optional[int] = None

    def __post_init__(self) -> None:
        """Refuse what would train nonsense without failing: a NaN or negative rate, a float
        epoch count, a string where a number belongs, a device this machine lacks."""
        if self.head not in HEADS:
            raise ValueError(f"unknown head {self.head!r}; expected one of {', '.join(HEADS)}")
        if self.init not in INITS:
            raise ValueError(f"unknown init {self.init!r}; expected one of {', '.join(INITS)}")
        for name in ("dataset", "backbone", "device"):
            check_text(name, getattr(self, name))
        for name in ("descriptions", "embeddings", "data_root"):
            check_text(name, getattr(self, name), none_ok=True)
        check_encoder(self.encoder)
        resolve_device(self.device)
        for name, low in (("epochs", 1), ("batch_size", 1), ("seed", 0), ("num_workers", 0)):
            setattr(self, name, check_int(name, getattr(self, name), low))
        for name, low in (("limit_train", 1), ("limit_test", 1), ("image_size", 8), ("embed_dim", 1), ("threads", 1)):
            setattr(self, name, check_int(name, getattr(self, name), low, none_ok=True))
        self.lr = check_number("lr", self.lr, 0, low_open=True)
        self.momentum = check_number("momentum", self.momentum, 0, 1, high_open=True)
        self.weight_decay = check_number("weight_decay", self.weight_decay, 0)
        self.label_smoothing = check_number("label_smoothing", self.label_smoothing, 0, 1, high_open=True)
        self.warmup_epochs = check_number("warmup_epochs", self.warmup_epochs, 0, self.epochs)
        self.max_logit_scale = check_number("max_logit_scale", self.max_logit_scale, 0, low_open=True, none_ok=True)
        for name in ("nesterov", "augment", "small_input", "freeze_head", "amp", "channels_last"):
            check_bool(name, getattr(self, name))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown training settings {unknown}; expected some of {sorted(known)}")
        return cls(**data)


@dataclass
class TrainResult:
    top1: float
    checkpoint: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    config: Optional[TrainConfig] = None


def _load_embedding_file(path: str, info: DatasetInfo) -> torch.Tensor:
    """The [C, D] rows of a file written by ``headstrong embed``, checked against the data set."""
    write = f"write one with headstrong embed --descriptions {info.name} --out FILE"
    if not Path(path).is_file():
        raise ValueError(f"--embeddings {path!r}: no such file; {write}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file means the same to the user
        raise ValueError(f"--embeddings {path!r} is not a readable torch file ({type(error).__name__}); {write}") from None
    if isinstance(data, dict) and "embeddings" not in data:
        raise ValueError(f"--embeddings {path!r} has no 'embeddings' entry (keys: {sorted(map(str, data))}); {write}")
    emb = data["embeddings"] if isinstance(data, dict) else data
    classes = data.get("classes") if isinstance(data, dict) else None
    if not isinstance(emb, torch.Tensor) or not emb.is_floating_point():
        raise ValueError(f"--embeddings {path!r} holds a {type(emb).__name__}, not a float tensor [C, D]; {write}")
    if emb.ndim != 2 or emb.shape[0] != info.num_classes or emb.shape[1] == 0:
        raise ValueError(
            f"class embeddings in {path} have {emb.shape[0] if emb.ndim else 0} rows, but "
            f"{info.name} has {info.num_classes} classes; encode one embedding per class "
            f"(headstrong embed --descriptions {info.name})"
        )
    if classes is not None and list(classes) != list(info.classes):
        raise ValueError(
            f"class embeddings in {path} are for classes {list(classes)}, but {info.name} has "
            f"{list(info.classes)} (same order needed)"
        )
    if not bool(torch.isfinite(emb).all()):
        raise ValueError(f"--embeddings {path!r} holds NaN or infinite values; {write}")
    return emb.float()


def class_embeddings_for(config: TrainConfig, info: DatasetInfo) -> Optional[torch.Tensor]:
    """The head's initial rows for this config (None for the baseline)."""
    from headstrong.textguided.encoders import encode_classes, encode_names

    if config.head == "baseline":
        return None
    if config.embeddings is not None:
        return _load_embedding_file(config.embeddings, info)
    if config.init == "text":
        from headstrong.textguided import descriptions

        desc = descriptions.load(config.descriptions or info.name, classes=info.classes)
        return encode_classes(desc, config.encoder, classes=info.classes)
    if config.init == "name" or config.embed_dim is None:
        names = encode_names(info.classes, config.encoder)
        return names if config.init == "name" else torch.zeros_like(names)
    return torch.zeros(info.num_classes, config.embed_dim)  # only the shape matters


def build_model(config: TrainConfig, info: DatasetInfo, class_embeddings: Optional[torch.Tensor]) -> nn.Module:
    """The model a config asks for, seeded by ``config.seed``."""
    torch.manual_seed(config.seed)
    if config.head == "baseline":
        return build_baseline(config.backbone, info.num_classes, info.in_chans, small_input=config.small_input,
                              freeze_head=config.freeze_head)
    init = config.init
    rows = class_embeddings
    if init in ("random", "random-linear"):
        rows = None
    return TextGuidedClassifier(
        config.backbone, rows, info.in_chans, init=init, num_classes=info.num_classes,
        embed_dim=class_embeddings.shape[1], small_input=config.small_input,
        freeze_head=config.freeze_head, max_logit_scale=config.max_logit_scale, seed=config.seed,
    )


def _optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov and config.momentum > 0)


def _schedule(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int):
    total = config.epochs * steps_per_epoch
    warmup = int(config.warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _autocast(device: torch.device, enabled: bool):
    if device.type != "cuda" or not enabled:
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def _to_device(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    if channels_last and device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    return x


@torch.no_grad()
def evaluate(
    model: nn.Module, dataset, batch_size: int = 512, device: str | torch.device = "cpu",
    amp: bool = True, channels_last: bool = True, num_workers: int = 0,
) -> float:
    """Top-1 accuracy (%) of ``model`` on ``dataset``."""
    device = torch.device(device)
    model.eval()
    correct = total = 0
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    for x, y in loader:
        x, y = _to_device(x, device, channels_last), y.to(device)
        with _autocast(device, amp):
            pred = model(x).argmax(1)
        correct += int((pred == y).sum())
        total += len(y)
    return 100.0 * correct / max(1, total)


def _progress(enabled: bool):
    """A rich bar in a terminal; elsewhere (a batch job, a redirected log) the bar stays silent
    and ``_EpochLines`` writes plain lines instead."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}"), TimeElapsedColumn(), TimeRemainingColumn(),
        disable=not enabled or not is_terminal(None), transient=False,
    )


class _EpochLines:
    """Training progress as plain lines on stderr when it is not a terminal: what a resumed run
    found done, a line at a steady pace within each epoch and one when the epoch ends."""

    def __init__(self, enabled: bool, epochs: int) -> None:
        self.enabled = enabled and not is_terminal(None)
        self.epochs = epochs
        self.tracker: Optional[PlainProgress] = None

    def resumed(self, done: int, path: Path) -> None:
        if self.enabled and done:
            self.tracker = PlainProgress(self.epochs, done, sys.stderr, unit="epochs")
            self.tracker.say(f"train: resuming: {done} of {self.epochs} epochs were found done in {path}")

    def epoch(self, epoch: int, batches: int) -> None:
        if self.enabled:
            self.tracker = PlainProgress(batches, 0, sys.stderr, unit="batches")
            self.tracker.say(f"epoch {epoch}/{self.epochs}: {batches:,} batches")

    def step(self) -> None:
        if self.enabled and self.tracker is not None:
            self.tracker.advance(1)

    def ended(self, epoch: int, record: dict[str, Any]) -> None:
        if self.enabled and self.tracker is not None:
            self.tracker.say(f"epoch {epoch}/{self.epochs}: loss {record['loss']:.3f}, train top-1 "
                             f"{record['train_top1']:.2f}%, {record['seconds']:.0f} s; checkpoint saved")


def _check_resume(saved: dict[str, Any], config: TrainConfig, path: Path) -> None:
    ours = {k: v for k, v in config.to_dict().items() if k not in RUNTIME_FIELDS}
    theirs = {k: v for k, v in (saved or {}).items() if k not in RUNTIME_FIELDS}
    diff = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
    if diff:
        shown = ", ".join(f"{k}: {theirs.get(k)!r} there, {ours.get(k)!r} now" for k in diff)
        raise ValueError(
            f"{path} was written by another training run ({shown}); use a new out_dir, or the "
            f"same settings to resume"
        )


Forward = Callable[[nn.Module, torch.Tensor], torch.Tensor]


def train(config: TrainConfig, out_dir: str | Path, progress: bool = True, *,
          model: Optional[nn.Module] = None, forward: Optional[Forward] = None) -> TrainResult:
    """Train (or resume training) the model ``config`` describes; checkpoints go to ``out_dir``.

    Returns the test top-1 after the last epoch. A finished run in ``out_dir`` is returned as is.
    ``model`` fine-tunes a copy of that model instead of building one from the config (a hardened
    one resumes hardened); ``forward(model, x)`` replaces the plain ``model(x)`` of each training
    step (``headstrong.harden.fault_aware_finetune`` injects bit flips there).
    The run holds ``out_dir`` (headstrong._lock): a second run on it is refused, not mixed in.
    """
    with hold_folder(out_dir, "train"):
        return _train_held(config, Path(out_dir), progress, model, forward)


def _train_held(config: TrainConfig, out: Path, progress: bool, start: Optional[nn.Module] = None,
                forward: Optional[Forward] = None) -> TrainResult:
    ckpt_path = out / CHECKPOINT_NAME
    set_threads(config.threads)
    device = resolve_device(config.device)
    info = dataset_info(config.dataset)
    saved = read_checkpoint(ckpt_path) if ckpt_path.exists() else None
    if saved is not None:
        _check_resume(saved.get("config"), config, ckpt_path)
        if saved.get("finished"):
            return TrainResult(saved["top1"], ckpt_path, saved["history"], config)

    train_ds = load_dataset(config.dataset, "train", config.data_root, config.image_size,
                            augment=config.augment, limit=config.limit_train, seed=config.seed)
    test_ds = load_dataset(config.dataset, "test", config.data_root, config.image_size,
                           limit=config.limit_test, seed=config.seed)
    if saved is not None:
        embeddings = saved["class_embeddings"]
        model = model_from_payload(saved, ckpt_path)
    elif start is not None:  # fine-tuning (headstrong.harden): a copy of the caller's model
        embeddings = None
        model = copy.deepcopy(start)
    else:
        embeddings = class_embeddings_for(config, info)
        model = build_model(config, info, embeddings)
    use_cl = config.channels_last and device.type == "cuda"
    model.to(device, memory_format=torch.channels_last if use_cl else torch.preserve_format)

    steps_per_epoch = math.ceil(len(train_ds) / config.batch_size)
    optimizer = _optimizer(model, config)
    scheduler = _schedule(optimizer, config, steps_per_epoch)
    use_scaler = device.type == "cuda" and config.amp and not torch.cuda.is_bf16_supported()
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    start, history = 0, []
    if saved is not None:
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        if saved.get("scaler"):
            scaler.load_state_dict(saved["scaler"])
        start, history = saved["epoch"], list(saved["history"])

    def checkpoint(epoch: int, **extra: Any) -> None:
        save_checkpoint(
            ckpt_path, model, config=config.to_dict(), class_embeddings=embeddings,
            classes=list(info.classes), optimizer=optimizer.state_dict(),
            scheduler=scheduler.state_dict(), scaler=scaler.state_dict(), epoch=epoch,
            history=history, **extra,
        )

    lines = _EpochLines(progress, config.epochs)
    lines.resumed(start, ckpt_path)
    with _progress(progress) as bar:
        for epoch in range(start, config.epochs):
            torch.manual_seed(config.seed * 100_003 + epoch)  # augmentation draws
            generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
            loader = DataLoader(train_ds, batch_size=config.batch_size, shuffle=True, generator=generator,
                                num_workers=config.num_workers, pin_memory=device.type == "cuda",
                                persistent_workers=False)
            task = bar.add_task(f"epoch {epoch + 1}/{config.epochs}", total=len(loader), loss=float("nan"))
            lines.epoch(epoch + 1, len(loader))
            model.train()
            began, loss_sum, correct, seen = time.perf_counter(), 0.0, 0, 0
            for x, y in loader:
                x, y = _to_device(x, device, use_cl), y.to(device, non_blocking=True)
                with _autocast(device, config.amp):
                    logits = model(x) if forward is None else forward(model, x)
                    loss = criterion(logits.float(), y)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                loss_sum += float(loss.detach()) * len(y)
                correct += int((logits.argmax(1) == y).sum())
                seen += len(y)
                bar.update(task, advance=1, loss=loss_sum / seen)
                lines.step()
            history.append({
                "epoch": epoch + 1, "loss": loss_sum / seen, "train_top1": 100.0 * correct / seen,
                "lr": optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - began,
            })
            checkpoint(epoch + 1, finished=False)
            lines.ended(epoch + 1, history[-1])
        top1 = evaluate(model, test_ds, device=device, amp=config.amp, channels_last=use_cl,
                        num_workers=config.num_workers)
    checkpoint(config.epochs, finished=True, top1=top1)
    (out / "result.json").write_text(json.dumps(
        {"top1": top1, "config": config.to_dict(), "history": history, "checkpoint": str(ckpt_path)}, indent=2))
    return TrainResult(top1, ckpt_path, history, config)
