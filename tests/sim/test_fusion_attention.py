"""npu_fusion_attention's contract on the simulator: the calls the real op rejects, and sparse modes 0-8.

Rejected calls must raise a RuntimeError carrying the NPU side's message (op-plugin, aclnn or the
kernel's tiling; see ascend_patch/sim/fusion_attention.py for the source of each), and
``fusion_attention_supported`` must give the same reason. Valid calls must match an explicit
softmax(QK^T)V whose masks are written out index by index here, independently of the simulator.
"""

from __future__ import annotations

import inspect
import re

import pytest
import torch

from ascend_patch.sim.fusion_attention import FusionAttentionRejected, fusion_attention_supported

B, N, N_KV, SQ, SKV, D = 2, 4, 2, 5, 7, 8
SCALE = D**-0.5
BIG = 2147483647
COMPRESSED = torch.ones(2048, 2048).triu(1).bool()  # what callers pass for the compressed modes
Q_LENS, KV_LENS = [2, 3, 4], [3, 3, 6]  # TND batches
AQ, AKV = [2, 5, 9], [3, 6, 12]


@pytest.fixture(scope="module")
def torch_npu(sim_npu):
    import torch_npu

    return torch_npu


def to_layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    b, n, s, d = t.shape
    return {
        "BNSD": t,
        "BSND": t.transpose(1, 2),
        "BSH": t.transpose(1, 2).reshape(b, s, n * d),
        "SBH": t.permute(2, 0, 1, 3).reshape(s, b, n * d),
    }[layout.upper()].contiguous()


def qkv(layout="BNSD", b=B, n=N, n_kv=N_KV, sq=SQ, skv=SKV, d=D, dv=None, dtype=torch.float32):
    q = torch.randn(b, n, sq, d, dtype=dtype)
    k = torch.randn(b, n_kv, skv, d, dtype=dtype)
    v = torch.randn(b, n_kv, skv, d if dv is None else dv, dtype=dtype)
    return tuple(to_layout(t, layout) for t in (q, k, v))


def tnd(n=N, n_kv=N_KV, t_q=9, t_kv=12, d=D):
    return torch.randn(t_q, n, d), torch.randn(t_kv, n_kv, d), torch.randn(t_kv, n_kv, d)


def call(layout="BNSD", tensors=None, head_num=N, **kwargs):
    tensors = tensors if tensors is not None else (tnd() if layout.upper() == "TND" else qkv(layout))
    return (*tensors, head_num, layout), kwargs


