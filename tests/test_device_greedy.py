"""Greedy decoding on the device (``--backend cuda``'s ``device_greedy``; issue 20, step S1).

CPU: the greedy choice (``greedy_choice_``) equals ``sample_next``'s at temperature 0 (ties, +Inf, NaN, -Inf, padded
rows); the pinned token ring; which path ``generate`` takes and the one-line errors where the device path is asked
for and cannot run; the real CudaBackend decoding eagerly on a CPU model (``setup``; no graph): device tokens ==
host tokens, step t + 1 enqueued before token t is read, nothing but the greedy choice writes the token buffer.
GPU (marker ``cuda``): the same through the captured decode graph, on the tiny model and the demo models (Mamba1 and
Mamba2), against the host-greedy path and the quantized reference.
"""

import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from edge_quamba.errors import BackendUnavailableError, InputError
from edge_quamba.runtime import cuda_backend
from edge_quamba.runtime.backends import TorchReferenceBackend
from edge_quamba.runtime.bench import median_timings
from edge_quamba.runtime.cuda_backend import TokenRing, greedy_choice_, record_views
from edge_quamba.runtime import generate as generate_module
from edge_quamba.runtime.generate import device_greedy_decoder, generate
from edge_quamba.runtime.sampling import GREEDY, NumericsError, SamplingConfig, sample_next
from edge_quamba.quant.calibrate import calibrate
from edge_quamba.quant.qmodel import QuantConfig, quantize_model
from test_quantized_reference import calibration_tokens, fp_model


class FakeEvent:
    """torch.cuda.Event's record/synchronize, counted (a copy into pageable memory is synchronous anyway)."""

    synchronized = 0

    def record(self):
        pass

    def synchronize(self):
        FakeEvent.synchronized += 1
        if torch.cuda.is_available():
            torch.cuda.synchronize()


class StubTokenizer:
    """What generate reads from a tokenizer: vocab_size, eos_token_id, decode."""

    def __init__(self, vocab_size, eos_token_id=None):
        self.vocab_size, self.eos_token_id = vocab_size, eos_token_id

    def decode(self, ids):
        return " ".join(map(str, ids))


def choose(logits: torch.Tensor, usable: int) -> tuple[int, float]:
    """greedy_choice_ on (v,) logits -> (token id, maximum), through a 16-byte record as the backend does."""
    record = torch.zeros(16, dtype=torch.uint8, device=logits.device)
    token, top = record_views(record)
    greedy_choice_(logits[None], usable, token, top)
    return int(token.item()), float(top.item())


def tie_cases(device="cpu", v=50280):
    """(name, logits (v,) float32, usable vocabulary): many exact ties, ties across far-apart indices, +Inf, padding."""
    g = torch.Generator().manual_seed(0)
    few_values = torch.randint(-3, 4, (v,), generator=g).float()  # ~v/7 entries tie at the maximum
    far = torch.full((v,), -1.0)
    far[[v - 9, 7, 30000]] = 2.5  # the first index is not where a block-wise reduction might start
    posinf = torch.randn(v, generator=g)
    posinf[[40000, 123, 9000]] = math.inf
    padded = torch.randn(v, generator=g)
    padded[v - 3:] = 100.0  # padding rows beyond the usable vocabulary are never chosen
    return [("few values", few_values, v), ("far ties", far, v), ("+inf", posinf, v), ("padding", padded, v - 3),
            ("random", torch.randn(v, generator=g) * 10, v - 3)]


def check_choice_equals_sample_next(device):
    for name, logits, usable in tie_cases():
        expected = sample_next(logits[:usable], GREEDY, None)
        got, top = choose(logits.to(device), usable)
        print(f"{name}: device {got}, numpy {expected}, max {top}")
        assert got == expected and top == float(logits[:usable].max())


def check_numerics_errors(device):
    nan = torch.randn(1000)
    nan[[5, 700]] = math.nan
    neginf = torch.full((1000,), -math.inf)
    for logits, message in ((nan, "NaN logits"), (neginf, "-Inf for every token")):
        with pytest.raises(NumericsError, match=message):
            sample_next(logits, GREEDY, None)  # the host path's verdict
        record = torch.zeros(16, dtype=torch.uint8, device=device)
        greedy_choice_(logits.to(device)[None], 1000, *record_views(record))
        ring = TokenRing(record, pin=False, event=FakeEvent)  # a pageable copy: synchronous
        with pytest.raises(NumericsError, match=message):
            ring.push().result()


def test_greedy_choice_equals_sample_next_greedy():
    check_choice_equals_sample_next("cpu")


