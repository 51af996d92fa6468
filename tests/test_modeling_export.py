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


def sources(padded=False):
    x = torch.randint(4, 30, (2, 7))
    mask = torch.ones_like(x)
    if padded:  # the second source is right-padded: the masks are real 4D masks, not None
        x[1, 5:], mask[1, 5:] = 0, 0
    return x, mask


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
        from transformers.exporters.utils import decompose_for_generation, get_leaf_tensors
    except ImportError:
        pytest.skip("this transformers release has no transformers.exporters (added in 5.24)")
    return DynamoExporter, DynamoConfig, decompose_for_generation, get_leaf_tensors


def run_program(program, inputs):
    """The exporter turns flags (use_cache, return_dict) into constants of the program."""
    tensors = {k: v for k, v in inputs.items() if k not in ("use_cache", "return_dict")}
    return program.module()(**copy.deepcopy(tensors))


def assert_same_outputs(got, expected, get_leaf_tensors):
    """Every tensor of the output by its dotted path, the cache's keys and values included: the
    comparison transformers' own export tests make (a cache carrying anything more than transformers
    puts in it shows up here as missing keys)."""
    torch.testing.assert_close(
        get_leaf_tensors(got), get_leaf_tensors(expected), rtol=1e-5, atol=1e-5
    )


# transformers 5.20's exporter (the declared floor) calls torch.jit.script, which torch 2.13
# deprecates: a notice from transformers' own code, not ours (newer releases no longer call it).
OLD_EXPORTER_NOTICE = pytest.mark.filterwarnings(
    "ignore:`torch.jit.script` is deprecated:DeprecationWarning"
)


@OLD_EXPORTER_NOTICE
@pytest.mark.parametrize("scaling", ["sqrt_dk", "key_norm_sum"])
@pytest.mark.parametrize("dynamic", [False, True], ids=["static_shapes", "dynamic_shapes"])
def test_exported_forward_returns_what_eager_returns_cache_included(dynamic, scaling):
    """transformers' `DynamoExporter.export` of `forward`, with the cache it builds and returns."""
    DynamoExporter, DynamoConfig, _, get_leaf_tensors = _exporters()
    model = build(attention_scaling=scaling)
    x, mask = sources(padded=True)
    inputs = dict(input_ids=x, attention_mask=mask, decoder_input_ids=torch.randint(4, 30, (2, 5)))
    inputs["use_cache"] = True
    exported = DynamoExporter().export(model, copy.deepcopy(inputs), DynamoConfig(dynamic=dynamic))
    # transformers >= 5.2x wraps the program in an export record; the 5.20 floor returns it as is.
    program = exported.components["model"].program if hasattr(exported, "components") else exported
    assert_same_outputs(
        run_program(program, inputs), model(**copy.deepcopy(inputs)), get_leaf_tensors
    )
    if dynamic:  # other batch, source and target lengths through the same program
        x2 = torch.randint(4, 30, (3, 9))
        other = dict(inputs, input_ids=x2, attention_mask=torch.ones_like(x2))
        other["decoder_input_ids"] = torch.randint(4, 30, (3, 4))
        assert_same_outputs(
            run_program(program, other), model(**copy.deepcopy(other)), get_leaf_tensors
        )


@pytest.mark.slow
@OLD_EXPORTER_NOTICE
@pytest.mark.parametrize("scaling", ["sqrt_dk", "key_norm_sum"])
@pytest.mark.parametrize("dynamic", [False, True], ids=["static_shapes", "dynamic_shapes"])
@pytest.mark.parametrize("cache", ["dynamic", "static"])
def test_torch_export_of_generate_matches_eager_for_each_cache_and_shape_mode(
    cache, dynamic, scaling
):
    """transformers' own export route (`DynamoExporter.export_for_generation`): it captures the
    prefill and decode forwards of a real `generate()` and exports each; each program returns
    what the eager forward returns for the same inputs, logits and cache alike."""
    DynamoExporter, DynamoConfig, decompose_for_generation, get_leaf_tensors = _exporters()
    model = build(attention_scaling=scaling)
    x, mask = sources(padded=True)
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
        expected = submodel(**copy.deepcopy(stage_inputs))
        got = run_program(exported.components[name].program, stage_inputs)
        assert_same_outputs(got, expected, get_leaf_tensors)
