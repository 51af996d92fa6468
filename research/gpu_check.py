"""GPU correctness checks (never part of the unit tests, which run on CPU): eager == SDPA on CUDA,
bf16 training step, SDPA's flash kernel on unpadded batches, cached == uncached generation, and
flash_attention_2 when the package is installed. Usage: python scripts/gpu_check.py"""

import argparse
import copy
import sys

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from vanilla_transformer import VanillaTransformerConfig, VanillaTransformerForConditionalGeneration


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda", help="torch device to check")
    return parser.parse_args()


def build(config, attn, device, dtype=torch.float32):
    model = VanillaTransformerForConditionalGeneration._from_config(
        copy.deepcopy(config), attn_implementation=attn, dtype=dtype
    )
    return model.to(device).eval()


def main():
    args = parse_args()
    dev = torch.device(args.device)
    print("device:", torch.cuda.get_device_name(dev) if dev.type == "cuda" else dev)
    torch.manual_seed(0)
    for scaling in ("sqrt_dk", "key_norm_sum"):
        config = VanillaTransformerConfig(
            vocab_size=1000,
            d_model=256,
            encoder_layers=2,
            decoder_layers=2,
            encoder_attention_heads=4,
            decoder_attention_heads=4,
            encoder_ffn_dim=512,
            decoder_ffn_dim=512,
            attention_scaling=scaling,
            dropout=0.0,
        )
        sdpa = build(config, "sdpa", dev)
        eager = build(config, "eager", dev)
        eager.load_state_dict(sdpa.state_dict())
        x = torch.randint(4, 1000, (4, 33), device=dev)
        mask = torch.ones_like(x)
        mask[1, 20:] = 0
        y = torch.randint(4, 1000, (4, 17), device=dev)
        torch.backends.cuda.matmul.allow_tf32 = False  # compare true fp32
        with torch.no_grad():
            a = sdpa(input_ids=x, attention_mask=mask, labels=y).logits
            b = eager(input_ids=x, attention_mask=mask, labels=y).logits
        print(f"[{scaling}] fp32 eager vs sdpa max |diff| = {(a - b).abs().max().item():.2e}")

        # bf16: a training step, and the flash kernel forced on an unpadded batch.
        bf16 = build(config, "sdpa", dev, torch.bfloat16).train()
        loss = bf16(input_ids=x, labels=y).loss
        loss.backward()
        print(
            f"[{scaling}] bf16 train step loss {loss.item():.3f}, finite grads:",
            all(torch.isfinite(p.grad).all() for p in bf16.parameters() if p.grad is not None),
        )
        with torch.no_grad(), sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            out = bf16.eval()(input_ids=x, labels=y).logits
        print(
            f"[{scaling}] flash kernel forward ok: {tuple(out.shape)} finite={bool(torch.isfinite(out).all())}"
        )

        g1 = sdpa.generate(x, attention_mask=mask, num_beams=4, max_new_tokens=20)
        g2 = sdpa.generate(x, attention_mask=mask, num_beams=4, max_new_tokens=20, use_cache=False)
        print(f"[{scaling}] beam-4 cached == uncached on GPU: {torch.equal(g1, g2)}")
        try:
            fa = build(config, "flash_attention_2", dev, torch.bfloat16)
            fa.load_state_dict(bf16.state_dict())
            with torch.no_grad():
                c = fa(input_ids=x, attention_mask=mask, labels=y).logits.float()
                d = bf16(input_ids=x, attention_mask=mask, labels=y).logits.float()
            print(
                f"[{scaling}] flash_attention_2 vs sdpa (bf16) max |diff| = {(c - d).abs().max().item():.2e}"
            )
        except (ImportError, ValueError) as err:
            print(f"[{scaling}] flash_attention_2 unavailable: {str(err)[:120]}")


if __name__ == "__main__":
    sys.exit(main())
