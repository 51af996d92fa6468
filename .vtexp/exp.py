"""Quick tuning harness (not project code): BPE + token batches + LS loss + BLEU on validation."""
import argparse
import json
import math
import os
import random
import sys
import time

try:
    import datasets
except ImportError:
    datasets = None
import sacrebleu
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from vanilla_transformer import VanillaTransformerConfig, VanillaTransformerForConditionalGeneration

p = argparse.ArgumentParser()
p.add_argument("--corpus", default="/tmp/vt_exp/corpus/kjv-rv1909")
p.add_argument("--vocab", type=int, default=8000)
p.add_argument("--d_model", type=int, default=256)
p.add_argument("--ffn", type=int, default=1024)
p.add_argument("--heads", type=int, default=4)
p.add_argument("--enc", type=int, default=3)
p.add_argument("--dec", type=int, default=3)
p.add_argument("--dropout", type=float, default=0.1)
p.add_argument("--norm_first", type=int, default=1)
p.add_argument("--lr", type=float, default=1e-3, help="peak lr")
p.add_argument("--warmup", type=int, default=400)
p.add_argument("--tokens", type=int, default=2500)
p.add_argument("--max_len", type=int, default=96)
p.add_argument("--steps", type=int, default=1000)
p.add_argument("--minutes", type=float, default=1e9)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--device", default="cpu")
p.add_argument("--eval_n", type=int, default=300)
p.add_argument("--beams", type=int, default=1)
p.add_argument("--tag", default="")
p.add_argument("--bf16", type=int, default=0)
p.add_argument("--ls", type=float, default=0.1)
p.add_argument("--decay", default="invsqrt", help="invsqrt|linear|cos")
p.add_argument("--eval_every", type=int, default=0)
p.add_argument("--wd", type=float, default=0.0)
p.add_argument("--bench", type=int, default=0)
args = p.parse_args()
torch.set_num_threads(args.threads)
torch.manual_seed(0)
random.seed(0)
dev = torch.device(args.device)

if args.corpus.endswith(".jsonl") or os.path.isdir(args.corpus) and os.path.exists(args.corpus + "/train.jsonl"):
    ds = {k: {"translation": [json.loads(l)["translation"] for l in open(f"{args.corpus}/{k}.jsonl")]} for k in ("train", "validation")}
else:
    ds = datasets.load_from_disk(args.corpus)
tok_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"tok{args.vocab}.json")
if not os.path.exists(tok_path):
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tr = trainers.BpeTrainer(vocab_size=args.vocab, special_tokens=["<pad>", "<s>", "</s>", "<unk>"])
    texts = [r["en"] for r in ds["train"]["translation"]] + [r["es"] for r in ds["train"]["translation"]]
    tok.train_from_iterator(texts, tr)
    tok.save(tok_path)
tok = Tokenizer.from_file(tok_path)
V = tok.get_vocab_size()


def enc(texts):
    return [e.ids + [2] for e in tok.encode_batch(texts)]


tr_rows = ds["train"]["translation"]
src = enc([r["en"] for r in tr_rows])
tgt = enc([r["es"] for r in tr_rows])
pairs = [(s, t) for s, t in zip(src, tgt) if len(s) <= args.max_len and len(t) <= args.max_len]
print(f"vocab {V} pairs {len(pairs)}/{len(src)} mean src {sum(len(s) for s,_ in pairs)/len(pairs):.1f}"
      f" tgt {sum(len(t) for _,t in pairs)/len(pairs):.1f}", flush=True)


def batches(epoch):
    rng = random.Random(epoch)
    idx = list(range(len(pairs)))
    rng.shuffle(idx)
    # sort within chunks of 100 batches worth
    out = []
    chunk = 4096
    for c in range(0, len(idx), chunk):
        part = sorted(idx[c:c + chunk], key=lambda i: (len(pairs[i][0]), len(pairs[i][1])))
        cur = []
        mx = 0
        for i in part:
            L = max(len(pairs[i][0]), len(pairs[i][1]))
            if cur and max(mx, L) * (len(cur) + 1) > args.tokens:
                out.append(cur)
                cur, mx = [], 0
            cur.append(i)
            mx = max(mx, L)
        if cur:
            out.append(cur)
    rng.shuffle(out)
    return out


def collate(b):
    S = max(len(pairs[i][0]) for i in b)
    T = max(len(pairs[i][1]) for i in b)
    x = torch.zeros(len(b), S, dtype=torch.long)
    y = torch.full((len(b), T), -100, dtype=torch.long)
    for j, i in enumerate(b):
        s, t = pairs[i]
        x[j, :len(s)] = torch.tensor(s)
        y[j, :len(t)] = torch.tensor(t)
    return x, (x != 0).long(), y


