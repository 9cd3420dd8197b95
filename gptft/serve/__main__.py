from ..cli_args import command
from .server import main

if __name__ == "__main__":
    command(main)()