# (id, (args, kwargs), substring of the NPU's message)
REJECTED = [
    # [plugin] FlashAttentionKernelNpuOpApi.cpp
    ("head_num_zero", call(head_num=0), "head_num must > 0, but got 0"),
    ("query_2d", call(tensors=(torch.randn(5, 8), *qkv()[1:])), "input query should be 3 or 4 dimensional, but got 2"),
    ("keep_prob_zero", call(keep_prob=0.0), "The keep_prob value must be in range of (0, 1], but got 0.0"),
    ("keep_prob_above_one", call(keep_prob=1.5), "The keep_prob value must be in range of (0, 1], but got 1.5"),
    ("layout_empty", call(tensors=qkv(), layout=""), "input_layout is empty"),
    ("layout_unknown", call(tensors=qkv(), layout="NSD"),
     "The input_layout should be BSH/SBH/BNSD/BSND/TND(case-insensitive), but got NSD"),
    ("softmax_layout_unknown", call(softmax_layout="BNSD"), "only supported softmax_layout=TND"),
    ("softmax_layout_tnd_without_tnd", call(softmax_layout="TND"),
     "softmax_layout=TND only supported when input_layout_str=TND"),
    ("sparse_mode_7_not_varlen", call(sparse_mode=7), "The sparse_mode value must be in range of [0,6], but got 7"),
    ("sparse_mode_negative", call(sparse_mode=-1), "The sparse_mode value must be in range of [0,6], but got -1"),
    ("sparse_mode_5_varlen", call("TND", actual_seq_qlen=AQ, actual_seq_kvlen=AKV, sparse_mode=5),
     "The sparse_mode value must be in range of [0,5) or (5,8], but got 5"),
    ("sparse_mode_9_varlen", call("TND", actual_seq_qlen=AQ, actual_seq_kvlen=AKV, sparse_mode=9),
     "must be in range of [0,5) or (5,8], but got 9"),
    ("tnd_without_seq_lens", call("TND"),
     "the size of actual_seq_qlen and actual_seq_kvlen must be the same and cannot be empty."),
    ("tnd_seq_lens_differ_in_size", call("TND", actual_seq_qlen=AQ, actual_seq_kvlen=AKV[:2]),
     "the size of actual_seq_qlen and actual_seq_kvlen must be the same"),
    # [aclnn] aclnn_flash_attention_score.cpp
    ("seq_lens_with_bnsd", call(actual_seq_qlen=[5, 10], actual_seq_kvlen=[7, 14]),
     "Layout BNSD is not TND, invalid shape, please check"),
    ("dtypes_differ", call(tensors=(qkv()[0], qkv()[1].half(), qkv()[2])),
     "The data type of query[float32], key[float16], value[float32] are not equal."),
    ("float64", call(tensors=qkv(dtype=torch.float64)),
     "The data type of query/key/value is [float64], should be fp16, bf16 or fp32."),
    ("pse_dtype", call(pse=torch.zeros(B, N, SQ, SKV, dtype=torch.float16)),
     "The data type float16 of pse is not equal to the data type float32 of query, key and value."),
    ("rank_vs_layout", call(tensors=qkv("BSH"), layout="BNSD"), "not support input_layout BNSD with dim_num 3"),
    ("key_rank_vs_layout", call(tensors=(qkv("BSND")[0], *qkv("BSH")[1:]), layout="BSND"), "Invalid layout[BSND]."),
    ("qd_kd_differ", call(tensors=(qkv()[0], *qkv(d=16)[1:])), "qD and kD should be same, but got qD=8 kD=16"),
    ("bsh_key_hidden", call("BSH", tensors=(qkv("BSH")[0], *qkv("BSH", n_kv=3, d=4)[1:])),
     "qD and kD should be same, but got qD=8"),
    ("vd_above_kd", call(tensors=qkv(dv=16)), "only support kD >= vD, but got kD=8 vD=16"),
    ("head_dim_above_768", call(tensors=qkv(b=1, n=1, n_kv=1, sq=1, skv=1, d=1024), head_num=1),
     "Head dim must <= 768, but got 1024"),
    # [tiling] flash_attention_score_tiling_general.cpp (+ [docs] where noted)
    ("bsh_hidden_vs_heads", call("BSH", tensors=qkv("BSH"), head_num=3), "h1 [32] should be a multiple of n1Size [3]."),
    ("head_num_vs_bnsd", call(head_num=3), "head_num is [3], but got query dim1 [4]."),
    ("head_num_vs_bsnd", call("BSND", head_num=3), "head_num is [3], but got query dim2 [4]."),
    ("gqa_ratio", call(tensors=qkv(n_kv=3)), "n1Size [4] should be a multiple of n2Size [3]."),
    ("key_value_seq_differ", call(tensors=(*qkv()[:2], qkv(skv=6)[2])), "should be the same except D"),
    ("batch_differs", call(tensors=(qkv()[0], *qkv(b=1)[1:])),
     "The batch sizes of query [2] and key/value [1] should be equal."),
    ("heads_above_256", call(tensors=qkv(b=1, n=512, n_kv=1, sq=1, skv=1, d=1), head_num=512),
     "must be in range of 1~256, but got 512"),
    ("empty_keys", call(tensors=qkv(skv=0)), "(Skv) must be in range of 1~1M, but got 0"),
    ("padding_mask", call(padding_mask=torch.zeros(B, 1, SQ, SKV, dtype=torch.bool)), "padding_mask is not supported"),
    ("pse_rank", call(pse=torch.zeros(N, SQ, SKV)), "pse dim should be 4, but got 3"),
    ("pse_batch", call(pse=torch.zeros(3, N, SQ, SKV)), "pse batchsize should be 1 or 2, but got 3"),
    ("pse_shape", call(pse=torch.zeros(B, N, SQ, SKV - 1)), "get unsupported pse shape, the shape is [2, 4, 5, 6]"),
    ("mask_dtype", call(atten_mask=torch.zeros(SQ, SKV)),
     "invalid attenMask dtype[float32], only support bool or uint8."),
    ("mask_rank", call(atten_mask=torch.zeros(1, SQ, SKV, dtype=torch.bool)), "atten mask dim should be 2 or 4, but got 3"),
    ("mask_1nss", call(atten_mask=torch.zeros(1, N, SQ, SKV, dtype=torch.bool)),
     "get unsupported atten_mask shape, the shape is [1, 4, 5, 7]. B=[2], N=[4], Sq=[5], Skv=[7]"),
    ("mask_ss_wrong", call(atten_mask=torch.zeros(SQ, SQ, dtype=torch.bool)),
     "get unsupported atten_mask shape, the shape is [5, 5]."),
    ("mode2_uncompressed_mask", call(atten_mask=torch.zeros(SQ, SKV, dtype=torch.bool), sparse_mode=2),
     "In the attenmask compression, please set the atten_mask_shape to [2048,2048]."),
    ("mode3_4d_mask", call(atten_mask=torch.zeros(1, 1, SQ, SKV, dtype=torch.bool), sparse_mode=3),
     "please set the atten_mask_shape to [2048,2048]."),
    ("mode4_uncompressed_mask", call(atten_mask=torch.zeros(SQ, SKV, dtype=torch.bool), sparse_mode=4),
     "please set the atten_mask_shape to [2048,2048]."),
    ("mode6_mask_2048", call(atten_mask=COMPRESSED, sparse_mode=6, prefix=[3, 4]),
     "In the prefix attenmask compression, please set the atten_mask_shape to [3072,2048]."),
    ("mode6_without_prefix", call(atten_mask=torch.zeros(3072, 2048, dtype=torch.bool), sparse_mode=6),
     "prefixN is null pointer while sparse mode is prefix"),
    ("mode6_prefix_size", call(atten_mask=torch.zeros(3072, 2048, dtype=torch.bool), sparse_mode=6, prefix=[3]),
     "prefixN is invalid, it should be the same size as bSize[2], but it is 1"),
    ("mode6_prefix_range", call(atten_mask=torch.zeros(3072, 2048, dtype=torch.bool), sparse_mode=6, prefix=[1, 3]),
     "batch[0] prefixN=1 is invalid, should be in range of [2, 7]"),
    ("mode5_ss_mask", call(atten_mask=torch.zeros(SQ, SKV, dtype=torch.bool), sparse_mode=5, prefix=[3, 4]),
     "Prefix mode get invalid atten_mask shape, should be [BNSS] or [B1SS]."),
    ("mode0_no_band", call(atten_mask=torch.zeros(SQ, SKV, dtype=torch.bool), pre_tockens=-1, next_tockens=-1),
     "PreTokens[-1] and nextTokens[-1] config error, there is no valid data block."),
    ("mode0_negative_pre", call(atten_mask=torch.zeros(SQ, SKV, dtype=torch.bool), pre_tockens=-3, next_tockens=1),
     "PreTokens[-3] and nextTokens[1] config error with S1[5], there is no valid data block."),
    ("mode0_negative_next", call(atten_mask=torch.zeros(SQ, SKV, dtype=torch.bool), pre_tockens=1, next_tockens=-3),
     "PreTokens[1] and nextTokens[-3] config error with S2[7], there is no valid data block."),
    ("mode4_no_band", call(atten_mask=COMPRESSED, sparse_mode=4, pre_tockens=-10, next_tockens=-10),
     "PreTokens[-10] and nextTokens[-10] config error, there is no valid data block."),
    ("sink_dtype", call(sink=torch.zeros(N, dtype=torch.float16)), "The data type of sink is [float16], should be fp32."),
    ("sink_rank", call(sink=torch.zeros(2, 2)), "invalid sink shape [2, 2], sink shape only support [n,]."),
    ("sink_size", call(sink=torch.zeros(3)), "Input sink shapeSize is invalid, it should be 4, but got 3"),
    ("dropout_mask_dtype", call(dropout_mask=torch.zeros(64)), "invalid dropMask dtype[float32], only support uint8."),
    # varlen (TND)
    ("tnd_t_below_sum", call("TND", actual_seq_qlen=[2, 5, 10], actual_seq_kvlen=AKV),
     "Query T(9) and key T(12) need larger than respectively sum of seqLen(10) and sekvLen(12)."),
    ("tnd_negative_len", call("TND", actual_seq_qlen=[-1, 5, 9], actual_seq_kvlen=AKV), "they cannot be negative"),
    ("tnd_head_num", call("TND", head_num=2, actual_seq_qlen=AQ, actual_seq_kvlen=AKV),
     "head_num is [2], but got query dim1 [4]."),
    ("tnd_mask_4d", call("TND", actual_seq_qlen=AQ, actual_seq_kvlen=AKV, atten_mask=torch.zeros(1, 1, 4, 6).bool()),
     "when input_layout is TND, the supported atten_mask shape is [MaxSq, MaxSkv]."),
    ("tnd_mask_ss_wrong", call("TND", actual_seq_qlen=AQ, actual_seq_kvlen=AKV, atten_mask=torch.zeros(5, 5).bool()),
     "MaxSq=[4],  MaxSkv=[6]"),
    ("tnd_mode0_negative_next", call("TND", actual_seq_qlen=AQ, actual_seq_kvlen=AKV,
                                     atten_mask=torch.zeros(4, 6).bool(), pre_tockens=2, next_tockens=-1),
     "nextTokens[-1] config error, there is no valid data block."),
    ("tnd_mode3_sq_above_skv", call("TND", actual_seq_qlen=[4, 5, 9], actual_seq_kvlen=[3, 6, 12],
                                    atten_mask=COMPRESSED, sparse_mode=3),
     "Batch[0] s1[4] is larger than s2[3], exist invalid row."),
    ("tnd_mode4_negative_pre", call("TND", actual_seq_qlen=AQ, actual_seq_kvlen=AKV, atten_mask=COMPRESSED,
                                    sparse_mode=4, pre_tockens=-1, next_tockens=2),
     "pre_tokens[-1] config error, has invalid data block."),
    ("tnd_mode4_no_band", call("TND", actual_seq_qlen=AQ, actual_seq_kvlen=AKV, atten_mask=COMPRESSED,
                               sparse_mode=4, pre_tockens=1, next_tockens=-2),
     "pre_tokens[1], next_tokens[-2], invalid config."),
    ("tnd_mode4_invalid_row", call("TND", actual_seq_qlen=AQ, actual_seq_kvlen=AKV, atten_mask=COMPRESSED,
                                   sparse_mode=4, pre_tockens=3, next_tockens=-1),
     "Batch[1], s1[3], s2[3], next_tokens[-1], has invalid row."),
    ("tnd_mode7_pre", call("TND", actual_seq_qlen=AQ, actual_seq_kvlen=AKV, atten_mask=COMPRESSED, sparse_mode=7,
                           pre_tockens=2, next_tockens=0),
     "RightDownCausal_Band mode: pre_tokens[2] is smaller than last valid s2[6]"),
    ("tnd_mode8_pre", call("TND", actual_seq_qlen=AQ, actual_seq_kvlen=AKV, atten_mask=COMPRESSED, sparse_mode=8,
                           pre_tockens=1, next_tockens=0),
     "Band_LeftUpCausal mode: pre_tokens[1] is smaller than first valid s2[3]."),
    ("tnd_mode7_pse", call("TND", actual_seq_qlen=AQ, actual_seq_kvlen=AKV, sparse_mode=7, pse=torch.zeros(N * 12)),
     "sparse_mode 7 does not support the optional input pse."),
    ("tnd_mode6_prefix_size", call("TND", actual_seq_qlen=AQ, actual_seq_kvlen=AKV, sparse_mode=6,
                                   atten_mask=torch.zeros(3072, 2048).bool(), prefix=[1, 2]),
     "prefixN is invalid, it should be the same size as bSize[3], but it is 2."),
]  # fmt: skip

