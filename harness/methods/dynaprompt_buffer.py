"""DynaPrompt's prompt buffer without the networks: which prompts a sample selects (the authors' code
and the paper's rule), the buffer's bookkeeping (least recently selected, reset when every prompt has
been used) and the loss. Plain tensors in, plain tensors or lists out, so each rule can be checked by
hand against zzzx1224/DynaPrompt's test_time_tuning and test_time_adapt_eval.

Ties: every ranking is a stable sort and every argmin the first minimum, so equal values go to the
lowest slot. Equal values are not rare: untouched prompts are exact copies of the initial one."""

from __future__ import annotations

import torch

from harness.methods.episodic import view_entropy
from harness.methods.online import State
from harness.methods.prompt import average_entropy


def criteria(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(H, D), each (M,), from the logits (views, M, C) of every prompt on every view, view 0 the
    original: H the mean over all views of the softmax entropy (their `entropy(p_pred).mean(0)`); D the
    mean over views 1.. of view 0's top logit minus that view's own top logit (their `plpd`: logits at
    the teacher's scale, not probabilities, each view's own top class)."""
    top = logits.max(-1).values
    return view_entropy(logits).mean(0), (top[:1] - top[1:]).mean(0)


def select_code(entropy: torch.Tensor, drop: torch.Tensor, initial: int) -> list[int]:
    """The authors' selection, literally. E: the slots by entropy, descending; r: the initial prompt's
    place in E. The candidates are the ids both in E[min(r + 1, M - 1):] (less uncertain than the initial
    prompt; the initial prompt itself when it is the least uncertain) and among the r slots of largest
    drop (r is the initial prompt's entropy rank, not its drop rank). Their code then indexes E with
    those ids (`ent_order[alllist]`): an id is used as a position, so the prompts tuned are those ranked
    at the candidates' ids, not the candidates; the initial prompt follows (it may come twice). Without
    candidates, the initial prompt alone."""
    m = len(entropy)
    ranked = entropy.argsort(descending=True, stable=True).tolist()
    r = ranked.index(initial)
    calmer = set(ranked[min(r + 1, m - 1):])
    sharper = set(drop.argsort(descending=True, stable=True)[:r].tolist())
    both = sorted(calmer & sharper)
    return [ranked[i] for i in both] + [initial]


def select_paper(entropy: torch.Tensor, drop: torch.Tensor, initial: int) -> list[int]:
    """The paper's rule (the maintainer's reading of their Eq. 3 and 5, issue #1): the prompts whose mean
    entropy is strictly below the initial prompt's and whose drop is strictly above it, by slot, then
    the initial prompt (last, as in the code, so it is the most recently selected)."""
    h0, d0 = float(entropy[initial]), float(drop[initial])
    keep = [m for m in range(len(entropy)) if m != initial and float(entropy[m]) < h0 and float(drop[m]) > d0]
    return keep + [initial]


def select(logits: torch.Tensor, initial: int, rule: str) -> list[int]:
    """The prompts a sample tunes and predicts with, in the authors' order, duplicates kept."""
    entropy, drop = criteria(logits.detach().float())
    return (select_code if rule == "code" else select_paper)(entropy, drop, initial)


def most_selected(prompts: int, rule: str) -> int:
    """The most distinct prompts a rule can select: the code's candidates number at most
    min(r, M - 1 - r) (one if r = M - 1), plus the initial prompt; the paper's, every prompt."""
    if rule == "paper" or prompts == 1:
        return prompts
    return 1 + max([min(r, prompts - 1 - r) for r in range(prompts - 1)] + [1])


def initial_slot(state: State) -> int:
    """V0's slot: the least recently selected (lowest `last`, ties to the lowest slot). It is always an
    untouched copy of the initial prompt: slots never selected since their reset sit before every
    selected one (their code's `ctx_order[0]`)."""
    return int(state["last"].argmin())


def refresh(state: State) -> int | None:
    """Their deletion and appending: once every slot has been selected since its last reset, the least
    recently selected one is reset to the initial prompt (offset zero, use count zero); its `last` stays,
    so it stays the least recent. Returns the slot reset, if any."""
    if bool((state["uses"] == 0).any()):
        return None
    slot = initial_slot(state)
    state["uses"][slot] = 0
    state["ctx"][slot] = 0.0
    return slot


def record(state: State, chosen: list[int]) -> None:
    """Their bookkeeping, one selection at a time in the list's order (a duplicate counts twice): the
    clock ticks, the slot becomes the most recent, its use count grows."""
    for slot in chosen:
        state["clock"] += 1
        state["last"][slot] = state["clock"]
        state["uses"][slot] += 1


def confident_loss(logits: torch.Tensor, top: float) -> torch.Tensor:
    """TPT's loss on several prompts at once: logits (views, k, C) of the selected prompts (duplicates
    kept). The int(views * top) views of lowest entropy averaged over the k prompts (a stable sort), then
    the entropy of each prompt's mean probability over those views (their avg_entropy), averaged over
    the k prompts."""
    keep = max(1, int(logits.shape[0] * top))
    views = view_entropy(logits.detach()).mean(-1).argsort(stable=True)[:keep]
    return average_entropy(logits[views]).mean()
