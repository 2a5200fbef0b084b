"""lm-evaluation-harness adapter: any edge-quamba model kind as an lm-eval ``LM`` named ``edge-quamba``.

lm-eval (0.4.13) finds models only in its own built-in list, so registration needs an import. Two ways in:

    edge-quamba-lm-eval --model edge-quamba --model_args path=DIR --tasks hellaswag     # lm_eval's CLI, same flags
    import edge_quamba.eval.harness; lm_eval.simple_evaluate(model="edge-quamba", model_args="path=DIR", ...)

``edge-quamba-lm-eval`` registers the model and then runs lm_eval's own CLI with the same arguments, so every
lm_eval flag works. Scoring uses the reference backend's batched forward (``backend=ref``), one request at a time,
with contexts truncated on the left to ``max_length`` tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from tqdm import tqdm

from edge_quamba.models.loading import load_config, model_kind, resolve_model
from edge_quamba.models.tokenizer import load_tokenizer
from edge_quamba.runtime.backends import TorchReferenceBackend, load_reference_model


@register_model("edge-quamba")
class EdgeQuambaLM(TemplateLM):
    """model_args: path (any model folder or hub id; default the demo model), tokenizer, max_length (2048)."""

    def __init__(self, path: str | None = None, tokenizer: str | None = None, max_length: int = 2048,
                 backend: str = "ref", **_: object):
        super().__init__()
        if backend != "ref":
            raise ValueError(f"edge-quamba lm-eval adapter: backend {backend!r} is not supported (use ref)")
        folder = resolve_model(path)
        config = load_config(folder)
        self.tokenizer_ = load_tokenizer(folder, tokenizer, eos_token_id=config.eos_token_id)
        self.model = load_reference_model(folder, model_kind(folder))
        self.max_length = int(max_length)

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
        logits, _ = self.model(torch.tensor([tokens[:-1]], dtype=torch.long))
        logp = F.log_softmax(logits[0, -len(continuation):].float(), dim=-1)
        target = torch.tensor(continuation)
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
                token = int(torch.argmax(logits[: self.tokenizer_.vocab_size]))
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


def main() -> None:
    """``edge-quamba-lm-eval``: lm_eval's CLI with the ``edge-quamba`` model registered."""
    from lm_eval.__main__ import cli_evaluate

    cli_evaluate()
