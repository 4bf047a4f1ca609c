"""Example inputs of any model (call, move, resample the batch) and outputs flattened to named tensors."""

from __future__ import annotations

from collections import namedtuple

import pytest
import torch

from ascend_patch.tools.inputs import Inputs, flatten_outputs
from ascend_patch.tools.models import InputError


def test_of_takes_a_tensor_a_tuple_or_a_dict():
    x = torch.ones(2, 3)
    assert Inputs.of(x).args == (x,) and Inputs.of([x, 1]).args == (x, 1)
    assert Inputs.of({"pixel_values": x}).kwargs == {"pixel_values": x}
    given = Inputs((x,), {"scale": 2})
    assert Inputs.of(given) is given and given.call(lambda a, scale: a * scale).sum() == 12
    with pytest.raises(InputError, match="a tensor, a tuple/list of arguments or a dict"):
        Inputs.of(3.0)


def test_to_casts_floats_keeps_integers_and_nesting():
    ids, mask = torch.arange(4).view(2, 2), torch.ones(2, 2, dtype=torch.bool)
    moved = Inputs((torch.zeros(2, 3),), {"batch": {"ids": ids, "pair": (mask, torch.ones(2))}}).to("cpu",
                                                                                                    torch.bfloat16)
    assert moved.args[0].dtype == torch.bfloat16
    assert moved.kwargs["batch"]["ids"].dtype == torch.long and moved.kwargs["batch"]["pair"][0].dtype == torch.bool
    assert isinstance(moved.kwargs["batch"]["pair"], tuple) and moved.kwargs["batch"]["pair"][1].dtype == torch.bfloat16


def test_with_batch_resamples_batched_tensors_only():
    x = torch.arange(6.0).view(3, 2)
    shared = torch.ones(5, 5)  # not batched: its first dimension is not the example's batch size
    example = Inputs((x,), {"mask": shared, "scale": torch.tensor(2.0)})
    assert example.batch_size == 3 and example.with_batch(3) is example
    bigger = example.with_batch(5)
    assert bigger.args[0].tolist() == [[0, 1], [2, 3], [4, 5], [0, 1], [2, 3]]
    assert bigger.kwargs["mask"] is shared and bigger.kwargs["scale"].dim() == 0
    assert example.with_batch(1).args[0].tolist() == [[0, 1]]
    with pytest.raises(InputError, match="no tensor with a batch dimension"):
        Inputs((torch.tensor(1.0),)).with_batch(2)


def test_describe_names_each_tensor():
    text = Inputs((torch.zeros(1, 3),), {"ids": torch.zeros(1, 4, dtype=torch.long)}).describe()
    assert text == "arg0: float32 (1, 3), ids: int64 (1, 4)"


def test_flatten_outputs_names_and_skips():
    Pair = namedtuple("Pair", "a b")
    out = flatten_outputs({"logits": torch.ones(2), "hidden": (torch.zeros(1), Pair(torch.ones(1), None)),
                           "cache": object(), "loss": None})
    assert list(out.tensors) == ["logits", "hidden[0]", "hidden[1][0]"]
    assert out.skipped == {"cache": "object"}
    assert list(flatten_outputs(torch.ones(1)).tensors) == ["output"]
    assert list(flatten_outputs((torch.ones(1), [torch.ones(1)])).tensors) == ["output[0]", "output[1][0]"]
    with pytest.raises(InputError, match="returned no tensors"):
        flatten_outputs("text")


def test_flatten_a_model_output():
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    out = flatten_outputs(BaseModelOutputWithPooling(last_hidden_state=torch.ones(1, 2, 3),
                                                     pooler_output=torch.ones(1, 3)))
    assert list(out.tensors) == ["last_hidden_state", "pooler_output"] and out.skipped == {}