HELPER_PARAMS = set(inspect.signature(fusion_attention_supported).parameters)


def npu(x):
    return x.npu() if isinstance(x, torch.Tensor) else x


@pytest.mark.parametrize(("case", "message"), [(c, m) for _, c, m in REJECTED], ids=[i for i, _, _ in REJECTED])
def test_calls_the_real_op_rejects_raise_its_message(torch_npu, case, message):
    torch.manual_seed(0)
    args, kwargs = case
    with pytest.raises(RuntimeError, match=re.escape(message)):
        torch_npu.npu_fusion_attention(*map(npu, args), **{k: npu(v) for k, v in kwargs.items()})
    # the helper gives the same reason, from CPU tensors, from meta tensors, and from shapes
    helper_kwargs = {k: v for k, v in kwargs.items() if k in HELPER_PARAMS}
    assert message in (fusion_attention_supported(*args, **helper_kwargs) or "")
    meta = [t.to("meta") if isinstance(t, torch.Tensor) else t for t in args]
    assert message in (fusion_attention_supported(*meta, **helper_kwargs) or "")


def test_rejections_are_runtime_errors_of_their_own_type(torch_npu):
    q, k, v = (t.npu() for t in qkv())
    with pytest.raises(FusionAttentionRejected) as info:
        torch_npu.npu_fusion_attention(q, k, v, 0, "BNSD")
    assert isinstance(info.value, RuntimeError)


