"""Verbs that use a model: list, info, generate, chat, eval."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

import lmzoo
from lmzoo.devices import resolve_device
from lmzoo.errors import LmzooError
from lmzoo.io import check_own_file, is_jsonl_with, replace_own_file
from lmzoo.memory import peak_rss_mb
from lmzoo.paths import check_output_file
from lmzoo.training.checkpointing import resolve_model_dir
from lmzoo.cli.hf_commands import add_harness_arguments, check_harness_options, run_harness_eval
from lmzoo.training.qa_eval import unescape

# `info` measures FLOPs with a real forward and backward pass at --seq-len.
MAX_INFO_SEQ_LEN = 1 << 16

PREDICTIONS = is_jsonl_with("question", "reference", "prediction")  # an earlier `eval --qa --out` file

def register(verbs) -> None:
    p = verbs.add_parser("list", help="list architectures and their size presets")
    p.set_defaults(run=run_list)

    p = verbs.add_parser("info", help="parameters and FLOPs per token of an architecture at a size; or what a "
                         "saved model, checkpoint or run holds (config, step, tokens, val loss, checkpoints)")
    p.add_argument("arch", metavar="ARCH_OR_MODEL",
                   help="architecture name (see `lmzoo list`), or a saved model, checkpoint or run directory "
                        "(RUN@best: its checkpoint with the lowest val loss)")
    p.add_argument("--size", default="nano", help="size preset (default: nano)")
    p.add_argument("--vocab-size", type=int, default=259, help="vocabulary size (default: 259, bytes)")
    p.add_argument("--seq-len", type=int, default=256, help="sequence length for the FLOP count (default: 256)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(run=run_info)

    p = verbs.add_parser("generate", help="generate text from a trained model")
    p.add_argument("model", help="model directory (save_pretrained output, a training checkpoint, or a training "
                   "run's --out directory for its newest checkpoint)")
    p.add_argument("--prompt", action="append", default=None,
                   help="prompt text; repeat for a batch of prompts (default: read stdin)")
    p.add_argument("--context-file", default=None, metavar="FILE",
                   help="UTF-8 text fed through the model in chunks before the prompt (long contexts; memory "
                        "stays flat for architectures with a constant-size state); the prompt, optional here, "
                        "follows the file's text")
    p.add_argument("--chunk-size", type=int, default=4096,
                   help="--context-file: tokens per forward pass while feeding (default: 4096)")
    add_sampling_arguments(p)
    p.add_argument("--no-stream", action="store_true", help="print the result at the end instead of streaming")
    p.set_defaults(run=run_generate)

    p = verbs.add_parser("chat", help="a conversation: each line is your next message; the model sees the whole "
                         "conversation in lmzoo's chat template (docs/generation.md)")
    p.add_argument("model", help="model directory")
    p.add_argument("--system", default=None, help="a system message that opens the conversation")
    add_sampling_arguments(p)
    p.set_defaults(run=run_chat)

    p = verbs.add_parser("eval", help="loss, bits per byte and perplexity on text (--data), or exact/substring "
                         "match on question/answer JSONL (--qa)")
    p.add_argument("model", help="model directory")
    p.add_argument("--data", nargs="+", default=None, help="text/JSONL file(s) or directories to evaluate on")
    p.add_argument("--qa", default=None, metavar="FILE",
                   help="Q&A JSONL ({question, answer} per line): greedy-answer each question, report exact and "
                        "substring match")
    p.add_argument("--template", default=None, type=unescape,
                   help="--qa prompt template with {question} (default: the one the model was fine-tuned with, "
                        "from its finetune.json, else 'Question: {question}\\nAnswer: ')")
    p.add_argument("--max-new-tokens", type=int, default=64, help="--qa, --harness: longest answer in tokens (default: 64)")
    p.add_argument("--examples", type=int, default=3, help="--qa: examples to print (default: 3)")
    p.add_argument("--out", default=None, help="--qa: write one JSON line per question (prediction, matches)")
    p.add_argument("--text-field", default="text", help="JSONL field holding the text (default: text)")
    p.add_argument("--seq-len", type=int, default=256, help="evaluation window length (default: 256)")
    p.add_argument("--batch-size", type=int, default=8, help="windows (--qa: questions) per batch (default: 8)")
    p.add_argument("--max-batches", type=int, default=None, help="stop after this many batches")
    p.add_argument("--device", default="auto", help="auto (default: CUDA when available), cpu, cuda, cuda:N or mps")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_harness_arguments(p)
    p.set_defaults(run=run_eval)


def add_sampling_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-new-tokens", type=int, default=200, help="tokens to generate (default: 200)")
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (default: 0.8)")
    p.add_argument("--top-k", type=int, default=None, help="sample from the k most likely tokens")
    p.add_argument("--top-p", type=float, default=None, help="nucleus sampling mass, e.g. 0.9")
    p.add_argument("--repetition-penalty", type=float, default=1.0, help="> 1 discourages repeats (default: 1)")
    p.add_argument("--stop", action="append", default=[], help="stop string; repeatable")
    p.add_argument("--seed", type=int, default=None, help="random seed for sampling")
    p.add_argument("--device", default="auto", help="auto (default: CUDA when available), cpu, cuda, cuda:N or mps")


def load_model_and_tokenizer(directory: str, device: torch.device):
    directory = resolve_model_dir(directory)  # for the message below; load() resolves it too
    model = lmzoo.load(directory, map_location=str(device))
    if model.tokenizer is None:
        raise LmzooError(f"'{directory}' has no tokenizer.json; save the model with its tokenizer")
    return model, model.tokenizer


def run_list(args) -> None:
    for arch in lmzoo.list_architectures():
        spec = lmzoo.get_architecture(arch)
        print(f"{arch:18s} {spec.description}")
        print(f"{'':18s} sizes: {', '.join(spec.presets)}")


def run_info(args) -> None:
    from lmzoo.accounting import describe

    if args.arch not in lmzoo.list_architectures() or Path(args.arch).exists():
        from lmzoo.cli.info_commands import run_info_saved
        return run_info_saved(args)
    if not 1 <= args.seq_len <= MAX_INFO_SEQ_LEN:
        raise LmzooError(f"--seq-len must be between 1 and {MAX_INFO_SEQ_LEN:,} (info runs one forward and "
                         f"backward pass at that length), got {args.seq_len:,}")
    info = describe(args.arch, args.size, vocab_size=args.vocab_size, seq_len=args.seq_len)
    if args.json:
        print(json.dumps(info, indent=2))
        return
    p, f = info["parameters"], info["flops_per_token"]
    print(f"{args.arch} / {args.size} (vocab {args.vocab_size}, seq_len {args.seq_len})")
    print(f"  parameters: {p['total']:,} total = {p['embedding']:,} embedding + {p['non_embedding']:,} other")
    print(f"  FLOPs/token: forward {f['forward'] / 1e6:,.2f} M, training {f['train'] / 1e6:,.2f} M")
    print("  config: " + ", ".join(f"{k}={v}" for k, v in info["config"].items() if k != "config_version"))


def sampling_options(args) -> dict:
    return {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "top_k": args.top_k,
            "top_p": args.top_p, "repetition_penalty": args.repetition_penalty, "seed": args.seed,
            "stop_strings": args.stop}


def check_sampling_options(args) -> None:
    """The sampling flags, checked before the model is loaded."""
    from lmzoo.generation import check_options, check_prompts

    check_options(args.temperature, args.top_k, args.top_p, args.repetition_penalty, args.max_new_tokens,
                  args.seed, args.stop)
    check_prompts(getattr(args, "prompt", None) or [])


def read_stdin_prompt() -> str:
    try:
        return sys.stdin.read()
    except UnicodeDecodeError:
        raise LmzooError("the prompt on stdin is not UTF-8 text; convert it, e.g. with iconv -t utf-8") from None


def run_generate(args) -> None:
    from lmzoo.generation import generate_text

    check_sampling_options(args)
    if args.chunk_size < 1:
        raise LmzooError(f"--chunk-size must be >= 1, got {args.chunk_size}")
    if args.context_file is not None:
        return run_generate_with_context(args)
    model, tok = load_model_and_tokenizer(args.model, resolve_device(args.device))
    prompts = args.prompt if args.prompt is not None else [read_stdin_prompt()]
    stream = not args.no_stream and len(prompts) == 1
    if stream:
        sys.stdout.write(prompts[0])
    texts = generate_text(model, tok, prompts, stream=stream, **sampling_options(args))
    if not stream:
        for prompt, text in zip(prompts, texts):
            print(prompt + text)
            if len(prompts) > 1:
                print("-" * 40)


def run_generate_with_context(args) -> None:
    """Feed --context-file in chunks, report speed and memory on stderr, then continue it."""
    import time

    from lmzoo.cli.progress import Progress
    from lmzoo.generation import feed, iter_file_token_chunks

    if args.prompt is not None and len(args.prompt) > 1:
        raise LmzooError(f"--context-file continues one text: pass at most one --prompt, got {len(args.prompt)}")
    prompt = args.prompt[0] if args.prompt else ""
    model, tok = load_model_and_tokenizer(args.model, resolve_device(args.device))
    state = model.init_state()
    growth = StateGrowth(args.chunk_size)
    started = time.perf_counter()
    with Progress("context", "tokens") as progress:
        def on_chunk(fed: int) -> None:
            progress.update(fed)
            growth.record(fed, state.nbytes())

        state, logits = feed(model, iter_file_token_chunks(args.context_file, tok), state=state,
                             chunk_size=args.chunk_size, progress=on_chunk)
    seconds = time.perf_counter() - started
    rate = state.position / max(seconds, 1e-9)
    print(f"lmzoo: fed {state.position:,} context tokens in {seconds:.2f} s ({rate:,.0f} tokens/s); "
          f"state {megabytes(growth.last)}; peak RSS {peak_rss_mb():,.0f} MB", file=sys.stderr)
    if not model.constant_state and growth.grew():
        others = [arch for arch in constant_state_architectures() if arch != model.config.arch]
        print(f"lmzoo: note: the {model.config.arch} state grew from {megabytes(growth.first_full)} after the "
              f"first chunk to {megabytes(growth.last_full)} after the last full one: its memory grows with the "
              f"context (architectures with a constant-size state: {', '.join(others)})", file=sys.stderr)
    continue_context(args, model, tok, prompt, state, logits)


class StateGrowth:
    """The state's size after the first and the latest *full* chunk: like with like, since a
    partial last chunk can leave a state smaller or larger without any growth."""

    def __init__(self, chunk_size: int):
        self.chunk_size = chunk_size
        self.first_full = self.last_full = self.last = None

    def record(self, fed: int, nbytes: int) -> None:
        self.last = nbytes
        if fed % self.chunk_size == 0:  # feed() cuts every chunk but the last at chunk_size
            self.first_full = nbytes if self.first_full is None else self.first_full
            self.last_full = nbytes

    def grew(self) -> bool:
        return self.first_full is not None and self.last_full > self.first_full


def megabytes(nbytes: int) -> str:
    return f"{nbytes / 2**20:.2f} MB"


def continue_context(args, model, tok, prompt: str, state, logits) -> None:
    from lmzoo.generation import generate_text

    stream = not args.no_stream
    if stream:
        sys.stdout.write(prompt)
    text = generate_text(model, tok, prompt, stream=stream, state=state, logits=logits, **sampling_options(args))[0]
    if not stream:
        print(prompt + text)


def run_chat(args) -> None:
    """A conversation in lmzoo's chat template (lmzoo.chat): every turn sees the turns before it."""
    from lmzoo.chat import STOP_STRINGS, format_chat, reply_text
    from lmzoo.generation import check_prompts, generate_text

    check_sampling_options(args)
    messages = [] if args.system is None else [{"role": "system", "content": args.system}]
    check_prompts([format_chat(messages)] if messages else [])
    model, tok = load_model_and_tokenizer(args.model, resolve_device(args.device))
    options = {**sampling_options(args), "stop_strings": [*STOP_STRINGS, *args.stop]}
    print("lmzoo chat: type a message and press Enter; /reset starts a new conversation; an empty line or Ctrl-D "
          "quits.", file=sys.stderr)
    while True:
        try:
            line = input("> ")
        except EOFError:
            break
        except UnicodeDecodeError:
            raise LmzooError("the prompt is not UTF-8 text; type or pipe UTF-8") from None
        if not line.strip():
            break
        if line.strip() == "/reset":
            del messages[1 if args.system is not None else 0:]
            continue
        messages.append({"role": "user", "content": line})
        generated = generate_text(model, tok, format_chat(messages), stream=True, **options)[0]
        messages.append({"role": "assistant", "content": reply_text(generated)})


