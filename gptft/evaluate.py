"""`python -m gptft.evaluate ckpt=PATH ...`: the command's name; the code is in gptft.evaluation."""
from .evaluation.command import main

if __name__ == "__main__":
    main()
