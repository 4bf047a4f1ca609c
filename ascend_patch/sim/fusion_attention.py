"""``npu_fusion_attention`` (FlashAttentionScore): the real op's argument contract and reference numerics.

:func:`fusion_attention_supported` says why the real op would reject a call (``None`` when it
accepts it); :func:`run` checks a call the same way, raising the message the NPU raises, then
computes ``softmax(mask(scale * (pse + Q K^T))) V`` with ordinary torch ops (autograd works).
``ascend_patch.sim.ops.npu_fusion_attention`` is the op with the real signature and calls
:func:`run`.

Where each check comes from (cited next to it):

* [plugin] ``op_plugin/ops/opapi/FlashAttentionKernelNpuOpApi.cpp`` (github Ascend/op-plugin):
  ``npu_fusion_attention``'s ``TORCH_CHECK``s, run before anything reaches the NPU.
* [aclnn] ``attention/flash_attention_score/op_api/aclnn_flash_attention_score.cpp`` (CANN
  ops-transformer): ``InputDtypeCheck``, ``AnalysisAxis``, ``AnalysisInput`` and the varlen entry.
* [tiling] ``attention/flash_attention_score/op_host/arch32/flash_attention_score_tiling_general.cpp``
  (same repository; the Atlas A2 kernel's host side): layout, head, pse, atten_mask, sparse-mode,
  pre/next_tockens and prefix checks.
* [docs] ``torch_npu/_op_plugin_docs.py`` in the torch_npu 2.13.0 wheel (npu_fusion_attention) and
  the aclnnFlashAttentionScore / VarLenScore docs: documented constraints no code above enforces.

What the simulator does not compute (it raises NotImplementedError; the real op accepts these):
a given ``dropout_mask``, ``pse`` with the TND layout, the alibi-compressed pse (1024 rows for
Sq > 1024) and a TND atten_mask of shape [sum Sq, sum Skv].
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

LAYOUTS = ("BSH", "SBH", "BSND", "BNSD", "TND")
INT32_MAX = 2147483647
_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_HEAD_DIM_MAX = 768  # [aclnn] HEAD_DIM_MAX; [docs] D 1~768
_HEADS_MAX = 256  # [docs] Nq 1~256
_COMPRESSED = 2048  # [tiling] ATTEN_MASK_COMPRESS_LIMIT
_PREFIX_COMPRESSED = 3072  # [tiling] ATTEN_MASK_COMPRESS_PREFIX_LIMIT
_ALIBI_ROWS = 1024  # [tiling] PSE_ALIBI_S_SIZE
# sparse_mode values ([plugin] enum SparseMode)
NO_MASK, ALL_MASK, LEFT_UP_CAUSAL, RIGHT_DOWN_CAUSAL, BAND, PREFIX, PREFIX_COMPRESS = range(7)
RIGHT_DOWN_CAUSAL_BAND, BAND_LEFT_UP_CAUSAL = 7, 8
_COMPRESSED_MODES = (LEFT_UP_CAUSAL, RIGHT_DOWN_CAUSAL, BAND, RIGHT_DOWN_CAUSAL_BAND, BAND_LEFT_UP_CAUSAL)


class FusionAttentionRejected(RuntimeError):
    """A call the real npu_fusion_attention rejects; the message is the one the NPU side gives."""


def _reject(message: str) -> None:
    raise FusionAttentionRejected(message)


@dataclass(frozen=True)
class _Spec:
    shape: tuple[int, ...]
    dtype: torch.dtype


def _spec(x: Any, dtype: torch.dtype) -> _Spec | None:
    if x is None:
        return None
    if isinstance(x, torch.Tensor):
        return _Spec(tuple(x.shape), x.dtype)
    return _Spec(tuple(int(s) for s in x), dtype)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


@dataclass
class _Plan:
    """What the checks learnt about the call: the axes, and per batch the lengths for TND."""

    layout: str
    b: int = 0
    n1: int = 0  # query heads (head_num)
    n2: int = 0  # key/value heads
    sq: int = 0  # for TND: the longest query sequence
    skv: int = 0
    d: int = 0
    dv: int = 0
    q_lens: list[int] = field(default_factory=list)  # TND: per-batch lengths the kernel derives
    kv_lens: list[int] = field(default_factory=list)
    band_index: int = 0  # TND sparse modes 7/8: the batch with the band
    prefix_valid: bool = False  # sparse_mode 5: prefix usable (else the kernel treats the call as allMask)
    empty: bool = False  # B or Sq is 0: the kernel returns at once


def _seq_lengths(cumulative: Sequence[int]) -> list[int]:
    # [tiling] GetActualSeqLenData: per-batch length = value[i] - value[i-1], 0 where that is not
    # positive (trailing zeros mark batches left out, [docs]).
    values = [int(v) for v in cumulative]
    return [values[0]] + [max(values[i] - values[i - 1], 0) for i in range(1, len(values))]


def _check_band(pre: int, nxt: int, ori_pre: int, ori_next: int, s1: int, s2: int) -> None:
    """[tiling] SparseBandModeCheck; ``pre``/``nxt`` counted from the top-left vertex."""
    if pre >= 0 and nxt >= 0:
        return
    if pre < 0 and nxt < 0:
        _reject(f"PreTokens[{ori_pre}] and nextTokens[{ori_next}] config error, there is no valid data block.")
    if pre < 0 and not (nxt >= -pre and -pre < s2):
        _reject(
            f"PreTokens[{ori_pre}] and nextTokens[{ori_next}] config error with S1[{s1}], there is no valid data block."
        )
    if nxt < 0 and not (-nxt <= pre and -nxt < s1):
        _reject(
            f"PreTokens[{ori_pre}] and nextTokens[{ori_next}] config error with S2[{s2}], there is no valid data block."
        )


def _validate(
    query: _Spec, key: _Spec, value: _Spec, head_num: int, input_layout: str, pse: _Spec | None,
    padding_mask: bool, atten_mask: _Spec | None, keep_prob: float, pre_tockens: int, next_tockens: int,
    prefix: Sequence[int] | None, actual_seq_qlen: Sequence[int] | None, actual_seq_kvlen: Sequence[int] | None,
    sparse_mode: int, softmax_layout: str, sink: _Spec | None, dropout_mask: _Spec | None,
) -> _Plan:  # fmt: skip
    """Raise FusionAttentionRejected as the real op would; return the call's axes."""
    # [plugin] npu_fusion_attention's TORCH_CHECKs, in its order
    if head_num <= 0:
        _reject(f"head_num must > 0, but got {head_num}")
    for name, t in (("query", query), ("key", key), ("value", value)):
        if len(t.shape) not in (3, 4):
            _reject(f"The shapes of the input {name} should be 3 or 4 dimensional, but got {len(t.shape)}-dimensional")
    if not 0 < keep_prob <= 1:
        _reject(f"The keep_prob value must be in range of (0, 1], but got {keep_prob}")
    if not input_layout:
        _reject("input_layout is empty")
    if softmax_layout not in ("TND", ""):
        _reject("only supported softmax_layout=TND")
    if softmax_layout == "TND" and input_layout != "TND":
        _reject("softmax_layout=TND only supported when input_layout_str=TND")
    aq, akv = list(actual_seq_qlen or ()), list(actual_seq_kvlen or ())
    if input_layout == "TND":  # compared before upper-casing, as the plugin does
        if not (0 <= sparse_mode < PREFIX or PREFIX < sparse_mode <= BAND_LEFT_UP_CAUSAL):
            _reject(f"The sparse_mode value must be in range of [0,5) or (5,8], but got {sparse_mode}")
    elif not 0 <= sparse_mode <= PREFIX_COMPRESS:
        _reject(f"The sparse_mode value must be in range of [0,6], but got {sparse_mode}")
    layout = input_layout.upper()
    if layout not in LAYOUTS:
        _reject(f"The input_layout should be BSH/SBH/BNSD/BSND/TND(case-insensitive), but got {input_layout}")
    tnd = layout == "TND"
    if tnd and (not aq or not akv or len(aq) != len(akv)):
        _reject("the size of actual_seq_qlen and actual_seq_kvlen must be the same and cannot be empty.")
    if tnd and sparse_mode == PREFIX:  # [tiling] VarLenSparseModeProcess; [docs] mode 5: varlen not supported
        _reject(f"Var len not support sparse mode {sparse_mode}.")
    # [aclnn] with actual_seq_* the plugin calls aclnnFlashAttentionVarLenScore, which takes TND only
    if not tnd and aq and akv:
        _reject(f"Layout {layout} is not TND, invalid shape, please check")

    # [aclnn] InputDtypeCheck
    if not query.dtype == key.dtype == value.dtype:
        _reject(
            f"The data type of query[{_dtype_name(query.dtype)}], key[{_dtype_name(key.dtype)}], "
            f"value[{_dtype_name(value.dtype)}] are not equal."
        )
    if query.dtype not in _DTYPES:
        _reject(f"The data type of query/key/value is [{_dtype_name(query.dtype)}], should be fp16, bf16 or fp32.")
    if pse is not None and pse.dtype != query.dtype:
        _reject(
            f"The data type {_dtype_name(pse.dtype)} of pse is not equal to the data type "
            f"{_dtype_name(query.dtype)} of query, key and value."
        )
    if sink is not None and sink.dtype != torch.float32:
        _reject(f"The data type of sink is [{_dtype_name(sink.dtype)}], should be fp32.")

    # [aclnn] AnalysisAxis: query's rank must be the layout's; [tiling] AnalyzeLayout: key's too
    rank = len(layout)
    if len(query.shape) != rank:
        _reject(f"not support input_layout {layout} with dim_num {len(query.shape)}")
    if len(key.shape) != rank or len(value.shape) != rank:
        _reject(f"Invalid layout[{layout}].")
    plan = _Plan(layout, n1=head_num)
    q, k, v = query.shape, key.shape, value.shape
    if layout in ("BSH", "SBH"):
        (plan.b, plan.sq, h1), (bk, plan.skv, h2), (bv, sv, h3) = (
            (t[0], t[1], t[2]) if layout == "BSH" else (t[1], t[0], t[2]) for t in (q, k, v)
        )
        # [tiling] Analyze3DimLayout: D = H1 / N1, N2 = H2 / D, Dv = H3 / N2
        if h1 == 0 or h2 == 0:
            _reject("H is zero.")
        if h1 % head_num:
            _reject(f"h1 [{h1}] should be a multiple of n1Size [{head_num}].")
        plan.d = h1 // head_num
        plan.n2 = h2 // plan.d
        if plan.n2 == 0 or h2 % plan.d:  # [aclnn] AnalysisAxis: kD = H2 / N2 must be qD
            _reject(f"qD and kD should be same, but got qD={plan.d} kD={h2 // max(plan.n2, 1)}")
        if h3 % plan.n2:  # [docs] key/value shapes agree except D, so H3 = N2 * Dv
            _reject(f"The hidden size of value [{h3}] should be a multiple of the key/value head number [{plan.n2}].")
        plan.dv = h3 // plan.n2
        nv = plan.n2
    else:
        if layout == "BSND":
            (plan.b, plan.sq, n1q, plan.d), (bk, plan.skv, plan.n2, dk), (bv, sv, nv, plan.dv) = q, k, v
        elif layout == "BNSD":
            (plan.b, n1q, plan.sq, plan.d), (bk, plan.n2, plan.skv, dk), (bv, nv, sv, plan.dv) = q, k, v
        else:  # TND; bk and bv hold T of key and value
            (tq, n1q, plan.d), (bk, plan.n2, dk), (bv, nv, plan.dv) = q, k, v
            sv = plan.skv = 0
        if plan.d != dk:  # [aclnn] AnalysisAxis
            _reject(f"qD and kD should be same, but got qD={plan.d} kD={dk}")
    if plan.d < plan.dv:  # [aclnn] AnalysisAxis
        _reject(f"only support kD >= vD, but got kD={plan.d} vD={plan.dv}")
    if plan.d > _HEAD_DIM_MAX:  # [aclnn] AnalysisInput
        _reject(f"Head dim must <= {_HEAD_DIM_MAX}, but got {plan.d}")
    if layout not in ("BSH", "SBH") and head_num != n1q:  # [tiling] Analyze4DimLayout / Analyze3DimLayout
        _reject(f"head_num is [{head_num}], but got query dim{2 if layout == 'BSND' else 1} [{n1q}].")
    # [docs] B equal for query, key and value; key/value shapes equal except D
    if (bk, plan.n2, plan.skv) != (bv, nv, sv):
        _reject(f"The shapes of key {list(k)} and value {list(v)} should be the same except D.")
    if not tnd and plan.b != bk:
        _reject(f"The batch sizes of query [{plan.b}] and key/value [{bk}] should be equal.")
    if plan.n2 == 0:
        _reject("n2Size is zero.")  # [tiling] AnalyzeLayout
    if head_num % plan.n2:  # [tiling] AnalyzeLayout; [docs] Nq/Nkv must be a non-zero integer
        _reject(f"n1Size [{head_num}] should be a multiple of n2Size [{plan.n2}].")
    if head_num > _HEADS_MAX:  # [docs] Nq 1~256
        _reject(f"The head number of query (Nq) must be in range of 1~{_HEADS_MAX}, but got {head_num}.")
    if plan.d <= 0:  # [tiling] AnalyzeLayout
        _reject(f"dSize is not in range:(0, {_HEAD_DIM_MAX}].")

    if tnd:
        # [tiling] Analyze3DimLayout (TND): per-batch lengths, T at least their sum
        if any(int(x) < 0 for x in aq + akv):  # [docs] cumulative sequence lengths
            _reject("actual_seq_qlen and actual_seq_kvlen are cumulative sequence lengths; they cannot be negative.")
        plan.q_lens, plan.kv_lens = _seq_lengths(aq), _seq_lengths(akv)
        plan.b = len(plan.q_lens)
        sum_q, sum_kv = sum(plan.q_lens), sum(plan.kv_lens)
        if tq < sum_q or bk < sum_kv:
            _reject(
                f"Query T({tq}) and key T({bk}) need larger than respectively sum of seqLen({sum_q}) "
                f"and sekvLen({sum_kv})."
            )
        plan.sq, plan.skv = max(plan.q_lens), max(plan.kv_lens)
        # the band batch of sparse modes 7 / 8: the last / first batch with queries
        valid = [i for i, n in enumerate(plan.q_lens) if n != 0]
        if sparse_mode == RIGHT_DOWN_CAUSAL_BAND:
            plan.band_index = valid[-1] if valid else plan.b - 1
        else:
            plan.band_index = valid[0] if valid else 0
    elif plan.b == 0 or plan.sq == 0:
        plan.empty = True  # [aclnn] "b, n1, s1 为0时，不进行任何处理": empty outputs, no further checks
        return plan
    elif plan.skv == 0:  # [docs] S 1~1M
        _reject("The sequence length of key/value (Skv) must be in range of 1~1M, but got 0.")

    if padding_mask:  # [docs] padding_mask: 暂不支持该传参 (not supported yet)
        _reject("padding_mask is not supported (torch_npu docs: padding_mask 暂不支持该传参).")
    _validate_pse(plan, pse, sparse_mode)
    _validate_atten_mask(plan, atten_mask, sparse_mode)
    if atten_mask is not None:  # [tiling] GetSparseInfo: the sparse checks run only with a mask
        if tnd:
            _validate_varlen_sparse(plan, sparse_mode, pre_tockens, next_tockens, prefix)
        else:
            _validate_sparse(plan, atten_mask, sparse_mode, pre_tockens, next_tockens, prefix)
    if dropout_mask is not None:  # [tiling] AnalyzeOptionalInput
        if dropout_mask.dtype != torch.uint8:
            _reject(f"invalid dropMask dtype[{_dtype_name(dropout_mask.dtype)}], only support uint8.")
        bits = head_num * (
            sum(a * b for a, b in zip(plan.q_lens, plan.kv_lens)) if tnd else plan.b * plan.sq * plan.skv
        )  # fmt: skip
        needed, given = (bits + 7) // 8, _numel(dropout_mask.shape)
        if given < needed:
            _reject(f"Input dropMask shapeSize is invalid, it should not be less than {needed}, but got {given}")
    if sink is not None:  # [tiling] AnalyzeOptionalInput
        if len(sink.shape) != 1:
            _reject(f"invalid sink shape [{', '.join(map(str, sink.shape))}], sink shape only support [n,].")
        if sink.shape[0] != head_num:
            _reject(f"Input sink shapeSize is invalid, it should be {head_num}, but got {sink.shape[0]}")
    return plan


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _validate_pse(plan: _Plan, pse: _Spec | None, sparse_mode: int) -> None:
    if pse is None or len(pse.shape) == 0:
        return
    shape = pse.shape
    if plan.layout == "TND":
        if sparse_mode in (RIGHT_DOWN_CAUSAL_BAND, BAND_LEFT_UP_CAUSAL):  # [docs] 7 and 8 do not support pse
            _reject(f"sparse_mode {sparse_mode} does not support the optional input pse.")
        if 0 in plan.q_lens:  # [docs] a batch with S = 0 rules pse out
            _reject("pse is not supported when a batch of actual_seq_qlen has length 0.")
        # [tiling] AnalyzeOptionalInput (TND): flattened [N * sum Skv] or [N * sum Sq*Skv] rows, or alibi
        n = plan.n1
        if shape[0] in (sum(plan.kv_lens) * n, sum(a * b for a, b in zip(plan.q_lens, plan.kv_lens)) * n):
            return
        if len(shape) == 4 and shape[0] in (1, plan.b) and shape[1:] == (n, _ALIBI_ROWS, plan.skv):
            return
        _reject("get unsupported pse shape")
    # [tiling] AnalyzeOptionalInput: [B|1, N, Sq, Skv], [B|1, N, 1, Skv], alibi [B|1, N, 1024, Skv]
    if len(shape) != 4:
        _reject(f"pse dim should be 4, but got {len(shape)}")
    if shape[0] not in (plan.b, 1):
        _reject(f"pse batchsize should be 1 or {plan.b}, but got {shape[0]}")
    n, s1, s2 = shape[1:]
    if n == plan.n1 and s2 == plan.skv and (s1 in (plan.sq, 1) or (s1 == _ALIBI_ROWS and plan.sq >= _ALIBI_ROWS)):
        if s1 == _ALIBI_ROWS and plan.sq > _ALIBI_ROWS and plan.sq != plan.skv:  # [tiling] SetPseAlibiParams
            _reject("Pse alibi only support same S1 S2 when S1 lager than 1024")
        return
    _reject(f"get unsupported pse shape, the shape is [{', '.join(map(str, shape))}]")


