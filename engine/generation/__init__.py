"""Text generation for every stage: `GenerationPipeline` (pipeline.py) runs requests through the
response cache (cache.py) and then Ray Data, over warm vLLM replicas (vllm_replicas.py) or an
OpenAI-compatible API with pacing and retries (openai_api.py)."""
