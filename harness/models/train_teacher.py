"""`apm-bench teacher train`: a tiny CLIP trained here, contrastively, on image/caption pairs built
from class names and templates, saved in open_clip's local-directory form (open_clip_config.json +
open_clip_model.safetensors) so that `--pretrained DIR` loads it like any real checkpoint.

Data: the synthetic task's generator (unlimited drawings, seeded from a stream disjoint from the
test task's per-sample seeds) and Fashion-MNIST train (60,000) when present. Every image goes
through the same path as at evaluation: the task's own PIL image, the model's own preprocessing
(resize and centre crop, kept as uint8; normalisation per batch). A caption is one of the class's
templates, "a photo of a {}." (the `zeroshot` prompt) a quarter of the time.

Loss: CLIP's symmetric InfoNCE (open_clip's ClipLoss) with one change for class captions: every
caption of an image's class is a positive, not only its own (soft targets spread over the
positives), since many images in a batch share a class; with all-distinct classes it is ClipLoss.
Text is encoded once per distinct caption in the batch."""

from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torchvision import transforms

from harness.models.teacher import split_preprocess  # also registers the harness's configs with open_clip
from harness.errors import HarnessError
from harness.methods.base import score
from harness.seeding import derive_seed
from tasks.templates import SINGLE_TEMPLATE

DATASETS = ("synthetic", "fashion-mnist")


@dataclass(frozen=True)
class TrainConfig:
    model: str = "apm-mini"
    """A registered open_clip config (apm-mini: 64 px, 8 px patches; fits in 3.5 MB as fp16)."""
    data: tuple[str, ...] = ("synthetic",)
    steps: int = 400
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup: int = 40
    seed: int = 0
    synthetic_per_class: int = 400
    """Training drawings per synthetic class (the generator is unlimited; this is the pool size)."""
    fashion_root: str | None = None
    """Fashion-MNIST folder; default the data root's or the Debian package's."""
    dtype: str = "fp32"
    """Stored weights: fp32, or fp16 (half the file; the returned model is rounded the same way)."""
    threads: int = 2


@dataclass
class Corpus:
    pixels: torch.Tensor
    """(N, 3, S, S) uint8: the preprocessed image before normalisation."""
    labels: torch.Tensor
    """(N,) index into `classes`."""
    classes: list[tuple[str, str, tuple[str, ...]]]
    """(dataset, class name, templates)."""
    roots: dict[str, str]
    """Where each dataset came from (the folder, or `drawn`)."""


def build_corpus(cfg: TrainConfig, pil_steps: transforms.Compose) -> Corpus:
    from tasks.synthetic import CLASSNAMES, draw_shape
    from tasks.templates import OPENAI_IMAGENET

    arrays, labels, classes, roots = [], [], [], {}

    def add(images, targets, dataset, names, templates):
        base = len(classes)
        classes.extend((dataset, n, templates) for n in names)
        arrays.extend(np.asarray(pil_steps(img)) for img in images)
        labels.extend(base + int(t) for t in targets)

    for dataset in cfg.data:
        if dataset == "synthetic":
            targets = [c for c in range(len(CLASSNAMES)) for _ in range(cfg.synthetic_per_class)]
            seeds = (derive_seed(cfg.seed, "teacher-train", "synthetic", str(i)) for i in range(len(targets)))
            images = (draw_shape(CLASSNAMES[c], s, 128) for c, s in zip(targets, seeds))
            add(images, targets, dataset, CLASSNAMES, OPENAI_IMAGENET)
            roots[dataset] = "drawn"
        elif dataset == "fashion-mnist":
            from tasks import fashion_mnist as fm

            root = fm.find_root(split="train", path=cfg.fashion_root)
            images, targets = fm.load_split(str(root), "train")
            add((fm.upscale(x) for x in images), targets, dataset, fm.CLASSNAMES, fm.TEMPLATES)
            roots[dataset] = str(root)
        else:
            raise HarnessError(f"teacher train: unknown data '{dataset}'; choose from {', '.join(DATASETS)}")
    pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return Corpus(pixels, torch.tensor(labels), classes, roots)