def run_eval(args) -> None:
    import tempfile

    from lmzoo.cli.progress import Progress
    from lmzoo.data import TokenDataset, prepare_dataset
    from lmzoo.training.evaluate import evaluate

    if sum(option is not None for option in (args.data, args.qa, args.harness)) != 1:
        raise LmzooError("pass one of --data (text: loss, bits per byte), --qa (Q&A JSONL: exact/substring match) "
                         "or --harness (lm-evaluation-harness tasks)")
    check_eval_options(args)
    check_harness_options(args)
    if args.harness is not None:
        return run_harness_eval(args)
    if args.qa is not None:
        return run_qa_eval(args)
    device = resolve_device(args.device)
    model, tok = load_model_and_tokenizer(args.model, device)
    with tempfile.TemporaryDirectory(prefix="lmzoo-eval-") as tmp:
        # The whole input is the evaluation split: tokenise it with the model's own tokenizer.
        prepare_dataset(args.data, Path(tmp), tokenizer=tok, val_fraction=1.0, text_field=args.text_field)
        dataset = TokenDataset(Path(tmp), "val")
        with Progress("eval", "tokens") as progress:
            result = evaluate(model, dataset, batch_size=args.batch_size, seq_len=args.seq_len,
                              max_batches=args.max_batches, progress=progress.update)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        accuracy = f" | next-token accuracy {result['accuracy']:.4f}" if "accuracy" in result else ""
        print(f"loss {result['loss']:.4f} nats/token | {result['bpb']:.4f} bits/byte | "
              f"perplexity {result['ppl']:.2f}{accuracy} | {result['tokens']:,} tokens")