def _validate_atten_mask(plan: _Plan, mask: _Spec | None, sparse_mode: int) -> None:
    """[tiling] AnalyzeOptionalInput: atten_mask dtype and shape."""
    if mask is None or len(mask.shape) == 0:
        return
    if mask.dtype not in (torch.bool, torch.uint8):
        _reject(f"invalid attenMask dtype[{_dtype_name(mask.dtype)}], only support bool or uint8.")
    shape, b, n, sq, skv = mask.shape, plan.b, plan.n1, plan.sq, plan.skv
    compressed = sparse_mode in _COMPRESSED_MODES
    tnd_message = (
        f"get unsupported atten_mask shape, the shape is [{', '.join(map(str, shape))}]. MaxSq=[{sq}],  "
        f"MaxSkv=[{skv}], when input_layout is TND, the supported atten_mask shape is [MaxSq, MaxSkv]."
    )
    message = (
        f"get unsupported atten_mask shape, the shape is [{', '.join(map(str, shape))}]. B=[{b}], N=[{n}], "
        f"Sq=[{sq}], Skv=[{skv}], supported atten_mask shape can be [B, N, Sq, Skv], [B, 1, Sq, Skv], "
        "[1, 1, Sq, Skv] and [Sq, Skv]."
    )
    if len(shape) == 4:
        if plan.layout == "TND":  # [docs] varlen: SS only
            _reject(tnd_message)
        if shape not in ((1, 1, sq, skv), (b, 1, sq, skv), (b, n, sq, skv)):
            _reject(message)
    elif len(shape) == 2:
        sums = (sum(plan.q_lens), sum(plan.kv_lens))
        if not (shape == (sq, skv) or compressed or sparse_mode == PREFIX_COMPRESS
                or (plan.layout == "TND" and shape == sums)):  # fmt: skip
            _reject(tnd_message if plan.layout == "TND" else message)
    else:
        _reject(f"atten mask dim should be 2 or 4, but got {len(shape)}")
    if compressed and shape[-2:] != (_COMPRESSED, _COMPRESSED):
        _reject("In the attenmask compression, please set the atten_mask_shape to [2048,2048].")
    if sparse_mode == PREFIX_COMPRESS and shape[-2:] != (_PREFIX_COMPRESSED, _COMPRESSED):
        _reject("In the prefix attenmask compression, please set the atten_mask_shape to [3072,2048].")


