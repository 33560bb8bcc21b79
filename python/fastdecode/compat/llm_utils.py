"""``LLM``: llm_utils' ``LLM.generate`` and modularforge's encode -> generate -> decode
pipeline (``generate_samples``) on the serving engine (``fastdecode.engine``).

A call turns text (or ids) into ``n`` requests per prompt, decodes all of them together on
a transient engine (``engine.batch.complete_all``) and returns each request's text. Stop
strings are matched on the decoded text as it is produced (``detokenize``), so a stop that
spans tokens is found and the request ends at that token; the returned text ends right
before the earliest stop. A compiled model (``compile=True``) runs ``decode``'s compiled
step instead.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch

from ..detokenize import TextOutput
from ..decode_core import compile_decode_step, decode
from ..params import SamplingParams
from ..memory import check_decode_memory
from ..validation import check_flag, check_int, check_range

__all__ = ["LLM", "check_generate_arguments"]

_QUANTIZE_MODES = (None, "gguf", "float", "int8", "int4")
# llm_utils' generate keywords (beyond input_context, max_tokens, temperature, n) -> default
_GENERATE_KWARGS = {"top_p": 1.0, "top_k": -1, "min_p": 0.0, "repetition_penalty": 1.0,
                    "stop": None, "seed": None, "return_token_ids": False, "return_text": True,
                    "logprobs": False, "stream": None}


@dataclass
class _Row:
    """One completion while it is decoded: its ids and released text, how it ended."""
    output: TextOutput
    finish_reason: Optional[str] = None


class LLM:
    """A loaded model with text in, text out (llm_utils' ``LLM``).

    checkpoint: anything ``fastdecode.load`` reads ("default" = SmolLM2-135M-Instruct).
    quantize: None (the default: the checkpoint in its own precision, so a GGUF file's Q4 / Q8
    blocks as they are, the fast path), "gguf" (insist on those blocks), "float" (dequantise
    a GGUF file to ``precision``) or "int8" / "int4" (weight-only, groups of 32,
    ``quantize_model`` over the float weights). compile: compile the decode step
    (the first call pays for it; sampling then draws from the global generator, which
    ``seed`` seeds).
    """

    def __init__(self, checkpoint="default", *, device: Union[str, torch.device] = "cpu",
                 precision: torch.dtype = torch.float32, quantize: Optional[str] = None,
                 compile: bool = False):
        from ..checkpoint import load
        from ..quantize import quantize_model

        if quantize not in _QUANTIZE_MODES:
            raise ValueError(f"quantize must be one of {list(_QUANTIZE_MODES)}, got {quantize!r}")
        check_flag("compile", compile)
        # None: as stored; "gguf": insist on the blocks; "float" / "int8" / "int4": float
        # weights (int8 / int4 then requantised below)
        stored = None if quantize is None else quantize == "gguf"
        self.model, self.tokenizer = load(checkpoint, device=device, precision=precision,
                                          quantized=stored)
        if quantize in ("int8", "int4"):
            quantize_model(self.model, quantize, groupsize=32)
        self._attach(compile)

    @classmethod
    def from_model(cls, model, tokenizer, *, compile: bool = False) -> "LLM":
        """Wrap a model and tokenizer already loaded (``fastdecode.load``) without copying."""
        check_flag("compile", compile)
        llm = cls.__new__(cls)
        llm.model, llm.tokenizer = model, tokenizer
        llm._attach(compile)
        return llm

    def _attach(self, compile: bool) -> None:
        if compile:
            compile_decode_step(self.model)
        self.device = self.model.tok_embeddings.device

    @property
    def compiled(self) -> bool:
        """Whether the model's decode step is compiled (``compile_decode_step``)."""
        return getattr(self.model, "compiled_decode_step", None) is not None

    # -- text <-> ids -----------------------------------------------------------------------
    def encode(self, text: str) -> List[int]:
        """Token ids of ``text`` (special tokens written in the text are matched whole)."""
        if not isinstance(text, str):
            raise ValueError(f"text must be a str, got {type(text).__name__}")
        return self.tokenizer.encode(text)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        """Text of ``ids`` (special tokens kept unless ``skip_special_tokens``)."""
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    # -- llm_utils' generate ----------------------------------------------------------------
    def generate(self, input_context: Union[str, List[int]], max_tokens: int = 512,
                 temperature: float = 1.0, n: int = 1, **kwargs) -> Union[dict, List[dict]]:
        """Complete ``input_context`` (text or token ids) ``n`` times, or each prompt of a
        list of them (returning one entry per prompt): every choice is a request of one run
        of the serving engine (``fastdecode.engine``), all decoded together; choice j of a
        seeded call draws from ``seed + j``.

        kwargs: ``top_p`` (1.0, in (0, 1]), ``top_k`` (-1 = off, else >= 1), ``min_p``
        (0.0, in [0, 1)), ``repetition_penalty`` (1.0 = off, > 0), ``stop`` (str or list of
        str, matched on the decoded text), ``seed`` (int: reproducible), ``return_token_ids``
        (False), ``return_text`` (True), ``logprobs`` (False: the chosen tokens'
        log-probabilities under the model's unmodified softmax), ``stream`` (a callable
        given each new piece of text as it is decoded; n = 1 only). ``temperature`` in
        [0, 2], 0 = greedy. Bad input is a ``ValueError`` naming the argument, raised
        before any model work.

        Returns a dict for n = 1, else a list of n dicts: ``text`` (ends right before the
        earliest stop string), ``token_ids`` (the ids produced, through the token that
        completed a stop string, without the end-of-turn id), ``finish_reason`` ("stop":
        a stop string or the end-of-turn id, "length": ``max_tokens`` reached),
        ``logprobs`` and ``_raw_response`` (token counts, prefill / decode seconds,
        tokens/s, the sampling settings used).
        """
        opts, params = check_generate_arguments(max_tokens, temperature, n, **kwargs)
        if _is_prompt_list(input_context):  # many prompts: decoded together on the engine
            if opts["stream"] is not None:
                raise ValueError("stream takes one prompt, not a list")
            prompts = [self._prompt_ids(p) for p in input_context]
            outs = self._respond_many(prompts, n, params, opts)
            return [o[0] if n == 1 else o for o in outs]
        out = self._respond(self._prompt_ids(input_context), n, params, opts)
        return out[0] if n == 1 else out

    def complete(self, input_context: Union[str, List[int]], params: SamplingParams,
                 n: int = 1, *, logprobs: bool = False,
                 stream: Optional[Callable[[str], None]] = None) -> List[dict]:
        """``generate`` with its sampling settings given as one ``SamplingParams``
        (``params.max_tokens`` is required): a list of ``n`` dicts with ``text``,
        ``token_ids``, ``finish_reason``, ``logprobs`` when asked and ``_raw_response``."""
        if not isinstance(params, SamplingParams) or params.max_tokens is None:
            raise ValueError("params must be a SamplingParams with max_tokens set")
        opts = {**_GENERATE_KWARGS, "return_token_ids": True, "logprobs": logprobs,
                "stream": stream}
        _check_output_options(n, opts)
        return self._respond(self._prompt_ids(input_context), n, params, opts)

    def _respond(self, ids: List[int], n: int, params: SamplingParams, opts: dict
                 ) -> List[dict]:
        rows = self._complete(ids, n, params, opts["logprobs"], opts["stream"])
        settings = {**params.describe(), "top_k": opts["top_k"], "n": n}
        return [_as_dict(row, {**raw, "sampling": settings}, opts)
                for row, raw in zip(rows["rows"], rows["raw"])]

    def _respond_many(self, prompts: List[List[int]], n: int, params: SamplingParams,
                      opts: dict) -> List[List[dict]]:
        """Every prompt's n choices as requests of one engine (choice j of a seeded call
        draws from seed + j, whatever prompt it belongs to)."""
        for ids in prompts:
            self._check_room(ids, params.max_tokens)
        settings = {**params.describe(), "top_k": opts["top_k"], "n": n}
        done = self._on_engine(prompts, n, params, opts["logprobs"], None)
        return [[_as_dict(row, {**raw, "sampling": settings}, opts)
                 for row, raw in zip(d["rows"], d["raw"])] for d in done]

    # -- modularforge's pipeline ------------------------------------------------------------
    def generate_samples(self, prompts: Union[str, Sequence[str]], max_new_tokens: int = 100,
                         temperature: float = 0.8, top_k: int = 50,
                         top_p: float = 0.95) -> List[dict]:
        """encode -> generate -> decode for each prompt (modularforge's ``generate_samples``).

        Returns one dict per prompt: ``prompt``, ``full_text`` (prompt and continuation
        decoded together, special tokens skipped) and ``continuation``: ``full_text``
        without the prompt when it starts with it, else all of ``full_text`` (best effort:
        decoding does not always reproduce the prompt's exact text).
        """
        if isinstance(prompts, str):
            prompts = [prompts]
        if not isinstance(prompts, (list, tuple)) or not all(isinstance(p, str)
                                                             for p in prompts):
            raise ValueError("prompts must be a str or a list of str")
        params = _sampling_params(max_new_tokens, temperature,
                                  {**_GENERATE_KWARGS, "top_k": top_k, "top_p": top_p})
        encoded = [self._prompt_ids(p) for p in prompts]
        samples = []
        for prompt, ids in zip(prompts, encoded):
            row = self._complete(ids, 1, params, False, None)["rows"][0]
            full = self.tokenizer.decode(ids + row["token_ids"], skip_special_tokens=True)
            cont = full[len(prompt):] if full.startswith(prompt) else full
            samples.append({"prompt": prompt, "continuation": cont, "full_text": full})
        return samples

    # -- the shared path --------------------------------------------------------------------
    def _prompt_ids(self, input_context) -> List[int]:
        if isinstance(input_context, str):
            ids = self.tokenizer.encode(input_context)
        elif isinstance(input_context, (list, tuple)) and all(
                isinstance(i, int) and not isinstance(i, bool) for i in input_context):
            ids = list(input_context)
            vocab = self.model.config.vocab_size
            bad = [i for i in ids if not 0 <= i < vocab]
            if bad:
                raise ValueError(f"input_context token ids must be in [0, {vocab}), got {bad[:5]}")
        else:
            raise ValueError(f"input_context must be a str or a list of int token ids, got "
                             f"{type(input_context).__name__}")
        if not ids:
            raise ValueError("input_context must not be empty (it encodes to no tokens)")
        return ids

    def _check_room(self, ids: List[int], max_tokens: int) -> None:
        block = self.model.config.block_size
        if len(ids) + max_tokens > block:
            raise ValueError(f"max_tokens ({max_tokens}) + prompt length ({len(ids)}) exceeds "
                             f"the model's context ({block} tokens); max_tokens may be at most "
                             f"{max(block - len(ids), 0)}")

    def _complete(self, ids: List[int], n: int, params: SamplingParams, logprobs: bool,
                  stream: Optional[Callable[[str], None]]) -> dict:
        """``n`` completions of ``ids`` (``params.max_tokens`` new tokens at most, ending at
        ``params.stop``): per row its text, ids, finish reason and log-probabilities, plus
        the raw figures. The choices are requests of one engine (choice j of a seeded call
        draws from seed + j, as a list of prompts does); a compiled model runs ``decode``'s
        compiled step instead (its rows draw from the global generator, which a compiled
        step needs, not from per-request generators)."""
        self._check_room(ids, params.max_tokens)
        check_decode_memory(self.model, n, len(ids) + params.max_tokens)  # before n rows exist
        if self.compiled:
            return self._complete_compiled(ids, n, params, logprobs, stream)
        return self._on_engine([ids], n, params, logprobs, stream)[0]

    def _on_engine(self, prompts: List[List[int]], n: int, params: SamplingParams,
                   logprobs: bool, stream: Optional[Callable[[str], None]]) -> List[dict]:
        """Each prompt's n choices as requests of one engine (choice j of a seeded call draws
        from seed + j): per prompt its rows and raw figures, as ``_complete`` returns them
        (the seconds and tokens/s are the whole call's)."""
        from ..engine.batch import complete_all

        choices = [params.for_choice(j) for j in range(n)]
        done = complete_all(self.model, self.tokenizer, [ids for ids in prompts for _ in
                                                         range(n)],
                            [choices[j] for _ in prompts for j in range(n)],
                            self.tokenizer.stop_ids, logprobs,
                            on_text=None if stream is None else lambda _, piece: stream(piece))
        first = min(c.first_token_seconds for c in done)
        total = max(c.seconds for c in done)
        produced = sum(c.completion_tokens for c in done)
        out = []
        for i in range(len(prompts)):
            rows, raw = [], []
            for c in done[i * n:(i + 1) * n]:
                entry = {"text": c.text, "token_ids": c.token_ids,
                         "finish_reason": c.finish_reason}
                if logprobs:
                    entry["logprobs"] = c.logprobs
                rows.append(entry)
                raw.append({"prompt_tokens": c.prompt_tokens,
                            "completion_tokens": c.completion_tokens,
                            "prefill_seconds": first, "decode_seconds": total - first,
                            "tokens_per_second": produced / total if total > 0 else 0.0})
            out.append({"rows": rows, "raw": raw})
        return out

    def _complete_compiled(self, ids: List[int], n: int, params: SamplingParams,
                           logprobs: bool, stream: Optional[Callable[[str], None]]) -> dict:
        """``_complete`` on ``decode`` with the model's compiled step: one batch of n rows."""
        max_tokens, stops = params.max_tokens, params.stop
        end_ids = set(self.tokenizer.stop_ids)
        rows = [_Row(TextOutput(self.tokenizer, stops)) for _ in range(n)]

        def on_column(column: torch.Tensor) -> Optional[torch.Tensor]:
            ended = [False] * n
            for b, token in enumerate(column.view(-1).tolist()):
                row = rows[b]
                if row.finish_reason is not None:
                    continue
                if token in end_ids:
                    row.finish_reason = "stop"
                    continue
                piece = row.output.push(token)
                if stream is not None and piece:
                    stream(piece)
                if row.output.stopped:
                    row.finish_reason = "stop"
                    ended[b] = True
            return torch.tensor(ended) if any(ended) else None

        prompt = torch.tensor([ids] * n, dtype=torch.int64, device=self.device)
        stop_ids = torch.tensor(sorted(end_ids), dtype=torch.int64, device=self.device)
        result = decode(self.model, prompt, max_tokens, params=params,
                        stop_ids=stop_ids if end_ids else None, stop_rows=on_column,
                        logprobs=logprobs)
        total_s = result.prefill_s + result.decode_s
        produced = [len(r.output.ids) + (r.finish_reason == "stop" and not r.output.stopped)
                    for r in rows]
        out_rows, raw = [], []
        for b, row in enumerate(rows):
            rest = row.output.finish()  # what was held back, now that the row has ended
            if stream is not None and rest:
                stream(rest)
            entry = {"text": row.output.text, "token_ids": row.output.ids,
                     "finish_reason": row.finish_reason or "length"}
            if logprobs:
                entry["logprobs"] = result.logprobs[b, :len(row.output.ids)].tolist()
            out_rows.append(entry)
            raw.append({"prompt_tokens": len(ids), "completion_tokens": produced[b],
                        "prefill_seconds": result.prefill_s,
                        "decode_seconds": result.decode_s,
                        "tokens_per_second": sum(produced) / total_s if total_s > 0 else 0.0})
        return {"rows": out_rows, "raw": raw}


def _is_prompt_list(value) -> bool:
    """A list of prompts (texts, or token id lists), not one prompt's token ids."""
    return isinstance(value, (list, tuple)) and len(value) > 0 and (
        all(isinstance(v, str) for v in value) or all(isinstance(v, (list, tuple))
                                                      for v in value))


def _as_dict(row: dict, raw: dict, opts: dict) -> dict:
    """One choice as ``generate`` returns it: the fields the options ask for."""
    d: Dict[str, object] = {}
    if opts["return_text"]:
        d["text"] = row["text"]
    if opts["return_token_ids"]:
        d["token_ids"] = row["token_ids"]
    if opts["logprobs"]:
        d["logprobs"] = row["logprobs"]
    d["finish_reason"] = row["finish_reason"]
    d["_raw_response"] = raw
    return d


def check_generate_arguments(max_tokens: int = 512, temperature: float = 1.0, n: int = 1,
                             **kwargs) -> Tuple[dict, SamplingParams]:
    """Check ``LLM.generate``'s arguments other than the prompt, without a model:
    ``(options with defaults, SamplingParams)``; raises what ``generate`` raises (the REPL
    builds its params with it before loading). llm_utils' spellings are converted here:
    ``top_k=-1`` is off."""
    unknown = sorted(set(kwargs) - set(_GENERATE_KWARGS))
    if unknown:
        known = ["input_context", "max_tokens", "temperature", "n", *_GENERATE_KWARGS]
        raise TypeError(f"unknown argument(s) {unknown}; LLM.generate takes {known}")
    opts = {**_GENERATE_KWARGS, **kwargs}
    _check_output_options(n, opts)
    return opts, _sampling_params(max_tokens, temperature, opts)


def _check_output_options(n: int, opts: dict) -> None:
    check_int("n", n, 1)
    for flag in ("return_token_ids", "return_text", "logprobs"):
        check_flag(flag, opts[flag])
    if opts["stream"] is not None and (not callable(opts["stream"]) or n != 1):
        raise ValueError("stream must be a callable taking each new piece of text, and "
                         "needs n=1")


def _sampling_params(max_tokens, temperature, opts: dict) -> SamplingParams:
    """llm_utils' knobs as ``SamplingParams``: its ranges where they are tighter than the
    sampler's (temperature <= 2), top_k -1 = off; the rest checked when the params are
    built."""
    check_int("max_tokens", max_tokens, 1)
    check_range("temperature", temperature, 0, 2, lo_open=False, hi_open=False)
    top_k = opts["top_k"]
    if isinstance(top_k, bool) or not isinstance(top_k, int) or (top_k < 1 and top_k != -1):
        raise ValueError(f"top_k must be -1 (off) or an integer >= 1, got {top_k!r}")
    return SamplingParams(temperature=temperature, top_k=None if top_k == -1 else top_k,
                          top_p=opts["top_p"], min_p=opts["min_p"],
                          repetition_penalty=opts["repetition_penalty"], seed=opts["seed"],
                          stop=() if opts["stop"] is None else opts["stop"],
                          max_tokens=max_tokens)
