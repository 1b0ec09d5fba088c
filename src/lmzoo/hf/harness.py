"""lmzoo models in EleutherAI's lm-evaluation-harness: the `lmzoo` model class and local tasks.

`LmzooLM` answers the harness's three request types on any lmzoo model:
- loglikelihood: each (context, continuation) is cut to the last `max_length` tokens and scored
  in one forward pass; requests with inputs of equal length share a batch (lmzoo states keep all
  rows at one position, so rows are never padded);
- loglikelihood_rolling: the harness's own disjoint windows of `max_length` tokens
  (`get_rolling_token_windows`, as its HF model does), scored like loglikelihood;
- generate_until: lmzoo's generation (prompt fed once, then one token per step on the decoding
  state), greedy unless the task asks for sampling, cut at the task's stop strings.

It works from lm_eval's Python API (`simple_evaluate(model=LmzooLM(model=...))`), from its CLI
(`lm_eval --model lmzoo --model_args pretrained=DIR` after `import lmzoo.hf.harness`), and from
`lmzoo eval MODEL --harness TASKS`. `local_task` fills the shipped task YAMLs with a local file.
"""
from __future__ import annotations

import copy
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

from lmzoo.errors import LmzooError

try:
    from lm_eval import utils as lm_utils
    from lm_eval.api.model import TemplateLM
    from lm_eval.api.registry import register_model
except ImportError:
    raise LmzooError("the evaluation harness needs lm-eval: pip install 'lmzoo[eval]'") from None

from lmzoo.generation import generate_text
from lmzoo.training.checkpointing import load

TASKS_DIR = Path(__file__).parent / "tasks"
LOCAL_TASKS = {path.stem: path for path in sorted(TASKS_DIR.glob("*.yaml"))}


@register_model("lmzoo")
class LmzooLM(TemplateLM):
    """An lmzoo model for lm_eval: `LmzooLM(model=m)` or `LmzooLM(pretrained="path/to/model")`."""

    def __init__(self, pretrained: str | None = None, model=None, batch_size: int | str = 8, max_length: int = 256,
                 max_gen_toks: int = 256, device: str = "cpu", **unused) -> None:
        super().__init__()
        if (model is None) == (pretrained is None):
            raise LmzooError("LmzooLM needs a model directory (pretrained=DIR) or a loaded model (model=...)")
        self.model = (load(pretrained, map_location=device) if model is None else model).eval()
        if self.model.tokenizer is None:
            raise LmzooError("the model has no tokenizer; load a saved model or set model.tokenizer")
        self.tokenizer = self.model.tokenizer
        self.batch_size, self.max_length, self.max_gen_toks = int(batch_size), int(max_length), int(max_gen_toks)
        if min(self.batch_size, self.max_length, self.max_gen_toks) < 1:
            raise LmzooError("batch_size, max_length and max_gen_toks must be >= 1")

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_id

    @property
    def tokenizer_name(self) -> str:
        return f"lmzoo-{self.tokenizer.kind}"

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        return self.tokenizer.encode(string)

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        """(log P(continuation | context), whether the continuation is the greedy one) per request."""
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        by_length: dict[int, list[int]] = defaultdict(list)
        inputs = []  # (input ids, the continuation's ids it predicts at its last positions)
        for i, (_, context, continuation) in enumerate(requests):
            if not continuation:
                raise LmzooError("a loglikelihood request with an empty continuation has nothing to score")
            whole = (context + continuation)[-(self.max_length + 1):]
            inputs.append((whole[:-1], continuation[-min(len(continuation), len(whole) - 1):]))
            by_length[len(whole) - 1].append(i)
        device = self.model.device
        with torch.no_grad():
            for members in by_length.values():
                for batch in _batches(members, self.batch_size):
                    ids = torch.tensor([inputs[i][0] for i in batch], dtype=torch.long, device=device)
                    logprobs = F.log_softmax(self.model(ids).logits.float(), dim=-1)
                    for row, i in enumerate(batch):
                        results[i] = _score(logprobs[row], inputs[i][1])
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        totals = []
        for (text,) in (request.args for request in requests):
            windows = map(lm_utils.make_disjoint_window, lm_utils.get_rolling_token_windows(
                token_list=self.tok_encode(text), prefix_token=self.prefix_token_id, max_seq_len=self.max_length,
                context_len=1))
            scored = self._loglikelihood_tokens([(None, context, target) for context, target in windows])
            totals.append(sum(logprob for logprob, _ in scored))
        return totals

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Continuations, batched by identical generation options (lmzoo groups prompts of one token length)."""
        results: list[str | None] = [None] * len(requests)
        groups: dict[str, list[int]] = defaultdict(list)
        for i, request in enumerate(requests):
            groups[repr(sorted(request.args[1].items()))].append(i)
        for members in groups.values():
            options = copy.deepcopy(requests[members[0]].args[1])
            until = options.pop("until", None) or []
            until = [until] if isinstance(until, str) else list(until)
            max_new = int(options.pop("max_gen_toks", self.max_gen_toks))
            sampling = {"temperature": float(options.pop("temperature", 0.0)) if options.pop("do_sample", False)
                        else 0.0}
            for batch in _batches(members, self.batch_size):
                prompts = [self._cut_prompt(requests[i].args[0], max_new) for i in batch]
                texts = generate_text(self.model, self.tokenizer, prompts, max_new_tokens=max_new,
                                      stop_strings=until, **sampling)
                for i, text in zip(batch, texts):
                    results[i] = text
        return results

    def _cut_prompt(self, prompt: str, max_new: int) -> str:
        """The prompt's last max_length - max_new tokens, so prompt and answer fit the context length."""
        ids = self.tok_encode(prompt)
        keep = max(self.max_length - max_new, 1)
        return prompt if len(ids) <= keep else self.tokenizer.decode(ids[-keep:])