def _prefix_problem(plan: _Plan, prefix: Sequence[int] | None) -> str | None:
    """[tiling] GetPrefixNList (B, S batches): why prefix is unusable, or None."""
    if prefix is None:
        return "prefixN is null pointer while sparse mode is prefix"
    if len(prefix) != plan.b:
        return f"prefixN is invalid, it should be the same size as bSize[{plan.b}], but it is {len(prefix)}"
    low = max(plan.skv - plan.sq, 0)
    for i, p in enumerate(prefix):
        if not low <= p <= plan.skv:
            return f"batch[{i}] prefixN={p} is invalid, should be in range of [{low}, {plan.skv}]"
    return None


def _validate_sparse(
    plan: _Plan, mask: _Spec, sparse_mode: int, pre: int, nxt: int, prefix: Sequence[int] | None
) -> None:
    """[tiling] GetSparseInfo / SparseModeProcess / PretokenAndNexttokenAdjustment (B, S layouts)."""
    s1, s2 = plan.sq, plan.skv
    if sparse_mode == NO_MASK:  # tokens from the top-left vertex
        if not (pre >= s1 and (nxt == 0 or nxt >= s2)):
            _check_band(pre, nxt, pre, nxt, s1, s2)
    elif sparse_mode == BAND:  # tokens from the bottom-right vertex, moved to the top-left one
        _check_band(s1 - s2 + pre, s2 - s1 + nxt, pre, nxt, s1, s2)
    elif sparse_mode == PREFIX_COMPRESS:
        problem = _prefix_problem(plan, prefix)
        if problem is not None:
            _reject(problem + ".")
    elif sparse_mode == PREFIX:
        # an unusable prefix only draws a warning: the kernel then treats the call as allMask
        plan.prefix_valid = _prefix_problem(plan, prefix) is None
        if plan.prefix_valid and plan.b != 1 and not (len(mask.shape) == 4 and mask.shape[0] == plan.b):
            _reject("Prefix mode get invalid atten_mask shape, should be [BNSS] or [B1SS].")