def test_helper_takes_shapes(torch_npu):
    shapes = ((2, 5, 4, 64), (2, 7, 2, 64), (2, 7, 2, 64))
    assert fusion_attention_supported(*shapes, 4, "BSND", dtype=torch.bfloat16) is None
    assert fusion_attention_supported(*shapes, 4, "BSND", atten_mask=(2048, 2048), sparse_mode=3) is None
    assert "[2048,2048]" in fusion_attention_supported(*shapes, 4, "BSND", atten_mask=(5, 7), sparse_mode=3)
    assert "should be fp16, bf16 or fp32" in fusion_attention_supported(*shapes, 4, "BSND", dtype=torch.float64)
    assert "Head dim must <= 768" in fusion_attention_supported(
        (1, 1, 1, 800), (1, 1, 1, 800), (1, 1, 1, 800), 1, "BNSD"
    )
    tnd_shapes = ((9, 4, 64), (12, 2, 64), (12, 2, 64))
    assert fusion_attention_supported(*tnd_shapes, 4, "TND", actual_seq_qlen=AQ, actual_seq_kvlen=AKV) is None
    assert "cannot be empty" in fusion_attention_supported(*tnd_shapes, 4, "TND")


# --- valid calls against explicit references -------------------------------------------------------


def keep_band(sq, skv, lo, hi):
    """[Sq, Skv] bool, True where lo(i) <= j <= hi(i) (kept), written out index by index."""
    out = torch.zeros(sq, skv, dtype=torch.bool)
    for i in range(sq):
        for j in range(skv):
            out[i, j] = lo(i) <= j <= hi(i)
    return out


