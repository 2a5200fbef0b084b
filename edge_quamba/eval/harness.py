"""lm-evaluation-harness adapter: any edge-quamba model kind as an lm-eval ``LM`` named ``edge-quamba``.

lm-eval (0.4.13) finds models only in its own built-in list, so registration needs an import. Two ways in:

    edge-quamba-lm-eval --model edge-quamba --model_args path=DIR --tasks hellaswag     # lm_eval's CLI, same flags
    import edge_quamba.eval.harness; lm_eval.simple_evaluate(model="edge-quamba", model_args="path=DIR", ...)

``edge-quamba-lm-eval`` registers the model and then runs lm_eval's own CLI with the same arguments, so every
lm_eval flag works; bad input (a missing or damaged model, an unknown task) is one line on stderr naming the flag
the user typed (``--model_args path=...``, ``--tasks``) and exit 1. Scoring uses the reference backend's batched forward (``backend=ref``), one request at a time,
with contexts truncated on the left to ``max_length`` tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from tqdm import tqdm

from edge_quamba.errors import EdgeQuambaError, InputError
from edge_quamba.folders import ModelFolder, load_model_tokenizer, load_reference_model, open_model
from edge_quamba.models.tokenizer import TextTokenizer
from edge_quamba.runtime.backends import TorchReferenceBackend, check_backend
from edge_quamba.runtime.sampling import GREEDY, NumericsError, sample_next

PROG = "edge-quamba-lm-eval"


@register_model("edge-quamba")
class EdgeQuambaLM(TemplateLM):
    """model_args: path (any model folder or hub id; default the demo model), tokenizer, max_length (2048)."""

    def __init__(self, path: str | None = None, tokenizer: str | None = None, max_length: int = 2048,
                 backend: str = "ref", **_: object):
        super().__init__()
        if backend != "ref":
            raise InputError(f"--model_args backend={backend}: not supported by the lm-eval adapter (use ref)")
        try:
            self.max_length = int(max_length)
        except ValueError:
            raise InputError(f"--model_args max_length={max_length}: not an integer") from None
        if self.max_length < 1:
            raise InputError(f"--model_args max_length={max_length}: must be >= 1")
        folder, self.tokenizer_ = open_model_args(path, tokenizer)
        self.model = load_reference_model(folder)

    @classmethod
    def from_model(cls, model: torch.nn.Module, tokenizer, max_length: int = 2048) -> "EdgeQuambaLM":
        """The adapter around a model already in memory (fp or quantized reference, on any device) and its
        TextTokenizer: benchmarks/quality.py scores its variants this way without writing each to disk. Pass the
        result to ``lm_eval.simple_evaluate(model=...)``."""
        lm = cls.__new__(cls)
        TemplateLM.__init__(lm)
        lm.max_length, lm.tokenizer_, lm.model = int(max_length), tokenizer, model
        return lm

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer_.eos_token_id

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        return self.tokenizer_.encode(string)

    def tok_decode(self, tokens: list[int]) -> str:
        return self.tokenizer_.decode(tokens)

    @torch.inference_mode()
    def _score(self, context: list[int], continuation: list[int]) -> tuple[float, bool]:
        """Sum of log p(continuation | context) and whether greedy decoding would produce it."""
        tokens = (context + continuation)[-(self.max_length + 1):]
        logits, _ = self.model(torch.tensor([tokens[:-1]], dtype=torch.long, device=self.model.device))
        logits = logits[0, -len(continuation):].float()
        if not torch.isfinite(logits).all():
            raise NumericsError("the model's logits are NaN or Inf on this input (its activations overflow)")
        logp = F.log_softmax(logits, dim=-1)
        target = torch.tensor(continuation, device=logp.device)
        return float(logp.gather(-1, target[:, None]).sum()), bool(torch.equal(logp.argmax(-1), target))

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        return [self._score(ctx, cont) for _, ctx, cont in tqdm(requests, disable=disable_tqdm, desc="loglikelihood")]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Log-likelihood of whole documents in disjoint windows of max_length tokens (lm-eval's own windowing)."""
        results = []
        for request in tqdm(requests, disable=disable_tqdm, desc="loglikelihood_rolling"):
            windows = get_rolling_token_windows(token_list=self.tok_encode(request.args[0]),
                                                prefix_token=self.prefix_token_id, max_seq_len=self.max_length,
                                                context_len=1)
            results.append(sum(self._score(*make_disjoint_window(w))[0] for w in windows))
        return results

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Greedy generation until a stop string, EOS or max_gen_toks (default 256)."""
        backend = TorchReferenceBackend(self.model)
        outputs = []
        for request in tqdm(requests, disable=disable_tqdm, desc="generate_until"):
            context, gen_kwargs = request.args
            until = gen_kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            ids = self.tok_encode(context)[-self.max_length:]
            logits, states = backend.prefill(ids)
            generated: list[int] = []
            text = ""
            for _ in range(int(gen_kwargs.get("max_gen_toks", 256))):
                token = sample_next(logits[: self.tokenizer_.vocab_size], GREEDY, None)
                if token == self.eot_token_id:
                    break
                generated.append(token)
                text = self.tok_decode(generated)
                if any(stop in text for stop in until):
                    break
                logits, states = backend.decode(token, states)
            for stop in until:
                text = text.split(stop)[0]
            outputs.append(text)
        return outputs


_OPENED: dict[tuple[str | None, str | None], tuple[ModelFolder, TextTokenizer]] = {}
"""``edge-quamba-lm-eval``: the model folder and tokenizer :func:`check_model_args` opened, by (path, tokenizer), until
lm_eval constructs the model from the same arguments (so the folder is opened and verified once)."""


def open_model_args(path: str | None, tokenizer: str | None) -> tuple[ModelFolder, TextTokenizer]:
    """The opened model folder and tokenizer of ``--model_args path=... tokenizer=...`` (those that
    :func:`check_model_args` opened already, else opened now)."""
    key = (None if path is None else str(path), None if tokenizer is None else str(tokenizer))
    if key not in _OPENED:
        folder = open_model(key[0], option="--model_args path=", check=lambda opened: check_backend("ref", opened))
        _OPENED[key] = folder, load_model_tokenizer(folder, key[1], option="--model_args tokenizer=")
    return _OPENED.pop(key)


def check_model_args(args) -> None:
    """Fail fast on a bad ``--model_args path=`` / ``tokenizer=`` of our model: open and verify them before lm_eval
    spends seconds indexing its tasks, and keep them for the model lm_eval then constructs (:data:`_OPENED`)."""
    from lm_eval.utils import simple_parse_args_string

    if getattr(args, "model", None) != "edge-quamba":
        return
    model_args = getattr(args, "model_args", None) or {}
    if isinstance(model_args, str):  # older lm_eval versions keep the raw "k=v,k2=v2" string
        model_args = simple_parse_args_string(model_args)
    key = tuple(None if model_args.get(k) is None else str(model_args.get(k)) for k in ("path", "tokenizer"))
    _OPENED[key] = open_model_args(*key)


def _fail(message: str) -> None:
    import sys

    print(f"{PROG}: error: {message}", file=sys.stderr)
    sys.exit(1)


def main() -> None:
    """``edge-quamba-lm-eval``: lm_eval's CLI (as ``lm_eval.__main__.cli_evaluate`` runs it) with the
    ``edge-quamba`` model registered; user errors are one line on stderr and exit 1.

    Offline: when the environment does not say so (HF_HUB_OFFLINE, HF_DATASETS_OFFLINE) and the hub cannot be
    reached (:func:`edge_quamba.hub.hub_reachable`, one connection, 3 s at most), the run goes offline at once (a
    line on stderr says so), so a task whose data is not in the local cache fails in one line instead of after
    half a minute of datasets' retries. Started with stdout closed it refuses at once; a reader of stdout that goes
    away (EPIPE) ends it quietly with exit 1 (edge_quamba/streams.py)."""
    import sys

    from lm_eval._cli import HarnessCLI
    from lm_eval.utils import setup_logging

    from edge_quamba.hub import NETWORK_ERRORS, describe, go_offline, hub_reachable, offline_requested
    from edge_quamba.streams import CLOSED_STDOUT, argparse_write_errors_raised, drop_stdout, stdout_closed

    if stdout_closed():
        _fail(CLOSED_STDOUT)
    setup_logging()
    parser = HarnessCLI()
    args, offline = None, offline_requested()
    try:
        with argparse_write_errors_raised():
            args = parser.parse_args()  # --help writes to stdout here
        if not offline and getattr(args, "tasks", None) and not hub_reachable():
            go_offline()
            offline = True
            print(f"{PROG}: the hub cannot be reached: running offline (HF_HUB_OFFLINE=1, HF_DATASETS_OFFLINE=1), "
                  f"task data from the local cache only", file=sys.stderr)
        check_model_args(args)
        parser.execute(args)
        sys.stdout.flush()  # an EPIPE on what is still buffered is caught here, not at the interpreter's exit
    except EdgeQuambaError as exc:
        _fail(str(exc))
    except BrokenPipeError:
        drop_stdout()
        sys.exit(1)
    except NETWORK_ERRORS as exc:  # a task's data set that must be downloaded (datasets' ConnectionError, ...)
        tasks = getattr(args, "tasks", None)
        tasks = ",".join(tasks) if isinstance(tasks, (list, tuple)) else tasks
        where = "offline, and it is not in the local cache" if offline else "the download failed"
        _fail(f"--tasks {tasks}: a task's data cannot be loaded ({where}): {describe(exc)}")
    except ValueError as exc:
        if not str(exc).startswith("Tasks not found:"):  # any other ValueError is a bug: keep the traceback
            raise
        _fail(f"--tasks: no such task: {str(exc).split(':', 1)[1].strip()} "
              f"(list them with `lm-eval ls tasks`; local YAML tasks need --include_path)")