def _validate_varlen_sparse(plan: _Plan, sparse_mode: int, pre: int, nxt: int, prefix: Sequence[int] | None) -> None:
    """[tiling] the varlen (TND) GetSparseInfo / CheckPretokenAndNexttoken / VarLenGetPrefixNList."""
    batches = [(i, a, b) for i, (a, b) in enumerate(zip(plan.q_lens, plan.kv_lens)) if a != 0 and b != 0]
    if sparse_mode == NO_MASK:
        if pre >= plan.sq and (nxt == 0 or nxt >= plan.skv):
            return
        if nxt < 0:
            _reject(f"nextTokens[{nxt}] config error, there is no valid data block.")
        for i, s1, s2 in batches:
            if s2 + pre < s1:
                _reject(f"Batch[{i}] s1[{s1}] s2[{s2}] has invalid row, check pre_tokens and next_tokens.")
        if pre < 0 and nxt < -pre:
            _reject(
                f"preTokens[{pre}] and nextTokens[{nxt}] config error with S[{min(plan.kv_lens)}], "
                "has invalid data block."
            )
    elif sparse_mode == RIGHT_DOWN_CAUSAL:  # [docs] mode 3 needs Sq <= Skv in every batch
        for i, (s1, s2) in enumerate(zip(plan.q_lens, plan.kv_lens)):
            if s1 > s2:
                _reject(f"Batch[{i}] s1[{s1}] is larger than s2[{s2}], exist invalid row.")
    elif sparse_mode == BAND:
        if pre < 0:
            _reject(f"pre_tokens[{pre}] config error, has invalid data block.")
        if nxt < 0 and pre + nxt < 0:
            _reject(f"pre_tokens[{pre}], next_tokens[{nxt}], invalid config.")
        for i, s1, s2 in batches:
            if s1 - nxt > s2:
                _reject(f"Batch[{i}], s1[{s1}], s2[{s2}], next_tokens[{nxt}], has invalid row.")
    elif sparse_mode == RIGHT_DOWN_CAUSAL_BAND:
        last_s2 = plan.kv_lens[plan.band_index]
        if pre < last_s2 or nxt > 0:
            _reject(
                f"RightDownCausal_Band mode: pre_tokens[{pre}] is smaller than last valid s2[{last_s2}] "
                f"or next_tokens[{nxt}] is larger than 0, wrong config."
            )
        for i, s1, s2 in batches:
            if s1 > s2:
                _reject(f"Batch[{i}] s1[{s1}] is larger than s2[{s2}].")
            if i == plan.band_index and s1 - nxt > s2:
                _reject(f"Batch[{i}], s1[{s1}], s2[{s2}], next_tokens[{nxt}], has invalid row.")
    elif sparse_mode == BAND_LEFT_UP_CAUSAL:
        s1, s2 = plan.q_lens[plan.band_index], plan.kv_lens[plan.band_index]
        if s1 - nxt > s2:
            _reject(f"Batch[{plan.band_index}], s1[{s1}], s2[{s2}], next_tokens[{nxt}], has invalid row.")
        if pre < s2:
            _reject(f"Band_LeftUpCausal mode: pre_tokens[{pre}] is smaller than first valid s2[{s2}].")
    elif sparse_mode == PREFIX_COMPRESS:
        if prefix is None:
            _reject("prefixN is null pointer while sparse mode is prefix compress")
        if len(prefix) != plan.b:
            _reject(f"prefixN is invalid, it should be the same size as bSize[{plan.b}], but it is {len(prefix)}.")
        for i, (p, s1, s2) in enumerate(zip(prefix, plan.q_lens, plan.kv_lens)):
            low = 0 if s1 > s2 else s2 - s1
            if not low <= p <= s2:
                _reject(f"batch[{i}] prefixN={p} is invalid, should be in range of [{low}, {s2}]")


