"""`python -m gptft.export`: a trained checkpoint as a Hugging Face folder or a GGUF file.

hf_model.py (config.json and weights under transformers' names), tokenizer_files.py (tokenizer.json and
the GGUF vocabulary), chat.py (chat templates of the prompt styles), gguf_file.py (the GGUF writer),
card.py (README.md model card), command.py (the command).
"""