def test_nan_and_all_neginf_are_numerics_errors_as_on_the_host():
    check_numerics_errors("cpu")


def test_token_ring_reads_each_slot_until_it_is_reused():
    record = torch.zeros(16, dtype=torch.uint8)
    token, top = record_views(record)
    ring = TokenRing(record, slots=2, pin=False, event=FakeEvent)
    pending = []
    for value in (11, 22, 33):
        token.fill_(value)
        top.fill_(0.5)
        pending.append(ring.push())
    FakeEvent.synchronized = 0
    assert pending[2].result() == 33 and pending[1].result() == 22 and pending[2].result() == 33
    assert FakeEvent.synchronized == 2  # waits once per token, only when read
    with pytest.raises(RuntimeError, match="no longer in the 2-slot ring"):
        pending[0].result()
    with pytest.raises(ValueError, match="16 bytes"):
        TokenRing(torch.zeros(8, dtype=torch.uint8), pin=False, event=FakeEvent)


# ---------------------------------------------------------------- which path generate takes


def varied_tiny_model():
    """A tiny quantized Mamba (vocabulary 120) whose greedy continuation varies (noise 0.3: at the usual 0.05 it repeats
    the last prompt token forever, which would make every equality below trivial)."""
    fp = fp_model(dtype=torch.float32, seed=6, hidden_size=64, noise=0.3)
    qconfig = QuantConfig(calib_samples=4, calib_seq_len=48)
    return quantize_model(fp, calibrate(fp, calibration_tokens(), qconfig, batch_size=2, progress=False), qconfig)


@pytest.fixture(scope="module")
def tiny_model():
    return varied_tiny_model()


def cpu_backend(model, graph=False, prefill_graphs=None):
    """The real CudaBackend around a CPU copy of ``model`` (eager decode; pageable ring, fake events): its device
    greedy logic runs here as on the GPU, minus the graph (and chunked prefill, ``prefill_graphs``, runs its chunks
    eagerly)."""
    import copy

    backend = cuda_backend.CudaBackend.__new__(cuda_backend.CudaBackend)
    backend.device = torch.device("cpu")
    backend.setup(cuda_backend.prepare_gpu_model(copy.deepcopy(model), backend.device), graph, pin=False,
                  event=FakeEvent, prefill_graphs=prefill_graphs)
    return backend


def test_greedy_generation_chooses_on_the_device_by_default(tiny_model):
    backend = cpu_backend(tiny_model)
    assert generate_module.DEVICE_GREEDY_BY_DEFAULT is True
    assert device_greedy_decoder(backend, GREEDY, 100) is backend.device_greedy(100)
    assert generate(backend, StubTokenizer(100), [1, 2], 4, GREEDY).token_choice == "device"
    assert generate(backend, StubTokenizer(100), [1, 2], 4, GREEDY, device_greedy=False).token_choice == "host"


def test_paths_and_one_line_errors(tiny_model):
    backend = cpu_backend(tiny_model)
    ref = TorchReferenceBackend(tiny_model)
    sampled = SamplingConfig(temperature=0.8, seed=3)
    assert device_greedy_decoder(backend, GREEDY, 100) is backend.device_greedy(100)  # cached per vocabulary
    assert device_greedy_decoder(backend, GREEDY, 100, requested=False) is None
    assert device_greedy_decoder(backend, sampled, 100) is None  # seeded sampling stays on the host
    assert device_greedy_decoder(ref, GREEDY, 100) is None  # a backend without it: the host path, its only one
    with pytest.raises(InputError, match="needs --temperature 0, not 0.8: sampled tokens are drawn on the host"):
        device_greedy_decoder(backend, sampled, 100, requested=True)
    with pytest.raises(BackendUnavailableError, match="--backend ref has no greedy decoding on the device"):
        device_greedy_decoder(ref, GREEDY, 100, requested=True)
    with pytest.raises(BackendUnavailableError, match="--backend ref has no greedy"):
        generate(ref, StubTokenizer(100), [1, 2], 4, GREEDY, device_greedy=True)


def test_generate_device_tokens_equal_host_tokens(tiny_model):
    backend = cpu_backend(tiny_model)
    prompt = [5, 17, 3, 99, 42]
    for usable in (backend.vocab, backend.vocab - 7):
        tokenizer = StubTokenizer(usable)
        host = generate(backend, tokenizer, prompt, 20, GREEDY, device_greedy=False)
        device = generate(backend, tokenizer, prompt, 20, GREEDY, device_greedy=True)
        print(usable, host.tokens, device.tokens)
        assert (host.token_choice, device.token_choice) == ("host", "device")
        assert device.tokens == host.tokens and device.text == host.text and len(device.tokens) == 20
        assert max(device.tokens) < usable
    sampled = generate(backend, StubTokenizer(backend.vocab), prompt, 6, SamplingConfig(temperature=0.7, seed=1))
    assert sampled.token_choice == "host"


