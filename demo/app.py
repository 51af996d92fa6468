"""A page where a person types English and reads the model's translation (a Gradio app, ready to be
a Hugging Face Space: the Space runs `python app.py`).

The model is a folder or Hub id given by `--model`, else the `MODEL` environment variable, else the
main job's folder `runs/cpu-small/hub`. Options on the page: the beam size (the paper's 4 by
default; 1 is greedy) and a fast CPU path (int8 weights, `optimize_for_cpu_inference`).

    python demo/app.py --model runs/cpu-small/hub        # then open http://127.0.0.1:7860
    python demo/app.py --model runs/cpu-small/hub --engine ctranslate2 --quantization int8

The engine (`--engine` or `$ENGINE`: torch, ctranslate2, onnxruntime; `--quantization` or
`$QUANTIZATION`) is chosen when the page starts: an engine other than torch is exported on first
use (`vanilla_transformer.engines.load_translator`) and replaces the fast CPU option.

With this package installed the model loads without remote code; without it (a Space that only
installs transformers), the code saved beside the weights is used (`trust_remote_code=True`) and
the fast path is not offered: its int8 layers are part of the package.
"""

from __future__ import annotations

import argparse
import functools
import os

import gradio as gr

DEFAULT_MODEL = "runs/cpu-small/hub"
TITLE = "The original Transformer (Vaswani et al., 2017)"
EXAMPLES = [
    "In the beginning God created the heaven and the earth.",
    "And God said, Let there be light: and there was light.",
]


def load_pipelines(model: str):
    """(pipeline, fast pipeline or None): the float32 model and, where this package is installed
    and the CPU has int8 dot products (VNNI or AMX), its int8 copy for the fast CPU path. Elsewhere
    int8 would be slower than float32, so the page offers no fast path (`--engine ctranslate2
    --quantization int8` is fast there). A Space without the package loads the model through the
    code saved beside its weights and offers no fast path (the int8 layers live in the package)."""
    try:
        from vanilla_transformer import optimize_for_cpu_inference, translation_pipeline
        from vanilla_transformer.inference import cpu_has_fast_int8
    except ImportError:  # a Space without the package: the code saved beside the weights
        from transformers import pipeline

        pipe = pipeline("translation", model=model, trust_remote_code=True)
        pipe.model.eval()
        return pipe, None
    pipe = translation_pipeline(model)
    pipe.model.eval()
    if not cpu_has_fast_int8():
        return pipe, None
    fast_model = optimize_for_cpu_inference(pipe.model, mode="int8")
    return pipe, type(pipe)(model=fast_model, tokenizer=pipe.tokenizer)


def translate(pipe, fast, text, beam_size: float, fast_path: bool) -> str:
    """The translation of `text` line by line: output line i translates input line i (a blank line
    stays blank); anything but a string (None from an empty box) reads as its text."""
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    if not text.strip():
        return ""
    chosen = fast if fast_path and fast is not None else pipe
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    return "\n".join(translate_lines(chosen, lines, int(beam_size)))


def translate_lines(pipe, lines: list[str], beam_size: int) -> list[str]:
    """The best translation of each line: the package's one batched decoder
    (`vanilla_transformer.translation.translate_lines`), or the pipeline line by line in a Space
    without the package."""
    try:
        from vanilla_transformer.translation import DecodingOptions
        from vanilla_transformer.translation import translate_lines as batched
    except ImportError:
        return [
            pipe(line, num_beams=beam_size)[0]["translation_text"] if line.strip() else ""
            for line in lines
        ]
    options = DecodingOptions(num_beams=beam_size)
    if hasattr(pipe, "translate_hypotheses"):  # a Translator on an engine (--engine)
        return [texts[0] for texts in pipe.translate(lines, options)]
    return [texts[0] for texts in batched(pipe.model, pipe.tokenizer, lines, options)]


def load_engine(model: str, engine: str = "torch", quantization: str | None = None):
    """(pipe, fast) for `translate`: `load_pipelines` on torch, else the model on an engine of this
    package (`vanilla_transformer.engines.load_translator`, exported on first use) and no separate
    fast path."""
    if engine == "torch" and quantization is None:
        return load_pipelines(model)
    from vanilla_transformer.engines import load_translator

    return load_translator(model, engine, quantization), None


def build_demo(
    model: str | None = None, engine: str = "torch", quantization: str | None = None
) -> gr.Blocks:
    model = model or os.environ.get("MODEL") or DEFAULT_MODEL
    pipe, fast = load_engine(model, engine, quantization)
    with gr.Blocks(title=TITLE) as demo:
        gr.Markdown(
            f"# {TITLE}\nType English, read the translation (model: `{model}`, engine: {engine}"
            f"{' ' + quantization if quantization else ''}). The main job's "
            "model learned from Bible verses (KJV -> Reina-Valera 1909) and knows little else."
        )
        source = gr.Textbox(label="English", lines=3, placeholder=EXAMPLES[0])
        with gr.Row():
            beam_size = gr.Slider(1, 8, value=4, step=1, label="Beam size")
            fast_path = gr.Checkbox(
                value=False,
                label="Fast CPU path (int8 weights; each new input shape compiles first)",
                visible=fast is not None,
            )
        button = gr.Button("Translate", variant="primary")
        output = gr.Textbox(label="Translation", lines=3, interactive=False)
        gr.Examples(EXAMPLES, inputs=source)
        inputs = [source, beam_size, fast_path]
        fn = functools.partial(translate, pipe, fast)
        button.click(fn, inputs=inputs, outputs=output, api_name="translate")
        source.submit(fn, inputs=inputs, outputs=output)
    return demo


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model",
        default=None,
        help=f"Model folder or Hub id (default: $MODEL or {DEFAULT_MODEL}).",
    )
    parser.add_argument(
        "--host",
        default=None,
        help="Address to serve on (default: Gradio's, 127.0.0.1 or a Space's).",
    )
    parser.add_argument("--port", type=int, default=None, help="Port (default: Gradio's, 7860).")
    parser.add_argument(
        "--engine",
        default=os.environ.get("ENGINE", "torch"),
        choices=["torch", "ctranslate2", "onnxruntime"],
        help="What runs the model (default: $ENGINE or torch; the others need this package and "
        "its export extra, see docs/deployment.md).",
    )
    parser.add_argument(
        "--quantization",
        default=os.environ.get("QUANTIZATION") or None,
        help="The engine's weights, e.g. int8 (default: $QUANTIZATION or the engine's float32).",
    )
    args = parser.parse_args(argv)
    build_demo(args.model, args.engine, args.quantization).launch(
        server_name=args.host, server_port=args.port
    )


if __name__ == "__main__":
    main()
