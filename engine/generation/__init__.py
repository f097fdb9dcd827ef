"""Text generation for every stage: `GenerationPipeline` (pipeline.py) runs requests through the
response cache (cache.py) and then a backend (backend.py, picked from the config by
`build_generator`): warm vLLM replicas (replica_backend.py, vllm_replicas.py), an
OpenAI-compatible API with pacing and retries (openai_api.py), or an encoder student's
classifier actors (encoder.py)."""
