"""Serving: the KServe predictor for the pair, its OpenAI-style routes, cross-request DiT batching and the
chat page (server.py is where they meet)."""
