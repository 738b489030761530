"""Method names, where each method's code and settings live, and whose work it is. Importing a method
pulls in torch and open_clip (seconds); checking a name or a setting must not, so the registry holds
import paths and loads a method's module only when a worker builds it. Other packages add methods
through the `apm_bench.methods` entry-point group (README, "Write your own method")."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from harness.registry import Registry

if TYPE_CHECKING:
    from harness.methods.base import Method


def _load(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class MethodEntry:
    factory: str
    """`module:function`; the function takes the method's settings (None if it has none) and returns
    the method."""
    summary: str
    settings: str | None = None
    """`module:Class` of its frozen config dataclass; a torch-free module, as it is read to check a run."""
    paper: str = ""
    """Where the method and its defaults come from: the paper and the authors' code."""
    episodic: bool = True
    """Nothing carries over from one sample to the next (every method here; an online method would not)."""

    def settings_class(self) -> type | None:
        return _load(self.settings) if self.settings else None

    def __call__(self, settings: object | None) -> Method:
        return _load(self.factory)(settings)


METHODS: Registry[MethodEntry] = Registry("method (--method)", plugins="apm_bench.methods")
_CONFIGS = "harness.methods.configs"
METHODS.add("zeroshot", MethodEntry("harness.methods.zeroshot:zeroshot", "CLIP zero-shot, one template (TPT's CLIP row)",
                                    paper="Radford et al., ICML 2021; the single template of TPT's code"))
METHODS.add("ensemble", MethodEntry("harness.methods.zeroshot:ensemble",
                                    "CLIP zero-shot with the task's template set (80 templates on ImageNet)",
                                    paper="Radford et al., ICML 2021; templates of openai/CLIP and CoOp"))
METHODS.add("tpt", MethodEntry("harness.methods.tpt:tpt", "test-time prompt tuning on the confident views' mean entropy",
                               f"{_CONFIGS}:TptConfig", "Shu et al., NeurIPS 2022; azshue/TPT"))
METHODS.add("apm", MethodEntry("harness.methods.apm:apm",
                               "Asynchronous Perception Machine: distil the teacher's embedding of the image, reset",
                               f"{_CONFIGS}:ApmConfig", "Modi & Rawat, NeurIPS 2024; rajatmodi62/apm and docs/apm-method.md"))
METHODS.add("zero", MethodEntry("harness.methods.voting:zero", "majority vote of the confident views' argmaxes, no training",
                                f"{_CONFIGS}:ZeroConfig", "Farina et al., NeurIPS 2024; FarinaMatteo/zero"))
METHODS.add("mta", MethodEntry("harness.methods.voting:mta", "MeanShift mode of the view embeddings with inlierness scores",
                               f"{_CONFIGS}:MtaConfig", "Zanella & Ben Ayed, CVPR 2024; MaxZanella/MTA"))
METHODS.add("c-tpt", MethodEntry("harness.methods.tpt_variants:ctpt", "TPT plus the text features' dispersion (calibration)",
                                 f"{_CONFIGS}:CtptConfig", "Yoon et al., ICLR 2024; hee-suk-yoon/C-TPT"))
METHODS.add("r-tpt", MethodEntry("harness.methods.tpt_variants:rtpt",
                                 "per-view entropy, reliability-weighted ensemble of the tuned views",
                                 f"{_CONFIGS}:RtptConfig", "Sheng et al., CVPR 2025; TomSheng21/R-TPT"))
METHODS.add("tps", MethodEntry("harness.methods.tpt_variants:tps", "a tuned shift per class on the text prototypes",
                               f"{_CONFIGS}:TpsConfig", "Sui et al., WACV 2025; elaine-sui/TPS"))
METHODS.add("ttl", MethodEntry("harness.methods.ttl:ttl",
                               "LoRA on the image tower's last attention blocks, confidence-weighted entropy",
                               f"{_CONFIGS}:TtlConfig", "Imam et al., WACV 2025; Razaimam45/TTL-Test-Time-Low-Rank-Adaptation"))
METHODS.add("rlcf", MethodEntry("harness.methods.rlcf:rlcf",
                                "TPT's prompt tuned by REINFORCE with a reward CLIP's scores of the confident views",
                                f"{_CONFIGS}:RlcfConfig", "Zhao et al., ICLR 2024; mzhaoshuai/RLCF"))
_ONLINE = "harness.methods.online_configs"
METHODS.add("tda", MethodEntry("harness.methods.tda:tda", "online: positive and negative caches of confident test features",
                               f"{_ONLINE}:TdaConfig", "Karmanov et al., CVPR 2024; kdiAAA/TDA", episodic=False))
METHODS.add("boostadapter", MethodEntry("harness.methods.boostadapter:boostadapter",
                                        "online: TDA's caches, the positive one boosted per image by its confident views",
                                        f"{_ONLINE}:BoostAdapterConfig", "Zhang et al., NeurIPS 2024; taolinzhang/BoostAdapter",
                                        episodic=False))
METHODS.add("dmn-weak", MethodEntry("harness.methods.dmn:dmn_weak",
                                    "online: a per-class memory of test features read by attention (one view)",
                                    f"{_ONLINE}:DmnConfig", "Zhang et al., CVPR 2024; YBZh/DMN (TTA-VLM's dmn_weak)",
                                    episodic=False))
METHODS.add("dmn", MethodEntry("harness.methods.dmn_views:dmn",
                               "online: DMN's memory with pseudo-labels from the confident views (32 views)",
                               f"{_ONLINE}:DmnViewsConfig", "Zhang et al., CVPR 2024; YBZh/DMN (scripts/run.sh, -b 32)",
                               episodic=False))
METHODS.add("onzeta", MethodEntry("harness.methods.onzeta:onzeta",
                                  "online: label proportions and a vision proxy learnt along the stream",
                                  f"{_ONLINE}:OnzetaConfig", "Qian & Hu, ECCV 2024; idstcv/OnZeta", episodic=False))
METHODS.add("ecalp", MethodEntry("harness.methods.ecalp:ecalp", "online: label propagation over a graph of the stream",
                                 f"{_ONLINE}:EcalpConfig", "Li et al., ICLR 2025; Yushu-Li/ECALP", episodic=False))
METHODS.add("dpe", MethodEntry("harness.methods.dpe:dpe",
                               "online: evolving text and image prototypes, residuals tuned by one AdamW step",
                               "harness.methods.learning_configs:DpeConfig", "Zhang et al., NeurIPS 2024; zhangce01/DPE-CLIP",
                               episodic=False))
METHODS.add("dynaprompt", MethodEntry("harness.methods.dynaprompt:dynaprompt",
                                      "online: a buffer of tuned prompts, the relevant ones selected, tuned and kept",
                                      "harness.methods.learning_configs:DynaPromptConfig",
                                      "Xiao et al., ICLR 2025; zzzx1224/DynaPrompt", episodic=False))
