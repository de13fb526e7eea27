"""Serving: the KServe predictor for the pair, its OpenAI-style routes, the scheduler that batches the MLLM's
decoding and the DiT's steps across requests, and the chat page (server.py is where they meet)."""