class Spy:
    """Wraps a device greedy decoder: logs 'decode' when a step is enqueued and 'read t' when token t is read."""

    def __init__(self, decoder):
        self.decoder, self.log = decoder, []

    def prefill(self, tokens):
        pending, states = self.decoder.prefill(tokens)
        return self.wrap(pending), states

    def decode(self, states):
        self.log.append("decode")
        return self.wrap(self.decoder.decode(states))

    def wrap(self, pending):
        spy, index = self, len([e for e in self.log if e == "decode"])

        class Pending:
            def result(self):
                spy.log.append(f"read {index}")
                return pending.result()

        return Pending()


@pytest.mark.parametrize("stop", ["eos", "should_stop", "max_new_tokens"])
def test_next_step_is_enqueued_before_the_token_is_read(tiny_model, stop):
    backend = cpu_backend(tiny_model)
    prompt = [5, 17, 3]
    expected = generate(backend, StubTokenizer(backend.vocab), prompt, 12, GREEDY, device_greedy=False).tokens
    first_new = next(i for i in range(3, 12) if expected[i] not in expected[:i])  # a token not generated before
    eos, n = (expected[first_new], first_new + 1) if stop == "eos" else (None, 6 if stop == "should_stop" else 12)
    spy = Spy(backend.device_greedy(backend.vocab))
    backend.device_greedy = lambda usable: spy  # generate asks the backend for its decoder
    calls = iter(range(100))
    should_stop = (lambda: "stop_sequence" if next(calls) == 5 else None) if stop == "should_stop" else None
    result = generate(backend, StubTokenizer(backend.vocab, eos), prompt, 12, GREEDY, should_stop=should_stop,
                      device_greedy=True)
    print(stop, expected, result.tokens, spy.log)
    assert result.tokens == expected[:n] and result.stop_reason == {"should_stop": "stop_sequence"}.get(stop, stop)
    assert spy.log[:3] == ["decode", "read 0", "decode"]  # step 1 runs while token 0 is read and streamed
    reads = [e for e in spy.log if e.startswith("read")]
    assert reads == [f"read {i}" for i in range(n)]
    assert spy.log.count("decode") == min(n, 11)  # one step past the stop at most, never past max_new_tokens


class TokenWrites(TorchDispatchMode):
    """Every aten op that writes into the storage of ``record`` (the token buffer), by name."""

    def __init__(self, record):
        super().__init__()
        self.ptr, self.writes = record.untyped_storage().data_ptr(), []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        values = dict(zip([a.name for a in func._schema.arguments], args)) | kwargs
        written = []  # the tensors this call writes (mutable inputs, out= arguments)
        for arg in func._schema.arguments:
            if arg.alias_info is not None and arg.alias_info.is_write:
                value = values.get(arg.name)
                written += value if isinstance(value, (list, tuple)) else [value]
        if any(isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() == self.ptr for t in written):
            self.writes.append(str(func))
        return func(*args, **kwargs)


def check_token_buffer_written_only_by_the_choice(backend, steps=6, allowed=("aten.max.dim_max",)):
    """Decode ``steps`` tokens on the device path: the token buffer is written by the greedy choice alone (in the
    graph: by nothing the host dispatches), and after each step holds the token the host reads back."""
    decoder = backend.device_greedy(backend.vocab)
    pending, states = decoder.prefill([5, 17, 3])
    tokens = [pending.result()]
    with TokenWrites(backend.record) as spy:
        for _ in range(steps):
            pending = decoder.decode(states)
            tokens.append(pending.result())
            assert int(backend.token.item()) == tokens[-1]
    print("token buffer writes during decode:", spy.writes)
    assert set(spy.writes) <= set(allowed) and len(spy.writes) == steps * (len(allowed) > 0)
    return tokens


def test_token_buffer_is_written_only_by_the_greedy_choice(tiny_model):
    check_token_buffer_written_only_by_the_choice(cpu_backend(tiny_model))