def class_aware_clip_loss(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor,
                          image_class: torch.Tensor, text_class: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE between normalised image (B, D) and distinct-caption (U, D) features, where
    every same-class pair is a positive (uniform soft targets over the positives)."""
    logits = scale * image @ text.T
    positive = (image_class[:, None] == text_class[None, :]).float()
    i2t = -(positive / positive.sum(1, keepdim=True) * F.log_softmax(logits, 1)).sum(1).mean()
    t2i = -(positive.T / positive.T.sum(1, keepdim=True) * F.log_softmax(logits.T, 1)).sum(1).mean()
    return (i2t + t2i) / 2


def _schedule(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    return 0.5 * (1 + math.cos(math.pi * (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)))


def train(cfg: TrainConfig, out: Path | None = None, progress: bool = True) -> tuple[torch.nn.Module, dict]:
    """Train from a fixed seed; write `out` (if given) in open_clip's local-dir form. Returns the
    model (eval mode, exactly the stored weights) and the metadata written beside it."""
    if cfg.dtype not in ("fp32", "fp16"):
        raise HarnessError(f"--dtype must be fp32 or fp16, not '{cfg.dtype}'")
    if cfg.model not in open_clip.list_models():
        raise HarnessError(f"teacher train: unknown open_clip config '{cfg.model}'")
    torch.set_num_threads(cfg.threads)
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model, _, preprocess = open_clip.create_model_and_transforms(cfg.model)
        pil_steps, normalise = split_preprocess(preprocess)
        corpus = build_corpus(cfg, pil_steps)
        prepared = time.perf_counter() - start
        tokenizer = open_clip.get_tokenizer(cfg.model)
        captions = [(c, t) for c, (_, name, templates) in enumerate(corpus.classes) for t in templates]
        tokens = tokenizer([t.format(corpus.classes[c][1]) for c, t in captions])
        caption_class = torch.tensor([c for c, _ in captions])
        per_class = [[i for i, (c, _) in enumerate(captions) if c == k] for k in range(len(corpus.classes))]
        single = [next((i for i in ids if captions[i][1] == SINGLE_TEMPLATE), ids[0]) for ids in per_class]
        rng = random.Random(derive_seed(cfg.seed, "teacher-train", "batches"))
        decay = [p for p in model.parameters() if p.ndim >= 2]
        rest = [p for p in model.parameters() if p.ndim < 2]
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                       {"params": rest, "weight_decay": 0.0}], lr=cfg.lr)
        model.train()
        losses = []
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("{task.fields[pace]} s/step"), TextColumn("loss {task.fields[loss]}"))
        with Progress(*columns, disable=not progress) as bar:  # s/step: a busy machine shows at once
            job = bar.add_task(f"training {cfg.model} on {'+'.join(cfg.data)} ({cfg.threads} thread(s))",
                               total=cfg.steps, loss="-", pace="-")
            began = time.perf_counter()
            for step in range(cfg.steps):
                for group in optimizer.param_groups:
                    group["lr"] = cfg.lr * _schedule(step, cfg)
                idx = torch.tensor(rng.sample(range(len(corpus.labels)), min(cfg.batch_size, len(corpus.labels))))
                labels = corpus.labels[idx]
                chosen = [single[k] if rng.random() < 0.25 else rng.choice(per_class[k]) for k in labels.tolist()]
                distinct = sorted(set(chosen))
                pixels = normalise(corpus.pixels[idx].float() / 255)
                image = model.encode_image(pixels, normalize=True)
                text = model.encode_text(tokens[distinct], normalize=True)
                scale = model.logit_scale.exp().clamp(max=100)
                loss = class_aware_clip_loss(image, text, scale, labels, caption_class[distinct])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
                bar.update(job, advance=1, loss=f"{losses[-1]:.3f}", pace=f"{(time.perf_counter() - began) / (step + 1):.2f}")
    model.eval().requires_grad_(False)
    if cfg.dtype == "fp16":
        with torch.no_grad():
            for value in model.state_dict().values():
                if value.is_floating_point():
                    value.copy_(value.half().float())
    meta = {
        "trained_by": "apm-bench teacher train",
        "config": dataclasses.asdict(cfg),
        "images": int(len(corpus.labels)),
        "data_roots": corpus.roots,
        "classes": [f"{d}:{n}" for d, n, _ in corpus.classes],
        "loss_first": losses[0] if losses else None,
        "loss_last": float(np.mean(losses[-20:])) if losses else None,
        "seconds_data": round(prepared, 1),
        "seconds_total": round(time.perf_counter() - start, 1),
    }
    if out is not None:
        save(model, Path(out), cfg.model, meta, cfg.dtype)
    return model, meta


def save(model: torch.nn.Module, out: Path, model_name: str, meta: dict, dtype: str = "fp32") -> None:
    """open_clip's local-dir form: {"model_cfg", "preprocess_cfg"} (+ our metadata) and safetensors."""
    out.mkdir(parents=True, exist_ok=True)
    cast = torch.float16 if dtype == "fp16" else torch.float32
    state = {k: (v.to(cast) if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / "open_clip_model.safetensors"))
    (out / "open_clip_model.safetensors").chmod(0o644)  # safetensors writes 0600; the folder is meant to be shared
    config = {
        "model_cfg": open_clip.get_model_config(model_name),
        "preprocess_cfg": dict(open_clip.get_model_preprocess_cfg(model)),
        "apm_bench": meta,
    }
    (out / "open_clip_config.json").write_text(json.dumps(config, indent=2, default=list) + "\n")


@torch.no_grad()
def zero_shot_accuracy(teacher, task, limit: int | None = None, templates: tuple[str, ...] = (SINGLE_TEMPLATE,)) -> float:
    """Top-1 of a loaded harness Teacher on a task (its first `limit` samples, class-stratified)."""
    from tasks.sampling import stratified_subset

    refs = stratified_subset(task.samples(), limit, 0, task.name)
    classifier = teacher.classifier(task.classnames, templates)
    correct = 0
    for i in range(0, len(refs), 256):
        chunk = refs[i : i + 256]
        pixels = torch.stack([teacher.preprocess(task.load(r).image) for r in chunk])
        predictions = score(teacher.encode_images(pixels), classifier, teacher.logit_scale).prediction
        correct += sum(p == r.label for p, r in zip(predictions, chunk))
    return correct / max(1, len(refs))