def reference_bnsd(q, k, v, masked, scale=SCALE, pse=None, sink=None):
    """softmax(scale * (pse + Q K^T)) V, GQA by repeated key/value heads, fully masked rows 0."""
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    scores = q @ k.transpose(-1, -2)
    if pse is not None:
        scores = scores + pse
    scores = scores * scale
    if masked is not None:
        scores = scores.masked_fill(masked, float("-inf"))
    if sink is not None:
        scores = torch.cat([scores, sink.view(1, -1, 1, 1).expand(*scores.shape[:-1], 1)], -1)
    probs = torch.nan_to_num(scores.softmax(-1), nan=0.0)
    if sink is not None:
        probs = probs[..., :-1]
    return probs @ v


def run_layout(torch_npu, layout, q, k, v, head_num=N, **kwargs):
    kwargs = {key: npu(val) for key, val in kwargs.items()}
    out = torch_npu.npu_fusion_attention(
        to_layout(q, layout).npu(), to_layout(k, layout).npu(), to_layout(v, layout).npu(), head_num, layout,
        scale=SCALE, **kwargs,
    )  # fmt: skip
    return out[0].cpu()


def bnsd(b=B, n=N, n_kv=N_KV, sq=SQ, skv=SKV, d=D, dv=D):
    return torch.randn(b, n, sq, d), torch.randn(b, n_kv, skv, d), torch.randn(b, n_kv, skv, dv)


OFF = SKV - SQ  # bottom-right vertex offset
VALID = [
    # (id, kwargs of the call, kept positions [Sq, Skv] or [B, 1, Sq, Skv] (None: all))
    ("mode0_band", {"pre_tockens": 2, "next_tockens": 1}, keep_band(SQ, SKV, lambda i: i - 2, lambda i: i + 1)),
    ("mode0_negative_next", {"pre_tockens": 3, "next_tockens": -1}, keep_band(SQ, SKV, lambda i: i - 3, lambda i: i - 1)),
    ("mode0_negative_pre", {"pre_tockens": -1, "next_tockens": 3}, keep_band(SQ, SKV, lambda i: i + 1, lambda i: i + 3)),
    ("mode0_causal_tokens", {"pre_tockens": BIG, "next_tockens": 0}, keep_band(SQ, SKV, lambda i: 0, lambda i: i)),
    ("mode4_band", {"sparse_mode": 4, "pre_tockens": 2, "next_tockens": 1},
     keep_band(SQ, SKV, lambda i: i + OFF - 2, lambda i: i + OFF + 1)),
    ("mode4_negative_next", {"sparse_mode": 4, "pre_tockens": 4, "next_tockens": -1},
     keep_band(SQ, SKV, lambda i: i + OFF - 4, lambda i: i + OFF - 1)),
    ("mode4_default_tokens", {"sparse_mode": 4}, None),
    ("mode4_causal", {"sparse_mode": 4, "pre_tockens": BIG, "next_tockens": 0},
     keep_band(SQ, SKV, lambda i: 0, lambda i: i + OFF)),
    ("mode6_prefix", {"sparse_mode": 6, "prefix": [3, 5]},
     torch.stack([keep_band(SQ, SKV, lambda i: 0, lambda i, p=p: max(i + OFF, p - 1)) for p in (3, 5)]).unsqueeze(1)),
]  # fmt: skip


