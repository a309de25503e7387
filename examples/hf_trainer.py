"""A Hugging Face Trainer script with DeepSpeed: a tiny Llama (random weights) on synthetic tokens,
so it runs anywhere (CPU: DS_ACCELERATOR=cpu).

    deepspeed examples/hf_trainer.py --deepspeed ds_config.json                # on its own
    autoscale tune --script examples/hf_trainer.py --script-config-flag --deepspeed --backend cpu

Trainer takes the ds_config from `--deepspeed` and requires the batch sizes and precision of its
own arguments to agree with it, so the script reads them from the config, as a script handed
configs by a tuner does. `AutoscaleCallback` (marked "autoscale") lets autoscale measure it.
"""

import argparse
import json
import tempfile

import torch
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

from autoscale.integrations.hf import AutoscaleCallback  # autoscale


class SyntheticTokens(torch.utils.data.Dataset):
    def __init__(self, *, samples: int, seq_len: int, vocab_size: int):
        self.tokens = torch.randint(vocab_size, (samples, seq_len), generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, index: int) -> dict:
        return {"input_ids": self.tokens[index], "labels": self.tokens[index]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deepspeed", required=True, help="the ds_config JSON")
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps")
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--local_rank", type=int, default=-1)
    args = parser.parse_args()

    ds_config = json.loads(open(args.deepspeed).read())
    micro_batch, grad_accum = ds_config["train_micro_batch_size_per_gpu"], ds_config["gradient_accumulation_steps"]
    config = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=args.seq_len)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    training = TrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="hf_trainer-"), deepspeed=args.deepspeed, max_steps=args.steps,
        per_device_train_batch_size=micro_batch, gradient_accumulation_steps=grad_accum,
        bf16=ds_config.get("bf16", {}).get("enabled", False), fp16=ds_config.get("fp16", {}).get("enabled", False),
        learning_rate=3e-4, max_grad_norm=ds_config.get("gradient_clipping", 1.0), logging_steps=args.steps,
        save_strategy="no", report_to=[], dataloader_num_workers=0, disable_tqdm=True,
        use_cpu=not torch.cuda.is_available())
    dataset = SyntheticTokens(samples=args.steps * ds_config["train_batch_size"], seq_len=args.seq_len,
                              vocab_size=config.vocab_size)
    trainer = Trainer(model=model, args=training, train_dataset=dataset,
                      callbacks=[AutoscaleCallback(tokens_per_sample=args.seq_len)])  # autoscale
    trainer.train()


if __name__ == "__main__":
    main()
