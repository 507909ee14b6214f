"""``python -m emovox``: the ``emovox`` command, for launchers that start a module (``torchrun -m emovox``,
``accelerate launch -m emovox``) and for jobs that must run this very interpreter (submitit)."""

from emovox.cli import main

if __name__ == "__main__":
    main()