@pytest.mark.parametrize("layout", ["BSH", "SBH", "BSND", "BNSD"])
@pytest.mark.parametrize(("kwargs", "kept"), [(kw, kept) for _, kw, kept in VALID], ids=[i for i, _, _ in VALID])
def test_sparse_modes_match_the_explicit_reference(torch_npu, layout, kwargs, kept):
    torch.manual_seed(1)
    q, k, v = bnsd()
    masked = None if kept is None else ~kept
    mode = kwargs.get("sparse_mode", 0)
    # modes 0/1/5 take the full mask (consistent with pre/next_tockens); 2/3/4/7/8 the compressed
    # 2048x2048 one; 6 the compressed 3072x2048 prefix one
    atten_mask = {0: masked, 6: torch.zeros(3072, 2048).bool()}.get(mode, COMPRESSED)
    if atten_mask is None:
        atten_mask = torch.zeros(SQ, SKV, dtype=torch.bool)
    assert fusion_attention_supported(*(to_layout(t, layout) for t in (q, k, v)), N, layout, atten_mask=atten_mask,
                                      **kwargs) is None  # fmt: skip
    out = run_layout(torch_npu, layout, q, k, v, atten_mask=atten_mask, **kwargs)
    torch.testing.assert_close(out, to_layout(reference_bnsd(q, k, v, masked), layout), rtol=1e-5, atol=1e-5)


