"""Scoring a trained checkpoint (`python -m gptft.evaluate`).

command.py   the command: arguments, output folder, the steps in order
scoring.py   the task's own test metrics, through its Lightning test step
responses.py greedy responses of an instruction model to its test entries
text_metrics.py  exact match and ROUGE-L of those responses
judge.py     an optional LLM judge (Ollama API)
report.py    the printed summary
"""