def check_eval_options(args) -> None:
    from lmzoo.training.qa_eval import check_template

    for flag, value in (("--seq-len", args.seq_len), ("--batch-size", args.batch_size),
                        ("--max-new-tokens", args.max_new_tokens), ("--max-batches", args.max_batches)):
        if value is not None and value < 1:
            raise LmzooError(f"{flag} must be >= 1, got {value}")
    if args.examples < 0:
        raise LmzooError(f"--examples must be >= 0, got {args.examples}")
    if args.template is not None:
        check_template(args.template)
    if args.out is not None:
        if args.qa is None:
            raise LmzooError("--out only applies to --qa (one JSON line per question); drop it or pass --qa")
        check_output_file(args.out)
    resolve_device(args.device)


def run_qa_eval(args) -> None:
    from lmzoo.training.qa_eval import evaluate_qa, read_qa_jsonl, template_for

    if args.out:  # now, not after generating every answer
        check_own_file(args.out, PREDICTIONS, "predictions file")
    model, tok = load_model_and_tokenizer(args.model, resolve_device(args.device))
    template = args.template if args.template is not None else template_for(resolve_model_dir(args.model))
    result = evaluate_qa(model, tok, read_qa_jsonl(args.qa), template=template, max_new_tokens=args.max_new_tokens,
                         batch_size=args.batch_size)
    items = result.pop("items")
    if args.out:
        replace_own_file(args.out, "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in items),
                         PREDICTIONS, "predictions file")
    result["examples"] = items[:args.examples]
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
        return
    print(f"exact match {result['exact_match']:.4f} | substring match {result['substring_match']:.4f} | "
          f"{result['n']:,} questions")
    for item in result["examples"]:
        mark = "exact" if item["exact"] else "substring" if item["substring"] else "wrong"
        print(f"  Q: {item['question']!r}\n     expected {item['reference']!r}, got {item['prediction']!r} ({mark})")


def constant_state_architectures() -> list[str]:
    """Registered architectures whose decoding state has a fixed size at their default config."""
    import lmzoo
    return [arch for arch in lmzoo.list_architectures() if lmzoo.create_model(arch, "nano").constant_state]
