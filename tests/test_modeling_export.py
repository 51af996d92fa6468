"""torch.compile and torch.export: the decode path has no Python branch on tensor values, so a
static-cache decode step compiles as one graph and the model exports with its outputs unchanged."""

import copy

import pytest
import torch
from torch._dynamo.testing import CompileCounter
from torch.export import Dim
from transformers import GenerationConfig

from tests.conftest import sharpened_tiny_model

GREEDY = dict(num_beams=1, do_sample=False)


build = sharpened_tiny_model


def sources():
    x = torch.randint(4, 30, (2, 7))
    return x, torch.ones_like(x)


@pytest.mark.parametrize("scaling", ["sqrt_dk", "key_norm_sum"])
def test_static_cache_greedy_decoding_compiles_fullgraph_without_recompiling_as_it_grows(scaling):
    eager = build(attention_scaling=scaling)
    x, mask = sources()
    graphs = {}
    for new_tokens in (4, 16):
        # dynamo's cache is per code object (our forward's wrapper), shared by every model and
        # test in the process: start empty, so its recompile limit counts this run's graphs only.
        torch._dynamo.reset()
        model = copy.deepcopy(eager)
        counter = CompileCounter()  # counts the graphs dynamo compiles; fullgraph refuses breaks
        model.forward = torch.compile(model.forward, backend=counter, fullgraph=True)
        limits = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens)
        compiled = model.generate(
            x, attention_mask=mask, cache_implementation="static", **GREEDY, **limits
        )
        expected = eager.generate(x, attention_mask=mask, **GREEDY, **limits)
        assert torch.equal(compiled, expected)
        graphs[new_tokens] = counter.frame_count
    # Two graphs (the first step fills the cross-attention cache, later steps reuse it), whether
    # 4 or 16 tokens are decoded: no recompilation per position.
    assert graphs == {4: 2, 16: 2}


def test_torch_export_of_forward_with_dynamic_shapes_matches_eager():
    model = build()
    x, mask = sources()
    y = torch.randint(4, 30, (2, 5))
    batch, source, target = Dim("batch"), Dim("source"), Dim("target")
    program = torch.export.export(
        model,
        args=(),
        kwargs=dict(input_ids=x, attention_mask=mask, decoder_input_ids=y, use_cache=False),
        dynamic_shapes=dict(
            input_ids={0: batch, 1: source},
            attention_mask={0: batch, 1: source},
            decoder_input_ids={0: batch, 1: target},
            use_cache=None,
        ),
    )
    x2, y2 = torch.randint(4, 30, (3, 9)), torch.randint(4, 30, (3, 4))
    mask2 = torch.ones_like(x2)
    exported = program.module()(
        input_ids=x2, attention_mask=mask2, decoder_input_ids=y2, use_cache=False
    )
    eager = model(input_ids=x2, attention_mask=mask2, decoder_input_ids=y2)
    torch.testing.assert_close(exported.logits, eager.logits, rtol=1e-5, atol=1e-5)


def _exporters():
    try:
        from transformers.exporters.configs import DynamoConfig
        from transformers.exporters.exporter_dynamo import DynamoExporter
        from transformers.exporters.utils import decompose_for_generation
    except ImportError:
        pytest.skip("this transformers release has no transformers.exporters (added in 5.24)")
    return DynamoExporter, DynamoConfig, decompose_for_generation


@pytest.mark.slow
@pytest.mark.parametrize("dynamic", [False, True], ids=["static_shapes", "dynamic_shapes"])
@pytest.mark.parametrize("cache", ["dynamic", "static"])
def test_torch_export_of_generate_matches_eager_for_each_cache_and_shape_mode(cache, dynamic):
    """transformers' own export route (`DynamoExporter.export_for_generation`): it captures the
    prefill and decode forwards of a real `generate()` and exports each."""
    DynamoExporter, DynamoConfig, decompose_for_generation = _exporters()
    model = build()
    x, mask = sources()
    generation_config = GenerationConfig(**{**model.generation_config.to_dict(), **GREEDY})
    if cache == "static":
        generation_config.cache_implementation = "static"
        generation_config.max_cache_len = 32
    inputs = {"input_ids": x, "attention_mask": mask}
    exported = DynamoExporter().export_for_generation(
        model, inputs, DynamoConfig(dynamic=dynamic), generation_config=generation_config
    )
    stages = decompose_for_generation(model, inputs, generation_config=generation_config)
    assert set(exported.components) == set(stages) == {"prefill", "decode"}
    for name, (submodel, stage_inputs) in stages.items():
        expected = submodel(**copy.deepcopy(stage_inputs)).logits
        program = exported.components[name].program
        # The exporter turns flags (use_cache, return_dict) into constants of the program.
        tensors = {k: v for k, v in stage_inputs.items() if k not in ("use_cache", "return_dict")}
        got = program.module()(**copy.deepcopy(tensors))
        got = got.logits if hasattr(got, "logits") else got[0]
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
