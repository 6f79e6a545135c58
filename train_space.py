"""Train, evaluate and (optionally) push the Space's model in one command.

    python train_space.py --data ../shared/data/ciplab --output-dir out [--preset default] [--push-to-hub USER/REPO]

The same code as `fakeface train` (this file only forwards its arguments); see `--help` for every option.
"""

import sys

from fakeface.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