def fusion_attention_supported(
    query: Any, key: Any, value: Any, head_num: int, input_layout: str, *,
    dtype: torch.dtype = torch.float16, pse: Any = None, padding_mask: Any = None, atten_mask: Any = None,
    keep_prob: float = 1.0, pre_tockens: int = INT32_MAX, next_tockens: int = INT32_MAX,
    prefix: Sequence[int] | None = None, actual_seq_qlen: Sequence[int] | None = None,
    actual_seq_kvlen: Sequence[int] | None = None, sparse_mode: int = 0, softmax_layout: str = "",
    sink: Any = None, dropout_mask: Any = None,
) -> str | None:  # fmt: skip
    """Why the real ``torch_npu.npu_fusion_attention`` would reject this call, or None if it accepts it.

    ``query``, ``key``, ``value``, ``pse``, ``atten_mask``, ``sink`` and ``dropout_mask`` are tensors
    (any device; meta tensors cost nothing) or shapes. A shape takes ``dtype`` for query/key/value
    and pse, bool for atten_mask, float32 for sink, uint8 for dropout_mask. The other arguments are
    npu_fusion_attention's. The answer is the message the NPU side gives (op-plugin, aclnn or the
    kernel's tiling) or a documented constraint. It covers what the real op accepts, not what the
    simulator computes (see the module docstring for the few cases it does not).
    """
    try:
        _validate(
            _spec(query, dtype), _spec(key, dtype), _spec(value, dtype), int(head_num), input_layout,
            _spec(pse, dtype), padding_mask is not None, _spec(atten_mask, torch.bool), float(keep_prob),
            int(pre_tockens), int(next_tockens), None if prefix is None else [int(p) for p in prefix],
            actual_seq_qlen, actual_seq_kvlen, int(sparse_mode), softmax_layout, _spec(sink, torch.float32),
            _spec(dropout_mask, torch.uint8),
        )  # fmt: skip
    except FusionAttentionRejected as rejected:
        return str(rejected)
    return None


