"""Optional INT8 ranking model: dynamic quantisation of the DLRM's MLPs.

`torch.ao.quantization.quantize_dynamic` turns every nn.Linear into an INT8-weight linear
whose activations are quantised per batch at run time; nothing needs calibrating. The
embedding tables stay float: 8-bit tables (float_qparams) only save memory, the tables here
are a few MB, and quantized::embedding_byte refuses the non-contiguous column slices
CategoricalEmbeddings feeds them. The INT8 model is exported only if its validation AUC
is within `training.quantize_auc_tolerance` of the float model's; the AUC change and the
in-process speed-up (one user x num_candidates, both models timed in the same run,
interleaved, median of rounds) go into metrics.json either way.
"""

from __future__ import annotations

import copy
import statistics
import time
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from recsys.contract import LABEL, FeatureSpec
from training.data import frame_matrix
from training.metrics import roc_auc
from training.models import DLRM, RankingScorer
from training.ranking import ranking_inputs


@dataclass(frozen=True)
class QuantizationReport:
    auc_float: float
    auc_int8: float
    float_ms: float  # one user x `candidates`, median per call
    int8_ms: float
    candidates: int
    tolerance: float

    @property
    def auc_change(self) -> float:
        return self.auc_int8 - self.auc_float

    @property
    def accepted(self) -> bool:
        return abs(self.auc_change) <= self.tolerance

    def metrics(self) -> dict[str, float | int]:
        return {
            "ranking_int8_auc": self.auc_int8,
            "ranking_int8_auc_change": self.auc_change,
            "ranking_int8_float_ms": self.float_ms,
            "ranking_int8_ms": self.int8_ms,
            "ranking_int8_speedup": self.float_ms / self.int8_ms,
            "ranking_int8_candidates": self.candidates,
            "ranking_int8_served": int(self.accepted),
        }


def quantize_dlrm(dlrm: DLRM) -> DLRM:
    """A copy of `dlrm` with INT8 dynamic-quantised linear layers, frozen for inference."""
    with warnings.catch_warnings():
        # torch 2.13 flags torch.ao.quantization as moving to torchao; it still works and
        # torchao is not in this project's pinned stack.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        quantized = torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(dlrm).eval(), {nn.Linear}, dtype=torch.qint8
        )
    # Parameters that require grad make TorchScript's profiling executor build
    # differentiable graphs; a serving model never needs them.
    for parameter in quantized.parameters():
        parameter.requires_grad_(False)
    return quantized


def validation_auc(
    dlrm: nn.Module, valid_frame: pd.DataFrame, user_spec: FeatureSpec, item_spec: FeatureSpec
) -> float:
    """AUC of `dlrm` on every validation impression (as training/evaluate.ranking_metrics)."""
    sparse_names, dense_names = ranking_inputs(user_spec, item_spec)
    with torch.no_grad():
        logits = dlrm(
            torch.from_numpy(frame_matrix(valid_frame, sparse_names, np.int64)),
            torch.from_numpy(frame_matrix(valid_frame, dense_names, np.float32)),
        )
    return roc_auc(valid_frame[LABEL].to_numpy(), torch.sigmoid(logits).numpy())


def median_latencies_ms(
    scorers: dict[str, torch.jit.ScriptModule],
    inputs: tuple[torch.Tensor, ...],
    rounds: int = 15,
    calls: int = 40,
) -> dict[str, float]:
    """Median per-call milliseconds of each scorer on one thread, as the ranking stage runs
    (serving.torch_threads 1). Rounds alternate between scorers so that load from other
    processes on a shared machine hits both alike."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    samples: dict[str, list[float]] = {name: [] for name in scorers}
    try:
        with torch.inference_mode():
            for scorer in scorers.values():
                for _ in range(5):  # warm-up: TorchScript profiles the first calls
                    scorer(*inputs)
            for _ in range(rounds):
                for name, scorer in scorers.items():
                    started = time.perf_counter()
                    for _ in range(calls):
                        scorer(*inputs)
                    samples[name].append((time.perf_counter() - started) * 1000 / calls)
    finally:
        torch.set_num_threads(threads)
    return {name: statistics.median(values) for name, values in samples.items()}


def compare_int8(
    dlrm: DLRM,
    valid_frame: pd.DataFrame,
    user_spec: FeatureSpec,
    item_spec: FeatureSpec,
    one_user: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    tolerance: float,
) -> tuple[RankingScorer, QuantizationReport]:
    """The INT8 scorer and how it compares with the float one. `one_user` is one request's
    (user_cat [1, U], user_cont [1, n], item_cat [1, C, I], item_cont [1, C, m])."""
    quantized = quantize_dlrm(dlrm)
    auc_float = validation_auc(dlrm, valid_frame, user_spec, item_spec)
    auc_int8 = validation_auc(quantized, valid_frame, user_spec, item_spec)
    int8_scorer = RankingScorer(quantized).eval()
    scripted = {
        "float": torch.jit.script(RankingScorer(copy.deepcopy(dlrm)).eval()),
        "int8": torch.jit.script(int8_scorer),
    }
    inputs = tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in one_user)
    latency = median_latencies_ms(scripted, inputs)
    report = QuantizationReport(
        auc_float, auc_int8, latency["float"], latency["int8"], int(one_user[2].shape[1]),
        tolerance,
    )  # fmt: skip
    return int8_scorer, report