cfg = VanillaTransformerConfig(
    vocab_size=V, d_model=args.d_model, encoder_layers=args.enc, decoder_layers=args.dec,
    encoder_attention_heads=args.heads, decoder_attention_heads=args.heads,
    encoder_ffn_dim=args.ffn, decoder_ffn_dim=args.ffn, dropout=args.dropout,
    norm_first=bool(args.norm_first), max_position_embeddings=256,
)
model = VanillaTransformerForConditionalGeneration(cfg).to(dev)
nparams = sum(p.numel() for p in model.parameters())
opt = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.98), eps=1e-9,
                       weight_decay=args.wd)


def lr_at(step):
    step = max(step, 1)
    if step < args.warmup:
        return args.lr * step / args.warmup
    if args.decay == "invsqrt":
        return args.lr * math.sqrt(args.warmup / step)
    frac = min(1.0, (step - args.warmup) / max(1, args.steps - args.warmup))
    if args.decay == "linear":
        return args.lr * max(0.02, 1 - frac)
    return args.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * frac)))


val = ds["validation"]["translation"][: args.eval_n]


def evaluate():
    model.eval()
    hyps = []
    srcs = [r["en"] for r in val]
    order = sorted(range(len(srcs)), key=lambda i: len(srcs[i]))
    outs = {}
    with torch.no_grad():
        for c in range(0, len(order), 64):
            ids = [order[k] for k in range(c, min(c + 64, len(order)))]
            e = enc([srcs[i] for i in ids])
            S = max(map(len, e))
            x = torch.zeros(len(e), S, dtype=torch.long)
            for j, s in enumerate(e):
                x[j, :len(s)] = torch.tensor(s)
            x = x.to(dev)
            g = model.generate(input_ids=x, attention_mask=(x != 0).long(), num_beams=args.beams,
                               max_new_tokens=S + 20)
            for j, i in enumerate(ids):
                outs[i] = tok.decode([t for t in g[j].tolist() if t > 3])
    hyps = [outs[i] for i in range(len(srcs))]
    refs = [r["es"] for r in val]
    model.train()
    b = sacrebleu.corpus_bleu(hyps, [refs]).score
    c = sacrebleu.corpus_chrf(hyps, [refs]).score
    return b, c, hyps[:3]


t0 = time.time()
step = 0
ntok = 0
epoch = 0
model.train()
done = False
ema = None
log = []
while not done:
    for b in batches(epoch):
        x, m, y = collate(b)
        x, m, y = x.to(dev), m.to(dev), y.to(dev)
        for g in opt.param_groups:
            g["lr"] = lr_at(step + 1)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bool(args.bf16)):
            logits = model(input_ids=x, attention_mask=m, labels=y).logits
        lp = F.log_softmax(logits.float(), -1)
        mask = y != -100
        yy = y.clamp_min(0)
        nll = -lp.gather(-1, yy.unsqueeze(-1)).squeeze(-1)
        smooth = -lp.mean(-1)
        loss = ((1 - args.ls) * nll + args.ls * smooth)[mask].sum() / mask.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        ntok += int(mask.sum())
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        el = time.time() - t0
        if step % 100 == 0:
            print(f"step {step} loss {ema:.3f} lr {lr_at(step):.2e} tok/s {ntok/el:.0f} ep {epoch} "
                  f"t {el/60:.1f}m", flush=True)
        if args.eval_every and step % args.eval_every == 0:
            bl, ch, _ = evaluate()
            print(f"  EVAL step {step} bleu {bl:.2f} chrf {ch:.1f}", flush=True)
            log.append((step, bl, ch))
        if args.bench and step == 5:
            tb, nb = time.time(), ntok
        if args.bench and step == 5 + args.bench:
            r = (ntok - nb) / (time.time() - tb)
            print("BENCH", json.dumps(dict(vars(args), params=nparams, cpu_tok_s=r, upd_s=args.bench / (time.time() - tb))), flush=True)
            sys.exit(0)
        if step >= args.steps or el > args.minutes * 60:
            done = True
            break
    epoch += 1
train_time = time.time() - t0
bl, ch, ex = evaluate()
res = dict(vars(args), params=nparams, final_loss=ema, bleu=bl, chrf=ch, steps=step,
           train_min=train_time / 60, tok_per_s=ntok / train_time, epochs=epoch, ex=ex, log=log)
print("RESULT", json.dumps(res), flush=True)