# --- reference numerics -----------------------------------------------------------------------


def _to_bnsd(x: torch.Tensor, layout: str, n: int) -> torch.Tensor:
    if layout == "BNSD":
        return x
    if layout == "BSND":
        return x.transpose(1, 2)
    if layout == "BSH":
        b, s, h = x.shape
        return x.reshape(b, s, n, h // n).transpose(1, 2)
    s, b, h = x.shape  # SBH
    return x.reshape(s, b, n, h // n).permute(1, 2, 0, 3)


def _from_bnsd(x: torch.Tensor, layout: str) -> torch.Tensor:
    """The output in ``layout``, contiguous as the kernel writes it (callers ``view`` it: VAR does)."""
    if layout == "BNSD":
        return x.contiguous()
    if layout == "BSND":
        return x.transpose(1, 2).contiguous()
    b, n, s, d = x.shape
    if layout == "BSH":
        return x.transpose(1, 2).reshape(b, s, n * d)
    return x.permute(2, 0, 1, 3).reshape(s, b, n * d)  # SBH


def _outside_band(sq: int, skv: int, pre: int, nxt: int, device: torch.device) -> torch.Tensor:
    """[Sq, Skv], True outside ``i - pre <= j <= i + nxt`` (tokens counted from the top-left vertex)."""
    i = torch.arange(sq, device=device).unsqueeze(1)
    j = torch.arange(skv, device=device).unsqueeze(0)
    return (j < i - pre) | (j > i + nxt)


def _pattern(mode: int, sq: int, skv: int, pre: int, nxt: int, device: torch.device) -> torch.Tensor:
    """The masked positions a sparse mode stands for ([docs] sparse_mode table), [Sq, Skv]."""
    if mode == LEFT_UP_CAUSAL:  # causal from the top-left vertex
        return _outside_band(sq, skv, sq, 0, device)
    if mode == RIGHT_DOWN_CAUSAL:  # causal from the bottom-right vertex
        return _outside_band(sq, skv, sq, skv - sq, device)
    if mode == BAND:  # band, pre/next_tockens from the bottom-right vertex
        return _outside_band(sq, skv, sq - skv + pre, skv - sq + nxt, device)
    return _outside_band(sq, skv, pre, nxt, device)  # defaultMask: pre/next_tockens from the top-left vertex


def _prefix_pattern(prefix: Sequence[int], sq: int, skv: int, device: torch.device) -> torch.Tensor:
    """[docs] prefix modes: right-down causal plus the first prefix[b] keys for every query; [B, 1, Sq, Skv]."""
    causal = _pattern(RIGHT_DOWN_CAUSAL, sq, skv, 0, 0, device)
    j = torch.arange(skv, device=device)
    beyond = j.unsqueeze(0) >= torch.tensor([int(p) for p in prefix], device=device).unsqueeze(1)  # [B, Skv]
    return (causal.unsqueeze(0) & beyond.unsqueeze(1)).unsqueeze(1)


def _masked_positions(
    plan: _Plan, atten_mask: torch.Tensor | None, sparse_mode: int, pre: int, nxt: int,
    prefix: Sequence[int] | None, device: torch.device,
) -> torch.Tensor | None:  # fmt: skip
    """B, S layouts: True where a score is masked out, broadcastable to [B, N, Sq, Skv]."""
    if atten_mask is None:
        # [docs] with atten_mask=None, sparse_mode / pre_tockens / next_tockens take no effect: full matrix
        return None
    sq, skv = plan.sq, plan.skv
    given = atten_mask.to(torch.bool)
    if sparse_mode == NO_MASK:
        # the mask as given, and the blocks outside pre/next_tockens skipped ([docs]: the two must agree)
        return given | _pattern(NO_MASK, sq, skv, pre, nxt, device)
    if sparse_mode == ALL_MASK or (sparse_mode == PREFIX and not plan.prefix_valid):
        return given  # [tiling] mode 5 with an unusable prefix runs as allMask
    if sparse_mode == PREFIX:  # the full mask as given; prefix tells which blocks to compute
        return given | _prefix_pattern(prefix, sq, skv, device)
    if sparse_mode == PREFIX_COMPRESS:
        return _prefix_pattern(prefix, sq, skv, device)
    return _pattern(sparse_mode, sq, skv, pre, nxt, device)  # 2, 3, 4: the compressed mask only signals the mode


def _attention_bnsd(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pse: torch.Tensor | None, masked: torch.Tensor | None,
    scale: float, keep_prob: float, sink: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """out [B,N,Sq,Dv] in q's dtype, and the softmax row max and row sum [B,N,Sq] in float32."""
    n, n_kv = q.shape[1], k.shape[1]
    if n_kv != n:  # GQA: query head h reads key/value head h // (n / n_kv)
        k = k.repeat_interleave(n // n_kv, dim=1)
        v = v.repeat_interleave(n // n_kv, dim=1)
    scores = q.float() @ k.float().transpose(-2, -1)
    if pse is not None:
        scores = scores + pse.float()
    scores = scores * scale  # [docs] Softmax(Mask(scale * (pse + Q K^T))); pse_type 1, "add then mul"
    if masked is not None:
        scores = scores.masked_fill(masked, float("-inf"))
    if sink is not None:  # [docs] sink: one more logit per head in the softmax, dropped afterwards
        scores = torch.cat([scores, sink.float().view(1, n, 1, 1).expand(*scores.shape[:-1], 1)], dim=-1)
    row_max = scores.amax(dim=-1, keepdim=True)
    # A fully masked row has max -inf; the kernel outputs zeros there rather than NaN.
    row_max = torch.where(torch.isinf(row_max), torch.zeros_like(row_max), row_max)
    exp = torch.exp(scores - row_max)
    row_sum = exp.sum(dim=-1, keepdim=True)
    probs = exp / torch.where(row_sum == 0, torch.ones_like(row_sum), row_sum)
    if sink is not None:
        probs = probs[..., :-1]
    if keep_prob < 1.0:
        keep = torch.rand(probs.shape, device=probs.device) < keep_prob
        probs = probs * keep / keep_prob
    out = (probs @ v.float()).to(q.dtype)
    return out, row_max.squeeze(-1), row_sum.squeeze(-1)


def _stats(x: torch.Tensor) -> torch.Tensor:
    return x.unsqueeze(-1).expand(*x.shape, 8).contiguous()  # the kernel's trailing 8 (meta kernel shape)


def run(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, head_num: int, input_layout: str,
    pse: torch.Tensor | None, padding_mask: torch.Tensor | None, atten_mask: torch.Tensor | None, scale: float,
    keep_prob: float, pre_tockens: int, next_tockens: int, prefix: Sequence[int] | None,
    actual_seq_qlen: Sequence[int] | None, actual_seq_kvlen: Sequence[int] | None, sparse_mode: int,
    softmax_layout: str, sink: torch.Tensor | None, dropout_mask: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int, int, int]:  # fmt: skip
    """Check the call as the real op does, then compute it (the 7 outputs of npu_fusion_attention)."""
    prefix = None if prefix is None else [int(p) for p in prefix]
    plan = _validate(
        _spec(query, query.dtype), _spec(key, key.dtype), _spec(value, value.dtype), head_num, input_layout,
        _spec(pse, query.dtype), padding_mask is not None, _spec(atten_mask, torch.bool), keep_prob,
        pre_tockens, next_tockens, prefix, actual_seq_qlen, actual_seq_kvlen, sparse_mode, softmax_layout,
        _spec(sink, torch.float32), _spec(dropout_mask, torch.uint8),
    )  # fmt: skip
    if dropout_mask is not None:
        raise NotImplementedError("npu_fusion_attention: a given dropout_mask is not simulated")
    if plan.layout == "TND":
        return _run_tnd(plan, query, key, value, pse, atten_mask, scale, keep_prob, pre_tockens, next_tockens,
                        prefix, sparse_mode, sink)  # fmt: skip
    layout, b, n, sq = plan.layout, plan.b, plan.n1, plan.sq
    if plan.empty:
        out_shape = {"BSH": (b, sq, n * plan.dv), "SBH": (sq, b, n * plan.dv), "BNSD": (b, n, sq, plan.dv),
                     "BSND": (b, sq, n, plan.dv)}[layout]  # fmt: skip
        stats = query.new_zeros(b, n, sq, 8, dtype=torch.float32)
        return query.new_zeros(out_shape), stats, stats.clone(), query.new_empty(0), 0, 0, 0
    if pse is not None and pse.shape[2] == _ALIBI_ROWS and sq > _ALIBI_ROWS:
        raise NotImplementedError("npu_fusion_attention: the alibi-compressed pse (1024 rows) is not simulated")
    q = _to_bnsd(query, layout, plan.n1)
    k, v = (_to_bnsd(t, layout, plan.n2) for t in (key, value))
    masked = _masked_positions(plan, atten_mask, sparse_mode, pre_tockens, next_tockens, prefix, query.device)
    out, row_max, row_sum = _attention_bnsd(q, k, v, pse, masked, scale, keep_prob, sink)
    numels = b * n * sq * plan.skv if keep_prob < 1.0 else 0
    # seed and offset of the kernel's Philox generator are 0: the simulator draws from torch.npu's
    return _from_bnsd(out, layout), _stats(row_max), _stats(row_sum), query.new_empty(0), 0, 0, numels


def _run_tnd(
    plan: _Plan, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, pse: torch.Tensor | None,
    atten_mask: torch.Tensor | None, scale: float, keep_prob: float, pre: int, nxt: int,
    prefix: Sequence[int] | None, sparse_mode: int, sink: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int, int, int]:  # fmt: skip
    """Varlen layout: [T, N, D], batch i the next q_lens[i] / kv_lens[i] rows; rows past them are 0."""
    if pse is not None:
        raise NotImplementedError("npu_fusion_attention: pse with input_layout 'TND' is not simulated")
    given = None
    if atten_mask is not None:
        given = atten_mask.to(torch.bool)
        if sparse_mode in (NO_MASK, ALL_MASK) and tuple(given.shape) != (plan.sq, plan.skv):
            raise NotImplementedError(
                "npu_fusion_attention: a TND atten_mask of shape [sum Sq, sum Skv] is not simulated"
            )
    n, device = plan.n1, query.device
    outs, maxes, sums = [], [], []
    q_start = kv_start = numels = 0
    for i, (sq, skv) in enumerate(zip(plan.q_lens, plan.kv_lens)):
        q = query[q_start : q_start + sq].transpose(0, 1).unsqueeze(0)  # [1, N, Sq, D]
        k = key[kv_start : kv_start + skv].transpose(0, 1).unsqueeze(0)
        v = value[kv_start : kv_start + skv].transpose(0, 1).unsqueeze(0)
        q_start, kv_start = q_start + sq, kv_start + skv
        if sq == 0:
            continue
        masked = None
        if given is not None:
            if sparse_mode == NO_MASK:  # varlen masks are [maxSq, maxSkv], read from the top-left corner
                masked = given[:sq, :skv] | _pattern(NO_MASK, sq, skv, pre, nxt, device)
            elif sparse_mode == ALL_MASK:
                masked = given[:sq, :skv]
            elif sparse_mode == PREFIX_COMPRESS:
                masked = _prefix_pattern([prefix[i]], sq, skv, device)
            elif sparse_mode in (RIGHT_DOWN_CAUSAL_BAND, BAND_LEFT_UP_CAUSAL):
                # [docs] the band batch (last / first one with queries) takes pre/next_tockens from the
                # bottom-right vertex; the others are right-down (7) or left-up (8) causal
                mode = BAND if i == plan.band_index else (
                    RIGHT_DOWN_CAUSAL if sparse_mode == RIGHT_DOWN_CAUSAL_BAND else LEFT_UP_CAUSAL
                )  # fmt: skip
                masked = _pattern(mode, sq, skv, pre, nxt, device)
            else:
                masked = _pattern(sparse_mode, sq, skv, pre, nxt, device)
        out, row_max, row_sum = _attention_bnsd(q, k, v, None, masked, scale, keep_prob, sink)
        outs.append(out[0].transpose(0, 1))  # [Sq, N, Dv]
        maxes.append(row_max[0].transpose(0, 1))
        sums.append(row_sum[0].transpose(0, 1))
        numels += n * sq * skv if keep_prob < 1.0 else 0
    t = query.shape[0]
    out = torch.cat(outs) if outs else value.new_zeros(0, n, plan.dv)
    row_max = torch.cat(maxes) if maxes else query.new_zeros(0, n, dtype=torch.float32)
    row_sum = torch.cat(sums) if sums else query.new_zeros(0, n, dtype=torch.float32)
    if out.shape[0] < t:  # rows past the batches
        out = torch.cat([out, out.new_zeros(t - out.shape[0], *out.shape[1:])])
        row_max = torch.cat([row_max, row_max.new_zeros(t - row_max.shape[0], n)])
        row_sum = torch.cat([row_sum, row_sum.new_zeros(t - row_sum.shape[0], n)])
    # [T, N, 8] whatever softmax_layout says (the plugin allocates that shape for both)
    return out, _stats(row_max), _stats(row_sum), query.new_empty(0), 0, 0, numels


__all__ = ["LAYOUTS", "FusionAttentionRejected", "fusion_attention_supported", "run"]
