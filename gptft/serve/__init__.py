"""`python -m gptft.serve`: a trained checkpoint behind an HTTP API (LitServe), with a web page.

classifier checkpoints: POST /predict (batched across concurrent requests); instruction checkpoints:
POST /v1/chat/completions (OpenAI-compatible, streaming). Both: GET / (the page), /health, /info.
"""