def test_prefix_uncompressed_mode5(torch_npu):
    torch.manual_seed(2)
    q, k, v = bnsd()
    kept = torch.stack([keep_band(SQ, SKV, lambda i: 0, lambda i, p=p: max(i + OFF, p - 1)) for p in (2, 4)])
    mask = ~kept.unsqueeze(1)  # [B, 1, Sq, Skv]
    for layout in ("BNSD", "BSH"):
        out = run_layout(torch_npu, layout, q, k, v, atten_mask=mask, sparse_mode=5, prefix=[2, 4])
        torch.testing.assert_close(out, to_layout(reference_bnsd(q, k, v, mask), layout), rtol=1e-5, atol=1e-5)
    # an unusable prefix only draws a warning on the NPU: the call runs as allMask
    user_mask = torch.rand(B, 1, SQ, SKV) > 0.5
    user_mask[..., 0] = False
    out = run_layout(torch_npu, "BNSD", q, k, v, atten_mask=user_mask, sparse_mode=5)
    torch.testing.assert_close(out, reference_bnsd(q, k, v, user_mask), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layout", ["BSH", "SBH", "BSND", "BNSD"])
def test_gqa_value_head_dim_pse_and_sink(torch_npu, layout):
    torch.manual_seed(3)
    q, k, v = bnsd(dv=4)  # Dv < D: allowed (kD >= vD)
    pse = torch.randn(1, N, 1, SKV)  # [1, N, 1, Skv] broadcast over the query rows
    sink = torch.randn(N)
    kept = keep_band(SQ, SKV, lambda i: 0, lambda i: i + OFF)
    out = run_layout(torch_npu, layout, q, k, v, pse=pse, sink=sink, atten_mask=COMPRESSED, sparse_mode=3)
    expected = reference_bnsd(q, k, v, ~kept, pse=pse, sink=sink)
    assert out.shape == to_layout(expected, layout).shape
    torch.testing.assert_close(out, to_layout(expected, layout), rtol=1e-5, atol=1e-5)


def test_lowercase_layout_and_empty_batch(torch_npu):
    torch.manual_seed(4)
    q, k, v = bnsd()
    out = run_layout(torch_npu, "bnsd", q, k, v)  # case-insensitive on the NPU
    torch.testing.assert_close(out, reference_bnsd(q, k, v, None), rtol=1e-5, atol=1e-5)
    q0 = torch.randn(0, N, SQ, D).npu()  # B = 0: the kernel returns empty outputs
    res = torch_npu.npu_fusion_attention(q0, torch.randn(0, N_KV, SKV, D).npu(), torch.randn(0, N_KV, SKV, D).npu(),
                                         N, "BNSD")  # fmt: skip
    assert res[0].shape == (0, N, SQ, D) and res[1].shape == (0, N, SQ, 8)


# --- varlen (TND) ------------------------------------------------------------------------------


def run_tnd(torch_npu, q_lens, kv_lens, kept_per_batch, t_extra=0, **kwargs):
    """Random sequences, the op on their concatenation, and the per-sequence reference."""
    queries, keys, values, expected = [], [], [], []
    for i, (sq, skv) in enumerate(zip(q_lens, kv_lens)):
        q, k, v = torch.randn(1, N, sq, D), torch.randn(1, N_KV, skv, D), torch.randn(1, N_KV, skv, D)
        kept = kept_per_batch(i, sq, skv)
        expected.append(reference_bnsd(q, k, v, None if kept is None else ~kept)[0].transpose(0, 1))
        queries.append(q[0].transpose(0, 1))
        keys.append(k[0].transpose(0, 1))
        values.append(v[0].transpose(0, 1))
    query = torch.cat(queries + [torch.randn(t_extra, N, D)])
    aq = torch.tensor(q_lens).cumsum(0).tolist()
    akv = torch.tensor(kv_lens).cumsum(0).tolist()
    assert fusion_attention_supported(query, torch.cat(keys), torch.cat(values), N, "TND", actual_seq_qlen=aq,
                                      actual_seq_kvlen=akv, **kwargs) is None  # fmt: skip
    out = torch_npu.npu_fusion_attention(
        query.npu(), torch.cat(keys).npu(), torch.cat(values).npu(), N, "TND", scale=SCALE,
        actual_seq_qlen=aq, actual_seq_kvlen=akv, **{k: npu(v) for k, v in kwargs.items()},
    )  # fmt: skip
    return out, torch.cat(expected + [torch.zeros(t_extra, N, D)])


def causal_bottom_right(i, sq, skv):
    return keep_band(sq, skv, lambda r: 0, lambda r: r + skv - sq)


def causal_top_left(i, sq, skv):
    return keep_band(sq, skv, lambda r: 0, lambda r: r)


TND_VALID = [
    ("mode0_band", {"atten_mask": "band", "pre_tockens": 1, "next_tockens": 1},
     lambda i, sq, skv: keep_band(sq, skv, lambda r: r - 1, lambda r: r + 1)),
    ("mode2", {"atten_mask": COMPRESSED, "sparse_mode": 2}, causal_top_left),
    ("mode3", {"atten_mask": COMPRESSED, "sparse_mode": 3}, causal_bottom_right),
    ("mode4", {"atten_mask": COMPRESSED, "sparse_mode": 4, "pre_tockens": 1, "next_tockens": 0},
     lambda i, sq, skv: keep_band(sq, skv, lambda r: r + skv - sq - 1, lambda r: r + skv - sq)),
    ("mode6", {"atten_mask": torch.zeros(3072, 2048).bool(), "sparse_mode": 6, "prefix": [1, 2, 3]},
     lambda i, sq, skv: keep_band(sq, skv, lambda r: 0, lambda r: max(r + skv - sq, [1, 2, 3][i] - 1))),
    ("no_mask_ignores_mode", {"sparse_mode": 7, "pre_tockens": 0, "next_tockens": 0}, lambda i, sq, skv: None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "kept"), [(kw, kept) for _, kw, kept in TND_VALID], ids=[i for i, _, _ in TND_VALID]
)
def test_tnd_sparse_modes_match_per_sequence_reference(torch_npu, kwargs, kept):
    torch.manual_seed(5)
    if isinstance(kwargs.get("atten_mask"), str):  # the [maxSq, maxSkv] band mask matching the tokens
        kwargs = {**kwargs, "atten_mask": ~keep_band(4, 6, lambda r: r - 1, lambda r: r + 1)}
    out, expected = run_tnd(torch_npu, Q_LENS, KV_LENS, kept, t_extra=2, **kwargs)
    torch.testing.assert_close(out[0].cpu(), expected, rtol=1e-5, atol=1e-5)
    assert out[1].shape == (sum(Q_LENS) + 2, N, 8)


def test_tnd_mode7_is_a_query_split_of_mode3(torch_npu):
    # the docs' example, card 1: sequences 3x3 and the first 2 rows of a 4x6 right-down causal one
    torch.manual_seed(6)
    q4, k6, v6 = torch.randn(1, N, 4, D), torch.randn(1, N_KV, 6, D), torch.randn(1, N_KV, 6, D)
    q3, k3, v3 = torch.randn(1, N, 3, D), torch.randn(1, N_KV, 3, D), torch.randn(1, N_KV, 3, D)
    whole = reference_bnsd(q4, k6, v6, ~causal_bottom_right(0, 4, 6))[0].transpose(0, 1)  # [4, N, D]
    first = reference_bnsd(q3, k3, v3, ~causal_bottom_right(0, 3, 3))[0].transpose(0, 1)
    query = torch.cat([q3[0].transpose(0, 1), q4[0, :, :2].transpose(0, 1)])
    key = torch.cat([k3[0].transpose(0, 1), k6[0].transpose(0, 1)])
    value = torch.cat([v3[0].transpose(0, 1), v6[0].transpose(0, 1)])
    out = torch_npu.npu_fusion_attention(
        query.npu(), key.npu(), value.npu(), N, "TND", scale=SCALE, atten_mask=COMPRESSED.npu(), sparse_mode=7,
        pre_tockens=6, next_tockens=-2, actual_seq_qlen=[3, 5], actual_seq_kvlen=[3, 9],
    )[0].cpu()  # fmt: skip
    torch.testing.assert_close(out, torch.cat([first, whole[:2]]), rtol=1e-5, atol=1e-5)


def test_tnd_mode8_is_a_query_split_of_mode2(torch_npu):
    # the docs' example, card 2: the last 3 rows of a 5x4 left-up causal sequence, then 5x5 and 4x4 ones
    torch.manual_seed(7)
    q5, k4, v4 = torch.randn(1, N, 5, D), torch.randn(1, N_KV, 4, D), torch.randn(1, N_KV, 4, D)
    split = reference_bnsd(q5, k4, v4, ~causal_top_left(0, 5, 4))[0].transpose(0, 1)[2:]
    rest, queries, keys, values = [], [q5[0, :, 2:].transpose(0, 1)], [k4[0].transpose(0, 1)], [v4[0].transpose(0, 1)]
    for s in (5, 4):
        q, k, v = torch.randn(1, N, s, D), torch.randn(1, N_KV, s, D), torch.randn(1, N_KV, s, D)
        rest.append(reference_bnsd(q, k, v, ~causal_top_left(0, s, s))[0].transpose(0, 1))
        queries.append(q[0].transpose(0, 1))
        keys.append(k[0].transpose(0, 1))
        values.append(v[0].transpose(0, 1))
    out = torch_npu.npu_fusion_attention(
        torch.cat(queries).npu(), torch.cat(keys).npu(), torch.cat(values).npu(), N, "TND", scale=SCALE,
        atten_mask=COMPRESSED.npu(), sparse_mode=8, pre_tockens=4, next_tockens=1,
        actual_seq_qlen=[3, 8, 12], actual_seq_kvlen=[4, 9, 13],
    )[0].cpu()  # fmt: skip
    torch.testing.assert_close(out, torch.cat([split, *rest]), rtol=1e-5, atol=1e-5)


def test_tnd_trailing_batches_left_out(torch_npu):
    torch.manual_seed(8)
    out, expected = run_tnd(torch_npu, [2, 3], [3, 3], causal_bottom_right, t_extra=4,
                            atten_mask=COMPRESSED, sparse_mode=3)  # fmt: skip
    torch.testing.assert_close(out[0].cpu(), expected, rtol=1e-5, atol=1e-5)
    # the same through cumulative lengths with trailing zeros ([docs]: [2, 5, 0, 0])
    query, key, value = torch.randn(9, N, D), torch.randn(6, N_KV, D), torch.randn(6, N_KV, D)
    a = torch_npu.npu_fusion_attention(query.npu(), key.npu(), value.npu(), N, "TND", actual_seq_qlen=[2, 5, 0, 0],
                                       actual_seq_kvlen=[3, 6, 0, 0])[0].cpu()  # fmt: skip
    b = torch_npu.npu_fusion_attention(query.npu(), key.npu(), value.npu(), N, "TND", actual_seq_qlen=[2, 5],
                                       actual_seq_kvlen=[3, 6])[0].cpu()  # fmt: skip
    assert torch.equal(a, b) and torch.equal(a[5:], torch.zeros(4, N, D))


def test_what_the_simulator_does_not_compute_says_so(torch_npu):
    q, k, v = (t.npu() for t in qkv())
    with pytest.raises(NotImplementedError, match="dropout_mask"):
        torch_npu.npu_fusion_attention(q, k, v, N, "BNSD", dropout_mask=torch.zeros(64, dtype=torch.uint8).npu())
    tq, tk, tv = (t.npu() for t in tnd())
    with pytest.raises(NotImplementedError, match="pse with input_layout 'TND'"):
        torch_npu.npu_fusion_attention(tq, tk, tv, N, "TND", pse=torch.zeros(N * 12).npu(), actual_seq_qlen=AQ,
                                       actual_seq_kvlen=AKV)  # fmt: skip