def _batches(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _score(logprobs: torch.Tensor, continuation: list[int]) -> tuple[float, bool]:
    """Sum of the continuation's log-probabilities (its tokens are the last positions' targets) and
    whether each of its tokens is the argmax."""
    n = len(continuation)
    picked = logprobs[-n:]
    target = torch.tensor(continuation, device=logprobs.device)
    return float(picked.gather(-1, target[:, None]).sum()), bool((picked.argmax(-1) == target).all())


def local_task(name: str, path: str | Path, cache_dir: str | Path | None = None) -> dict:
    """The shipped task `name` (see LOCAL_TASKS) as an lm_eval task config reading `path`."""
    if name not in LOCAL_TASKS:
        raise LmzooError(f"unknown local task '{name}'; choose one of: {', '.join(LOCAL_TASKS)}")
    path = Path(path)
    if not path.is_file():
        raise LmzooError(f"no file at '{path}' for task {name}; pass an existing text/JSONL file")
    config = yaml.safe_load(LOCAL_TASKS[name].read_text(encoding="utf-8"))
    config["dataset_kwargs"]["data_files"] = {"test": str(path.resolve())}
    if cache_dir is not None:
        config["dataset_kwargs"]["cache_dir"] = str(cache_dir)
    return config


def evaluate(model, tasks: list[str | dict], limit: int | None = None, num_fewshot: int | None = None,
             **options) -> dict:
    """lm_eval's `simple_evaluate` of an lmzoo model on `tasks` (names or `local_task` configs); `options`
    go to `LmzooLM` (batch_size, max_length, max_gen_toks). Returns lm_eval's results dict."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    # Indexing lm_eval's thousands of built-in task files takes seconds; local tasks do not need them.
    manager = TaskManager(include_defaults=any(isinstance(task, str) for task in tasks))
    return simple_evaluate(model=LmzooLM(model=model, **options), tasks=tasks, limit=limit,
                           num_fewshot=num_fewshot, task_manager=manager, bootstrap_iters=0, log_samples=False)


def task_specs(spec: str) -> list[str | dict]:
    """`--harness` text -> lm_eval tasks: comma-separated hub task names, or NAME=FILE for a local task."""
    tasks = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, sep, path = item.partition("=")
        if sep:
            tasks.append(local_task(name, path))
        elif name in LOCAL_TASKS:
            raise LmzooError(f"local task {name} reads a file: write {name}=FILE")
        else:
            tasks.append(name)
    if not tasks:
        raise LmzooError("--harness names no task; pass e.g. lmzoo_text=notes.txt or hellaswag")
    return tasks
