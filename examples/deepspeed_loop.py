"""The classic DeepSpeed training script: `deepspeed.initialize`, then forward, backward and step,
here on a small causal transformer and synthetic tokens, so it runs anywhere (CPU: DS_ACCELERATOR=cpu).

    deepspeed examples/deepspeed_loop.py --deepspeed_config ds_config.json   # on its own
    autoscale tune --script examples/deepspeed_loop.py --backend cpu --trials 4   # tuned by autoscale

Two lines (marked "autoscale") let autoscale measure it; with --no-probe it is measured by
DeepSpeed's own step timing instead.
"""

import argparse

import deepspeed
import torch
from torch import nn

from autoscale import probe  # autoscale


class TinyCausalLM(nn.Module):
    def __init__(self, *, vocab_size: int, hidden: int, layers: int, heads: int, seq_len: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, hidden)
        self.position = nn.Parameter(torch.zeros(seq_len, hidden))
        block = nn.TransformerEncoderLayer(hidden, heads, 4 * hidden, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(block, layers)
        self.head = nn.Linear(hidden, vocab_size)
        self.register_buffer("causal", nn.Transformer.generate_square_subsequent_mask(seq_len), persistent=False)

    def forward(self, tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens) + self.position[: tokens.shape[1]]  # (B, T, C)
        x = self.blocks(x, mask=self.causal.to(x.dtype), is_causal=True)
        logits = self.head(x)  # (B, T, vocab)
        return nn.functional.cross_entropy(logits.float().flatten(0, 1), targets.flatten())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps")
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--vocab-size", type=int, default=512)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--no-probe", action="store_true", help="leave the measuring to DeepSpeed's step timer")
    parser.add_argument("--fail-at-step", type=int, default=None, help="raise at this step (to see a failed trial)")
    parser.add_argument("--local_rank", type=int, default=-1)
    parser = deepspeed.add_config_arguments(parser)
    args = parser.parse_args()

    torch.manual_seed(0)
    model = TinyCausalLM(vocab_size=args.vocab_size, hidden=args.hidden, layers=args.layers, heads=4,
                         seq_len=args.seq_len)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)
    engine, *_ = deepspeed.initialize(args=args, model=model, optimizer=optimizer)
    micro_batch, grad_accum = engine.train_micro_batch_size_per_gpu(), engine.gradient_accumulation_steps()
    generator = torch.Generator().manual_seed(1000 + engine.global_rank)
    for step in range(args.steps):
        if step == args.fail_at_step:
            raise SystemExit(f"step {step}: failing as asked by --fail-at-step")
        for _ in range(grad_accum):
            tokens = torch.randint(args.vocab_size, (micro_batch, args.seq_len + 1), generator=generator)
            loss = engine(tokens[:, :-1].to(engine.device), tokens[:, 1:].to(engine.device))
            engine.backward(loss)
            engine.step()
        if not args.no_probe:
            probe.step(tokens=micro_batch * grad_accum * args.seq_len, loss=loss.item())  # autoscale


if __name__ == "__main__":
    main()
