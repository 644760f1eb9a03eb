"""``python -m etsdm`` runs the ``etsdm`` command line (useful with ``accelerate launch -m``)."""

from .cli import main

if __name__ == "__main__":
    main()