def check_two_steps_in_flight(backend, new_tokens=4):
    """Always two unread steps (the ring's depth): step t + 1 is enqueued before token t is read, as generate does;
    the ids read back are the host path's tokens. A third unread step would reuse the oldest slot (refused)."""
    host = generate(backend, StubTokenizer(backend.vocab), [5, 17, 3], new_tokens, GREEDY, device_greedy=False).tokens
    decoder = backend.device_greedy(backend.vocab)
    pending, states = decoder.prefill([5, 17, 3])
    tokens = []
    for _ in range(new_tokens - 1):
        following = decoder.decode(states)
        tokens.append(pending.result())
        pending = following
    tokens.append(pending.result())
    assert tokens == host
    pending, states = decoder.prefill([5, 17, 3])
    decoder.decode(states), decoder.decode(states)
    with pytest.raises(RuntimeError, match="no longer in the 2-slot ring"):
        pending.result()


def test_two_steps_in_flight_give_the_host_tokens(tiny_model):
    check_two_steps_in_flight(cpu_backend(tiny_model))


def test_bench_times_the_device_path(tiny_model):
    backend = cpu_backend(tiny_model)
    ttft, tpot = median_timings(backend, [5, 17, 3], 6, 1, backend.device_greedy(None))
    assert ttft > 0 and tpot > 0


# ---------------------------------------------------------------- GPU


@pytest.mark.cuda
def test_cuda_greedy_choice_equals_sample_next_greedy():
    check_choice_equals_sample_next("cuda")
    check_numerics_errors("cuda")


@pytest.mark.cuda
@pytest.mark.parametrize("graph", [True, False])
def test_cuda_device_tokens_equal_host_tokens(tiny_model, graph):
    import copy

    backend = cuda_backend.CudaBackend(copy.deepcopy(tiny_model), graph=graph)
    prompt = [5, 17, 3, 99, 42]
    for usable in (backend.vocab, backend.vocab - 7):
        tokenizer = StubTokenizer(usable)
        host = generate(backend, tokenizer, prompt, 32, GREEDY, device_greedy=False)
        device = generate(backend, tokenizer, prompt, 32, GREEDY, device_greedy=True)
        print(f"graph {graph}, usable {usable}: host {host.tokens}\n  device {device.tokens}\n"
              f"  TPOT host path {host.tpot_ms:.3f} ms, device path {device.tpot_ms:.3f} ms")
        assert device.tokens == host.tokens and device.token_choice == "device"
        if graph:  # the greedy graph replays what the eager greedy step computes
            eager = cuda_backend.CudaBackend(copy.deepcopy(tiny_model), graph=False)
            assert generate(eager, tokenizer, prompt, 32, GREEDY).tokens == device.tokens


@pytest.mark.cuda
def test_cuda_graph_decode_writes_no_token_from_the_host(tiny_model):
    """Through the graph, the host dispatches nothing that writes the token buffer; two steps in flight (the ring's
    depth) read back afterwards give the host path's tokens."""
    import copy

    backend = cuda_backend.CudaBackend(copy.deepcopy(tiny_model))
    check_token_buffer_written_only_by_the_choice(backend, allowed=())
    check_two_steps_in_flight(backend)


def check_demo(folder):
    """24 greedy tokens of the prompt "The history of": cuda on the device == cuda on the host == the reference."""
    from edge_quamba.folders import load_model_tokenizer, open_model
    from edge_quamba.runtime.backends import make_backend
    from edge_quamba.runtime.generate import encode_prompt

    opened = open_model(str(folder))
    tokenizer = load_model_tokenizer(opened, None)
    prompt = encode_prompt(tokenizer, "The history of", 4096)
    ref = generate(make_backend("ref", opened), tokenizer, prompt, 24, GREEDY)
    gpu = make_backend("cuda", opened)
    host = generate(gpu, tokenizer, prompt, 24, GREEDY, device_greedy=False)
    device = generate(gpu, tokenizer, prompt, 24, GREEDY, device_greedy=True)
    print(f"{folder}:\n  ref    {ref.tokens}\n  host   {host.tokens}\n  device {device.tokens}")
    assert (ref.token_choice, host.token_choice, device.token_choice) == ("host", "host", "device")
    assert device.tokens == host.tokens == ref.tokens and device.text == ref.text


@pytest.mark.cuda
def test_demo_greedy_tokens_device_equal_host_and_reference(demo_quantized):
    check_demo(demo_quantized)


@pytest.mark.cuda
def test_demo_mamba2_greedy_tokens_device_equal_host_and_reference(tmp_path_factory):
    from edge_quamba.quant.pipeline import quantize_checkpoint
    from edge_quamba.quant.qmodel import QuantConfig

    check_demo(quantize_checkpoint(model="demo-mamba2", out=tmp_path_factory.mktemp("demo_mamba2") / "q",
                                   qconfig=QuantConfig(method="quamba2", calib_samples=8, calib_seq_len=128),
                                   progress=False))
